"""BENCHMARKS.md's headline table: every figure is read from a raw results file, with its
machine and command, and links to it."""

from __future__ import annotations

import gzip
import json
import statistics

from _bench_util import fake_run
from idlsec.metrics.stats import bootstrap_ci, format_ci
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
    archive = text[text.index("## Archive: aggregate-only results") :]
    assert "reference configuration" not in head  # an aggregate file: no interval, no headline
    line = next(ln for ln in archive.splitlines() if "reference configuration" in ln)
    assert "ADV^2 ASR 0.97, IoU 0.87 vs PGD IoU 0.41" in line
    assert (
        "Test CPU; 1 thread" in line
        and "python make-it.py --x" in line
        and "whitebox.jsonl" in line
    )
    line = next(ln for ln in archive.splitlines() if "cifar10-vgg" in ln)
    assert "median/mean queries 42/77" in line and "Square ASR 0.50, 420/77" in line
    assert "Quantum CPU, 1 thread(s)" in line and "python q.py --n 3" in line
    # the suite run's row: recomputed from the committed records
    with gzip.open(res / "runs" / "myrun" / "results.jsonl.gz", "rt") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    mine = [r for r in recs if r["model"] == "m-a"]
    want = statistics.median(r["queries"] for r in mine if r["success"])
    line = next(ln for ln in head.splitlines() if "suite run `myrun`" in ln)
    succ = [float(r["success"]) for r in mine]
    q_ok = [r["queries"] for r in mine if r["success"]]
    asr = format_ci(statistics.fmean(succ), *bootstrap_ci(succ))
    q = format_ci(want, *bootstrap_ci(q_ok, stat="median"), "{:.4g}")
    assert f"m-a/cam/quscore ASR {asr}, q median (succ.) {q}" in line
    assert "idlsec bench fake.yaml" in line and "(per-image records)" in line
    # figures read from aggregate files have no interval and say so
    line = next(ln for ln in archive.splitlines() if "reference configuration" in ln)
    assert "(aggregate only)" in line
    assert len(head.splitlines()) < 25  # one screen


def test_job_headlines_come_from_a_suite_runs_jobs(tmp_path):
    """A jobs-only suite run (benchmarks/singleadv.yaml, defenses.yaml): --from-run copies its
    jobs and the headline is computed from them, with the run's command and machine."""
    mod = _make_md()
    res, run = tmp_path / "results", tmp_path / "singleadv"
    (run / "jobs").mkdir(parents=True)
    (run / "results.jsonl").write_text("")
    machine = {"cpu": "Toy CPU", "cpus": 3, "device": "cpu", "torch": "9.9", "threads": 1}
    (run / "suite.json").write_text(json.dumps({
        "name": "singleadv", "configs": [], "jobs": [],
        "runs": [{"command": ["idlsec", "bench", "s.yaml"], "machine": machine}]}))
    fool = {"linf-a": 0.625, "linf-b": 0.875, "w0-a": 0.125}  # the curve point is not a main row
    for label, fr in fool.items():
        result = {"source": "cat", "target": "truck", "eps": 8 / 255, "params": {"norm": "linf"},
                  "fooling_rate_train": fr, "fooling_rate_test": fr, "target_confidence_mean": fr,
                  "iou_topk_mean": 0.5, "iou_topk_fooled_mean": 0.5, "map_l1_mean": 1.0,
                  "iterations": 3, "seconds": 1.0, "config": {"model": "m", "interpreter": "cam"}}
        entry = {"job": {"kind": "universal", "label": label, "seed": 0, "key": label}, "result": result}
        (run / "jobs" / f"universal-{label}-seed0-k.json").write_text(json.dumps(entry))
    det = {"config": {"fpr": 0.05}, "seconds": 1.0, "rows": [
        {"attack": a, "detector": "ensemble", "trained_on": a == "pgd", "adaptive": False, "asr": 1.0,
         "iou": 0.5, "n_adversarial": 4, "tpr_at_fpr": t, "auroc": 0.9} for a, t in
        (("pgd", 1.0), ("advedge", 0.75))]}
    (run / "jobs" / "detection-d-seed0-k.json").write_text(json.dumps(
        {"job": {"kind": "detection", "label": "d", "seed": 0, "key": "d"}, "result": det}))
    out = tmp_path / "B.md"
    assert mod.main(["--results", str(res), "--out", str(out), "--from-run", str(run)]) == 0
    assert sorted(p.name for p in (res / "runs" / "singleadv" / "jobs").iterdir()) == sorted(
        p.name for p in (run / "jobs").iterdir())
    text = out.read_text()
    archive = text[text.index("## Archive: aggregate-only results") :]
    line = next(ln for ln in archive.splitlines() if "source→target" in ln)
    main = [fool["linf-a"], fool["linf-b"]]
    assert (f"2 source→target pairs (resnet20 + CAM): held-out fooling rate mean "
            f"{statistics.fmean(main):.2f} (min 0.62, max 0.88)") in line
    assert "Toy CPU (3 cores)" in line and "idlsec bench s.yaml" in line
    assert "benchmarks/singleadv.yaml" in line
    line = next(ln for ln in archive.splitlines() if "ensemble detector" in ln)
    assert "TPR at 0.05 FPR advedge 0.75" in line and "pgd" not in line.split("FPR")[1]
    # the run's section (from its report) holds the jobs' tables, under their capability
    section = text[text.index("## Universal perturbations (SingleADV)"):]
    assert "| linf-b | 0 | cat→truck | m (cam) | test | L∞ 8/255 |" in section


