#!/usr/bin/env python
"""Overhead of ``idlsec bench`` over calling the attack directly, on a suite (default: the smoke
suite). Writes benchmarks/results/overhead.json and overhead.md.

Both sides do the whole job in this process, from cold caches: load each model and dataset once,
select the seeded images, build the interpreter and attack, and run every configuration in the
suite's batches. The direct side stops there; the bench side (``run_suite`` into a fresh
directory) also
checks and preflights the configurations, computes the per-image records and writes them, the
gallery and suite.json. The two alternate, ``--repeats`` times each; the medians are compared, as
wall-clock and as process CPU time (the machine is shared: CPU time is what other load disturbs
least). Target: overhead <= 5%.

    OMP_NUM_THREADS=1 python benchmarks/bench_overhead.py [--suite SUITE.yaml] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def direct(suite, device):
    """The configurations run by hand: what a user writes without the harness."""
    from idlsec.attacks import make_attack
    from idlsec.bench.suite import attack_params
    from idlsec.data import load_dataset, select_images
    from idlsec.interpreters import get_interpreter
    from idlsec.models import load_model

    models, selections = {}, {}  # loaded once, as a hand-written loop over a grid would
    for cfg in suite.configs:
        torch.manual_seed(cfg.seed)
        key = (cfg.model, cfg.weights)
        if key not in models:
            models[key] = load_model(cfg.model, weights=cfg.weights, device=device)
        model = models[key]
        skey = (*key, cfg.dataset, cfg.split, cfg.n, cfg.seed)
        if skey not in selections:
            selections[skey] = select_images(
                load_dataset(cfg.dataset, cfg.split),
                cfg.n,
                seed=cfg.seed,
                model=model,
                correct_only=True,
                device=device,
            )
        sel = selections[skey]
        interp = get_interpreter(cfg.interpreter, model, **cfg.interpreter_params)
        atk = make_attack(
            cfg.attack,
            model,
            interp,
            eps=cfg.eps,
            targeted=cfg.targeted,
            seed=cfg.seed,
            **attack_params(cfg),
        )
        labels = sel.targets if cfg.targeted else sel.y
        for start in range(0, cfg.n, cfg.batch_size):
            torch.manual_seed(cfg.seed + start)
            atk.run(sel.x[start : start + cfg.batch_size], labels[start : start + cfg.batch_size])


def bench(suite, device):
    from idlsec.bench import runner

    with tempfile.TemporaryDirectory() as tmp:
        runner.run_suite(suite, Path(tmp) / "run", device=device, log=lambda msg: None)


def cold():
    """Forget the runner's model/dataset/selection cache and the model loader's caches."""
    from idlsec.bench import runner

    runner._LAST.clear()
    import idlsec.data as data
    import idlsec.models as models

    for mod in (models, data):
        for name in dir(mod):
            fn = getattr(mod, name)
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()


def main(argv=None) -> int:
    from idlsec.bench.suite import load_suite
    from idlsec.runtime import machine_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default=str(ROOT / "benchmarks" / "smoke.yaml"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "overhead.json"))
    args = ap.parse_args(argv)
    suite = load_suite(args.suite)
    times = {"direct": {"wall": [], "cpu": []}, "bench": {"wall": [], "cpu": []}}
    for side in ("direct", "bench"):  # warm-up: imports, first-call costs
        cold()
        (direct if side == "direct" else bench)(suite, args.device)
    for _ in range(args.repeats):
        for side, fn in (("direct", direct), ("bench", bench)):
            cold()
            w, c = time.perf_counter(), time.process_time()
            fn(suite, args.device)
            times[side]["wall"].append(time.perf_counter() - w)
            times[side]["cpu"].append(time.process_time() - c)
    med = {s: {k: statistics.median(v) for k, v in t.items()} for s, t in times.items()}
    info = machine_info(args.device)
    result = {
        "suite": Path(args.suite).relative_to(ROOT).as_posix()
        if Path(args.suite).resolve().is_relative_to(ROOT)
        else args.suite,
        "repeats": args.repeats,
        "median_s": med,
        "runs_s": times,
        "overhead_pct": 100 * (med["bench"]["cpu"] / med["direct"]["cpu"] - 1),
        "overhead_wall_pct": 100 * (med["bench"]["wall"] / med["direct"]["wall"] - 1),
        "command": "python benchmarks/bench_overhead.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{info['cpu']} ({info['cpus']} cores), device {args.device}, "
        f"torch {info['torch']}, "
        f"{info['threads']} thread(s)",
    }
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=1) + "\n")
    md = out.with_suffix(".md")
    md.write_text(
        "\n".join(
            [
                "## Overhead of `idlsec bench` over calling the attack directly",
                "",
                f"Command: `{result['command'].strip()}`  ",
                f"Machine: {result['machine']}.  ",
                f"Suite `{result['suite']}` ({len(suite.configs)} configurations, "
                f"{sum(c.n for c in suite.configs)} images), whole job from cold caches on both "
                "sides, median of "
                f"{args.repeats} alternating repeats. Target: <= 5%.",
                "",
                "| side | CPU s (median) | wall s (median) |",
                "|---|---|---|",
                *[
                    f"| {s} | {med[s]['cpu']:.3f} | {med[s]['wall']:.3f} |"
                    for s in ("direct", "bench")
                ],
                f"| overhead | {result['overhead_pct']:+.1f}% "
                f"| {result['overhead_wall_pct']:+.1f}% |",
                "",
            ]
        )
    )
    print(
        json.dumps(
            {k: result[k] for k in ("median_s", "overhead_pct", "overhead_wall_pct")}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
