"""A suite's universal (SingleADV), detection and robustness jobs: each runs once per seed into
``DIR/jobs/<kind>-<label>-seed<seed>-<key>.json`` (``{"job": ..., "result": ...}``); a job whose
file exists is skipped, so a rerun resumes. Universal jobs also write their perturbation and
figure into the folder of the same name. :func:`job_tables` renders a run's jobs as markdown
tables (``idlsec report`` puts them in ``table.md``)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from ..errors import ConfigError
from .store import _atomic_write
from .suite import JobConfig, eps_text


def job_path(out_dir, job: JobConfig) -> Path:
    return Path(out_dir) / "jobs" / f"{job.kind}-{job.label}-seed{job.seed}-{job.key}.json"


def _make(job: JobConfig, device: str):
    from .detection import DetectionJob
    from .robustness import RobustnessJob
    from .universal import UniversalJob

    cls = {"universal": UniversalJob, "detection": DetectionJob, "robustness": RobustnessJob}[job.kind]
    try:
        return cls(**job.params, seed=job.seed, device=device)
    except TypeError as e:
        raise ConfigError(f"{job.title}: {e}") from None


def check_jobs(jobs: list[JobConfig], device: str = "cpu") -> None:
    """Cheap checks before any work: the job's fields build, its models are known."""
    from ..models import get_card

    for job in jobs:
        j = _make(job, device)
        for name in [j.model, *getattr(j, "transfer_to", []), *getattr(j, "accuracy_models", ()),
                     *([j.surrogate] if getattr(j, "surrogate", None) else [])]:
            get_card(name)
        if job.kind in ("detection", "robustness"):  # names, attack lists, sizes
            from .defense import _check as check_defense
            from .detection import _check as check_detection

            try:
                (check_detection if job.kind == "detection" else check_defense)(j)
            except ConfigError as e:
                raise ConfigError(f"{job.title}: {e}") from None
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
    from .robustness import run_robustness_job
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
        say = (lambda msg, t=job.title: log(f"{t}: {msg}"))
        if job.kind == "universal":
            result = run_universal_job(j, path.with_suffix(""))
        elif job.kind == "detection":
            result = run_detection_job(j, log=say)
        else:
            result = run_robustness_job(j, log=say)
        entry = {"job": job.to_dict(), "result": result, "seconds": time.perf_counter() - t0}
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, (json.dumps(entry, indent=1, default=str) + "\n").encode())
        log(f"[job {i + 1}/{len(jobs)}] {job.title}: {entry['seconds']:.1f} s -> {path}")
        out.append(entry)
    return out


# --- tables -----------------------------------------------------------------------------------
def _f(v, nd=2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(str(c) for c in r) + " |" for r in rows]]