def test_the_weights_table_is_read_from_the_cards(tmp_path):
    """Each JSON card beside a packaged weights file becomes one row of the foundation section,
    with its command, machine, seconds and the figures its kind of card holds."""
    mod = _make_md()
    res, weights = tmp_path / "results", tmp_path / "weights"
    res.mkdir()
    weights.mkdir()
    (weights / "net-a.json").write_text(json.dumps(
        {"command": "idlsec train --model a", "machine": "Box 9", "seconds": 12.5,
         "test_accuracy": 0.81234}))
    (weights / "rts-b.json").write_text(json.dumps(
        {"command": "idlsec train-rts", "device": "cpu", "train_seconds": 3,
         "quality": {"accuracy_kept": 0.5, "mean_mask_area": 0.25, "n": 40}}))
    out = tmp_path / "B.md"
    assert mod.main(["--results", str(res), "--weights", str(weights), "--out", str(out)]) == 0
    text = out.read_text()
    section = text[text.index("## Foundation"):]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `")]
    assert rows == [
        "| `net-a` | Box 9 | `idlsec train --model a` | 12.5 | test accuracy 0.8123 |",
        "| `rts-b` | cpu | `idlsec train-rts` | 3 | accuracy kept on the preserved region 0.500, "
        "mean mask area 0.250 (test split, n = 40) |",
    ]
    assert mod.main(["--results", str(res), "--weights", "", "--out", str(out)]) == 0
    assert "## Foundation" not in out.read_text()


def test_multi_seed_runs_pool_their_seeds_and_feed_the_readme(tmp_path):
    """A run with several seeds gives one headline row per model and interpreter, the seeds
    pooled with intervals; README's highlights block is regenerated from the headline rows and
    --check fails while it is stale."""
    mod = _make_md()
    res, run = tmp_path / "results", tmp_path / "seeds"
    runs = [fake_run(run / f"s{seed}", attacks=("pgd",), models=("m-a",), seed=seed, queries=False)
            for seed in (0, 1, 2)]
    recs = []
    for seed, r in enumerate(runs):
        recs += [{**x, "seed": seed, "config": f"{x['config']}-{seed}"} for x in r["records"]]
    (run / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in recs))
    meta = json.loads((run / "s0" / "suite.json").read_text())
    meta["configs"] = [{**c, "key": f"{c['key']}-{s}", "seed": s} for s in (0, 1, 2)
                       for c in meta["configs"]]
    (run / "suite.json").write_text(json.dumps(meta))
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n\n{mod.HIGHLIGHTS[0]}\nold\n{mod.HIGHLIGHTS[1]}\ntail\n")
    out = tmp_path / "B.md"
    args = ["--results", str(res), "--out", str(out), "--readme", str(readme), "--weights", ""]
    assert mod.main([*args, "--from-run", str(run)]) == 0
    head = out.read_text().split("## Headline figures")[1].split("## Contents")[0]
    line = next(ln for ln in head.splitlines() if "suite run `seeds`" in ln)
    iou = [x["iou_topk_mean"] for x in recs]
    assert "m-a + cam, seeds 0,1,2 pooled" in line and f"(n {len(recs)})" in line
    assert f"IoU (all) {format_ci(statistics.fmean(iou), *bootstrap_ci(iou))}" in line
    text = readme.read_text()
    assert "old" not in text and text.endswith("tail\n") and "seeds 0,1,2 pooled" in text
    assert mod.main([*args, "--check"]) == 0
    readme.write_text(text.replace("pooled", "POOLED", 1))
    assert mod.main([*args, "--check"]) == 1


def test_singleadv_headline_pools_seeds_over_correct_sources_with_intervals(tmp_path):
    """Fooled / correctly classified sources, summed over seeds, per setting and pair; a tuning
    job (split val) never reaches the headline."""
    mod = _make_md()
    run = tmp_path / "results" / "runs" / "sa"
    (run / "jobs").mkdir(parents=True)
    (run / "suite.json").write_text(json.dumps({"name": "sa", "configs": [], "jobs": [], "runs": []}))
    for seed, fooled, split in ((0, 30, "test"), (1, 50, "test"), (0, 99, "val")):
        params = {"model": "cifar10-resnet56", "surrogate": "cifar10-resnet20", "norm": "linf",
                  "split": split}
        result = {"source": "cat", "target": "truck", "eps": 8 / 255, "n_correct": 100,
                  "fooling_rate_test": fooled / 100}
        entry = {"job": {"kind": "universal", "label": f"r56-{split}", "seed": seed, "key": "k",
                         "params": params}, "result": result}
        (run / "jobs" / f"universal-r56-{split}-seed{seed}-k.json").write_text(json.dumps(entry))
    (h,) = mod.h_singleadv(tmp_path / "results")
    assert h.basis == "per-image outcomes (counts)"
    assert "seeds 0,1 pooled" in h.text and "resnet20 → resnet56: cat→truck 0.40 [" in h.text
    lo, hi = (float(v) for v in h.text.split("0.40 [")[1].split("]")[0].split(", "))
    assert 0.32 < lo < 0.40 < hi < 0.48  # 80 of 200: about ±0.07


def test_headline_holds_only_figures_with_intervals(tmp_path, monkeypatch):
    mod = _make_md()
    raw = tmp_path / "r.json"
    rows = [mod.Headline("White-box attacks", "old mean 0.9", raw, "s.yaml", "cmd", "m"),
            mod.Headline("White-box attacks", "IoU 0.88 [0.86, 0.89]", raw, "s.yaml", "cmd", "m",
                         records=True)]
    monkeypatch.setattr(mod, "EXTRACTORS", [lambda results: rows])
    head = "\n".join(mod.headline_table(tmp_path))
    legacy = "\n".join(mod.archive_intro(tmp_path))
    assert "IoU 0.88 [0.86, 0.89]" in head and "(per-image records)" in head
    assert "old mean 0.9" not in head and "old mean 0.9" in legacy and "(aggregate only)" in legacy
    assert "IoU 0.88" not in legacy
    assert all("aggregate only" not in ln for ln in mod.readme_highlights(tmp_path))
