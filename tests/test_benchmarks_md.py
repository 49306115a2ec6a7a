"""BENCHMARKS.md's headline table: every figure is read from a raw results file, with its
machine and command, and links to it."""

from __future__ import annotations

import gzip
import json
import statistics

from _bench_util import fake_run
from test_report import _make_md


def test_headline_figures_come_from_the_raw_files(tmp_path):
    mod = _make_md()
    res = tmp_path / "results"
    res.mkdir()
    rows = [
        {
            "part": "reference",
            "model": "cifar10-resnet20",
            "interpreter": "cam",
            "attack": a,
            "variant": "",
            "asr": 0.96875,
            "iou": iou,
            "command": "python make-it.py --x",
            "machine": "Test CPU; 1 thread",
        }
        for a, iou in (("pgd", 0.4137), ("adv2", 0.8712))
    ]
    (res / "whitebox.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (res / "quscore.md").write_text(
        "## Q\n\nCommand: `python q.py --n 3`  \nMachine: Quantum CPU, 1 thread(s); "
        "total 1 min.  \n"
    )
    q = {
        "target": "cifar10-vgg",
        "interp": "cam",
        "mode": "untargeted",
        "asr": 0.5,
        "q_median": 42.0,
        "q_mean": 77.25,
    }
    (res / "quscore-cpu.json").write_text(
        json.dumps(
            {
                "rows": [
                    {**q, "method": "quscore-idlsec"},
                    {**q, "method": "square", "q_median": 420.0},
                ]
            }
        )
    )
    fake_run(tmp_path / "myrun", attacks=("quscore",))
    out = tmp_path / "B.md"
    assert (
        mod.main(["--results", str(res), "--out", str(out), "--from-run", str(tmp_path / "myrun")])
        == 0
    )
    text = out.read_text()
    head = text[text.index("## Headline figures") : text.index("## Contents")]
    line = next(ln for ln in head.splitlines() if "reference configuration" in ln)
    assert "ADV^2 ASR 0.97, IoU 0.87 vs PGD IoU 0.41" in line
    assert (
        "Test CPU; 1 thread" in line
        and "python make-it.py --x" in line
        and "whitebox.jsonl" in line
    )
    line = next(ln for ln in head.splitlines() if "cifar10-vgg" in ln)
    assert "median/mean queries 42/77" in line and "Square ASR 0.50, 420/77" in line
    assert "Quantum CPU, 1 thread(s)" in line and "python q.py --n 3" in line
    # the suite run's row: recomputed from the committed records
    with gzip.open(res / "runs" / "myrun" / "results.jsonl.gz", "rt") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    mine = [r for r in recs if r["model"] == "m-a"]
    want = statistics.median(r["queries"] for r in mine if r["success"])
    line = next(ln for ln in head.splitlines() if "suite run `myrun`" in ln)
    assert (
        f"m-a/cam/quscore ASR {sum(r['success'] for r in mine) / len(mine):.2f}, q median {want:g}"
        in line
    )
    assert "idlsec bench fake.yaml" in line
    assert len(head.splitlines()) < 25  # one screen
