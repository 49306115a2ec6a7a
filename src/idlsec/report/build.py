"""``idlsec report DIR``: load a run directory (``idlsec bench`` or ``idlsec attack``) and write
DIR/table.md, DIR/table.csv, DIR/plots/*.png and a self-contained DIR/report.html."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..bench.records import summarize
from ..bench.runner import strip_record
from ..bench.store import RESULTS, SUITE, load_gallery, read_records, read_suite_json
from ..bench.suite import eps_text
from ..errors import IdlsecError, InputError
from ..metrics.stats import interval_columns
from .meta import class_names, header_lines, machine_text  # noqa: F401  (re-exported)


@dataclass
class Group:
    """One configuration of a run: its config, records (by image position), summary and gallery."""

    key: str
    config: dict
    records: list
    summary: dict
    gallery: dict | None = None
    runs: list = field(default_factory=list)

    @property
    def interpreter(self) -> str:
        return self.config.get("interpreter_label") or self.config.get("interpreter", "?")

    @property
    def attack(self) -> str:
        return self.config.get("attack_label") or self.config.get("attack", "?")

    @property
    def defense(self) -> str:
        return self.config.get("defense_label") or self.config.get("defense") or "none"

    @property
    def title(self) -> str:
        parts = [self.config.get("model", "?"), self.interpreter, self.attack]
        if self.defense != "none":
            parts.append(self.defense)
        eps = self.config.get("eps")
        tail = f" (ε={eps_text(eps)}, seed={self.config.get('seed')})" if eps is not None else ""
        return " / ".join(parts) + tail


@dataclass
class Run:
    dir: Path
    kind: str            # "bench" | "attack"
    name: str
    groups: list
    meta: dict


def _summary(records, config) -> dict:
    k_grid = tuple(config.get("k_grid") or ())
    s = summarize([strip_record(r) for r in records], k_grid=k_grid) if k_grid else \
        summarize([strip_record(r) for r in records])
    budgets = config.get("query_budgets")
    if budgets and "queries" in (records[0] if records else {}):
        from ..metrics import query_stats

        s.update(query_stats([r["queries"] for r in records], [r["success"] for r in records], budgets))
    s.update(interval_columns([strip_record(r) for r in records]))  # *_ci95_lo / *_ci95_hi
    return s


def _pools(groups: list[Group]) -> list[list[Group]]:
    """The groups by configuration but for the seed, in first-seen order."""
    pools: dict = {}
    for g in groups:
        ident = json.dumps({k: v for k, v in g.config.items() if k not in ("key", "seed")},
                           sort_keys=True, default=str)
        pools.setdefault(ident, []).append(g)
    return list(pools.values())


def pool_seeds(groups: list[Group]) -> list[Group]:
    """One group per configuration pooled over its seeds (configurations equal but for the seed):
    the records of every seed together, summarised and given intervals over all of them
    (docs/protocol.md). ``config["seed"]`` lists the seeds ("0,1,2")."""
    out = []
    for members in _pools(groups):
        first = members[0]
        seeds = ",".join(str(m.config.get("seed")) for m in members)
        records = [r for m in members for r in m.records]
        key = hashlib.sha1("+".join(m.key for m in members).encode()).hexdigest()[:12]
        out.append(Group(key, {**first.config, "seed": seeds, "key": key}, records,
                         _summary(records, first.config)))
    return out


def seeds_vary(groups: list[Group]) -> bool:
    """Whether some configuration was run with several seeds."""
    return any(len(m) > 1 for m in _pools(groups))


def load_run(directory, *, skip_corrupt: bool = False) -> Run:
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"not a directory: {d}")
    res = d / RESULTS
    if not res.is_file() and (d / f"{RESULTS}.gz").is_file():  # a committed run (BENCHMARKS.md)
        res = d / f"{RESULTS}.gz"
    if not res.is_file():
        raise InputError(f"{d} has no {RESULTS}: not an `idlsec bench` or `idlsec attack` output directory")
    records = read_records(res, skip_corrupt=skip_corrupt).records
    if (d / SUITE).is_file():
        meta = read_suite_json(d)
        configs = meta.get("configs", []) if isinstance(meta, dict) else None
        if not isinstance(configs, list) or not all(isinstance(c, dict) and "key" in c for c in configs):
            raise InputError(f"{d / SUITE}: not a suite record (a JSON object whose 'configs' is a list of "
                             "objects with a 'key'); is this an `idlsec bench` folder?")
        by_key: dict = {}
        for r in records:
            by_key.setdefault(r.get("config"), []).append(r)
        groups = []
        for c in meta.get("configs", []):
            recs = sorted(by_key.pop(c["key"], []), key=lambda r: r.get("pos", 0))
            if recs:
                groups.append(Group(c["key"], c, recs, _summary(recs, c), load_gallery(d, c["key"])))
        for key, recs in by_key.items():  # records of configurations suite.json does not know
            r0 = recs[0]
            c = {k: r0.get(k) for k in ("model", "dataset", "interpreter", "attack", "defense", "eps", "seed")}
            groups.append(Group(str(key), c, recs, _summary(recs, c), load_gallery(d, str(key))))
        return Run(d, "bench", meta.get("name") or d.name, groups, meta)
    if not (d / "summary.json").is_file():
        raise InputError(f"{d} has {RESULTS} but neither suite.json (idlsec bench) nor summary.json (idlsec attack)")
    try:
        summary = json.loads((d / "summary.json").read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{d / 'summary.json'}: not valid JSON ({e})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("config") or {}, dict):
        raise InputError(f"{d / 'summary.json'}: not an `idlsec attack` summary (a JSON object with a 'config')")
    config = dict(summary.get("config") or {})
    config.setdefault("defense", "none")
    for i, r in enumerate(records):
        r.setdefault("pos", i)
    gallery = None
    adv = d / "adversarial.safetensors"
    if adv.is_file():
        from safetensors.torch import load_file

        gallery = load_file(str(adv))
        gallery["pos"] = torch.arange(gallery["images"].shape[0])
    group = Group("attack", config, records, _summary(records, config), gallery)
    return Run(d, "attack", d.name, [group], {"configs": [config], "runs": []})


def write_report(directory, *, skip_corrupt: bool = False, gallery: int | None = None, html: bool = True) -> dict:
    """Everything is computed first (plots into a temporary folder); then the files are put in
    place, each atomically. A malformed run folder is an InputError and writes nothing."""
    import os
    import tempfile

    from ..validation import write_text_atomic

    d = Path(directory)
    with tempfile.TemporaryDirectory(dir=d if d.is_dir() else None, prefix=".report-") as tmp:
        try:
            run, texts, made = _build(directory, Path(tmp), skip_corrupt=skip_corrupt, gallery=gallery, html=html)
        except (IdlsecError, OSError):
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise InputError(f"{directory}: malformed run folder ({type(e).__name__}: {e})") from None
        d = run.dir
        plots_out = []
        if made:
            (d / "plots").mkdir(exist_ok=True)
            for p in made:
                os.replace(p, d / "plots" / p.name)
                plots_out.append(d / "plots" / p.name)
        for name, text in texts.items():
            write_text_atomic(d / name, text)
    return {"table_md": d / "table.md", "table_csv": d / "table.csv", "plots": plots_out,
            "html": d / "report.html" if "report.html" in texts else None,
            "table_pooled_csv": d / "table_pooled.csv" if "table_pooled.csv" in texts else None}


def _build(directory, pdir: Path, *, skip_corrupt, gallery, html):
    from ..bench.kinds import job_tables
    from . import plots, tables

    run = load_run(directory, skip_corrupt=skip_corrupt)
    jobs = job_tables(run.dir)  # a suite's universal / detection / robustness jobs
    if not run.groups and not jobs:
        raise InputError(f"{run.dir}/{RESULTS} has no records yet")
    pooled = pool_seeds(run.groups) if seeds_vary(run.groups) else None
    md = [f"# Results: {run.name}", "", *[f"{ln}  " for ln in header_lines(run)], ""]
    for title, (head, rows) in tables.all_tables(run.groups, pooled) if run.groups else []:
        md += [f"## {title}", "", tables.markdown_table(head, rows), ""]
    md += ([tables.LEGEND, ""] if run.groups else []) + jobs
    texts = {"table.md": "\n".join(md), "table.csv": tables.csv_text(run.groups)}
    if pooled:  # one row per configuration, its seeds pooled (intervals over all their images)
        texts["table_pooled.csv"] = tables.csv_text(pooled)
    made = [p for p in (plots.iou_vs_k(pooled or run.groups, pdir / "iou_vs_k.png"),
                        plots.asr_vs_queries(run.groups, pdir / "asr_vs_queries.png"),
                        plots.map_distance_hist(run.groups, pdir / "map_distances.png")) if p is not None]
    if html:
        from .html import render_report

        texts["report.html"] = render_report(run, made, gallery=gallery, pooled=pooled)
    return run, texts, made
