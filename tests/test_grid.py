"""The grid scheduler of ``idlsec bench`` (idlsec.bench.grid): the same records as the
one-configuration-at-a-time path, the benign map computed once per (model, interpreter, images),
resumption after an interruption."""

from __future__ import annotations

import os

import pytest
import torch

from _bench_util import read_lines, stable, write_suite
from idlsec.attacks.base import Attack
from idlsec.bench.grid import BenignMaps, benign_key, schedule
from idlsec.bench.runner import run_suite
from idlsec.bench.suite import load_suite, parse_suite

QUIET = lambda msg: None  # noqa: E731

GRID = """
name: grid
settings: {n: 4, batch_size: 2, gallery: 2, params: {steps: 2, warmup_steps: 2}}
seeds: [0, 1]
models: [cifar10-resnet20]
interpreters: [cam, grad, {name: smoothgrad, params: {n_samples: 3}}]
attacks: [pgd, adv2, {name: square, max_queries: 10}]
"""
# 3 interpreters x 3 attacks x 2 seeds = 18 configurations of 2 chunks, 12 white-box (square's
# maps are the oracle's, not shared); (3 interpreters x 2 seeds) distinct benign maps per chunk
CONFIGS, WHITE_BOX, CHUNKS, MAPS = 18, 12, 2, 3 * 2


def _count_benign(monkeypatch):
    calls = []
    real = Attack.benign_map

    def counting(self, x):
        calls.append((type(self).__name__, type(self.interpreter).__name__, x.shape[0]))
        return real(self, x)

    monkeypatch.setattr(Attack, "benign_map", counting)
    return calls


def _files(d):
    return {p.name: p.read_bytes() for p in sorted((d / "images").glob("*.safetensors"))}


@pytest.fixture(scope="module")
def grid_suite(tmp_path_factory):
    if not os.environ.get("IDLSEC_MIRROR"):
        pytest.skip("no local mirror (../shared)")
    return write_suite(tmp_path_factory.mktemp("grid"), GRID)


def test_grid_equals_one_at_a_time_and_computes_each_map_once(grid_suite, tmp_path, monkeypatch):
    calls = _count_benign(monkeypatch)
    old = run_suite(load_suite(grid_suite), tmp_path / "old", device="cpu", log=QUIET, grid=False)
    assert len(calls) == WHITE_BOX * CHUNKS  # one per white-box configuration and chunk
    calls.clear()
    new = run_suite(load_suite(grid_suite), tmp_path / "new", device="cpu", log=QUIET)
    assert len(calls) == MAPS * CHUNKS  # one per (interpreter, images), shared by both attacks
    assert sorted(set(calls)) == sorted({(a, i, 2) for a, i, _ in calls})
    assert old["complete"] and new["complete"]
    a, b = read_lines(tmp_path / "old" / "results.jsonl"), read_lines(tmp_path / "new" / "results.jsonl")
    assert len(a) == CONFIGS * 4
    assert stable(a) == stable(b)  # same records, same (grid) order; only timings differ
    assert _files(tmp_path / "old") == _files(tmp_path / "new")  # gallery images and maps
    strip = lambda s: [{k: v for k, v in x.items() if k != "seconds"} for x in s]  # noqa: E731
    assert strip(old["summaries"]) == strip(new["summaries"])


