"""The lab's access to the engine: registries, cached models and datasets, uploads, and the two
kinds of work a job runs (an attack on one image; interpreters compared on its result).

Everything goes through the library's public API (registry_info, load_model, load_dataset,
get_interpreter, build_attack, records_from_result, metrics); names are read from the registries
on every request, so attacks and interpreters registered later appear without changes here."""

from __future__ import annotations

import base64
import collections
import contextlib
import inspect
import io
import math
import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import idlsec

from ..attacks import ATTACKS
from ..attacks.params import param_info
from ..bench.records import records_from_result
from ..data import load_image
from ..errors import ConfigError, IdlsecError, InputError, unknown_name
from ..interpreters import INTERPRETERS, get_interpreter
from ..metrics import DEFAULT_K_GRID, map_l1, map_l2, spearman, topk_iou_curve
from ..spec import AttackSpec, build_attack
from . import schemas
from .models import LabModels


class NotFound(IdlsecError):
    """A resource the request names does not exist (404): a job, a run, an upload, an image."""


class Conflict(IdlsecError):
    """The request is valid but the lab's state refuses it now (409): a job not done, no --runs."""


# set through dedicated request fields, never through ``params``
RESERVED = {"eps", "targeted", "seed", "progress", "callback"}
MAX_MAP_PIXELS = 256 * 256


