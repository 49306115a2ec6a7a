#!/usr/bin/env python
"""The grid scheduler of ``idlsec bench`` (idlsec.bench.grid) against the one-configuration-at-
a-time path (``--no-grid``) and against the code before it (``--before COMMIT``: its ``src/``,
taken with ``git archive``), on a small grid: 1 model x 3 interpreters x 3 attacks x 16 images,
few steps (reduced sizes, CPU). Writes benchmarks/results/grid_scheduler.json and .md
(``--tag T``: grid_scheduler-T.*, e.g. for another grid given with --interpreters/--attacks/--eps).

Each side runs the whole suite in a fresh process (cold caches: the model, the dataset and the
selection are loaded inside the timed region) into a fresh directory; the sides alternate,
``--repeats`` times each, and medians are compared. Measured in each process: process (CPU) time
and wall time of ``run_suite``; the time inside the attacks' ``_run`` (the attack steps, the
same region as a record's ``seconds``); the time and number of benign-map computations
(``Attack.benign_map``). The two sides' records (timings excluded) and gallery files are
compared for equality.

    OMP_NUM_THREADS=1 python benchmarks/grid_scheduler.py [--repeats 3] [--steps 5] [--n 16]
        [--before COMMIT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUITE = """
name: grid-scheduler
settings: {{n: {n}, batch_size: {n}, gallery: 4, eps: [{eps}],
           params: {{steps: {steps}, warmup_steps: {steps}}}}}