def test_grid_resumes_after_an_interruption(grid_suite, tmp_path):
    ref = run_suite(load_suite(grid_suite), tmp_path / "ref", device="cpu", log=QUIET, grid=False)
    assert ref["complete"]
    seen = []

    def stop_after_five_chunks(msg):
        seen.append(msg)
        if sum("images" in m and " s)" in m for m in seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(load_suite(grid_suite), tmp_path / "run", device="cpu", log=stop_after_five_chunks)
    assert len(read_lines(tmp_path / "run" / "results.jsonl")) == 5 * 2
    out = run_suite(load_suite(grid_suite), tmp_path / "run", device="cpu", log=QUIET)
    assert out["complete"]
    assert stable(read_lines(tmp_path / "run" / "results.jsonl")) == \
        stable(read_lines(tmp_path / "ref" / "results.jsonl"))


def test_schedule_groups_configurations_by_images_then_interpreter():
    s = parse_suite({"name": "g", "seeds": [0, 1], "settings": {"n": 2},
                     "models": ["cifar10-resnet20"], "interpreters": ["cam", "grad"],
                     "attacks": ["pgd", "adv2", {"name": "square", "max_queries": 10}],
                     "defenses": ["none", "rp"],
                     "exclude": [{"attack": "square", "defense": "rp"}]})
    order = [c for c, _ in schedule([(c, set()) for c in s.configs], "cpu")]
    assert sorted(c.key for c in order) == sorted(c.key for c in s.configs)
    # grid order cycles seed innermost; the schedule runs each seed's images together, and within
    # them each (interpreter, deterministic defense) group back to back
    assert [c.seed for c in order] == [0] * (len(order) // 2) + [1] * (len(order) // 2)
    keys = [benign_key(c, "cpu") for c in order]
    shared = [k for k in keys if k is not None]
    assert len(set(shared)) == 2 * 2  # (cam, grad) x seeds: pgd and adv2 undefended share
    runs = [k for i, k in enumerate(shared) if i == 0 or shared[i - 1] != k]
    assert len(runs) == len(set(shared))  # each group contiguous
    # not shared: black-box attacks, the randomized defense rp
    assert all(benign_key(c, "cpu") is None for c in s.configs if c.attack == "square" or c.defense == "rp")


def test_benign_maps_restore_the_rng_state_an_attack_would_see():
    cache = BenignMaps()

    def stochastic():  # an interpreter that draws from the global RNG
        return torch.rand(2, 4)

    torch.manual_seed(7)
    first = cache.get("k", 0, stochastic)
    after_first = torch.rand(3)
    torch.manual_seed(7)
    again = cache.get("k", 0, lambda: pytest.fail("computed twice"))
    assert torch.equal(first, again) and torch.equal(torch.rand(3), after_first)
    torch.manual_seed(7)
    expect = torch.rand(2, 4)
    assert torch.equal(first, expect) and torch.equal(torch.rand(3), after_first)
    again.add_(1)  # a caller writing into its map does not change the cached one
    assert torch.equal(cache.get("k", 0, stochastic), first)
    assert cache.computed == 1
    cache.get("other", 0, stochastic)  # a new group drops the old maps
    assert cache.computed == 2 and list(cache.maps) == [0] and cache.key == "other"
    assert cache.get(None, 0, lambda: pytest.fail("not shared")) is None


def _module(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmarks_md_picks_up_the_grid_measurement(tmp_path):
    import json

    bench, md = _module("grid_scheduler"), _module("make_benchmarks_md")
    run = lambda cpu, steps, maps: {"side": "x", "cpu": cpu, "wall": 2 * cpu, "steps_cpu": steps,  # noqa: E731
                                    "steps_wall": 2 * steps, "attack_runs": 9,
                                    "benign_cpu": 0.1 if maps else None, "benign_maps": maps, "configs": 9}
    d = {"command": "python benchmarks/grid_scheduler.py --before abc", "machine": "M, 1 thread",
         "grid": "1 model (m) x 3 interpreters x 3 attacks x 16 images, 5 steps", "before": "abc",
         "repeats": 2, "records_identical": True,
         "runs": {"before": [run(6.0, 4.0, None), run(6.6, 4.4, None)],
                  "one": [run(5.5, 4.0, 9), run(5.5, 4.4, 9)], "grid": [run(5.0, 4.0, 3), run(5.4, 4.4, 3)]}}
    bench.summarize(d)
    assert d["median"]["grid"]["cpu_over_steps"] == pytest.approx((5 / 4 + 5.4 / 4.4) / 2)
    assert d["grid_over_one_cpu_outside_steps"] == pytest.approx(1.0 / 1.3)
    (tmp_path / "grid_scheduler.json").write_text(json.dumps(d))
    (tmp_path / "grid_scheduler.md").write_text(bench.markdown(d))
    text = md.build(tmp_path, None)
    # the headline row: the median over repeats with its interval (the two runs' ratios 1.25 and 1.227)
    assert "9 configurations x 16 images, 5 steps: total / attack steps 1.239 [1.227, 1.250]× CPU " \
        "(one at a time 1.31×, before 1.50×); time outside the steps 0.77× one at a time" in text
    assert "| grid scheduler (default) | 5.20 | 4.20 | 1.00 | 1.239 |" in text  # the section
    assert text.index("## Harness, lab and overhead") < text.index("### Grid scheduler of `idlsec bench`")
    assert "Grid / before: time outside the attack steps 0.476× (CPU)" in text


def test_cli_no_grid_selects_the_one_at_a_time_path(tmp_path, monkeypatch):
    from pathlib import Path

    import idlsec.bench.runner as runner
    from idlsec.cli import main

    seen = []
    monkeypatch.setattr(runner, "run_suite",
                        lambda suite, out, **kw: seen.append(kw["grid"]) or {"summaries": [], "complete": False})
    suite = str(Path(__file__).resolve().parents[1] / "benchmarks" / "smoke.yaml")
    assert main(["bench", suite, "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    assert main(["bench", suite, "--out", str(tmp_path / "b"), "--device", "cpu", "--no-grid"]) == 0
    assert seen == [True, False]