def load_jobs(out_dir) -> list[dict]:
    """The finished jobs of a run (``DIR/jobs/*.json``), in the suite's order when suite.json
    lists them."""
    d = Path(out_dir) / "jobs"
    entries = [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []
    order = []
    meta = Path(out_dir) / "suite.json"
    if meta.is_file():
        order = [j.get("key") for j in json.loads(meta.read_text()).get("jobs", [])]
    rank = {k: i for i, k in enumerate(order)}
    return sorted(entries, key=lambda e: rank.get(e["job"].get("key"), len(rank)))


def _universal(entries) -> list[str]:
    rows, tr = [], []
    for e in entries:
        r, job = e["result"], e["job"]
        p, cfg = r.get("params", {}), r.get("config", {})
        norm = p.get("norm", cfg.get("norm", "linf"))
        budget = f"L∞ {r['eps'] * 255:.0f}/255" if norm == "linf" else f"L2 {r['eps']:.2f}"
        if p.get("adapt_inhibition"):
            budget += f", adaptive w ×{1 + p['adapt_inhibition']:g}"
        if p.get("polish_steps"):
            budget += f", polish {p['polish_steps']}"
        victim = f"{cfg.get('model', '?')} ({cfg.get('interpreter', '?')})"
        if cfg.get("surrogate"):
            victim = f"{cfg['surrogate']} ({cfg.get('surrogate_interpreter') or cfg.get('interpreter')}) → " + victim
        rows.append([job["label"], job["seed"], f"{r['source']}→{r['target']}", victim, cfg.get("split", "test"),
                     budget, p.get("kappa", "–"), p.get("lam", "–"), p.get("inhibition", "–"),
                     _f(r["fooling_rate_train"]), _f(r["fooling_rate_test"]), _f(r.get("fooling_rate_all")),
                     _f(r.get("already_target_share")), _f(r.get("misclassified_share")),
                     _f(r["target_confidence_mean"]), _f(r.get("unintended_fooling_rate")),
                     _f(r.get("unintended_to_target_rate")), _f(r["iou_topk_mean"]),
                     _f(r["iou_topk_fooled_mean"]), _f(r["map_l1_mean"], 1), r["iterations"],
                     f"{r['seconds']:.0f}"])
        for name, t in r.get("transfer", {}).items():
            tr.append([job["label"], job["seed"], f"{name} ({cfg.get('interpreter')})",
                       _f(r["fooling_rate_test"]), _f(t["fooling_rate"]),
                       _f(t.get("unintended_fooling_rate")), _f(t["iou_topk_mean"]),
                       _f(t["iou_topk_fooled_mean"])])
        for name, t in r.get("transfer_interpreters", {}).items():
            tr.append([job["label"], job["seed"], f"{cfg.get('model')} ({name})",
                       _f(r["fooling_rate_test"]), _f(t.get("fooling_rate", r["fooling_rate_test"])), "–",
                       _f(t["iou_topk_mean"]), _f(t["iou_topk_fooled_mean"])])
    out = ["## Universal perturbations (SingleADV)", "",
           "*victim*: the model (interpreter) measured; `A → B`: fitted on surrogate A, B seen only "
           "through its query oracle (black-box). *fool* = share of the held-out source images the "
           "clean victim classifies correctly that go to the target (train: the fitting images; "
           "*all*: over every source image); *→t before* / *mis.* = shares of source images the clean "
           "victim already labels as the target / as another wrong class; *conf* = mean p(target); "
           "*unint.* = share of other-class images whose predicted label changes (→t: to the target); "
           "*IoU* = mean top-k IoU of the map the system shows for its adversarial prediction vs the "
           "benign map, over the correctly classified sources (IoU_f: fooled ones only); *L1* = map "
           "L1 distance; *s* = wall seconds of the fit.", "",
           *_table(["job", "seed", "pair", "victim", "split", "budget", "κ", "λ", "w", "fool (train)", "fool",
                    "fool (all)", "→t before", "mis.", "conf", "unint.", "→t", "IoU", "IoU_f", "L1",
                    "iters", "s"], rows), ""]
    if tr:
        out += ["### Transfer of the perturbations", "",
                "The perturbation applied unchanged to another model through its oracle (its own "
                "interpreter), or the victim's maps from another interpreter.", "",
                *_table(["job", "seed", "to", "fool (victim)", "fool", "unint.", "IoU", "IoU_f"], tr),
                ""]
    return out


def _detection(entries) -> list[str]:
    rows, notes = [], []
    for e in entries:
        r, job = e["result"], e["job"]
        fpr = r.get("config", {}).get("fpr", 0.05)
        for x in r["rows"]:
            if "auroc" not in x:
                rows.append([job["label"], job["seed"], x["attack"], "–", "–", _f(x["asr"]), "–", 0,
                             "–", "–", "–", "–"])
                continue
            trained = "–" if x["detector"] in ("squeeze", "disagreement") or x["detector"].startswith("squeeze") else \
                ("yes" if x["trained_on"] else "no")
            rows.append([job["label"], job["seed"], x["attack"], x["detector"], trained, _f(x["asr"]),
                         _f(x["iou"]), x["n_adversarial"], _f(x["tpr_at_fpr"]), _f(x["auroc"], 3),
                         _f(x.get("tpr_at_threshold")), _f(x.get("fpr_at_threshold"))])
        if r.get("skipped"):
            notes.append(f"{job['label']} (seed {job['seed']}): not run (time cap): "
                         + ", ".join(r["skipped"]) + ".")
        coef = sorted(r.get("coefficients", {}).items(), key=lambda kv: -abs(kv[1]))[:6]
        if coef:
            notes.append(f"{job['label']} (seed {job['seed']}), largest logistic weights of `ensemble` "
                         "(standardised features): " + ", ".join(f"`{k}` {v:+.2f}" for k, v in coef)
                         + f"; {r['seconds']:.0f} s.")
    head = ["job", "seed", "attack", "detector", "trained on", "ASR", "IoU", "n adv",
            f"TPR@{fpr:g}FPR" if entries else "TPR@FPR", "AUROC", "TPR at calibrated thr.",
            "FPR at calibrated thr."]
    return ["## Detection", "",
            "Benign scores on held-out benign images; only successful adversarial examples count "
            "(n adv). `ensemble`: trained on the job's `train_attacks` (unseen protocol); "
            "`ensemble-seen`: on every attack's train half; `squeeze`: feature squeezing; "
            "`disagreement`: the map-disagreement feature alone; `adaptive-*`: the attack descends "
            "the named detector's score. Protocol `lofo` (leave-one-family-out): fitted, calibrated and "
            "trained (PGD family only) on split val, every row on test images; its headline figures "
            "are the TPR and FPR at the calibrated (val) threshold.", "", *_table(head, rows), "",
            *[f"{n}  " for n in notes], ""]


def _robustness(entries) -> list[str]:
    models, rows = [], []
    for e in entries:
        r, job = e["result"], e["job"]
        models += [[job["label"], job["seed"], m["model"], f"{m['clean_accuracy']:.{4 if m['n_clean'] >= 10000 else 3}f} ({m['n_clean']})",
                    f"{m['robust_accuracy']:.3f} ({m['n_robust']})"] for m in r.get("models", [])]
        rows += [[job["label"], job["seed"], x["defense"], x["attack"], x["mode"], _f(x["clean_accuracy"]),
                  _f(x["asr"]), _f(x["accuracy_under_attack"]), _f(x["iou"])] for x in r["rows"]]
    out = ["## Robustness of defended models", ""]
    if models:
        out += ["Clean accuracy and PGD-10 accuracy (eps 8/255, random start) on seeded random test "
                "images (their number in brackets).", "",
                *_table(["job", "seed", "model", "clean accuracy", "PGD-10 accuracy"], models), ""]
    if rows:
        out += ["Attacks on correctly classified test images; `transfer`: crafted on the undefended "
                "model; `adaptive`: crafted through the transform (BPDA / EOT); IoU: the defended "
                "system's adversarial vs benign map, over successful examples.", "",
                *_table(["job", "seed", "defense", "attack", "mode", "clean acc.", "ASR",
                         "acc. under attack", "map IoU"], rows), ""]
    return out


class FirstFool:
    """A stateful monitor wrapper (the oracle's ``monitor``) that also records, per stream (image
    id), the 1-based index of the first query the system under attack answers wrongly
    (untargeted: not the label; targeted: the target): a second, uncounted forward pass of
    ``system`` on the rows the oracle counts. Flags are the wrapped monitor's."""

    def __init__(self, inner, system, labels, targeted: bool):
        self.inner, self.system, self.targeted = inner, system, targeted
        self.labels = labels.detach().cpu().long()
        self.reset()

    def reset(self) -> None:
        self.inner.reset()
        n = len(self.labels)
        self.seen = torch.zeros(n, dtype=torch.long)
        self.first = torch.full((n,), -1, dtype=torch.long)

    def observe(self, x, streams=None):
        import torch.nn.functional as F

        flags = self.inner.observe(x, streams)
        s = (torch.zeros(len(x), dtype=torch.long) if streams is None
             else torch.as_tensor(streams).cpu().long())
        dev = next(iter(self.system.parameters())).device if hasattr(self.system, "parameters") \
            else x.device
        with torch.no_grad():
            pred = self.system(x.detach().to(dev)).argmax(1).cpu()
        fooled = pred == self.labels[s] if self.targeted else pred != self.labels[s]
        onehot = F.one_hot(s, len(self.labels))
        index = self.seen[s] + (onehot.cumsum(0) * onehot).sum(1)   # 1-based, per stream
        self.seen += onehot.sum(0)
        big = torch.iinfo(torch.long).max
        hit = torch.full((len(self.labels),), big, dtype=torch.long).scatter_reduce(
            0, s[fooled], index[fooled], "amin")
        fresh = (self.first < 0) & (hit < big)
        self.first[fresh] = hit[fresh]
        return flags


def answering_system(model, transform=None):
    """What a black-box oracle answers with: ``model`` behind its input-transform defense."""
    return model if transform is None else (lambda x: model(transform(x)))


def watch_first_fool(attack, system, labels, targeted: bool) -> None:
    """Before a monitored black-box run: wrap the oracle's monitor in a fresh :class:`FirstFool`
    for these ``labels`` (a run's streams are its rows), so :func:`monitor_fields` can tell when
    each stream first fooled ``system`` (the model behind the oracle's defense)."""
    mon = attack.oracle.monitor
    attack.oracle.monitor = FirstFool(getattr(mon, "inner", mon), system, labels, targeted)


def monitor_fields(attack, n: int) -> list[dict]:
    """After that run, per row: the 1-based first flagged query (``detected_at``) and first
    fooling query (``fooled_at``), -1 for never."""
    det = attack.oracle.detections(torch.arange(n)).tolist()
    fool = attack.oracle.monitor.first.tolist()
    return [{"detected_at": int(d), "fooled_at": int(f)} for d, f in zip(det, fool)]


def _detection_and_success(records: list[dict]):
    """Per run: the first flagged query (``detected_at``), whether the model was fooled, and the
    query that fooled it (``fooled_at``; else, without it, ``success`` and the query count)."""
    det = [r["detected_at"] for r in records]
    if all("fooled_at" in r for r in records):
        return det, [r["fooled_at"] > 0 for r in records], [r["fooled_at"] for r in records]
    return det, [r["success"] for r in records], [r["queries"] for r in records]


def stopped_runs(records: list[dict]) -> list[bool]:
    """Per run, whether the monitor stopped it: flagged at or before the query that first fooled
    the model, or flagged in a run that never fooled it (see :func:`monitor_summary`)."""
    det, ok, q = _detection_and_success(records)
    return [d > 0 and (not s or d <= n) for d, s, n in zip(det, ok, q)]


def monitor_summary(records: list[dict]) -> dict:
    """Detection before success of one configuration's records (black-box, with a ``monitor``).

    A run (one image's query stream) counts as *stopped* when the monitor flagged it at or before
    the first query that fooled the model (``fooled_at``; else its query count), or flagged
    it and the attack never succeeded: with ``on_detect="refuse"`` the answer to that query would
    have been withheld. Medians are over flagged / successful runs. ``fooled_at_first_query``:
    runs whose very first query fooled the model, which no monitor that compares a query with
    earlier ones can stop (``1 -`` it bounds ``detection_rate``)."""
    import statistics

    det, ok, q = _detection_and_success(records)
    stopped = stopped_runs(records)
    strict = [d > 0 and (not s or d < n) for d, s, n in zip(det, ok, q)]
    flagged = [d for d in det if d > 0]
    fooled = [n for n, s in zip(q, ok) if s]
    n = len(records)
    return {"runs": n, "detection_rate": sum(stopped) / n,
            "detected_strictly_before_success": sum(strict) / n,
            "flagged_at_all": len(flagged) / n,
            "queries_to_detection_median": statistics.median(flagged) if flagged else None,
            "asr_undefended": len(fooled) / n,
            "fooled_at_first_query": sum(s and m == 1 for s, m in zip(ok, q)) / n,
            "queries_to_success_median": statistics.median(fooled) if fooled else None}


def _monitor(out_dir) -> list[str]:
    from .store import RESULTS, read_records

    recs = [r for r in read_records(Path(out_dir) / RESULTS, skip_corrupt=True,
                                    warn=lambda m: None).records
            if "detected_at" in r]
    if not recs:
        return []
    groups: dict = {}
    for r in recs:
        groups.setdefault((r["model"], r["interpreter"], r["attack"], r["eps"], r["seed"]), []
                          ).append(r)
    rows = []
    for (model, interp, attack, eps, seed), mine in groups.items():
        s = monitor_summary(mine)
        rows.append([model, interp, attack, eps_text(eps), seed, s["runs"], _f(s["detection_rate"]),
                     _f(s["detected_strictly_before_success"]), _f(s["flagged_at_all"]),
                     _f(s["queries_to_detection_median"], 1), _f(s["asr_undefended"]),
                     _f(s["queries_to_success_median"], 1), _f(s["fooled_at_first_query"])])
    return ["## Stateful monitor: detection before success", "",
            "Each image is its own query stream. stopped: flagged at or before the query that "
            "fooled the model, or flagged and never fooled (with `on_detect=\"refuse\"` the answer "
            "would be withheld); strictly: flagged before it; q: medians over flagged / fooled "
            "runs; ASR as if undefended (the monitor only records); fooled at q1: the run's first "
            "query already fooled the model, which no history-based monitor can stop.", "",
            *_table(["model", "interpreter", "attack", "ε", "seed", "runs", "stopped", "strictly",
                     "flagged at all", "q to detection", "ASR", "q to success", "fooled at q1"],
                    rows), ""]


def job_tables(out_dir) -> list[str]:
    """Markdown sections of a run's finished jobs, one per kind (empty when there are none), and
    the stateful-monitor summary of its monitored black-box records."""
    entries = load_jobs(out_dir)
    out = _monitor(out_dir)
    for kind, render in (("universal", _universal), ("detection", _detection),
                         ("robustness", _robustness)):
        mine = [e for e in entries if e["job"]["kind"] == kind]
        if mine:
            out += render(mine)
    return out