models: [cifar10-resnet20]
interpreters: [{interpreters}]
attacks: [{attacks}]
"""


class Clock:
    """Process and wall seconds spent inside wrapped methods (outermost calls only)."""

    def __init__(self):
        self.cpu = self.wall = 0.0
        self.calls = self.depth = 0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth, self.calls = 1, self.calls + 1
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu += time.process_time() - c0
                self.wall += time.perf_counter() - w0
                self.depth = 0
        return timed


def worker(side: str, suite_path: str, out: str) -> dict:
    import torch

    import idlsec.data  # noqa: F401  (imports outside the timed region, as in any long run)
    import idlsec.spec  # noqa: F401
    from idlsec.attacks import ATTACKS
    from idlsec.attacks.base import Attack
    from idlsec.bench.runner import run_suite
    from idlsec.bench.suite import load_suite

    torch.set_num_threads(1)
    steps, benign = Clock(), Clock()
    for cls in {k for c in ATTACKS.values() for k in c.__mro__ if "_run" in vars(k)}:
        cls._run = steps.wrap(cls._run)
    if hasattr(Attack, "benign_map"):  # not before the grid scheduler
        Attack.benign_map = benign.wrap(Attack.benign_map)
    suite = load_suite(suite_path)
    kw = {} if side == "before" else {"grid": side == "grid"}
    c0, w0 = time.process_time(), time.perf_counter()
    run_suite(suite, out, device="cpu", log=lambda msg: None, **kw)
    return {"side": side, "cpu": time.process_time() - c0, "wall": time.perf_counter() - w0,
            "steps_cpu": steps.cpu, "steps_wall": steps.wall, "attack_runs": steps.calls,
            "benign_cpu": benign.cpu if benign.calls else None,
            "benign_maps": benign.calls or None, "configs": len(suite.configs)}


def _median(values):
    return None if None in values else statistics.median(values)


def summarize(d: dict) -> dict:
    """Medians over the repeats (in place, from ``d["runs"]``): of each measure, and of each run's
    time outside the attack steps (total - steps) and total / steps. The attack steps are the same
    work on every side, but a shared machine makes their time vary by ~10% between runs, so the
    per-run figures compare the sides better than ratios of medians."""
    med = {}
    for side, rs in d["runs"].items():
        m = {k: _median([x[k] for x in rs]) for k in rs[0] if k != "side"}
        for clock, steps in (("cpu", "steps_cpu"), ("wall", "steps_wall")):
            m[f"{clock}_outside_steps"] = _median([x[clock] - x[steps] for x in rs])
            m[f"{clock}_over_steps"] = _median([x[clock] / x[steps] for x in rs])
        med[side] = m
    d["median"] = med
    for key in [k for k in d if k.startswith("grid_over_")]:
        del d[key]
    steps = [x["steps_cpu"] for rs in d["runs"].values() for x in rs]
    d["steps_cpu_spread"] = (max(steps) - min(steps)) / statistics.median(steps)
    for other in ("one", "before"):
        if other in med:
            for key in ("cpu", "cpu_outside_steps", "wall_outside_steps"):
                d[f"grid_over_{other}_{key}"] = med["grid"][key] / med[other][key]
    return d


def _stable(path: Path) -> list:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (path / "results.jsonl").read_text().splitlines()]


def _gallery(path: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((path / "images").glob("*.safetensors"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--before", metavar="COMMIT", help="also time the src/ of this commit")
    ap.add_argument("--interpreters", default="cam,grad,gradcam")
    ap.add_argument("--attacks", default="pgd,adv2,advedge")
    ap.add_argument("--eps", default="8/255", help="comma-separated budgets (a grid axis)")
    ap.add_argument("--tag", default="", help="write grid_scheduler-TAG.{json,md}")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the tables from the runs in results/grid_scheduler.json")
    ap.add_argument("--worker", nargs=3, metavar=("SIDE", "SUITE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    if args.render:
        d = summarize(json.loads((RESULTS / f"{_stem(args.tag)}.json").read_text()))
        _write(d, args.tag)
        return 0
    from idlsec.runtime import machine_info

    sides = (["before"] if args.before else []) + ["one", "grid"]
    runs: dict = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        src = {"one": ROOT / "src", "grid": ROOT / "src", "before": Path(tmp) / "before" / "src"}
        if args.before:
            (Path(tmp) / "before").mkdir()
            tar = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "src"], check=True,
                                 capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(Path(tmp) / "before")], input=tar, check=True)
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(SUITE.format(n=args.n, steps=args.steps, eps=args.eps,
                                      interpreters=args.interpreters, attacks=args.attacks))
        for r in range(args.repeats):
            for side in sides:
                out = Path(tmp) / f"{side}-{r}"
                env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(src[side])}
                res = subprocess.run([sys.executable, __file__, "--worker", side, str(suite), str(out)],
                                     env=env, check=True, capture_output=True, text=True)
                runs[side].append(json.loads(res.stdout.splitlines()[-1]))
                print(side, r, runs[side][-1], flush=True)
        same = all(_stable(Path(tmp) / f"{side}-{r}") == _stable(Path(tmp) / f"grid-{r}")
                   and _gallery(Path(tmp) / f"{side}-{r}") == _gallery(Path(tmp) / f"grid-{r}")
                   for r in range(args.repeats) for side in sides)
    info = machine_info("cpu")
    d = {"command": "python benchmarks/grid_scheduler.py " + " ".join(argv or sys.argv[1:]),
         "machine": f"{info.get('cpu', '?')}, torch {info.get('torch', '?')}, 1 thread, shared machine",
         "grid": f"1 model (cifar10-resnet20) x {_axis(args.interpreters, 'interpreter')} x "
                 f"{_axis(args.attacks, 'attack')}" + (f" x {_axis(args.eps, 'budget')}" if "," in args.eps
                                                       else "") +
                 f" x {args.n} images, {args.steps} steps" +
                 (f" (adv2/advedge: {args.steps} warm-up + {args.steps})"
                  if {"adv2", "advedge"} & set(args.attacks.split(",")) else ""),
         "args": vars(args),
         "tag": args.tag, "before": args.before, "repeats": args.repeats, "records_identical": same, "runs": runs}
    summarize(d)
    _write(d, args.tag)
    return 0


def _axis(values: str, what: str) -> str:
    items = values.split(",")
    return f"{len(items)} {what}{'s' if len(items) > 1 else ''} ({', '.join(items)})"


def _stem(tag: str) -> str:
    return "grid_scheduler" + (f"-{tag}" if tag else "")


def _write(d: dict, tag: str = "") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{_stem(tag)}.json").write_text(json.dumps(d, indent=1) + "\n")
    (RESULTS / f"{_stem(tag)}.md").write_text(markdown(d))
    print(markdown(d))


def markdown(d: dict) -> str:
    names = {"before": f"before (`{d.get('before')}`, one at a time)",
             "one": "one configuration at a time (`--no-grid`)", "grid": "grid scheduler (default)"}
    f = lambda v, nd=2: "–" if v is None else f"{v:.{nd}f}"  # noqa: E731
    lines = ["## Grid scheduler of `idlsec bench`" + (f" ({d['tag']})" if d.get("tag") else ""), "",
             f"Command: `{d['command'].strip()}`  ",
             f"Machine: {d['machine']}. Grid: {d['grid']}; each side a fresh process from cold "
             f"caches, median of {d['repeats']} alternating repeats. Records (timings excluded) and "
             f"gallery files of every side identical: {'yes' if d['records_identical'] else 'NO'}.", "",
             "*total*: `run_suite` (model, data and selection loading, building, attacks, records, "
             "gallery); *attack steps*: inside the attacks' `_run` (a record's `seconds`); *outside*: "
             "total - attack steps, per run; *benign maps*: `Attack.benign_map` computations and "
             "their CPU s (– where the code has no such method: it computed one per configuration). "
             "Medians over the repeats; the ratios are medians of the per-run ratios (the steps are "
             "the same work on every side, but their time varies between runs on a shared machine).",
             "",
             "| path | total CPU s | attack steps CPU s | outside CPU s | total / steps (CPU) | "
             "total wall s | outside wall s | total / steps (wall) | benign maps | benign-map CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for side, m in d["median"].items():
        lines.append(f"| {names[side]} | {m['cpu']:.2f} | {m['steps_cpu']:.2f} | "
                     f"{m['cpu_outside_steps']:.2f} | {m['cpu_over_steps']:.3f} | {m['wall']:.2f} | "
                     f"{m['wall_outside_steps']:.2f} | {m['wall_over_steps']:.3f} | "
                     f"{f(m['benign_maps'], 0)} | {f(m['benign_cpu'])} |")
    for other, name in (("one", "one at a time"), ("before", "before")):
        if f"grid_over_{other}_cpu" in d:
            lines += ["", f"Grid / {name}: time outside the attack steps "
                      f"{d[f'grid_over_{other}_cpu_outside_steps']:.3f}× (CPU), "
                      f"{d[f'grid_over_{other}_wall_outside_steps']:.3f}× (wall); total "
                      f"{d[f'grid_over_{other}_cpu']:.3f}× (CPU; the attack steps alone, the same work "
                      f"on every side, spread over {d['steps_cpu_spread']:.0%} of their median "
                      "between runs)."]
    return "\n".join(lines + [""])


if __name__ == "__main__":
    sys.exit(main())
