"""idlsec report: tables, CSV, plots and the self-contained HTML, for bench and attack directories."""

from __future__ import annotations

import csv
import json
import re
import statistics

import pytest

from _bench_util import fake_run
from conftest import needs_mirror
from idlsec.bench.store import CorruptResults
from idlsec.cli import main
from idlsec.errors import InputError
from idlsec.report.build import load_run, write_report


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tables_follow_the_records(tmp_path):
    run = fake_run(tmp_path / "run")
    paths = write_report(tmp_path / "run")
    rows = _csv(paths["table_csv"])
    assert [r["key"] for r in rows] == [c["key"] for c in run["configs"]]  # grid order
    for row, cfg in zip(rows, run["configs"]):
        recs = [r for r in run["records"] if r["config"] == cfg["key"]]
        assert float(row["asr"]) == pytest.approx(statistics.fmean(float(r["success"]) for r in recs))
        assert float(row["iou_topk_mean"]) == pytest.approx(statistics.fmean(r["iou_topk_mean"] for r in recs))
        assert float(row["iou_k20"]) == pytest.approx(statistics.fmean(r["iou_topk"][1] for r in recs))
        assert float(row["map_l1_mean"]) == pytest.approx(statistics.fmean(r["map_l1"] for r in recs))
    md = paths["table_md"].read_text()
    for head in ("| Model | Interpreter | Attack | ε | n | ASR | Conf. | IoU (all) | IoU (succ.) | map L1 | map L2 "
                 "| L∞ (/255) | L2 |", "## 95% bootstrap intervals",
                 "k=10%", "k=30%", "## Queries and success within query budgets", "ASR@100",
                 "## ASR per model", "| Interpreter | Attack | m-a | m-b |"):
        assert head in md, head
    asr_row = next(ln for ln in md.splitlines() if ln.startswith("| m-a | cam | pgd |"))
    assert "| 0.50 |" in asr_row  # 2 of 4 succeed
    # quscore: successes at positions 0 and 2 with 10 and 1000 queries
    q = next(r for r in rows if r["attack"] == "quscore")
    assert float(q["queries_mean"]) == pytest.approx(505)
    assert float(q["queries_median"]) == pytest.approx(statistics.median([10, 1000]))
    assert float(q["asr_at_100"]) == pytest.approx(0.25) and float(q["asr_at_1000"]) == pytest.approx(0.5)
    assert {p.name for p in paths["plots"]} == {"iou_vs_k.png", "asr_vs_queries.png", "map_distances.png"}
    assert all(p.stat().st_size > 5000 for p in paths["plots"])


def test_html_is_self_contained_with_galleries(tmp_path):
    fake_run(tmp_path / "run", n=4, gallery=2)
    html = write_report(tmp_path / "run")["html"].read_text()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html)  # only inline data
    assert "http://" not in html and "https://" not in html
    assert "default-src 'none'" in html
    assert html.count('class="tile"') == 4 * 2 * 4  # 4 configs x 2 images x (benign, map, adv, map)
    assert html.count('<details open class="config"') == 4
    assert html.count("<table>") == 7  # main, intervals, IoU per k, queries, 3 pivots
    assert 'data-tiles-expected="32"' in html
    assert html.count('class="plot"') == 3


def test_report_counts_only_images_it_has(tmp_path):
    fake_run(tmp_path / "run", n=4, gallery=2)
    for f in sorted((tmp_path / "run" / "images").glob("*.safetensors"))[:1]:
        f.unlink()
    html = write_report(tmp_path / "run", gallery=1)["html"].read_text()
    assert html.count('class="tile"') == 3 * 1 * 4
    assert "no stored images" in html


def test_corrupt_results_need_the_flag_and_are_left_in_place(tmp_path, capsys):
    fake_run(tmp_path / "run", queries=False)
    p = tmp_path / "run" / "results.jsonl"
    lines = p.read_text().splitlines()
    lines[4] = '{"config": "x", "ind'
    p.write_text("\n".join(lines) + "\n")
    before = p.read_bytes()
    with pytest.raises(CorruptResults, match="line 5"):
        write_report(tmp_path / "run")
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "line 5" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "run"), "--skip-corrupt"]) == 0
    assert p.read_bytes() == before  # a report never edits the results
    rows = _csv(tmp_path / "run" / "table.csv")
    assert sum(int(r["n"]) for r in rows) == len(lines) - 1


def test_not_a_run_directory(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        load_run(tmp_path / "nope")
    with pytest.raises(InputError, match="results.jsonl"):
        load_run(tmp_path)
    (tmp_path / "results.jsonl").write_text("")
    with pytest.raises(InputError, match="summary.json"):
        load_run(tmp_path)


@needs_mirror
def test_report_of_an_attack_directory(tmp_path, capsys):
    from idlsec.bench.job import AttackJob, run_attack_job

    job = AttackJob(model="cifar10-resnet20", dataset="cifar10", interpreter="cam", attack="pgd", n=3,
                    params={"steps": 2}, device="cpu")
    out = run_attack_job(job, tmp_path / "demo", progress=False)
    assert main(["report", str(tmp_path / "demo")]) == 0
    assert "report.html" in capsys.readouterr().out
    rows = _csv(tmp_path / "demo" / "table.csv")
    assert len(rows) == 1 and rows[0]["attack"] == "pgd"
    assert float(rows[0]["asr"]) == pytest.approx(out["summary"]["asr"])
    assert float(rows[0]["iou_topk_mean"]) == pytest.approx(out["summary"]["iou_topk_mean"])
    html = (tmp_path / "demo" / "report.html").read_text()
    assert html.count('class="tile"') == 3 * 4
    assert "idlsec attack --model cifar10-resnet20" in (tmp_path / "demo" / "table.md").read_text()
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["n"] == 3


def _make_md():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "make_benchmarks_md.py"
    spec = importlib.util.spec_from_file_location("make_benchmarks_md", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmarks_md_is_generated_in_order_and_includes_runs(tmp_path):
    mod = _make_md()
    res = tmp_path / "results"
    res.mkdir()
    (res / "b_attacks.md").write_text("# Attacks\n\nCommand: `x`\n\n| a |\n|---|\n| 1 |\n")
    (res / "a_interp.md").write_text("## Interpreters\n\n```\n# not a heading\n```\n")
    fake_run(tmp_path / "run", queries=False)
    out = tmp_path / "BENCHMARKS.md"
    assert mod.main(["--results", str(res), "--out", str(out), "--from-run", str(tmp_path / "run")]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks\n") and "\n# Attacks" not in text  # one level-1 heading
    # one section per capability (the run under the harness, the unknown topics under Other)
    assert text.index("### Benchmark run: run") < text.index("## Other") < text.index("### Interpreters") \
        < text.index("### Attacks")
    assert "# not a heading" in text and "- [Other](#other)" in text
    assert "| cam | pgd |" in text and (res / "run-run.md").is_file()
    assert (res / "runs" / "run" / "results.jsonl.gz").is_file()
    assert mod.main(["--results", str(res), "--out", str(out), "--check"]) == 0  # idempotent
    (res / "c.md").write_text("## New\n")
    assert mod.main(["--results", str(res), "--out", str(out), "--check"]) == 1