def clean(value):
    """JSON-safe: NaN/Inf -> None, tensors -> lists, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, torch.Tensor):
        return clean(value.tolist())
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def png_data_url(img: torch.Tensor) -> str:
    """(C, H, W) float in [0, 1] -> PNG data URL."""
    arr = (img.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def map_data(m: torch.Tensor | None) -> dict | None:
    """(1, h, w) or (h, w) map -> MapData dict (downsampled if huge)."""
    if m is None:
        return None
    m = m.detach().float().cpu().reshape(-1, *m.shape[-2:])[:1]
    h, w = m.shape[-2:]
    if h * w > MAX_MAP_PIXELS:
        scale = math.sqrt(MAX_MAP_PIXELS / (h * w))
        m = torch.nn.functional.interpolate(m[None], scale_factor=scale, mode="area")[0]
        h, w = m.shape[-2:]
    vals = torch.nan_to_num(m[0]).clamp(0, 1).flatten()
    return {"width": int(w), "height": int(h), "values": [round(v, 4) for v in vals.tolist()]}


def attack_params(name: str) -> list[dict]:
    """The typed description of an attack's hyperparameters (``idlsec.attacks.params``), less the
    request's own fields, with the lab's limits applied to the upper bounds."""
    out = []
    for p in param_info(name):
        if p["name"] in RESERVED:
            continue
        hi = {**schemas.LIMITS, "alpha": schemas.MAX_EPS}.get(p["name"])
        if hi is not None and (p["max"] is None or p["max"] > hi):
            p = {**p, "max": hi, "max_exclusive": False}
        default = p["default"]
        if not (default is None or isinstance(default, (bool, int, float, str))):
            p = {**p, "default": None}
        out.append(p)
    return out


def _doc(cls) -> str:
    """The class's own docstring, else its module's (where this project cites the paper)."""
    import sys

    doc = inspect.cleandoc(vars(cls).get("__doc__") or getattr(sys.modules.get(cls.__module__), "__doc__", "") or "")
    return doc.split("\n\n")[0].replace("\n", " ")[:400]


class Engine:
    """Caches and the jobs' work; the job queue guarantees one job uses the models at a time."""

    def __init__(self, device: str = "cpu", *, models: LabModels | None = None, max_uploads: int = 64,
                 keep_results: int = 50):
        self.device = device
        self.models = models if models is not None else LabModels(device=device)
        self._lock = threading.Lock()
        self._datasets: dict[str, idlsec.data.Dataset] = {}
        self._uploads: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._adversarial: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.max_uploads, self.keep_results = max_uploads, keep_results

    # --- registry --------------------------------------------------------------------------------
    def registry(self) -> dict:
        info = idlsec.registry_info()
        models = [self.models.info(name) for name in self.models.names()]
        interps = [{"name": n, "doc": _doc(INTERPRETERS[n]),
                    "differentiable": bool(getattr(INTERPRETERS[n], "differentiable", True)),
                    "stochastic": bool(getattr(INTERPRETERS[n], "stochastic", False))}
                   for n in info["interpreters"] if n in INTERPRETERS]
        attacks = [{"name": n, "doc": _doc(ATTACKS[n]),
                    "needs_interpreter": bool(getattr(ATTACKS[n], "needs_interpreter", False)),
                    "black_box": bool(getattr(ATTACKS[n], "black_box", False)),
                    "params": attack_params(n)}
                   for n in info["attacks"] if n in ATTACKS]
        datasets = [d for d in info["datasets"] if not d.startswith("folder:")]
        datasets += [d for d in self.models.all_datasets() if d not in datasets]
        return {"version": idlsec.__version__, "device": self.device, "models": models, "datasets": datasets,
                "interpreters": interps, "attacks": attacks,
                "limits": {"max_eps": schemas.MAX_EPS, "max_steps": schemas.MAX_STEPS,
                           "max_upload_bytes": schemas.MAX_UPLOAD_BYTES, "max_queued": schemas.MAX_QUEUED}}

    # --- data ------------------------------------------------------------------------------------
    def _check_dataset_name(self, name) -> None:
        known = [*idlsec.data.DATASETS, *self.models.folders]
        if not isinstance(name, str) or name not in known:
            raise unknown_name("dataset", str(name), known)

    def dataset(self, name: str):
        """A built-in dataset's test split, or an image folder the lab offers (by its id)."""
        self._check_dataset_name(name)
        with self._lock:
            if name not in self._datasets:
                self._datasets[name] = self.models.load_dataset(name)
            return self._datasets[name]

    def default_dataset(self, model: str) -> str | None:
        """The first image source of ``model`` (None: uploads only)."""
        return next(iter(self.models.datasets(model)), None)

    def dataset_info(self, name: str) -> dict:
        self._check_dataset_name(name)
        try:
            ds = self.dataset(name)
        except idlsec.ResourceError as e:
            return {"name": name, "classes": [], "size": 0, "error": str(e)}
        return {"name": name, "classes": list(ds.classes), "size": len(ds)}

    def dataset_image(self, name: str, index: int) -> dict:
        ds = self.dataset(name)
        if not 0 <= index < len(ds):
            raise NotFound(f"index {index} out of range for {name} (test split has {len(ds)} images)")
        x, y = ds.get([index])
        label = int(y[0])  # -1: an unlabeled folder (the model's prediction stands in for it)
        name_of = ds.classes[label] if 0 <= label < len(ds.classes) else None
        return {"dataset": name, "index": index, "label": label, "label_name": name_of,
                "image": png_data_url(x[0])}

    def add_upload(self, data: bytes, filename: str) -> dict:
        if len(data) == 0:
            raise InputError("the uploaded file is empty")
        arr = load_image(bytes(data), mode="RGB")
        if arr.shape[0] > 4096 or arr.shape[1] > 4096:
            raise InputError(f"image of {arr.shape[1]}x{arr.shape[0]} pixels is too large (max 4096x4096)")
        uid = uuid.uuid4().hex[:16]
        x = torch.from_numpy(np.array(arr)).permute(2, 0, 1).float().div(255)
        with self._lock:
            self._uploads[uid] = {"bytes": bytes(data), "filename": filename}
            while len(self._uploads) > self.max_uploads:
                self._uploads.popitem(last=False)
        return {"id": uid, "filename": filename, "width": int(arr.shape[1]), "height": int(arr.shape[0]),
                "image": png_data_url(x)}

    def _upload_tensor(self, uid: str, card) -> torch.Tensor:
        with self._lock:
            up = self._uploads.get(uid)
        if up is None:
            raise NotFound(f"unknown upload {uid!r}; upload the image again")
        c, h, w = card.input_size
        arr = load_image(up["bytes"], mode="RGB" if c == 3 else "L", size=(h, w))
        t = torch.from_numpy(np.array(arr)).float().div(255)
        return (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None]

    def model(self, name: str):
        return self.models.load(name)

    def card(self, name: str):
        return self.models.card(name)

    # --- attack jobs -----------------------------------------------------------------------------
    def check_attack(self, req: schemas.AttackRequest) -> dict:
        """Validate a request before queueing; returns the attack's parameters."""
        card = self.card(req.model)
        params = self._check_common(req, card)
        if (req.index is None) == (req.upload is None):
            raise ConfigError("give exactly one of index (a dataset image) or upload (an uploaded image)")
        sources = self.models.datasets(req.model)
        dataset = req.dataset or (self.default_dataset(req.model) if req.index is not None else None)
        if dataset is not None and dataset not in sources:
            raise ConfigError(f"model {req.model} runs on "
                              f"{', '.join(sources) + ' or uploads' if sources else 'uploads only'}"
                              f", not {dataset}")
        if req.target is not None and req.target >= card.num_classes:
            raise ConfigError(f"target must be a class of {req.model}: 0..{card.num_classes - 1}, got {req.target}")
        if req.upload is not None and req.upload not in self._uploads:
            raise NotFound(f"unknown upload {req.upload!r}; upload the image again")
        if req.index is not None:
            ds = self.dataset(dataset)
            if req.index >= len(ds):
                raise NotFound(f"index {req.index} out of range for {dataset} "
                               f"(test split has {len(ds)} images)")
        return params

    def _check_common(self, req, card) -> dict:
        """Names, surrogate and hyperparameters shared by single-image and batch requests."""
        if req.attack not in ATTACKS:
            raise unknown_name("attack", req.attack, ATTACKS)
        if req.interpreter not in INTERPRETERS:
            raise unknown_name("interpreter", req.interpreter, INTERPRETERS)
        if req.surrogate is not None:
            if not ATTACKS[req.attack].black_box:
                raise ConfigError(f"surrogate applies to black-box attacks only, not {req.attack!r}")
            if self.card(req.surrogate).dataset != card.dataset:
                raise ConfigError(f"surrogate {req.surrogate} is not trained on {card.dataset}")
        infos = {p["name"]: p for p in attack_params(req.attack)}
        valid = list(infos)
        params = dict(req.params)
        bad = sorted(set(params) & RESERVED)
        if bad:
            raise ConfigError(f"set {', '.join(bad)} with the request's own fields, not in params")
        for key, value in (("steps", req.steps), ("alpha", req.alpha)):
            if value is not None:
                if key not in valid:
                    raise ConfigError(f"attack {req.attack!r} has no {key} parameter; valid: {valid}")
                params[key] = value
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ConfigError(f"attack {req.attack!r} has no parameter(s) {unknown}; valid: {valid}")
        for key, value in params.items():
            params[key] = _typed(f"params.{key}", infos[key], value)
        return params

    # --- batch jobs: n seeded images through the library's attack job, saved as a run -------------
    def check_batch(self, req: schemas.BatchRequest) -> dict:
        card = self.card(req.model)
        params = self._check_common(req, card)
        entry = self.models.entry(req.model)
        if card.dataset not in idlsec.data.DATASETS or entry.options or entry.spec != req.model:
            raise ConfigError(f"batch runs take zoo models on their built-in dataset; {req.model} is not "
                              "one (attack its images one at a time)")
        self.dataset(card.dataset)  # the data must be at hand (ResourceError -> 404)
        return params

    def run_batch(self, job_id: str, req: schemas.BatchRequest, params: dict, root: Path, report) -> dict:
        from ..bench.job import AttackJob, run_attack_job

        card = self.card(req.model)
        surrogate = []
        if ATTACKS[req.attack].black_box:
            surrogate = [req.surrogate or self.default_surrogate(req.model)]
        job = AttackJob(model=req.model, dataset=card.dataset, interpreter=req.interpreter, attack=req.attack,
                        n=req.n, seed=req.seed, targeted=req.targeted, eps=req.eps, params=params,
                        batch_size=req.batch_size, device=self.device, surrogate=surrogate)
        name = "-".join([time.strftime("%Y%m%d-%H%M%S"), req.attack, req.interpreter, req.model, job_id[:6]])
        out = root / "lab" / re.sub(r"[^A-Za-z0-9._+-]", "_", name)
        bs = req.batch_size

        def progress(b, n, i, total):  # run_attack_job reports (batch start, n, step, steps)
            report(b + round(min(bs, n - b) * i / max(total, 1)), n, "attacking")

        report(0, req.n, "selecting images")
        result = run_attack_job(job, out, progress=False, callback=progress)
        summary = {k: v for k, v in result["summary"].items() if isinstance(v, (int, float, str, bool))}
        return clean({"job": job_id, "run_id": out.relative_to(root).as_posix(), "path": str(out),
                      "summary": summary})


    def describe(self, req: schemas.AttackRequest) -> str:
        src = f"upload {req.upload}" if req.upload else f"{req.dataset or self.card(req.model).dataset}[{req.index}]"
        return f"{req.attack} × {req.interpreter} on {req.model}, {src}, eps={req.eps * 255:.3g}/255"

    def run_attack(self, job_id: str, req: schemas.AttackRequest, params: dict, report) -> dict:
        card = self.card(req.model)
        report(0, 1, "loading model")
        model = self.model(req.model)
        classes = [str(i) for i in range(card.num_classes)]
        if req.upload is not None:
            x = self._upload_tensor(req.upload, card).to(self.device)
            true_label = None
            if card.classes:
                classes = list(card.classes)
            else:
                with contextlib.suppress(idlsec.IdlsecError):  # class names only; else numbers
                    classes = list(self.dataset(card.dataset).classes)
        else:
            ds = self.dataset(req.dataset or card.dataset)
            classes = list(ds.classes) or classes
            x, y = ds.get([req.index])
            x, true_label = x.to(self.device), (int(y[0]) if int(y[0]) >= 0 else None)
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        benign_pred = int(probs.argmax())
        label = true_label if true_label is not None else benign_pred
        if req.targeted:
            if req.target is not None:
                attacked = req.target
            else:
                g = torch.Generator().manual_seed(req.seed)
                attacked = (label + int(torch.randint(1, card.num_classes, (1,), generator=g))) % card.num_classes
        else:
            attacked = label
        surrogate = None
        if ATTACKS[req.attack].black_box:
            # the attacker queries the victim (with its interpreter) through the oracle only
            surrogate = req.surrogate or self.default_surrogate(req.model)
            report(0, 1, f"loading surrogate {surrogate}")
        entry = self.models.entry(req.model)  # the lab's name for it -> its spec and options
        options = {k: v for k, v in entry.options.items() if k != "weights"}
        spec = AttackSpec(model=entry.spec, weights=entry.options.get("weights"), model_options=options,
                          attack=req.attack, interpreter=req.interpreter, params=params,
                          eps=req.eps, targeted=req.targeted, seed=req.seed,
                          surrogates=(surrogate,) if surrogate else (), device=self.device)
        attack = build_attack(spec, model=model, loader=self.model)
        attack.callback = lambda i, total: report(i, total, "attacking")
        y_att = torch.tensor([attacked], dtype=torch.long, device=self.device)
        res = attack.run(x, y_att)
        report(1, 1, "measuring")
        rec = records_from_result(res, [req.index if req.index is not None else -1],
                                  true_labels=torch.tensor([label]))[0]
        with self._lock:
            self._adversarial[job_id] = {"model": req.model, "x": res.x.detach().cpu(),
                                         "x_adv": res.x_adv.detach().cpu(), "interpreter": req.interpreter}
            while len(self._adversarial) > self.keep_results:
                self._adversarial.popitem(last=False)
        delta = (res.x_adv - res.x)[0].detach().cpu()
        scale = 0.5 / max(float(delta.abs().max()), 1e-8)
        adv_probs = res.logits.softmax(1)[0]
        adv_pred = int(res.pred[0])
        skip = {"index", "label", "target", "label_attacked", "pred", "success", "iou_topk", "queries", "seconds"}
        metrics = {k: float(v) for k, v in rec.items() if k not in skip and isinstance(v, (int, float))
                   and not isinstance(v, bool)}
        iou = {f"{k:g}": float(v) for k, v in zip(DEFAULT_K_GRID, rec.get("iou_topk", []))}
        qh = res.info.get("query_history")
        out = {
            "job": job_id, "model": req.model, "dataset": None if req.upload else (req.dataset or card.dataset),
            "index": req.index, "upload": req.upload, "interpreter": req.interpreter, "attack": req.attack,
            "targeted": req.targeted, "params": {**params, "eps": req.eps, "seed": req.seed},
            "classes": classes, "true_label": true_label, "attacked_label": attacked,
            "benign": {"label": benign_pred, "name": _name(classes, benign_pred), "confidence": float(probs.max())},
            "adversarial": {"label": adv_pred, "name": _name(classes, adv_pred),
                            "confidence": float(adv_probs[adv_pred])},
            "success": bool(res.success[0]),
            "benign_image": png_data_url(res.x[0]), "adversarial_image": png_data_url(res.x_adv[0]),
            "perturbation_image": png_data_url(0.5 + scale * delta), "perturbation_scale": scale,
            "benign_map": map_data(res.benign_map[0] if res.benign_map is not None else None),
            "adversarial_map": map_data(res.adv_map[0] if res.adv_map is not None else None),
            "metrics": metrics, "iou_topk": iou,
            "queries": float(res.queries[0]) if res.queries is not None else None,
            "query_history": [float(q) for q in qh] if isinstance(qh, (list, tuple, torch.Tensor)) else None,
            "loss_history": [float(v) for v in res.loss_history][-2000:],
            "seconds": res.seconds, "surrogate": surrogate,
        }
        return clean(out)

    def default_surrogate(self, name: str) -> str:
        """Another of the lab's models trained on the same dataset, else the victim itself."""
        dataset = self.card(name).dataset
        for other in self.models.names():
            if other != name and dataset is not None and self.card(other).dataset == dataset:
                try:
                    self.model(other)
                except idlsec.IdlsecError:
                    continue
                return other
        return name

    # --- interpreter comparison ----------------------------------------------------------------
    def check_compare(self, job_id: str, names: list[str]) -> None:
        if job_id not in self._adversarial:
            raise Conflict(f"no adversarial example for job {job_id!r} (not finished, not an attack, or "
                             "expired)")
        for n in names:
            if n not in INTERPRETERS:
                raise unknown_name("interpreter", n, INTERPRETERS)

    def compare(self, new_id: str, job_id: str, names: list[str], report) -> dict:
        with self._lock:
            src = self._adversarial.get(job_id)
        if src is None:
            raise InputError(f"the adversarial example of job {job_id!r} has expired")
        model = self.model(src["model"])
        x, x_adv = src["x"].to(self.device), src["x_adv"].to(self.device)
        rows = []
        for i, name in enumerate(dict.fromkeys(names)):
            report(i, len(names), name)
            try:
                interp = get_interpreter(name, model)
                mb, ma = interp(x), interp(x_adv)
            except idlsec.IdlsecError as e:
                rows.append({"interpreter": name, "error": str(e)})
                continue
            curve = topk_iou_curve(ma, mb)
            rows.append({"interpreter": name, "benign_map": map_data(mb[0]), "adversarial_map": map_data(ma[0]),
                         "metrics": {"iou_topk_mean": float(curve.mean()), "map_l1": float(map_l1(ma, mb)[0]),
                                     "map_l2": float(map_l2(ma, mb)[0]), "spearman": float(spearman(ma, mb)[0])}})
        report(len(names), len(names), "done")
        return clean({"job": new_id, "source": job_id, "comparisons": rows})


