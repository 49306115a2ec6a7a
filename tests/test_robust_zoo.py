"""The robust zoo entries (issue 18, item 2): packaged weights that resolve, match their SHA-256,
load and classify; cards whose figures are those of the committed benchmark run
(benchmarks/robust_zoo.py); the per-image outputs of the robustness helpers behind it."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from idlsec.data.resolve import file_digest
from idlsec.defenses.robustness import autoattack_accuracy, pgd_accuracy
from idlsec.errors import ChecksumError
from idlsec.models import get_card, load_model
from idlsec.models.zoo import WEIGHTS_DIR, _check_packaged

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "results" / "runs" / "robust-zoo"
ROBUST = ["cifar10-resnet20-at", "cifar10-resnet20-idlsat"]


def _script():
    spec = importlib.util.spec_from_file_location("robust_zoo", ROOT / "benchmarks" / "robust_zoo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ROBUST)
def test_robust_entry_resolves_matches_its_sha256_and_loads(name):
    card = get_card(name)
    path = WEIGHTS_DIR / card.packaged
    meta = json.loads(path.with_suffix(".json").read_text())
    assert path.is_file() and file_digest(path) == meta["sha256"]
    assert card.dataset == "cifar10" and card.cam_layer == "net.layer3"
    assert meta["command"].startswith("idlsec train") and meta["seed"] == 0
    model = load_model(name)
    out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    standard = load_model("cifar10-resnet20", weights="random")
    assert not torch.equal(model.net.linear.weight, standard.net.linear.weight)


def test_a_tampered_packaged_file_is_refused(tmp_path):
    src = WEIGHTS_DIR / get_card("cifar10-resnet20-at").packaged
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
    _check_packaged(dst)  # intact: accepted
    data = bytearray(dst.read_bytes())
    data[-1] ^= 1
    dst.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256"):
        _check_packaged(dst)


@pytest.mark.parametrize("name", ROBUST)
def test_robust_entry_classifies_real_test_images(name, cifar_test):
    x, y = cifar_test.get(cifar_test.sample(64, seed=1))
    with torch.no_grad():
        acc = (load_model(name)(x).argmax(1) == y).float().mean()
    assert acc >= 0.5  # its card: about 0.7 on the 10,000 test images


@pytest.mark.parametrize("name", ROBUST)
def test_card_figures_are_the_benchmark_runs(name):
    """The card's figures are recomputed from the committed records of benchmarks/robust_zoo.py."""
    mod = _script()
    summary = mod.summarize(mod.read_records(RUN))["models"][name]
    card = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())["benchmark"]
    assert card["command"].startswith("python benchmarks/robust_zoo.py")
    for key in ("clean_accuracy", "pgd20_accuracy", "autoattack_accuracy", "n", "clean_n"):
        assert card[key] == summary[key], key
    assert summary["autoattack"]["version"] in ("fast", "standard")
    # AutoAttack is the stronger attack: on the images it ran on, no more robust than PGD-20 there
    aa = [r for r in mod.read_records(RUN) if r["kind"] == "robust" and r["model"] == name and "aa" in r]
    assert len(aa) == summary["autoattack"]["n"]
    pgd_there = sum(r["pgd20"] for r in aa) / len(aa)
    assert 0 < summary["autoattack_accuracy"] <= pgd_there + 0.02
    std = mod.summarize(mod.read_records(RUN))["models"]["cifar10-resnet20"]
    assert summary["pgd20_accuracy"] > std["pgd20_accuracy"]


def test_summarize_counts_per_image_records():
    mod = _script()
    recs = [{"kind": "clean", "model": "m", "index": i, "correct": i < 3} for i in range(4)]
    recs += [{"kind": "robust", "model": "m", "index": i, "label": 0, "clean": True, "pgd20": i == 0,
              "aa": {"clean": True, "apgd-ce": i == 0, "square": False}, "aa_version": "fast",
              "aa_steps": 2, "aa_queries": 5} for i in range(2)]
    recs += [{"kind": "idls", "model": "m", "attack": "adv2", "interpreter": "cam", "params": {},
              "index": i, "label": 0, "target": 1, "success": i == 1, "iou": 0.5 * i} for i in range(2)]
    recs += [{"kind": "latency", "what": "m", "batch": 1, "cpu_ms_per_image": 2.0}]
    d = mod.summarize(recs)
    m = d["models"]["m"]
    assert (m["clean_accuracy"], m["pgd20_accuracy"], m["autoattack_accuracy"]) == (0.75, 0.5, 0.0)
    assert m["autoattack"]["after"]["apgd-ce"] == 0.5 and m["autoattack"]["n"] == 2
    assert m["idls"]["adv2/cam"] == {"n": 2, "asr": 0.5, "iou_all": 0.25, "iou_successes": 0.5, "params": {}}
    assert d["latency"] == {"m": {"batch 1": 2.0}}


