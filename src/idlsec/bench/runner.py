"""Run a suite into a benchmark directory, resumably.

Each configuration is run in chunks of ``batch_size`` images aligned on multiples of it (the same
batches ``idlsec attack`` uses, so the records equal its records). A chunk whose records are all in
the store is skipped; the chunk that holds the first missing image is run again and only its
missing records are written. Same seed ⇒ same images, targets and attack randomness, so on the CPU
an interrupted and resumed run ends with the records of an uninterrupted one. When every
configuration of the suite is complete the file is rewritten (atomically) in grid order.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.select import selection_message
from ..errors import ConfigError
from ..runtime import default_device, machine_info
from .records import records_from_result, summarize
from .store import (
    CONFIG_FIELDS,
    IMAGES,
    RESULTS,
    VOLATILE_FIELDS,
    ResultStore,
    canonical_order,
    read_records,
    read_suite_json,
    save_gallery,
    to_uint8,
    update_suite_json,
    write_records,
    write_suite_json,
)
from .suite import BenchConfig, Suite, check_config, shard_configs, to_spec


@dataclass
class Chunk:
    """What one chunk of one configuration produced (plain tensors and dicts: picklable)."""

    key: str
    start: int
    stop: int
    records: list
    gallery: dict | None
    seconds: float
    selection: dict | None = None  # the selection report (first chunk of a configuration)


_LAST: dict = {}


def _last(kind: str, key, make):
    """Keep the last model / dataset / selection: consecutive configurations of a grid share them
    (all are read-only: models are frozen, selections are only sliced)."""
    hit = _LAST.get(kind)
    if hit is not None and hit[0] == key:
        return hit[1]
    _LAST.pop(kind, None)
    value = make()
    _LAST[kind] = (key, value)
    return value


def _model(spec):
    from ..spec import load_victim

    return _last("model", (spec.model, spec.weights, repr(spec.model_options), spec.device),
                 lambda: load_victim(spec))


def prepare(cfg: BenchConfig, device: str, *, progress: bool = False):
    """Seeded selection, attack and defense transform (or None) of one configuration."""
    from ..data import load_dataset_for, select_images
    from ..spec import build

    check_config(cfg)
    spec = to_spec(cfg, device)
    spec.check()
    torch.manual_seed(cfg.seed)
    model = _model(spec)
    dataset = _last("dataset", (cfg.dataset, cfg.split, repr(cfg.data_options), id(model)),
                    lambda: load_dataset_for(model, cfg.dataset, cfg.split, **cfg.data_options))
    sel = _last("selection", (cfg.model, cfg.weights, device, cfg.dataset, cfg.split, cfg.n, cfg.seed,
                              repr(cfg.model_options), repr(cfg.data_options), cfg.all_images),
                lambda: select_images(dataset, cfg.n, seed=cfg.seed, model=model,
                                      correct_only=not cfg.all_images, device=device))
    # the system under attack is the defended one; images are chosen without the defense
    built = build(spec, model=model, progress=progress)
    return sel, built.attack, built.defense


def preflight(configs, device: str = "cpu") -> None:
    """Build every distinct attack once, without images: missing weights (e.g. an untrained RTS
    masker), bad layers and bad parameter values fail before any long work."""
    import json

    from ..errors import IdlsecError
    from ..spec import build

    seen = set()
    for cfg in configs:
        spec = to_spec(cfg, device)
        key = json.dumps(spec.to_dict(), sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            build(spec, model=_model(spec))
        except IdlsecError as e:
            raise type(e)(f"{cfg.title}: {e}") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{cfg.title}: {e}") from None


def iter_config(cfg: BenchConfig, done_pos=(), device: str | None = None, *, progress: bool = False,
                benign=None):
    """Yield a :class:`Chunk` for every chunk of ``cfg`` that has an image not in ``done_pos``;
    ``benign``: a :class:`~idlsec.bench.grid.BenignMaps` shared with the configurations on the same
    images and interpreter (the grid scheduler)."""
    from ..metrics.edges import default_edge_threshold
    from .grid import benign_key

    device = device or default_device()
    done_pos = set(done_pos)
    bs = cfg.batch_size
    todo = [s for s in range(0, cfg.n, bs) if any(p not in done_pos for p in range(s, min(s + bs, cfg.n)))]
    if not todo:
        return
    sel, attack, transform = prepare(cfg, device, progress=progress)
    system = None
    if cfg.monitor:  # what the oracle answers with: the model behind its defense
        from .kinds import answering_system

        system = answering_system(_model(to_spec(cfg, device)), transform)
    labels = sel.targets if cfg.targeted else sel.y
    fields = {"config": cfg.key, "model": cfg.model, "dataset": cfg.dataset,
              "interpreter": cfg.interpreter_label or cfg.interpreter, "attack": cfg.attack_label or cfg.attack,
              "defense": cfg.defense_label or cfg.defense, "eps": cfg.eps, "seed": cfg.seed}
    selection = {k: v for k, v in sel.report.items() if k != "unreadable_files"}
    share = benign_key(cfg, device) if benign is not None and attack.interpreter is not None else None
    for start in todo:
        stop = min(start + bs, cfg.n)
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed + start)
        if transform is not None and hasattr(transform, "reset"):
            transform.reset()
        if cfg.monitor:  # also record each stream's first fooling query (an uncounted pass)
            from .kinds import watch_first_fool

            watch_first_fool(attack, system, labels[start:stop], cfg.targeted)
        x = sel.x[start:stop].to(device)
        shared = {}  # black-box attacks' run() takes no benign_map: their maps are the oracle's
        if share is not None:
            shared["benign_map"] = benign.get(share, start, lambda x=x: attack.benign_map(x))
        res = attack.run(x, labels[start:stop].to(device), **shared)
        recs = records_from_result(res, sel.indices[start:stop].tolist(), k_grid=tuple(cfg.k_grid),
                                   true_labels=sel.y[start:stop],
                                   edge_threshold=default_edge_threshold(cfg.interpreter))
        if cfg.monitor:  # the first query of each image's stream the monitor flagged (-1: none)
            from .kinds import monitor_fields

            recs = [{**r, **m} for r, m in zip(recs, monitor_fields(attack, stop - start))]
        recs = [{**fields, "pos": start + i, **r} for i, r in enumerate(recs) if start + i not in done_pos]
        gallery = None
        g = min(stop, cfg.gallery) - start
        if g > 0:
            gallery = {"pos": torch.arange(start, start + g), "images": to_uint8(res.x[:g]),
                       "adversarial": to_uint8(res.x_adv[:g]), "pred": res.pred[:g].cpu(),
                       "labels": sel.y[start:start + g].clone(), "attacked": res.labels[:g].cpu()}
            if res.benign_map is not None and res.adv_map is not None:
                gallery.update(benign_maps=to_uint8(res.benign_map[:g]), adversarial_maps=to_uint8(res.adv_map[:g]))
        yield Chunk(cfg.key, start, stop, recs, gallery, time.perf_counter() - t0, selection)
        selection = None


def run_config(cfg: BenchConfig, device: str | None = None) -> list[dict]:
    """All records of one configuration, in memory (no directory)."""
    return [r for chunk in iter_config(cfg, (), device) for r in chunk.records]


def _write_chunk(store: ResultStore, chunk: Chunk) -> None:
    if chunk.gallery is not None:  # images first: a record on disk implies its picture is there
        save_gallery(store.dir, chunk.key, chunk.start, chunk.gallery)
    store.append(chunk.records)


def _pending(configs, store):
    """[(config, its done positions)] of the configurations with images left (one pass over the
    store: a configuration's key, a hash of all its fields, is computed once, not per record)."""
    done_by: dict = {}
    for key, pos in store.done:
        done_by.setdefault(key, set()).add(pos)
    out = []
    for cfg in configs:
        done = done_by.get(cfg.key, set())
        if any(p not in done for p in range(cfg.n)):
            out.append((cfg, done))
    return out


def run_suite(suite: Suite, out_dir, *, shard=(0, 1), backend: str = "local", device: str | None = None,
              skip_corrupt: bool = False, log=None, argv=None, ray_address: str | None = None,
              gpus_per_task: float | None = None, grid: bool = True) -> dict:
    """Run (or resume) the configurations of ``shard`` into ``out_dir``; return a summary dict.
    ``grid`` (local backend): the grid scheduler (:mod:`idlsec.bench.grid`) shares the benign maps
    of configurations on the same images; False runs them one at a time in grid order."""
    log = log or (lambda msg: print(msg, flush=True))
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend must be 'local' or 'ray', got {backend!r}")
    mine = shard_configs(suite.configs, shard)
    jobs = shard_configs(suite.jobs, shard)  # universal / detection jobs (bench/kinds.py)
    for cfg in mine:  # names are checked now, before any long work
        check_config(cfg)
    if jobs:
        from .kinds import check_jobs

        check_jobs(jobs)
    t0 = time.perf_counter()
    with ResultStore(out_dir, skip_corrupt=skip_corrupt) as store:
        run_info = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": argv or sys.argv,
                    "shard": f"{shard[0]}/{shard[1]}", "backend": backend,
                    "machine": machine_info(device or (default_device() if backend == "local" else None))}
        meta = update_suite_json(store.dir, [c.to_dict() for c in suite.configs], run_info, name=suite.name,
                                 jobs=[j.to_dict() for j in suite.jobs])
        pending = _pending(mine, store)
        preflight([cfg for cfg, _ in pending], device or ("cpu" if backend == "ray" else default_device()))
        log(f"{suite.name}: {len(mine)} configuration(s) in shard {shard[0]}/{shard[1]}, "
            f"{len(pending)} with work left; {len(store.records)} record(s) already in {store.path}")
        if backend == "local":
            benign = None
            if grid:
                from .grid import BenignMaps, schedule

                benign = BenignMaps()
                pending = schedule(pending, device or default_device())
            for j, (cfg, done) in enumerate(pending):
                for chunk in iter_config(cfg, done, device, benign=benign):
                    if chunk.selection is not None:
                        log(f"[{j + 1}/{len(pending)}] {cfg.title}: images: "
                            f"{selection_message(chunk.selection)}")
                    _write_chunk(store, chunk)
                    log(f"[{j + 1}/{len(pending)}] {cfg.title}: images {chunk.start}-{chunk.stop - 1} "
                        f"({chunk.seconds:.2f} s)")
        else:
            from .ray_backend import run_ray

            run_ray(pending, store, device=device, log=log, write=_write_chunk, work=iter_config,
                    address=ray_address, gpus_per_task=gpus_per_task)
        order = [c["key"] for c in meta["configs"]]
        complete = not _pending(suite.configs, store)
        if complete:
            ordered = canonical_order(store.records, order)
            if ordered != store.records:
                store.rewrite(ordered)
        summaries = summarize_run(store.records, [c.to_dict() for c in mine])
    if jobs:
        from .kinds import run_jobs

        run_jobs(jobs, out_dir, device=device or default_device(), log=log)
    state = "all configurations complete" if complete else "this shard's configurations run"
    log(f"done in {time.perf_counter() - t0:.1f} s ({state}); records in {store.path}"
        + ("" if complete else "; combine the shards with `idlsec bench merge`"))
    return {"complete": complete, "summaries": summaries, "out": str(store.dir)}


