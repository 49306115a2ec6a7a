#!/usr/bin/env python
"""Benchmark of the benchmark harness itself: what `idlsec bench` / `idlsec report` cost on top of
the attacks, and what the results store costs per record. Writes benchmarks/results/harness.md.

    python benchmarks/harness.py                          # CPU: smoke suite, 2000 store records
    python benchmarks/harness.py --device cuda --suite benchmarks/smoke.yaml --results $OUT/harness/harness.md

Measured: a cold `idlsec bench SUITE` (process start, imports, data, model, selection, attacks,
atomic writes), the attack time inside it (sum of the records' seconds), a no-op re-run (resume
finds everything done), `idlsec report` (tables, plots, HTML), the same suite on the Ray backend
(a local Ray instance, started and stopped by the run), and the store alone: appending N records
(one write + fsync per line) and reading them back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env=None) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "idlsec", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark the benchmark harness")
    ap.add_argument("--suite", default=str(ROOT / "benchmarks" / "smoke.yaml"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--records", type=int, default=2000, help="records for the store micro-benchmark")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "harness.md"))
    ap.add_argument("--keep", default=None, help="keep the run directories under this path")
    args = ap.parse_args(argv)

    from idlsec.bench.runner import machine_info
    from idlsec.bench.store import ResultStore, read_records
    from idlsec.report.build import machine_text

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    work = Path(args.keep or tempfile.mkdtemp(prefix="idlsec-harness-"))
    work.mkdir(parents=True, exist_ok=True)
    run = work / "local"
    shutil.rmtree(run, ignore_errors=True)
    load0 = os.getloadavg()[0]
    rows = [("`idlsec --help` (process start, imports)", f"{_cli('--help', env=env):.2f} s",
             "the floor of every command below")]
    cold = _cli("bench", args.suite, "--out", str(run), "--device", args.device, env=env)
    recs = read_records(run / "results.jsonl").records
    attack_s = sum(r["seconds"] for r in recs)
    rows.append(("`idlsec bench` cold (new process)", f"{cold:.2f} s",
                 f"{len(recs)} records; attacks {attack_s:.2f} s, harness + start-up {cold - attack_s:.2f} s"))
    noop = _cli("bench", args.suite, "--out", str(run), "--device", args.device, env=env)
    rows.append(("`idlsec bench` re-run, all done", f"{noop:.2f} s", "resume check only (process start included)"))
    rep = _cli("report", str(run), env=env)
    size = (run / "report.html").stat().st_size
    rows.append(("`idlsec report`", f"{rep:.2f} s", f"table.md/csv, 2 plots, report.html {size / 1024:.0f} KiB"))
    if not args.no_ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            rows.append(("`idlsec bench --backend ray`", "–", "ray is not installed"))
        else:
            ray_run = work / "ray"
            shutil.rmtree(ray_run, ignore_errors=True)
            dev = [] if args.device == "cpu" else ["--device", args.device]
            t = _cli("bench", args.suite, "--out", str(ray_run), "--backend", "ray", *dev, env=env)
            same = [{k: v for k, v in r.items() if k != "seconds"} for r in recs] == [
                {k: v for k, v in r.items() if k != "seconds"} for r in read_records(ray_run / "results.jsonl").records]
            rows.append(("`idlsec bench --backend ray` (local instance)", f"{t:.2f} s",
                         f"includes Ray start/stop; records equal the local run's: {same}"))
    # the store alone: batches of 1 (fsync per line) and of 32 (fsync per chunk, as the runner does)
    rec = dict(recs[0])
    line = len(json.dumps(rec)) + 1
    for batch in (1, 32):
        store_dir = work / f"store{batch}"
        shutil.rmtree(store_dir, ignore_errors=True)
        t = time.perf_counter()
        with ResultStore(store_dir) as store:
            for i in range(0, args.records, batch):
                store.append([{**rec, "config": "bench", "pos": j} for j in range(i, min(i + batch, args.records))])
        append_s = time.perf_counter() - t
        rows.append((f"store: append {args.records} records, fsync every {batch} line(s)", f"{append_s:.2f} s",
                     f"{append_s / args.records * 1e3:.2f} ms/record, {line} bytes/line"))
    t = time.perf_counter()
    n = len(read_records(store_dir / "results.jsonl").records)
    read_s = time.perf_counter() - t
    rows.append((f"store: read {n} records", f"{read_s:.3f} s", f"{read_s / n * 1e6:.1f} µs/record"))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    load = os.getloadavg()[0]
    m = machine_info(args.device)
    m["threads"] = env["OMP_NUM_THREADS"]
    cmd = "python benchmarks/harness.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    suite = os.path.relpath(args.suite, ROOT) if Path(args.suite).is_absolute() else args.suite
    md = ["## Benchmark harness overhead (`idlsec bench`, `idlsec report`, results store)", "",
          f"Command: `{cmd}`  ", f"Machine: {machine_text(m)}  ",
          (f"Suite: `{suite}` (2 configurations x 4 images of PGD on a CIFAR-10 ResNet-20 with CAM). "
           f"Wall-clock times of whole commands on a shared machine (1-min load average {load0:.1f} at the "
           f"start, {load:.1f} at the end, on {os.cpu_count()} cores), each run once."), "",
          "| step | time | notes |", "|---|---:|---|"]
    md += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    md += ["", ("Records are written as whole lines (one `write` each) and fsynced once per chunk: a "
                "killed run leaves only whole lines, and the fsync cost is paid per chunk, not per image. "
                "Most of a short run is process start-up, imports and loading the data and model."), ""]
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md))
    print("\n".join(md))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
