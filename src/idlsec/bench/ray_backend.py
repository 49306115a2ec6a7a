"""``idlsec bench --backend ray``: one Ray task per configuration, on an existing cluster
(``RAY_ADDRESS`` set, or ``--ray-address``) or on a local instance started for the run.

Each task is a streaming generator that yields its chunks as they finish; the driver alone writes
the store, so resumption works as with the local backend and workers need no shared filesystem
(they need idlsec installed and, for the data and weights, IDLSEC_MIRROR or network access).
A task asks for one GPU when the cluster has GPUs (``gpus_per_task`` overrides, e.g. 0.25 to put
four configurations on one GPU), and then runs on ``cuda``."""

from __future__ import annotations

import contextlib
import os

from ..errors import ConfigError, IdlsecError

_ENV = ("IDLSEC_MIRROR", "IDLSEC_CACHE", "IDLSEC_OFFLINE")


def _task(work, cfg_dict: dict, done: list, device: str | None):
    """``work`` is the runner's ``iter_config`` (passed in: this module sits below the runner)."""
    from ..runtime import default_device
    from .suite import BenchConfig

    yield from work(BenchConfig.from_dict(cfg_dict), done, device or default_device())


def init_ray(address: str | None = None):
    """Connect to ``address`` / $RAY_ADDRESS, else start a local instance. Returns (ray, started)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'idlsec[ray]'") from None
    if ray.is_initialized():
        return ray, False
    if address or os.environ.get("RAY_ADDRESS"):
        env = {k: os.environ[k] for k in _ENV if k in os.environ}
        ray.init(address=address or "auto", runtime_env={"env_vars": env} if env else None, log_to_driver=False)
    else:  # a local instance: its workers inherit this environment
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray, True


def run_ray(pending, store, *, device=None, log, write, work, address=None, gpus_per_task=None) -> None:
    """Run ``pending`` [(config, done positions)] as Ray tasks, each ``work(config, done, device)``
    (a generator of chunks); ``write(store, chunk)`` each chunk."""
    if not pending:
        return
    ray, started = init_ray(address)
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        wants_gpu = gpus >= 1 and not (device or "").startswith("cpu")
        num_gpus = gpus_per_task if gpus_per_task is not None else (1.0 if wants_gpu else 0.0)
        if num_gpus > gpus:
            raise ConfigError(f"--gpus-per-task {num_gpus} but the Ray cluster has {gpus:g} GPU(s)")
        if num_gpus == 0 and device is not None and device.startswith("cuda"):
            raise ConfigError("--device cuda with --backend ray needs a cluster with GPUs")
        remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=0)(_task)
        log(f"ray: {len(pending)} task(s) on {ray.cluster_resources().get('CPU', 0):g} CPU(s), "
            f"{gpus:g} GPU(s); {num_gpus:g} GPU(s) per task")
        live = {remote.remote(work, cfg.to_dict(), sorted(done), device): cfg for cfg, done in pending}
        while live:
            ready, _ = ray.wait(list(live), num_returns=1)
            for gen in ready:
                cfg = live[gen]
                try:
                    chunk = ray.get(next(gen))
                except StopIteration:
                    del live[gen]
                    continue
                except ray.exceptions.RayTaskError as e:
                    for other in live:
                        with contextlib.suppress(Exception):  # best effort; ray.shutdown follows
                            ray.cancel(other, force=True)
                    if isinstance(e.cause, IdlsecError):
                        raise type(e.cause)(f"{cfg.title}: {e.cause}") from None
                    raise
                write(store, chunk)
                log(f"[ray] {cfg.title}: images {chunk.start}-{chunk.stop - 1} ({chunk.seconds:.2f} s)")
    finally:
        if started:
            ray.shutdown()
