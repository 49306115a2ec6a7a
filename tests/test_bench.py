"""idlsec bench: suite validation, resumption after SIGKILL, shards + merge, the Ray backend,
corrupt result lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _bench_util import read_lines, stable, write_suite
from conftest import needs_mirror
from idlsec.bench.runner import merge_dirs, run_suite
from idlsec.bench.store import CorruptResults, read_records
from idlsec.bench.suite import load_suite, parse_shard, parse_suite, shard_configs
from idlsec.cli import main
from idlsec.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
QUIET = lambda msg: None


def _run(suite_path, out, **kw):
    return run_suite(load_suite(suite_path), out, device="cpu", log=QUIET, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny suite: 2 configurations x 6 images in chunks of 2."""
    if not os.environ.get("IDLSEC_MIRROR"):
        pytest.skip("no local mirror (../shared)")
    tmp = tmp_path_factory.mktemp("ref")
    suite = write_suite(tmp)
    out = _run(suite, tmp / "run")
    assert out["complete"]
    return suite, read_lines(tmp / "run" / "results.jsonl")


# --- suite files ----------------------------------------------------------------------------
def test_suite_grid_order_overrides_and_shared_params():
    s = parse_suite({
        "name": "g", "settings": {"n": 3, "eps": ["4/255", 0.031], "params": {"steps": 5, "alpha": "1/255"}},
        "models": ["cifar10-resnet20", "cifar10-resnet56"], "interpreters": ["cam", "mask"],
        "attacks": ["pgd", {"name": "adv2", "params": {"steps": 7}}],
        "overrides": [{"where": {"interpreter": "mask"}, "set": {"n": 2}}],
        "exclude": [{"interpreter": "mask", "attack": "pgd"}]})
    assert len(s.configs) == 2 * (2 + 1) * 2  # models x (cam x 2 attacks + mask x adv2) x eps
    first = s.configs[0]
    assert (first.model, first.interpreter, first.attack, first.eps) == ("cifar10-resnet20", "cam", "pgd", 4 / 255)
    assert first.dataset == "cifar10" and first.n == 3
    assert first.shared_params == {"steps": 5, "alpha": 1 / 255}
    adv2 = next(c for c in s.configs if c.attack == "adv2")
    assert adv2.attack_params == {"steps": 7} and "steps" not in adv2.shared_params
    assert all(c.n == 2 for c in s.configs if c.interpreter == "mask")
    assert not any(c.interpreter == "mask" and c.attack == "pgd" for c in s.configs)
    assert len({c.key for c in s.configs}) == len(s.configs)
    # unregistered names (mask, adv2 may not exist yet) are fine until run time
    shards = [shard_configs(s.configs, (i, 3)) for i in range(3)]
    assert sorted(c.key for sh in shards for c in sh) == sorted(c.key for c in s.configs)


@pytest.mark.parametrize("data, message", [
    ([], "must be a mapping"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"]}, "'attacks' is required"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": [], "x": 1}, "unknown top-level"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": []}, "non-empty list"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": ["pgd", "pgd"]}, "distinct 'label'"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": ["pgd"], "settings": {"eps": "8/0"}},
     "fraction"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": ["pgd"], "settings": {"eps": 3}},
     "(0, 1]"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": ["pgd"], "settings": {"n": 0}},
     "settings.n"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": ["pgd"], "settings": {"nn": 1}},
     "unknown setting"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": [{"name": "pgd", "params": [1]}]},
     "params must be a mapping"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": ["pgd"],
      "overrides": [{"where": {"interpreter": "cam"}, "set": {"eps": 0.1}}]}, "cannot change"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": ["pgd"],
      "exclude": [{"colour": "red"}]}, "unknown field"),
    ({"models": ["cifar10-resnet20"], "interpreters": ["cam"], "attacks": ["pgd"],
      "exclude": [{"attack": "pgd"}]}, "grid is empty"),
    ({"models": ["no-such-model"], "interpreters": ["cam"], "attacks": ["pgd"]}, "no-such-model"),
])
def test_suite_errors_name_the_problem(data, message):
    with pytest.raises(ConfigError) as e:
        parse_suite(data, "s.yaml")
    assert message in str(e.value)