def _typed(where: str, info: dict, value):
    """``value`` checked against a hyperparameter's description (:func:`attack_params`, which the
    schema states too): its kind (integral floats taken for ints), null only where it is nullable,
    its bounds and its choices."""
    kind, number = info["kind"], isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is None:
        if info["nullable"]:
            return None
        raise ConfigError(f"{where} may not be null")
    if kind == "bool" and isinstance(value, bool) or kind == "string" and isinstance(value, str):
        return value
    if kind == "choice":
        if not isinstance(value, str) or value not in info["choices"]:
            raise ConfigError(f"{where} must be one of {info['choices']}, got {value!r}")
        return value
    if kind == "int" and number and math.isfinite(value) and float(value).is_integer():
        value = int(value)
    elif not (kind == "float" and number and math.isfinite(value)):
        raise ConfigError(f"{where} must be {'an' if kind == 'int' else 'a'} {kind}, got {value!r}")
    lo, hi = info["min"], info["max"]
    if lo is not None and (value < lo or info["min_exclusive"] and value == lo) \
            or hi is not None and (value > hi or info["max_exclusive"] and value == hi):
        raise ConfigError(f"{where} = {value!r} is outside {'(' if info['min_exclusive'] else '['}"
                          f"{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}"
                          f"{')' if info['max_exclusive'] else ']'}")
    return value


def _name(classes, c: int) -> str:
    return classes[c] if 0 <= c < len(classes) else str(c)
