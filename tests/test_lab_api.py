"""The lab's HTTP API (idlsec.lab): schema, jobs, progress events, validation, uploads, runs, fuzz."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import time
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import idlsec
from idlsec.cli.serve import openapi_json
from idlsec.lab import schemas
from idlsec.lab.app import create_app

REPO = Path(__file__).resolve().parents[1]
MODEL = "cifar10-resnet20"
pytestmark = pytest.mark.skipif(not os.environ.get("IDLSEC_MIRROR"), reason="no local mirror (../shared)")


def png_bytes(w=40, h=30, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    return buf.getvalue()


def decode(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def wait(client, job_id, timeout=60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = client.get(f"/api/jobs/{job_id}").json()
        if s["state"] in ("done", "failed", "cancelled"):
            return s
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def attack(**kw) -> dict:
    return {"model": MODEL, "index": 0, "interpreter": "cam", "attack": "pgd", "steps": 2, **kw}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = root / "pgd-cam"
    run.mkdir()
    recs = [{"index": i, "label": i, "target": i + 1, "pred": i + 1, "success": True, "confidence": 0.9,
             "iou_topk": [0.1, 0.2], "iou_topk_mean": 0.15, "map_l1": 3.0 + i} for i in range(3)]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (run / "summary.json").write_text(json.dumps({"n": 3, "asr": 1.0, "queries_mean": math.nan,
                                                  "iou_topk_curve": {"0.05": 0.1},
                                                  "config": {"model": MODEL, "attack": "pgd", "eps": 0.03}}))
    (run / "examples.png").write_bytes(png_bytes())
    (run / "notes.txt").write_text("not a picture")
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g)
    save_file({"images": x, "adversarial": (x + 0.01).clamp(0, 1), "pred": torch.tensor([1, 2, 3]),
               "labels": torch.tensor([1, 2, 3]), "benign_maps": torch.rand(3, 1, 8, 8, generator=g),
               "adversarial_maps": torch.rand(3, 1, 8, 8, generator=g)}, str(run / "adversarial.safetensors"))
    (run / "plots").mkdir()
    (run / "plots" / "iou_vs_k.png").write_bytes(png_bytes(8, 8))
    bench = root / "suite" / "quscore"
    bench.mkdir(parents=True)
    from idlsec.bench.store import save_gallery, to_uint8

    save_gallery(bench, "cfg0001", 0, {"pos": torch.arange(2), "images": to_uint8(x[:2]),
                                        "adversarial": to_uint8(x[:2]), "pred": torch.tensor([4, 5])})
    (bench / "results.jsonl").write_text(
        "".join(json.dumps({"model": MODEL, "attack": "quscore", "index": i, "pos": i, "success": i < 2,
                            "queries": 100 * (i + 1), "iou_topk_mean": 0.5})
                + "\n" for i in range(3)) + "{broken line\n")
    return root


@pytest.fixture(scope="module")
def client(runs_dir):
    app = create_app(runs_dir, "cpu")
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def finished(client):
    """One finished attack job, shared by the tests that read a result."""
    job = client.post("/api/jobs", json=attack(index=3, target=5)).json()
    status = wait(client, job["id"])
    assert status["state"] == "done", status
    return job["id"]


def test_committed_openapi_schema_is_the_apps():
    app = create_app(None, "cpu", run_jobs=False)
    committed = (REPO / "web" / "src" / "api" / "openapi.json").read_text(encoding="utf-8")
    assert openapi_json(app) == committed, (
        "web/src/api/openapi.json is stale: run `idlsec serve --openapi web/src/api/openapi.json` "
        "and `npm run gen:api` in web/")


def test_registry_reads_the_library_registries(client):
    reg = client.get("/api/registry").json()
    info = idlsec.registry_info()
    # the zoo models whose weights are at hand, in the registry's order (see the model tests below)
    names = [m["name"] for m in reg["models"]]
    assert names == [n for n in info["models"] if n in names] and MODEL in names
    assert [i["name"] for i in reg["interpreters"]] == info["interpreters"]
    assert [a["name"] for a in reg["attacks"]] == info["attacks"]
    assert "folder:<path>" not in reg["datasets"]
    pgd = next(a for a in reg["attacks"] if a["name"] == "pgd")
    params = {p["name"]: p for p in pgd["params"]}
    assert {k: params["steps"][k] for k in ("name", "default", "kind", "min", "max", "advanced")} == {
        "name": "steps", "default": 10, "kind": "int", "min": 1, "max": 10_000, "advanced": False}
    assert params["alpha"]["unit"] == "1/255" and params["random_start"]["kind"] == "bool"
    qs = {p["name"]: p for p in next(a for a in reg["attacks"] if a["name"] == "quscore")["params"]}
    assert qs["preset"]["choices"] == ["idlsec", "released"] and qs["lambda_int"]["advanced"]
    assert all(p["help"] for p in qs.values()) and "surrogates" not in qs
    assert "eps" not in params and "callback" not in params
    assert "Madry" in pgd["doc"]


def test_dataset_info_and_image(client):
    info = client.get("/api/datasets/cifar10").json()
    assert info["size"] == 10_000 and info["classes"][3] == "cat"
    img = client.get("/api/datasets/cifar10/images/3").json()
    ds = idlsec.load_dataset("cifar10", "test")
    assert img["label"] == int(ds.labels[3]) and img["label_name"] == ds.classes[img["label"]]
    assert decode(img["image"]).size == (32, 32)
    assert client.get("/api/datasets/cifar10/images/10000").status_code == 404
    r = client.get("/api/datasets/nope")
    assert r.status_code == 404 and "unknown dataset 'nope'" in r.json()["detail"]


def test_attack_job_result(client, finished):
    r = client.get(f"/api/jobs/{finished}/result").json()
    assert r["true_label"] == int(idlsec.load_dataset("cifar10", "test").labels[3])
    assert r["attacked_label"] == 5 and r["targeted"] is True
    assert r["success"] == (r["adversarial"]["label"] == 5)
    for key in ("benign_image", "adversarial_image", "perturbation_image"):
        assert decode(r[key]).size == (32, 32)
    for key in ("benign_map", "adversarial_map"):
        m = r[key]
        assert (m["width"], m["height"]) == (8, 8) and len(m["values"]) == 64
        assert min(m["values"]) >= 0 and max(m["values"]) <= 1
    assert 0 <= r["metrics"]["iou_topk_mean"] <= 1
    assert r["metrics"]["linf"] <= 8 / 255 + 1e-6
    assert len(r["iou_topk"]) == 10 and len(r["loss_history"]) == 2
    assert r["queries"] is None
    assert r["classes"][5] == "dog"


def test_seeded_jobs_are_reproducible(client, finished):
    again = client.post("/api/jobs", json=attack(index=3, target=5)).json()
    assert wait(client, again["id"])["state"] == "done"
    a = client.get(f"/api/jobs/{finished}/result").json()
    b = client.get(f"/api/jobs/{again['id']}/result").json()
    assert a["metrics"] == b["metrics"] and a["adversarial_image"] == b["adversarial_image"]


def test_progress_events(client):
    job = client.post("/api/jobs", json=attack(index=1, steps=3)).json()
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = []
        for block in stream.read().decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
            if fields:
                events.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    ids = [e[0] for e in events]
    assert ids == sorted(ids)
    names = [e[1] for e in events]
    assert names[0] == "state" and names[-1] == "end" and "progress" in names
    assert events[-1][2]["state"] == "done"
    attacking = [e[2] for e in events if e[2]["message"] == "attacking"]
    assert attacking[-1]["done"] == attacking[-1]["total"] == 3


def test_one_event_stream_for_all_jobs():
    app = create_app(None, "cpu")
    with TestClient(app) as c:
        ids = [c.post("/api/jobs", json=attack(index=i, steps=2)).json()["id"] for i in (4, 5)]
        for i in ids:
            assert wait(c, i)["state"] == "done"
        app.state.queue.shutdown()  # ends the (otherwise endless) stream once it has caught up
        body = c.get("/api/events", headers={"Last-Event-ID": "0"}).text
    events = [dict(line.split(": ", 1) for line in block.splitlines())
              for block in body.split("\n\n") if block.startswith("id:")]
    data = [json.loads(e["data"]) for e in events]
    assert [int(e["id"]) for e in events] == sorted(int(e["id"]) for e in events)
    for i in ids:
        mine = [(e["event"], d) for e, d in zip(events, data) if d["job"] == i]
        assert mine[0][0] == "state" and mine[-1][0] == "end" and mine[-1][1]["state"] == "done"
        assert all(d["kind"] == "attack" for _, d in mine)


@pytest.mark.parametrize("body, code, message", [
    (attack(model="nope"), 400, "unknown model 'nope'"),
    (attack(attack="nope"), 400, "unknown attack 'nope'"),
    (attack(interpreter="nope"), 400, "unknown interpreter 'nope'"),
    (attack(eps=0), 422, "eps"),
    (attack(eps=0.9), 422, "eps"),
    (attack(eps="big"), 422, "eps"),
    (attack(steps=0), 422, "steps"),
    (attack(index=-1), 422, "index"),
    (attack(index=10**6), 404, "out of range"),
    (attack(index=None), 400, "exactly one of index"),
    (attack(upload="abc"), 400, "exactly one of index"),
    (attack(index=None, upload="abc"), 404, "unknown upload"),
    (attack(target=10), 400, "target must be a class"),
    (attack(dataset="fashion-mnist"), 400, "runs on cifar10 or uploads, not fashion-mnist"),
    (attack(params={"warp": 1}), 400, "no parameter(s) ['warp']"),
    (attack(params={"eps": 0.1}), 400, "request's own fields"),
    (attack(params={"alpha": [1]}), 422, "params"),
    (attack(colour="red"), 422, "colour"),
])
def test_invalid_requests_get_4xx_with_a_message(client, body, code, message):
    r = client.post("/api/jobs", json=body)
    assert r.status_code == code, r.text
    assert message in json.dumps(r.json()["detail"])


@pytest.mark.parametrize("params, message", [
    ({"alpha": -1.0}, "params.alpha = -1.0 is outside (0, 0.5]"),
    ({"edge_stages": 1}, "params.edge_stages must be one of ['both', 'warmup']"),
    ({"select": "first"}, "params.select must be one of ['best', 'last']"),
])
def test_parameter_values_are_checked_against_their_description_on_submission(client, params, message):
    r = client.post("/api/jobs", json=attack(attack="advedge", steps=None, params=params))
    assert r.status_code == 400 and message in r.json()["detail"], r.text


def test_bad_parameter_combination_fails_the_job_not_the_server(client):
    # each value is within its own description; AdvEdge (no hard edge mask) refuses the fallback
    job = client.post("/api/jobs", json=attack(attack="advedge", params={"edge_fallback": 1})).json()
    status = wait(client, job["id"])
    assert status["state"] == "failed" and "edge_fallback" in status["error"]
    r = client.get(f"/api/jobs/{job['id']}/result")
    assert r.status_code == 409 and "failed" in r.json()["detail"]


def test_uploads(client):
    r = client.post("/api/uploads", files={"file": ("notes.png", b"hello, not an image", "image/png")})
    assert r.status_code == 415 and "notes.png is not an image" in r.json()["detail"]
    r = client.post("/api/uploads", files={"file": ("empty.png", b"", "image/png")})
    assert r.status_code == 415 and "empty" in r.json()["detail"]
    big = b"\x89PNG" + b"0" * schemas.MAX_UPLOAD_BYTES
    r = client.post("/api/uploads", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
    assert client.post("/api/uploads").status_code == 422
    up = client.post("/api/uploads", files={"file": ("red.png", png_bytes(40, 30), "image/png")}).json()
    assert (up["width"], up["height"]) == (40, 30)
    job = client.post("/api/jobs", json=attack(index=None, upload=up["id"], targeted=False)).json()
    assert wait(client, job["id"])["state"] == "done"
    res = client.get(f"/api/jobs/{job['id']}/result").json()
    assert res["true_label"] is None and res["upload"] == up["id"]
    assert res["attacked_label"] == res["benign"]["label"]  # untargeted on an upload: its prediction
    assert decode(res["adversarial_image"]).size == (32, 32)


def test_black_box_attack_reports_queries_and_maps(client):
    if "quscore" not in idlsec.attacks.ATTACKS:
        pytest.skip("quscore is not registered")
    body = attack(attack="quscore", steps=None, targeted=False, surrogate="cifar10-resnet32",
                  params={"max_queries": 40, "mi_steps": 2, "init_rounds": 1})
    job = client.post("/api/jobs", json=body).json()
    status = wait(client, job["id"], timeout=120)
    assert status["state"] == "done", status
    r = client.get(f"/api/jobs/{job['id']}/result").json()
    assert r["surrogate"] == "cifar10-resnet32"
    assert r["queries"] is not None and 0 <= r["queries"] <= 40
    assert r["benign_map"]["width"] == 8 and 0 <= r["metrics"]["iou_topk_mean"] <= 1
    bad = client.post("/api/jobs", json={**body, "surrogate": "fmnist-cnn"})
    assert bad.status_code == 400 and "not trained on cifar10" in bad.json()["detail"]
    assert client.post("/api/jobs", json=attack(surrogate=MODEL)).status_code == 400  # pgd is white-box


def test_batch_job_saves_a_run(client, runs_dir):
    body = {"model": MODEL, "interpreter": "cam", "attack": "pgd", "n": 2, "steps": 2, "batch_size": 1}
    job = client.post("/api/batches", json=body).json()
    assert job["kind"] == "batch"
    assert wait(client, job["id"])["state"] == "done"
    out = client.get(f"/api/jobs/{job['id']}/batch").json()
    assert out["run_id"].startswith("lab/") and out["summary"]["n"] == 2
    assert (runs_dir / out["run_id"] / "summary.json").is_file()
    detail = client.get("/api/runs/detail", params={"id": out["run_id"]}).json()
    assert detail["n_records"] == 2 and detail["config"]["attack"] == "pgd"
    assert len(client.get("/api/runs/examples", params={"id": out["run_id"]}).json()["examples"]) == 2
    assert client.post("/api/batches", json={**body, "n": 0}).status_code == 422
    assert client.post("/api/batches", json={**body, "attack": "nope"}).status_code == 400
    with TestClient(create_app(None, "cpu", run_jobs=False)) as c:
        r = c.post("/api/batches", json=body)
        assert r.status_code == 409 and "--runs DIR" in r.json()["detail"]


def test_cancel_queued_and_running_jobs(client):
    long = client.post("/api/jobs", json=attack(steps=schemas.MAX_STEPS)).json()
    queued = client.post("/api/jobs", json=attack(steps=schemas.MAX_STEPS)).json()
    small = client.post("/api/jobs", json=attack(index=2)).json()
    assert client.get(f"/api/jobs/{queued['id']}").json()["position"] is not None
    assert client.post(f"/api/jobs/{queued['id']}/cancel").json()["state"] == "cancelled"
    end = time.monotonic() + 30
    while client.get(f"/api/jobs/{long['id']}").json()["state"] != "running":
        assert time.monotonic() < end
        time.sleep(0.02)
    client.post(f"/api/jobs/{long['id']}/cancel")
    assert wait(client, long["id"])["state"] == "cancelled"
    assert wait(client, small["id"])["state"] == "done"  # the queue goes on
    assert client.post("/api/jobs/nope/cancel").status_code == 404
    listed = [j["id"] for j in client.get("/api/jobs").json()]
    assert {long["id"], queued["id"], small["id"]} <= set(listed)


def test_full_queue_answers_429():
    app = create_app(None, "cpu", max_queued=2, run_jobs=False)
    with TestClient(app) as c:
        assert [c.post("/api/jobs", json=attack()).status_code for _ in range(3)] == [202, 202, 429]
        assert "already queued" in c.post("/api/jobs", json=attack()).json()["detail"]


def test_compare_interpreters(client, finished):
    r = client.post(f"/api/jobs/{finished}/compare", json={"interpreters": ["cam", "grad"]})
    assert r.status_code == 202 and r.json()["kind"] == "compare"
    assert wait(client, r.json()["id"])["state"] == "done"
    comp = client.get(f"/api/jobs/{r.json()['id']}/comparison").json()
    assert comp["source"] == finished
    rows = {c["interpreter"]: c for c in comp["comparisons"]}
    result = client.get(f"/api/jobs/{finished}/result").json()
    assert rows["cam"]["metrics"]["iou_topk_mean"] == pytest.approx(result["metrics"]["iou_topk_mean"], abs=1e-6)
    assert rows["grad"]["benign_map"]["width"] == 32
    assert client.post(f"/api/jobs/{finished}/compare", json={"interpreters": ["nope"]}).status_code == 400
    assert client.post("/api/jobs/nope/compare", json={"interpreters": ["cam"]}).status_code == 404
    assert client.post(f"/api/jobs/{finished}/compare", json={"interpreters": []}).status_code == 422
    assert client.get(f"/api/jobs/{finished}/comparison").status_code == 404  # an attack job


def test_runs_browser(client):
    runs = {r["id"]: r for r in client.get("/api/runs").json()}
    assert {"pgd-cam", "suite/quscore"} <= set(runs)
    pgd = runs["pgd-cam"]
    assert pgd["summary"]["asr"] == 1.0 and pgd["summary"]["queries_mean"] is None  # NaN -> null
    assert pgd["config"] == {"model": MODEL, "attack": "pgd", "eps": 0.03}
    assert pgd["images"] == ["examples.png", "plots/iou_vs_k.png"]
    assert pgd["n_records"] == 3 and not pgd["has_queries"]
    bench = runs["suite/quscore"]
    assert bench["has_queries"] and bench["config"] == {"model": MODEL, "attack": "quscore"}
    assert bench["summary"]["asr"] == pytest.approx(2 / 3)  # aggregated from records: no summary.json
    assert bench["summary"]["queries_mean"] == 200 and "index_mean" not in bench["summary"]
    assert bench["summary"]["iou_topk_mean"] == pytest.approx(0.5) and "iou_topk_mean_mean" not in bench["summary"]
    detail = client.get("/api/runs/detail", params={"id": "pgd-cam"}).json()
    assert [r["map_l1"] for r in detail["records"]] == [3.0, 4.0, 5.0]
    assert detail["records"][0]["iou_topk"] == [0.1, 0.2]
    for name in pgd["images"]:
        img = client.get("/api/runs/file", params={"id": "pgd-cam", "name": name})
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    for params in ({"id": "pgd-cam", "name": "notes.txt"}, {"id": "pgd-cam", "name": "../pgd-cam/examples.png"},
                   {"id": "..", "name": "examples.png"}):
        assert client.get("/api/runs/file", params=params).status_code == 404
    assert client.get("/api/runs/detail", params={"id": "/etc"}).status_code == 404


def test_run_examples_come_from_saved_tensors(client):
    ex = client.get("/api/runs/examples", params={"id": "pgd-cam"}).json()
    assert ex["configs"] == [] and [e["position"] for e in ex["examples"]] == [0, 1, 2]
    first = ex["examples"][0]
    assert first["pred"] == 1 and decode(first["adversarial_image"]).size == (32, 32)
    assert first["benign_map"]["width"] == 8 and len(first["adversarial_map"]["values"]) == 64
    bench = client.get("/api/runs/examples", params={"id": "suite/quscore"}).json()
    assert bench["configs"] == ["cfg0001"] and bench["config"] == "cfg0001"
    assert [e["pred"] for e in bench["examples"]] == [4, 5] and bench["examples"][0]["benign_map"] is None
    assert client.get("/api/runs/examples", params={"id": "suite/quscore", "config": "nope"}).status_code == 404
    assert client.get("/api/runs/examples", params={"id": "nope"}).status_code == 404


def test_unknown_jobs_are_404(client):
    for path in ("/api/jobs/nope", "/api/jobs/nope/result", "/api/jobs/nope/events"):
        r = client.get(path)
        assert r.status_code == 404 and "unknown job" in r.json()["detail"]


def test_loopback_server_refuses_foreign_host_headers():
    app = create_app(None, "cpu", run_jobs=False, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/jobs").status_code == 200
        assert c.get("/api/jobs", headers={"host": "evil.example:8765"}).status_code == 400


def test_serves_the_built_app(client):
    r = client.get("/")
    assert r.status_code == 200 and "<div id=\"root\">" in r.text


# --- fuzz: requests drawn from the OpenAPI schema (and junk) never get a 5xx -----------------------
def _json_values():
    return st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                        max_leaves=6)


def _from_schema(schema, spec, name=""):
    """A hypothesis strategy for a JSON-schema fragment: mostly valid, sometimes not."""
    if "$ref" in schema:
        return _from_schema(spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]], spec, name)
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, spec, name) for s in schema["anyOf"]])
    names = {"model": idlsec.registry_info()["models"], "attack": idlsec.registry_info()["attacks"],
             "interpreter": idlsec.registry_info()["interpreters"], "dataset": ["cifar10", "fashion-mnist"]}
    t = schema.get("type")
    if t == "string":
        base = st.text(max_size=schema.get("maxLength", 20) + 2)
        return st.sampled_from(names[name]) | base if name in names else base
    if t == "integer":
        return st.integers(schema.get("minimum", -5) - 1, schema.get("maximum", 10**6) + 1)
    if t == "number":
        return st.floats(schema.get("minimum", schema.get("exclusiveMinimum", -1.0)) - 0.1,
                         schema.get("maximum", 10.0) + 0.1) | st.floats()
    if t == "boolean":
        return st.booleans()
    if t == "null":
        return st.none()
    if t == "array":
        item = "interpreter" if name == "interpreters" else name
        return st.lists(_from_schema(schema.get("items", {}), spec, item), max_size=schema.get("maxItems", 4) + 1)
    if t == "object" and "properties" in schema:
        required = set(schema.get("required", []))
        props = {k: _from_schema(v, spec, k) for k, v in schema["properties"].items()}
        return st.fixed_dictionaries({k: v for k, v in props.items() if k in required},
                                     optional={k: v for k, v in props.items() if k not in required})
    if t == "object":
        return st.dictionaries(st.text(max_size=12), _json_values(), max_size=3)
    return _json_values()


def _operations(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if path.endswith("/events"):  # a stream; its 404 path is checked in test_unknown_jobs_are_404
                continue
            yield path, method, op


def test_fuzz_api_from_openapi_schema_finds_no_5xx(runs_dir):
    app = create_app(runs_dir, "cpu", max_queued=8, run_jobs=False)
    spec = app.openapi()
    ops = list(_operations(spec))
    assert len(ops) >= 12

    valid_jobs = st.fixed_dictionaries(
        {"model": st.just(MODEL), "index": st.integers(0, 9999), "attack": st.just("pgd"),
         "interpreter": st.sampled_from(idlsec.registry_info()["interpreters"])},
        optional={"eps": st.floats(1e-4, schemas.MAX_EPS), "steps": st.integers(1, schemas.MAX_STEPS),
                  "targeted": st.booleans(), "target": st.integers(0, 9), "seed": st.integers(0, 2**31 - 1),
                  "params": st.fixed_dictionaries({}, optional={"alpha": _json_values(), "random_start": st.booleans()})})

    @st.composite
    def requests(draw):
        path, method, op = draw(st.sampled_from(ops))
        url = path
        query = {}
        for p in op.get("parameters", []):
            value = draw(_from_schema(p["schema"], spec, p["name"]) | st.text(max_size=6))
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", quote(str(value), safe="") or "x")
            elif draw(st.booleans()) or p.get("required"):
                query[p["name"]] = str(value)
        kwargs = {"params": query}
        body = op.get("requestBody", {}).get("content", {})
        if "application/json" in body:
            value = draw(_from_schema(body["application/json"]["schema"], spec) | _json_values()
                         | (valid_jobs if path == "/api/jobs" else st.nothing()))
            kwargs["content"] = json.dumps(value)
            kwargs["headers"] = {"content-type": "application/json"}
        elif "multipart/form-data" in body:
            data = draw(st.binary(max_size=64) | st.just(png_bytes(3, 3)))
            kwargs["files"] = {draw(st.sampled_from(["file", "other"])): ("f.png", data, "image/png")}
        return method, url, kwargs

    seen: dict[int, int] = {}
    with TestClient(app, raise_server_exceptions=False) as c:
        @settings(max_examples=250, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(requests())
        def check(req):
            method, url, kwargs = req
            r = c.request(method, url, **kwargs)
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
            assert r.status_code < 500, f"{method.upper()} {url} {kwargs} -> {r.status_code} {r.text[:300]}"
            if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
                assert r.json().get("detail"), r.text

        check()
    # the fuzz reaches past request validation: accepted jobs, engine-level 400s, found resources
    assert seen.get(202, 0) and seen.get(400, 0) and seen.get(200, 0) and seen.get(422, 0), seen


def test_cli_serve_writes_the_schema_and_checks_the_port(tmp_path, capsys):
    from idlsec.cli import main

    out = tmp_path / "openapi.json"
    assert main(["serve", "--openapi", str(out)]) == 0
    assert json.loads(out.read_text())["info"]["title"] == "idlsec lab"
    assert main(["serve", "--port", "0"]) == 2
    assert "argument --port: expected an integer in 1..65535" in capsys.readouterr().err


# --- which models the lab offers (idlsec serve --model / --models-file) -------------------------
def _folder(root: Path, sizes=((40, 30), (50, 20))) -> Path:
    """An image folder of RGB PNGs of mixed sizes in two class sub-folders, named after two of
    Fashion-MNIST's classes (sub-folder names are mapped through the model's class names)."""
    for i, cls in enumerate(["sandal", "sneaker"]):
        (root / cls).mkdir(parents=True)
        for j, (w, h) in enumerate(sizes):
            Image.new("RGB", (w, h), (60 * i + 20 * j, 100, 200)).save(root / cls / f"{j}.png")
    return root


def _entries(argv):
    from idlsec.cli import build_parser
    from idlsec.cli.serve import model_entries

    return model_entries(build_parser().parse_args(["serve", *argv]))


def test_default_registry_offers_exactly_the_zoo_models_that_load(client):
    from idlsec.models import get_card, load_model

    offered = {m["name"]: m for m in client.get("/api/registry").json()["models"]}
    for name in idlsec.registry_info()["models"]:
        if name in offered:
            load_model(name)  # raises if the lab offered a model that cannot run
            assert offered[name]["datasets"] == [get_card(name).dataset]
            assert offered[name]["spec"] == name and offered[name]["weights"] is None
        else:  # left out: its weights are not at hand
            with pytest.raises(idlsec.IdlsecError, match="weights|not found|does not exist"):
                load_model(name)


def test_serve_models_from_the_command_line_with_an_image_folder(tmp_path):
    folder = _folder(tmp_path / "pets")
    entries = _entries(["--model", MODEL, "--model", "fmnist-cnn", "--weights", "random", "--name", "fm",
                        "--dataset", f"folder:{folder}"])
    with TestClient(create_app(None, "cpu", models=entries)) as c:
        reg = c.get("/api/registry").json()
        by = {m["name"]: m for m in reg["models"]}
        assert list(by) == [MODEL, "fm"]
        assert by["fm"]["spec"] == "fmnist-cnn" and by["fm"]["weights"] == "random"
        assert by["fm"]["datasets"] == ["fashion-mnist", "folder:pets"]
        assert by[MODEL]["datasets"] == ["cifar10"]
        assert "folder:pets" in reg["datasets"]
        info = c.get("/api/datasets/folder:pets").json()
        assert info["size"] == 4 and info["classes"][5] == "sandal" and info["classes"][7] == "sneaker"
        img = c.get("/api/datasets/folder:pets/images/3").json()
        assert decode(img["image"]).size == (28, 28) and decode(img["image"]).mode == "L"  # fm's input
        assert img["label_name"] == "sneaker"
        # the folder belongs to fm: another model cannot take it; unknown folders are unknown datasets
        r = c.post("/api/jobs", json=attack(dataset="folder:pets"))
        assert r.status_code == 400 and "runs on cifar10 or uploads, not folder:pets" in r.json()["detail"]
        assert c.get("/api/datasets/folder:nope").status_code == 404
        job = c.post("/api/jobs", json=attack(model="fm", dataset="folder:pets", index=2)).json()
        assert wait(c, job["id"])["state"] == "done"
        res = c.get(f"/api/jobs/{job['id']}/result").json()
        assert res["dataset"] == "folder:pets" and res["true_label"] == 7
        assert decode(res["adversarial_image"]).size == (28, 28)
        # a model given with options is not a zoo model: no batch runs (they load zoo models by name)
        r = c.post("/api/batches", json={"model": "fm", "interpreter": "cam", "attack": "pgd", "n": 2})
        assert r.status_code == 400


def test_models_file(tmp_path):
    from idlsec.lab.models import read_models_file

    _folder(tmp_path / "imgs")
    f = tmp_path / "models.yaml"
    f.write_text(f"- {MODEL}\n- model: fmnist-cnn\n  weights: random\n  name: fm\n  datasets: [folder:imgs]\n")
    entries = read_models_file(f)
    assert [e.name for e in entries] == [MODEL, "fm"]
    assert entries[1].datasets == (f"folder:{tmp_path / 'imgs'}",)  # relative to the file
    from idlsec.lab.models import LabModels

    lab = LabModels(entries)
    assert lab.datasets("fm") == ["fashion-mnist", "folder:imgs"]
    f.write_text("- model: fmnist-cnn\n  wieghts: random\n")
    with pytest.raises(idlsec.ConfigError, match=r"unknown key\(s\) \['wieghts'\]; valid: .*'weights'"):
        read_models_file(f)
    f.write_text("- model: fmnist-cnn\n  weights: missing.safetensors\n")
    with pytest.raises(idlsec.IdlsecError, match="missing.safetensors"):
        LabModels(read_models_file(f))  # checked when the lab starts, not in a job
    f.write_text(f"- {MODEL}\n- {MODEL}\n")
    with pytest.raises(idlsec.ConfigError, match="two models are called"):
        LabModels(read_models_file(f))


def test_cli_serve_model_options_belong_to_the_preceding_model(capsys):
    from idlsec.cli import main

    with pytest.raises(SystemExit) as e:
        _entries(["--weights", "random", "--model", MODEL])
    assert e.value.code == 2 and "put it after the --model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _entries(["--model", MODEL, "--weights", "a", "--weights", "b"])
    assert "given twice for --model" in capsys.readouterr().err
    # a model that cannot load stops the server before it listens
    assert main(["serve", "--model", MODEL, "--weights", "/nonexistent/w.th"]) == 2
    assert "/nonexistent/w.th" in capsys.readouterr().err
    assert main(["serve", "--model", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


BYOM = '''
import torch
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))
'''


def test_user_module_on_uploads_and_a_folder(tmp_path):
    (tmp_path / "net.py").write_text(BYOM)
    folder = _folder(tmp_path / "shots")
    entries = _entries(["--model", f"{tmp_path / 'net.py'}:build", "--weights", "random", "--input-size",
                        "1,64,64", "--name", "mine", "--dataset", f"folder:{folder}", "--image-labels", "none"])
    with TestClient(create_app(None, "cpu", models=entries)) as c:
        (m,) = c.get("/api/registry").json()["models"]
        assert m["dataset"] is None and m["datasets"] == ["folder:shots"]
        assert m["input_size"] == [1, 64, 64] and m["num_classes"] == 3
        img = c.get("/api/datasets/folder:shots/images/0").json()
        assert decode(img["image"]).size == (64, 64)
        up = c.post("/api/uploads", files={"file": ("x.png", png_bytes(90, 50), "image/png")}).json()
        for body in ({"index": None, "upload": up["id"]}, {"index": 1}):
            job = c.post("/api/jobs", json=attack(model="mine", interpreter="grad", targeted=False, **body)).json()
            assert wait(c, job["id"])["state"] == "done", c.get(f"/api/jobs/{job['id']}").json()
            assert decode(c.get(f"/api/jobs/{job['id']}/result").json()["adversarial_image"]).size == (64, 64)
