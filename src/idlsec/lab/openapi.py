"""The lab's OpenAPI schema, made to tell the truth: what pydantic types as a free string is a
closed set here, and the rules that tie one field to another are stated, so that a request the
schema accepts is one the lab accepts (a schemathesis run checks it: tests/test_lab_schemathesis.py).

FastAPI's schema is patched once per app (``lab_openapi``):

- names as enums (``x-names`` marks them): models (every name the lab answers to; for the default
  lab, the whole zoo whether or not its weights are on this machine, so the committed
  web/src/api/openapi.json is the same everywhere; a model without weights answers 404), datasets
  (the built-in ones and the lab's folders), interpreters and attacks (their registries);
- rules across fields (``x-rules`` marks the ``allOf`` that holds them), one ``oneOf`` each:
  per model group (its image sources, its same-dataset surrogates, its class count), per attack
  (its own ``params``, typed from ``idlsec.attacks.params`` and held to ``schemas.LIMITS``; ``steps``/``alpha``
  only if it has them; a surrogate only for black-box attacks), and exactly one of ``index`` or
  ``upload``.

``web/scripts/gen-api.mjs`` strips both marks before generating the TypeScript types, which stay
plain strings (a lab started with ``--model`` has other names)."""

from __future__ import annotations

import copy

from ..attacks import ATTACKS
from ..data import DATASETS
from ..interpreters import INTERPRETERS
from . import schemas
from .engine import attack_params

TYPES = {"bool": {"type": "boolean"}, "int": {"type": "integer"}, "float": {"type": "number"},
         "choice": {"type": "string"}, "string": {"type": "string"}}


def names(values, kind: str) -> dict:
    return {"type": "string", "enum": list(values), "x-names": kind}


def nullable(schema: dict | None) -> dict:
    return {"anyOf": [schema, {"type": "null"}]} if schema is not None else {"type": "null"}


def param_schema(info: dict) -> dict:
    """One attack hyperparameter from its description (``engine.attack_params``: kind, bounds
    already held to ``schemas.LIMITS``, choices, nullable), as ``engine._typed`` checks it."""
    out = dict(TYPES[info["kind"]])
    if info["kind"] == "choice":
        out["enum"] = list(info["choices"])
    if info["kind"] in ("int", "float"):
        lo = info["min"] if info["min"] is not None or info["name"] not in schemas.LIMITS else 0
        for bound, value, exclusive in (("inimum", lo, info["min_exclusive"]),
                                        ("aximum", info["max"], info["max_exclusive"])):
            if value is not None:
                key = ("exclusiveM" if exclusive else "m") + bound
                out[key] = int(value) if info["kind"] == "int" and float(value).is_integer() else value
    return {"anyOf": [out, {"type": "null"}]} if info["nullable"] else out


def attack_branches() -> list[dict]:
    out = []
    for name, cls in ATTACKS.items():
        params = {p["name"]: param_schema(p) for p in attack_params(name)}
        props = {"attack": {"const": name},
                 "params": {"type": "object", "additionalProperties": False, "properties": params}}
        for key in ("steps", "alpha"):
            if key not in params:
                props[key] = {"type": "null"}
        if not getattr(cls, "black_box", False):
            props["surrogate"] = {"type": "null"}
        out.append({"properties": props})
    return out


def model_branches(models: list[dict], *, single_image: bool) -> list[dict]:
    """One branch per group of models that share image sources, dataset and class count."""
    groups: dict[tuple, list[str]] = {}
    for m in models:
        if single_image or m["batch"]:
            groups.setdefault((tuple(m["sources"]), m["dataset"], m["num_classes"]), []).append(m["name"])
    out = []
    for (sources, dataset, num_classes), group in groups.items():
        same = [m["name"] for m in models if m["dataset"] == dataset]
        props = {"model": names(group, "model"), "surrogate": nullable(names(same, "model"))}
        if single_image:
            props["dataset"] = nullable(names(sources, "dataset") if sources else None)
            props["target"] = nullable({"type": "integer", "minimum": 0, "maximum": num_classes - 1})
        out.append({"properties": props})
    return out


def _apply(component: dict, branch_sets: list[list[dict]]) -> None:
    """A single branch is merged into the properties; several become a ``oneOf`` under ``allOf``."""
    rules = []
    for branches in branch_sets:
        if len(branches) == 1:
            for key, schema in branches[0]["properties"].items():
                old = component["properties"][key]
                component["properties"][key] = {**schema, **{k: old[k] for k in ("title", "description") if k in old}}
        elif branches:
            rules.append({"oneOf": branches})
    if rules:
        component["allOf"] = rules
        component["x-rules"] = True


def lab_openapi(schema: dict, models: list[dict], datasets: list[str]) -> dict:
    """``schema`` (FastAPI's) with the lab's name sets and rules; ``models`` from
    ``LabModels.schema_models``, ``datasets`` the names ``/api/datasets/{name}`` answers to."""
    schema = copy.deepcopy(schema)
    comps = schema["components"]["schemas"]
    all_models = [m["name"] for m in models]
    batch_models = [m["name"] for m in models if m["batch"]] or all_models
    for comp, single, model_names in (("AttackRequest", True, all_models), ("BatchRequest", False, batch_models)):
        c = comps[comp]
        c["properties"]["model"] = {**names(model_names, "model"), "title": "Model"}
        c["properties"]["interpreter"] = {**names(INTERPRETERS, "interpreter"), "title": "Interpreter"}
        c["properties"]["attack"] = {**names(ATTACKS, "attack"), "title": "Attack"}
        sets = [model_branches(models, single_image=single), attack_branches()]
        if single:
            sets.append([{"properties": {"index": {"type": "integer", "minimum": 0}, "upload": {"type": "null"}},
                          "required": ["index"]},
                         {"properties": {"upload": {"type": "string", "maxLength": 64}, "index": {"type": "null"}},
                          "required": ["upload"]}])
        _apply(c, sets)
    items = comps["CompareRequest"]["properties"]["interpreters"]
    items["items"] = names(INTERPRETERS, "interpreter")
    for path in ("/api/datasets/{name}", "/api/datasets/{name}/images/{index}"):
        for p in schema["paths"][path]["get"]["parameters"]:
            if p["name"] == "name":
                p["schema"] = {**names(datasets, "dataset"), "title": "Name"}
    return schema


def dataset_names(folders) -> list[str]:
    return [*DATASETS, *folders]