def test_per_image_outputs_agree_with_the_aggregates(tiny_model):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(10, 3, 32, 32, generator=g)
    y = tiny_model(x).argmax(1)
    y[:3] = (y[:3] + 1) % 10  # three clean mistakes
    pgd = pgd_accuracy(tiny_model, x, y, eps=2 / 255, steps=3, per_image=True)
    assert sum(pgd["clean_correct"]) / 10 == pytest.approx(pgd["clean_accuracy"])
    assert sum(pgd["robust_correct"]) / 10 == pytest.approx(pgd["robust_accuracy"])
    assert not any(r and not c for r, c in zip(pgd["robust_correct"], pgd["clean_correct"]))
    aa = autoattack_accuracy(tiny_model, x, y, eps=2 / 255, version="fast", steps=2, queries=5, per_image=True)
    assert list(aa["correct"]) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert sum(aa["correct"]["square"]) / 10 == pytest.approx(aa["robust_accuracy"])
    assert "correct" not in autoattack_accuracy(tiny_model, x[:2], y[:2], eps=2 / 255, version="fast", steps=1,
                                                queries=2)


def test_autoattack_workers_share_chunks_through_claims(tmp_path, monkeypatch):
    """A chunk another worker has claimed is skipped, a finished one is read back, the rest run."""
    from argparse import Namespace

    import idlsec.defenses.robustness as robustness

    mod = _script()
    calls = []

    def fake(model, x, y, **kw):
        calls.append(x.shape[0])
        return {"correct": {"clean": [True] * x.shape[0]}, "version": "fast", "steps": 1, "queries": 1}

    monkeypatch.setattr(robustness, "autoattack_accuracy", fake)
    a = Namespace(aa="fast", aa_steps=1, aa_queries=1, aa_n=7, aa_chunk=2, aa_stride="0/1", aa_budget_s=None, seed=0)
    name = lambda s, e: tmp_path / f"fast-1-1-seed0-{s}-{e}.json"  # noqa: E731
    name(2, 4).with_suffix(".claim").touch()  # taken by a worker beside this one
    name(4, 6).write_text(json.dumps({"correct": {"clean": [False, False]}}))  # done earlier
    out = mod._autoattack_chunks(None, torch.zeros(7, 1), torch.zeros(7), a, lambda msg: None, tmp_path)
    assert calls == [2, 1]  # chunks 0-2 and 6-7 only
    assert out["correct"]["clean"] == [True, True, False, False, True]
    assert name(0, 2).is_file() and name(0, 2).with_suffix(".claim").is_file()


def test_parts_from_run_regroup_the_committed_records(tmp_path):
    """``--recompute``: every other part is rebuilt from the committed records exactly as the
    parts wrote them (a model's own rows, each transform's, the latency rows), the recomputed
    one is not, and the assembled records are the committed ones again."""
    import gzip

    mod = _script()
    recs = [{"kind": "clean", "model": "a", "index": 0, "correct": True},
            {"kind": "robust", "model": "a", "index": 0, "label": 1, "clean": True, "pgd20": False},
            {"kind": "clean", "model": "b", "index": 0, "correct": False},
            {"kind": "clean", "model": "a", "defense": "jpeg", "index": 0, "correct": True},
            {"kind": "latency", "what": "a", "batch": 1, "cpu_ms_per_image": 1.0}]
    (tmp_path / "parts").mkdir()
    with gzip.open(tmp_path / "records.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "meta.json").write_text(json.dumps({"command": "c", "args": {"n": 1},
                                                    "seconds": {"model-a": {"wall_s": 3.0, "cpu_s": 2.0}}}))
    keys = ["model-a", "model-b", "transform-jpeg", "latency"]
    assert mod.parts_from_run(tmp_path, keys, {"model-b"}) == ["model-a", "transform-jpeg", "latency"]
    part = lambda k: json.loads((tmp_path / "parts" / f"{k}.json").read_text())  # noqa: E731
    assert part("model-a")["records"] == recs[:2] and part("model-a")["cpu_s"] == 2.0
    assert part("transform-jpeg")["records"] == [recs[3]] and part("latency")["records"] == [recs[4]]
    assert not (tmp_path / "parts" / "model-b.json").exists()
    rebuilt = part("model-a")["records"] + [recs[2]] + part("transform-jpeg")["records"] + part("latency")["records"]
    assert sorted(map(json.dumps, rebuilt)) == sorted(map(json.dumps, recs))


def test_a_worker_out_of_budget_leaves_the_next_chunk_unclaimed(tmp_path, monkeypatch):
    """A worker that stops for its CPU budget must not claim the chunk it will not run (another
    worker would then skip it and the assembled run would miss its images)."""
    from argparse import Namespace

    import idlsec.defenses.robustness as robustness

    mod = _script()
    monkeypatch.setattr(robustness, "autoattack_accuracy", lambda model, x, y, **kw: {
        "correct": {"clean": [True] * x.shape[0]}, "version": "fast", "steps": 1, "queries": 1})
    a = Namespace(aa="fast", aa_steps=1, aa_queries=1, aa_n=6, aa_chunk=2, aa_stride="0/1", aa_budget_s=0.0, seed=0)
    out = mod._autoattack_chunks(None, torch.zeros(6, 1), torch.zeros(6), a, lambda msg: None, tmp_path)
    assert out["correct"]["clean"] == [True, True]  # the first chunk, then the budget is spent
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast-1-1-seed0-0-2.claim", "fast-1-1-seed0-0-2.json"]