def test_bad_shard_and_missing_file(tmp_path):
    for text in ("2/2", "a/b", "1", "0/0"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(text)
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(ConfigError, match="not found"):
        load_suite(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("models: [a\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(tmp_path / "bad.yaml")


def test_unknown_names_fail_before_any_work(tmp_path):
    suite = write_suite(tmp_path, "models: [cifar10-resnet20]\ninterpreters: [cam]\n"
                                  "attacks: [pgd, no-such-attack]\n")
    with pytest.raises(ConfigError, match="no-such-attack"):
        _run(suite, tmp_path / "run")
    assert not (tmp_path / "run" / "results.jsonl").exists()
    suite = write_suite(tmp_path, "models: [cifar10-resnet20]\ninterpreters: [cam]\n"
                                  "attacks: [{name: pgd, params: {stepz: 3}}]\n")
    with pytest.raises(ConfigError, match="stepz"):
        _run(suite, tmp_path / "run")


# --- running, resuming, sharding ----------------------------------------------------------
@needs_mirror
def test_reference_run_is_canonical_and_matches_attack_job(reference, tmp_path):
    from idlsec.bench.job import AttackJob, run_attack_job

    suite_path, records = reference
    suite = load_suite(suite_path)
    assert [(r["config"], r["pos"]) for r in records] == [(c.key, p) for c in suite.configs for p in range(6)]
    # the bench records of a configuration are those of `idlsec attack` with the same batches
    job = AttackJob(model="cifar10-resnet20", dataset="cifar10", interpreter="cam", attack="pgd", n=6, seed=0,
                    params={"steps": 2}, batch_size=2, device="cpu")
    expected = run_attack_job(job, progress=False)["records"]
    mine = [{k: v for k, v in r.items() if k not in ("config", "model", "dataset", "interpreter", "attack",
                                                      "defense", "eps", "seed", "pos")}
            for r in records if r["config"] == suite.configs[0].key]
    assert stable(mine) == stable(expected)


@needs_mirror
def test_sigkill_then_resume_equals_uninterrupted(reference, tmp_path):
    suite_path, ref = reference
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "idlsec", "bench", str(suite_path), "--out", str(out),
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    chunks = 0
    for line in proc.stdout:
        if ": images " in line:
            chunks += 1
            if chunks == 1:  # 1 of 6 chunks is on disk: kill it while it computes the next ones
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait(timeout=60)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    partial = read_records(out / "results.jsonl").records  # strict: no torn line
    assert 2 <= len(partial) < len(ref)
    assert stable(partial) == stable(ref[:len(partial)])
    # re-run the same command: it resumes
    assert main(["bench", str(suite_path), "--out", str(out), "--device", "cpu"]) == 0
    final = read_lines(out / "results.jsonl")
    keys = [(r["config"], r["pos"]) for r in final]
    assert len(keys) == len(set(keys))
    assert stable(final) == stable(ref)
    # a third run has nothing to do and changes nothing
    before = (out / "results.jsonl").read_bytes()
    _run(suite_path, out)
    assert (out / "results.jsonl").read_bytes() == before


@needs_mirror
def test_shards_merged_equal_unsharded(reference, tmp_path):
    suite_path, ref = reference
    for i in range(2):
        out = _run(suite_path, tmp_path / f"shard{i}", shard=(i, 2))
        assert out["complete"] is False
        assert len(read_lines(tmp_path / f"shard{i}" / "results.jsonl")) == 6
    assert main(["bench", "merge", str(tmp_path / "shard0"), str(tmp_path / "shard1"),
                 "--out", str(tmp_path / "merged")]) == 0
    assert stable(read_lines(tmp_path / "merged" / "results.jsonl")) == stable(ref)
    assert len(list((tmp_path / "merged" / "images").glob("*.safetensors"))) == 2 * 2  # gallery 3, chunks of 2
    meta = json.loads((tmp_path / "merged" / "suite.json").read_text())
    assert [c["key"] for c in meta["configs"]] == [c.key for c in load_suite(suite_path).configs]
    with pytest.raises(ConfigError, match="exists"):
        merge_dirs([tmp_path / "shard0"], tmp_path / "merged", log=QUIET)


@needs_mirror
def test_ray_backend_gives_the_same_records(reference, tmp_path):
    pytest.importorskip("ray", reason="the optional extra 'ray' is not installed (pip install 'idlsec[ray]')")
    suite_path, ref = reference
    out = _run(suite_path, tmp_path / "ray", backend="ray")
    assert out["complete"]
    assert stable(read_lines(tmp_path / "ray" / "results.jsonl")) == stable(ref)


@needs_mirror
def test_corrupt_lines_are_reported_and_skipped_only_on_request(reference, tmp_path):
    suite_path, ref = reference
    out = tmp_path / "run"
    out.mkdir()
    lines = [json.dumps(r) for r in ref]
    lines[2] = lines[2][: len(lines[2]) // 2]          # a torn record in the middle
    (out / "results.jsonl").write_text("\n".join(lines[:9]) + "\n" + lines[9][:20])  # and a truncated tail
    with pytest.raises(CorruptResults) as e:
        _run(suite_path, out)
    assert "line 3" in str(e.value) and "line 10" in str(e.value) and "--skip-corrupt" in str(e.value)
    assert main(["bench", str(suite_path), "--out", str(out), "--device", "cpu"]) == 2  # CLI: error, exit 2
    _run(suite_path, out, skip_corrupt=True)
    final = read_lines(out / "results.jsonl")
    assert stable(final) == stable(ref)
    aside = read_lines(out / "results.corrupt.jsonl")
    assert [a["line"] for a in aside] == [3, 10]
    assert aside[0]["text"] == lines[2]


def test_two_writers_on_one_directory_are_refused(tmp_path):
    from idlsec.bench.store import ResultStore

    with ResultStore(tmp_path), pytest.raises(ConfigError, match="another idlsec bench"):
        ResultStore(tmp_path)


@needs_mirror
def test_smoke_suite_runs(tmp_path, capsys):
    assert main(["bench", str(REPO / "benchmarks" / "smoke.yaml"), "--out", str(tmp_path / "smoke"),
                 "--device", "cpu", "--report"]) == 0
    out = capsys.readouterr().out
    assert "pgd-10" in out and "report.html" in out
    recs = read_lines(tmp_path / "smoke" / "results.jsonl")
    assert len(recs) == 2 * 4 and all(0 <= r["iou_topk_mean"] <= 1 for r in recs)
    assert main(["bench", str(REPO / "benchmarks" / "smoke.yaml"), "--out", str(tmp_path / "x"), "--dry-run"]) == 0
    assert not (tmp_path / "x").exists()


def test_paper_suite_parses():
    s = load_suite(REPO / "benchmarks" / "paper.yaml")
    assert {c.model for c in s.configs} == {"cifar10-resnet20", "cifar10-resnet56"}
    assert {c.interpreter for c in s.configs} >= {"cam", "gradcam", "grad", "rts", "mask"}
    assert all(c.n == (20 if c.interpreter == "mask" else 100) for c in s.configs)


@needs_mirror
def test_bad_values_and_missing_resources_fail_in_preflight(tmp_path):
    suite = write_suite(tmp_path, "models: [cifar10-resnet20]\ninterpreters: [cam]\n"
                                  "attacks: [pgd, {name: pgd, label: bad, params: {steps: -1}}]\n")
    with pytest.raises(ConfigError, match="bad.*steps"):
        _run(suite, tmp_path / "run")
    assert read_records(tmp_path / "run" / "results.jsonl").records == []
