"""A suite's universal (SingleADV) and detection jobs: each runs once per seed into
``DIR/jobs/<kind>-<label>-seed<seed>-<key>.json`` (``{"job": ..., "result": ...}``); a job whose
file exists is skipped, so a rerun resumes. Universal jobs also write their perturbation and
figure into the folder of the same name."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import ConfigError
from .store import _atomic_write
from .suite import JobConfig


def job_path(out_dir, job: JobConfig) -> Path:
    return Path(out_dir) / "jobs" / f"{job.kind}-{job.label}-seed{job.seed}-{job.key}.json"


def _make(job: JobConfig, device: str):
    from .detection import DetectionJob
    from .universal import UniversalJob

    cls = UniversalJob if job.kind == "universal" else DetectionJob
    try:
        return cls(**job.params, seed=job.seed, device=device)
    except TypeError as e:
        raise ConfigError(f"{job.title}: {e}") from None


def check_jobs(jobs: list[JobConfig], device: str = "cpu") -> None:
    """Cheap checks before any work: the job's fields build, its models are known."""
    from ..models import get_card

    for job in jobs:
        j = _make(job, device)
        for name in [j.model, *getattr(j, "transfer_to", [])]:
            get_card(name)
        if job.kind == "universal":
            import inspect

            from ..attacks import SingleADV

            valid = [
                p.name
                for p in inspect.signature(SingleADV.__init__).parameters.values()
                if p.kind is p.KEYWORD_ONLY
                and p.name
                not in ("source", "target", "norm", "eps", "seed", "progress", "callback")
            ]
            unknown = set(j.params) - set(valid)
            if unknown:
                raise ConfigError(
                    f"{job.title}: SingleADV has no parameter(s) {sorted(unknown)}; valid: {valid}"
                )


def run_jobs(jobs: list[JobConfig], out_dir, *, device: str, log=print) -> list[dict]:
    """Run (or skip, when done) every job; returns their ``{"job", "result"}`` dicts in order."""
    from .detection import run_detection_job
    from .universal import run_universal_job

    check_jobs(jobs, device)
    out = []
    for i, job in enumerate(jobs):
        path = job_path(out_dir, job)
        if path.is_file():
            out.append(json.loads(path.read_text()))
            continue
        t0 = time.perf_counter()
        j = _make(job, device)
        if job.kind == "universal":
            result = run_universal_job(j, path.with_suffix(""))
        else:
            result = run_detection_job(j, log=lambda msg, t=job.title: log(f"{t}: {msg}"))
        entry = {"job": job.to_dict(), "result": result, "seconds": time.perf_counter() - t0}
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, (json.dumps(entry, indent=1, default=str) + "\n").encode())
        log(f"[job {i + 1}/{len(jobs)}] {job.title}: {entry['seconds']:.1f} s -> {path}")
        out.append(entry)
    return out
