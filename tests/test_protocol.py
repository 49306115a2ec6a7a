"""The evaluation protocol (docs/protocol.md): several seeds give pooled intervals; tuning images
(split 'val', carved from the training set) are never reporting images (split 'test')."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
import torch

from _bench_util import write_suite
from conftest import needs_mirror
from idlsec.bench.runner import run_suite
from idlsec.bench.suite import load_suite
from idlsec.data import load_dataset, select_images, validation_indices
from idlsec.metrics.stats import bootstrap_ci
from idlsec.report.build import write_report

ROOT = Path(__file__).resolve().parents[1]
SEEDS_SUITE = """
name: seeds
settings: {n: 3, eps: 8/255, batch_size: 3, gallery: 1, params: {steps: 2}}
seeds: [0, 1, 2]
models: [cifar10-resnet20]
interpreters: [cam]
attacks: [pgd]
"""


@needs_mirror
def test_a_suite_with_three_seeds_reports_pooled_intervals(tmp_path):
    run_suite(load_suite(write_suite(tmp_path, SEEDS_SUITE)), tmp_path / "run", device="cpu",
              log=lambda m: None)
    paths = write_report(tmp_path / "run", html=False)
    with open(paths["table_csv"]) as f:
        per_seed = list(csv.DictReader(f))
    with open(paths["table_pooled_csv"]) as f:
        (pooled,) = list(csv.DictReader(f))
    assert sorted(r["seed"] for r in per_seed) == ["0", "1", "2"] and pooled["seed"] == "0,1,2"
    assert all(r["iou_topk_mean_ci95_lo"] != "" for r in per_seed)  # per configuration
    recs = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 9 and len({r["seed"] for r in recs}) == 3
    # pooled: the interval over all nine images, recomputed here from the records
    lo, hi = bootstrap_ci([r["iou_topk_mean"] for r in recs])
    assert float(pooled["n"]) == 9
    assert float(pooled["iou_topk_mean_ci95_lo"]) == pytest.approx(lo)
    assert float(pooled["iou_topk_mean_ci95_hi"]) == pytest.approx(hi)
    assert lo <= float(pooled["iou_topk_mean"]) <= hi
    md = paths["table_md"].read_text()
    assert "## 95% bootstrap intervals, seeds pooled" in md and "| seeds |" in md
    row = next(ln for ln in md.splitlines() if "| 0,1,2 |" in ln)
    assert f"[{lo:.2f}, {hi:.2f}]" in row


def _image_keys(images: torch.Tensor) -> set:
    flat = (images * 255).round().reshape(images.shape[0], -1).long()
    w = torch.randint(1, 2**31 - 1, (flat.shape[1],), generator=torch.Generator().manual_seed(1))
    return set((flat * w).sum(1).tolist())


@needs_mirror
def test_tuning_and_reporting_images_are_disjoint():
    """The images a tuning suite selects (split val) are training images, never one of the test
    images a reporting suite selects, for every seed; the suites say so in their split."""
    tune, report = load_suite(ROOT / "benchmarks" / "grad-levers.yaml"), load_suite(
        ROOT / "benchmarks" / "whitebox-seeds.yaml")
    assert {c.split for c in tune.configs} == {"val"}
    assert {c.split for c in report.configs} == {"test"}
    assert len({c.seed for c in report.configs}) >= 3
    val, test, train = (load_dataset("cifar10", s) for s in ("val", "test", "train"))
    vidx = validation_indices(len(train))
    n = 64
    for seed in (0, 1, 2):
        sv, st = select_images(val, n, seed=seed), select_images(test, n, seed=seed)
        # val indices are training indices ...
        assert torch.equal(val.images[sv.indices], train.images[vidx[sv.indices]])
        # ... and no tuning image is a reporting image
        assert not _image_keys(sv.x) & _image_keys(st.x)


def test_committed_tuning_and_reporting_runs_use_disjoint_splits():
    """The committed records: the lever search ran on val, the reported table on test."""
    runs = ROOT / "benchmarks" / "results" / "runs"
    if not (runs / "grad-levers" / "results.jsonl.gz").is_file():
        pytest.skip("no committed grad-levers run")
    splits = {}
    for name in ("grad-levers", "whitebox-seeds"):
        meta = json.loads((runs / name / "suite.json").read_text())
        by_key = {c["key"]: c["split"] for c in meta["configs"]}
        with gzip.open(runs / name / "results.jsonl.gz", "rt") as f:
            splits[name] = {by_key[json.loads(x)["config"]] for x in f if x.strip()}
    assert splits == {"grad-levers": {"val"}, "whitebox-seeds": {"test"}}


def test_idlsec_report_recomputes_a_committed_run(tmp_path):
    """`idlsec report` on a committed run directory (gzipped records) recomputes its tables, the
    seeds pooled with their intervals."""
    src = ROOT / "benchmarks" / "results" / "runs" / "whitebox-seeds"
    if not (src / "results.jsonl.gz").is_file():
        pytest.skip("no committed whitebox-seeds run")
    import shutil

    shutil.copytree(src, tmp_path / "run")
    paths = write_report(tmp_path / "run", html=False)
    with open(paths["table_pooled_csv"]) as f:
        pooled = {(r["interpreter"], r["attack"]): r for r in csv.DictReader(f)}
    with gzip.open(src / "results.jsonl.gz", "rt") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    mine = [r["iou_topk_mean"] for r in recs if (r["interpreter"], r["attack"]) == ("cam", "adv2")]
    row = pooled["cam", "adv2"]
    assert row["seed"] == "0,1,2" and float(row["n"]) == len(mine) >= 48
    lo, hi = bootstrap_ci(mine)
    assert float(row["iou_topk_mean_ci95_lo"]) == pytest.approx(lo)
    assert float(row["iou_topk_mean_ci95_hi"]) == pytest.approx(hi)
