"""benchmarks/quscore_stats.py: the paired map-IoU change against another run (same images, both
fooled) and its place in BENCHMARKS.md."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from idlsec.metrics.stats import bootstrap_ci
from test_report import _make_md

ROOT = Path(__file__).resolve().parents[1]


def _stats():
    spec = importlib.util.spec_from_file_location("quscore_stats", ROOT / "benchmarks" / "quscore_stats.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(run: Path, attack: str, rows):
    run.mkdir(parents=True)
    recs = [{"model": "m", "interpreter": "grad", "attack": attack, "seed": seed, "pos": pos, "success": ok,
             "iou_topk_mean": iou, "l2": l2, "queries": 10}
            for seed, pos, ok, iou, l2 in rows]
    with gzip.open(run / "results.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in recs) + "\n")


def test_paired_iou_uses_only_images_both_fooled(tmp_path):
    st = _stats()
    _write(tmp_path / "runs" / "old", "ref", [(0, 0, True, 0.40, 1.0), (0, 1, True, 0.50, 1.0),
                                               (1, 0, True, 0.30, 1.0), (1, 1, False, 0.90, 1.0)])
    _write(tmp_path / "runs" / "new", "tol", [(0, 0, True, 0.50, 0.2), (0, 1, True, 0.46, 0.4),
                                               (1, 0, False, 0.99, 0.1), (1, 1, True, 0.10, 0.3)])
    rows = st.paired_iou(tmp_path / "runs" / "new", tmp_path / "runs" / "old", "ref")
    assert len(rows) == 1
    r = rows[0]
    assert r["n"] == 2                                   # (0, 0) and (0, 1): both fooled
    assert r["delta"] == pytest.approx((0.10 - 0.04) / 2)
    assert (r["lo"], r["hi"]) == pytest.approx(bootstrap_ci([0.10, -0.04]))
    assert r["iou_ref"] == pytest.approx(0.45) and r["l2"] == pytest.approx(0.3) and r["l2_ref"] == pytest.approx(1.0)
    md = st.paired_markdown(rows, "ref")
    assert "| m | grad | tol | 2 | 0.45 | +0.03 [" in md


def test_benchmarks_md_shows_the_paired_table(tmp_path):
    mod = _make_md()
    res = tmp_path / "results"
    old_name, label = mod.QUSCORE_PAIRED["quscore-stealth2"]
    _write(res / "runs" / old_name, label, [(0, 0, True, 0.40, 1.0), (0, 1, True, 0.50, 1.0)])
    _write(res / "runs" / "quscore-stealth2", "tol", [(0, 0, True, 0.60, 0.2), (0, 1, True, 0.50, 0.4)])
    text = "\n".join(mod.quscore_sections(res))
    assert f"Paired against `{label}` of run `{old_name}`" in text
    assert "| m | grad | tol | 2 | 0.45 | +0.10 [" in text
    assert f"--vs benchmarks/results/runs/{old_name}:{label}" in text


def test_several_references_give_one_paired_table_each(tmp_path, capsys):
    mod, st = _make_md(), _stats()
    res = tmp_path / "results"
    refs = mod.QUSCORE_PAIRED["quscore-stealth3-val"]
    assert len(refs) == 2 and refs[0][0] == refs[1][0]    # CAM's and Grad's previous configurations
    ref_run, (a, b) = refs[0][0], (refs[0][1], refs[1][1])
    _write(res / "runs" / ref_run, a, [(0, 0, True, 0.40, 1.0), (0, 1, True, 0.50, 1.0)])
    with gzip.open(res / "runs" / ref_run / "results.jsonl.gz", "at") as fh:   # label b: IoU 0.20 both
        fh.write("\n".join(json.dumps({"model": "m", "interpreter": "grad", "attack": b, "seed": 0, "pos": p,
                                       "success": True, "iou_topk_mean": 0.20, "l2": 1.0, "queries": 10})
                           for p in (0, 1)) + "\n")
    _write(res / "runs" / "quscore-stealth3-val", "protect", [(0, 0, True, 0.60, 0.2), (0, 1, True, 0.50, 0.4)])
    text = "\n".join(mod.quscore_sections(res))
    assert "| m | grad | protect | 2 | 0.45 | +0.10 [" in text and "| m | grad | protect | 2 | 0.20 | +0.35 [" in text
    assert f"--vs benchmarks/results/runs/{ref_run}:{a} --vs benchmarks/results/runs/{ref_run}:{b}" in text
    st.main([str(res / "runs" / "quscore-stealth3-val"), "--vs", f"{res / 'runs' / ref_run}:{a}",
             "--vs", f"{res / 'runs' / ref_run}:{b}"])
    out = capsys.readouterr().out
    assert "+0.10 [" in out and "+0.35 [" in out


def test_frameworks_long_schedule_is_paired_by_image_and_target(tmp_path):
    mod = _make_md()
    res = tmp_path / "results"

    def rec(attack, index, target, ok, iou, l2):
        return {"model": "cifar10-resnet20", "interpreter": "cam", "attack": attack, "seed": 0, "index": index,
                "target": target, "success": ok, "iou_topk_mean": iou, "l2": l2, "linf": 0.1,
                "flow_mean": 0.1, "flow_max": 1.0}

    short = [rec("adv2-cw", 1, 3, True, 0.50, 0.5), rec("adv2-cw", 2, 4, True, 0.60, 0.5),
             rec("adv2-cw", 9, 1, True, 0.10, 0.5)]                     # image 9 not in the long run
    long = [rec("adv2-cw", 1, 3, True, 0.70, 0.3), rec("adv2-cw", 2, 4, False, 0.70, 0.2),
            rec("adv2-cw", 5, 0, True, 0.99, 0.1)]                      # image 5 not in the short run
    for name, rows in (("frameworks", short), ("frameworks-long", long)):
        (res / "runs" / name).mkdir(parents=True)
        with gzip.open(res / "runs" / name / "results.jsonl.gz", "wt") as fh:
            fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    text = mod.frameworks_section(res)
    assert "| cam | adv2-cw | 2 | 1.00 / 0.55 / 0.50 | 0.50 / 0.70 / 0.25 | +0.15 |" in text