def strip_record(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in CONFIG_FIELDS}


def summarize_run(records: list[dict], configs: list[dict]) -> list[dict]:
    """One summary per configuration (grid order) from its records."""
    by_key: dict[str, list] = {}
    for r in records:
        by_key.setdefault(r.get("config"), []).append(r)
    out = []
    for c in configs:
        recs = sorted(by_key.get(c["key"], []), key=lambda r: r.get("pos", 0))
        if not recs:
            continue
        s = summarize([strip_record(r) for r in recs], k_grid=tuple(c.get("k_grid", ())))
        out.append({"config": c, **s})
    return out


def merge_dirs(dirs, out_dir, *, skip_corrupt: bool = False, log=None) -> dict:
    """Combine benchmark directories (shards) into ``out_dir``: records unioned by (config, image),
    configurations in the grid order of the first directory, gallery images copied."""
    log = log or (lambda msg: print(msg, flush=True))
    if not dirs:
        raise ConfigError("bench merge needs at least one directory")
    dirs = [Path(d) for d in dirs]
    out = Path(out_dir)
    if (out / RESULTS).exists() and out.resolve() not in [d.resolve() for d in dirs]:
        raise ConfigError(f"{out / RESULTS} exists; merge into a new directory (or list {out} as an input)")
    configs, runs, records, seen, clashes = [], [], [], {}, 0
    for d in dirs:
        if not (d / RESULTS).is_file():
            raise ConfigError(f"{d} is not a benchmark directory (no {RESULTS})")
        meta = read_suite_json(d)
        known = {c["key"] for c in configs}
        configs += [c for c in meta.get("configs", []) if c["key"] not in known]
        runs += meta.get("runs", [])
        for r in read_records(d / RESULTS, skip_corrupt=skip_corrupt).records:
            ident = (r.get("config"), r.get("pos"))
            if ident in seen:
                clashes += strip_volatile(seen[ident]) != strip_volatile(r)
                continue
            seen[ident] = r
            records.append(r)
    if clashes:
        log(f"warning: {clashes} record(s) appear in several directories with different values; "
            "kept the first directory's")
    out.mkdir(parents=True, exist_ok=True)
    (out / IMAGES).mkdir(exist_ok=True)
    for d in dirs:
        for f in sorted((d / IMAGES).glob("*.safetensors")):
            if not (out / IMAGES / f.name).exists():
                shutil.copyfile(f, out / IMAGES / f.name)
    write_records(out / RESULTS, canonical_order(records, [c["key"] for c in configs]))
    meta = {"name": read_suite_json(dirs[0]).get("name"), "configs": configs,
            "runs": runs + [{"merged": [str(d) for d in dirs], "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]}
    write_suite_json(out, meta)
    counts: dict = {}
    for r in records:
        counts[r.get("config")] = counts.get(r.get("config"), 0) + 1
    missing = sum(max(0, c["n"] - counts.get(c["key"], 0)) for c in configs)
    log(f"merged {len(dirs)} directories: {len(records)} record(s) of {len(configs)} configuration(s) "
        f"into {out}" + (f"; {missing} image(s) still missing" if missing else ""))
    return {"records": len(records), "configs": len(configs), "missing": missing}


def strip_volatile(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in VOLATILE_FIELDS}
