#!/usr/bin/env python
"""The robust zoo models' figures and what every defense costs (issue 18, items 2 and 6).

    python benchmarks/robust_zoo.py --out benchmarks/results/runs/robust-zoo [--update-cards]

Per model of ``--models`` (the standard cifar10-resnet20 and the adversarially trained ones), on
seeded random CIFAR-10 test images (``Dataset.sample(n, seed)``; L∞ eps 8/255; every figure counts
a clean mistake as a failure, as RobustBench does):
- clean accuracy on ``--clean-n`` images, PGD-20 (random start, 2/255 steps) on ``--n``;
- AutoAttack through torchattacks (:func:`idlsec.defenses.robustness.autoattack_accuracy`) on the
  first ``--aa-n`` of those images (default 200, the CPU budget; the issue's target asks 1,000):
  ``--aa fast`` (APGD-CE, APGD-T, FAB-T, Square with ``--aa-steps`` / ``--aa-queries``; an upper
  bound on the standard figure, labelled so) or ``standard``;
- targeted ADV^2 and AdvEdge on CAM (``--idls``, ``--idls-n`` images, ``--warmup-steps`` +
  ``--steps``): success and top-25% IoU of the adversarial vs the benign map.
Per input-transform defense (``--transforms``, on the standard model): clean accuracy on
``--clean-n`` (capped at 1,000) and PGD-20 accuracy on ``--transform-n`` through
``ThroughTransform`` (BPDA for JPEG / bit depth, a fresh draw per step for rp): the adaptive figure.
Latency (``--latency``): CPU (process) time per image on one thread, batch 1 and batch 256, of
cifar10-resnet20 (the robust models share its architecture, hence its cost), each transform, CAM
(the IDLS's interpreter), feature squeezing, the ensemble detector and BlackLight (per query); the
median of ``--repeats`` repeats.

Writes ``OUT/records.jsonl.gz`` (one record per image and measurement), ``OUT/meta.json``
(command, machine, sizes, seconds; a part resumed from ``parts/`` that an earlier invocation
computed with other arguments lists them) and ``OUT/summary.json`` (the figures, from the records
by :func:`summarize`). Each part is kept in ``OUT/parts/`` as it finishes, so a rerun resumes
(the caches below a model's part are keyed by the SHA-256 of its weights). ``--recompute
model-<name>`` reruns that part only and takes every other part from the run committed in ``OUT``
(after one model's weights change).
``--update-cards`` writes the figures of each packaged model into its JSON card
(``src/idlsec/models/weights/<name>.json``, key ``benchmark``). ``benchmarks/make_benchmarks_md.py``
renders the folder in the defenses section.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = "cifar10-resnet20,cifar10-resnet20-at,cifar10-resnet20-idlsat"  # add cifar10-resnet20-robust (the alias) at will
TRANSFORMS = "median,bitdepth,jpeg,rp"


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/runs/robust-zoo"))
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--clean-n", type=int, default=10000)
    ap.add_argument("--n", type=int, default=1000, help="images for PGD-20 and AutoAttack")
    ap.add_argument("--aa", choices=["fast", "standard", "none"], default="fast")
    ap.add_argument("--aa-steps", type=int, default=20)
    ap.add_argument("--aa-queries", type=int, default=500)
    ap.add_argument("--aa-n", type=int, default=200, help="AutoAttack on the first AA_N of the --n images")
    ap.add_argument("--aa-chunk", type=int, default=50, help="AutoAttack runs on chunks of this many images")
    ap.add_argument("--aa-budget-s", type=float, default=None,
                    help="start no new AutoAttack chunk after this many CPU seconds of it (n is then the "
                         "images of the finished chunks, recorded as such)")
    ap.add_argument("--pre-only", action="store_true",
                    help="worker mode: only fill the cache with the clean, PGD-20 and IDLS pieces (parts/cache-<model>)")
    ap.add_argument("--aa-stride", default=None, metavar="I/K",
                    help="worker mode: only fill the AutoAttack chunk cache with chunks i, i % K == I (run K "
                         "workers side by side, then the same command without --aa-stride to assemble); "
                         "workers with the same I/K share its chunks (each claims a chunk before running it)")
    ap.add_argument("--idls", default="adv2,advedge")
    ap.add_argument("--idls-n", type=int, default=16)
    ap.add_argument("--warmup-steps", type=int, default=50)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--transforms", default=TRANSFORMS)
    ap.add_argument("--transform-n", type=int, default=200)
    ap.add_argument("--latency", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--update-cards", action="store_true")
    ap.add_argument("--recompute", default=None, metavar="KEY[,KEY]",
                    help="recompute only these parts (model-<name>, transform-<name>, latency) and take every "
                         "other part from the committed run in --out (its records.jsonl.gz and meta.json): "
                         "after one model's weights change, the others are not rerun")
    return ap.parse_args(argv)


def parts_from_run(out: Path, keys: list[str], recompute: set[str]) -> list[str]:
    """Write ``parts/<key>.json`` for every key not in ``recompute`` and not yet in ``parts/``,
    from the run committed in ``out`` (records grouped as the parts wrote them; seconds and the
    arguments from meta.json); returns the keys written. A part missing from the run is left to
    be computed."""
    records, meta = read_records(out), json.loads((out / "meta.json").read_text())
    written = []
    for key in keys:
        if key in recompute or (out / "parts" / f"{key}.json").is_file():
            continue
        kind, _, name = key.partition("-")
        mine = [r for r in records if r["kind"] == "latency"] if key == "latency" else \
            [r for r in records if r["kind"] != "latency" and (
                r.get("defense") == name if kind == "transform" else (r["model"] == name and "defense" not in r))]
        if not mine:
            continue
        sec = meta["seconds"].get(key, {})
        part = {"records": mine, "wall_s": sec.get("wall_s"), "cpu_s": sec.get("cpu_s"),
                "args": sec.get("args", {**meta["args"], "note": f"from the run committed with: {meta['command']}"})}
        (out / "parts" / f"{key}.json").write_text(json.dumps(part) + "\n")
        written.append(key)
    return written


def _cpu_ms_per_image(fn, x, repeats) -> float:
    """Median CPU (process) time of ``fn(x)`` over ``repeats`` runs, per image, in ms."""
    fn(x)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn(x)
        times.append((time.process_time() - t) / x.shape[0] * 1000)
    return statistics.median(times)


def _cached(path: Path, fn):
    """``fn()``'s JSON result, kept at ``path`` (computed once; a rerun or a worker reuses it)."""
    if path.is_file():
        return json.loads(path.read_text())
    res = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res) + "\n")
    return res


def part_model(name, a, test, log) -> list[dict]:
    from idlsec.bench.robustness import idls_attack_summary
    from idlsec.defenses.robustness import pgd_accuracy
    from idlsec.models import load_model

    model = load_model(name)
    cache = Path(a.out) / "parts" / f"cache-{_weights_tag(name, model)}"
    idx = test.sample(min(a.clean_n, len(test)), seed=a.seed)
    recs = _cached(cache / f"clean-{idx.numel()}-seed{a.seed}.json", lambda: _clean_records(name, model, test, idx))
    log(f"{name}: clean {statistics.fmean(r['correct'] for r in recs):.4f} on {len(recs)}")
    idx = test.sample(min(a.n, len(test)), seed=a.seed)
    x, y = test.get(idx)
    pgd = _cached(cache / f"pgd20-{len(y)}-seed{a.seed}.json",
                  lambda: pgd_accuracy(model, x, y, steps=20, seed=a.seed, per_image=True))
    log(f"{name}: PGD-20 {pgd['robust_accuracy']:.3f} on {pgd['n']}")
    params = {"warmup_steps": a.warmup_steps, "steps": a.steps}
    idls = {atk: _cached(cache / f"idls-{atk}-{a.idls_n}-{a.warmup_steps}-{a.steps}-seed{a.seed}.json",
                         lambda atk=atk: idls_attack_summary(name, atk, x[:a.idls_n], y[:a.idls_n], model=model,
                                                             params=params, seed=a.seed, per_image=True))
            for atk in [s for s in a.idls.split(",") if s]}
    aa = None
    if a.aa != "none":
        aa = _autoattack_chunks(model, x, y, a, log, Path(a.out) / "parts" / f"aa-{_weights_tag(name, model)}")
    for j, i in enumerate(idx.tolist()):
        r = {"kind": "robust", "model": name, "index": i, "label": int(y[j]),
             "clean": pgd["clean_correct"][j], "pgd20": pgd["robust_correct"][j]}
        if aa is not None and j < len(aa["correct"]["clean"]):
            r["aa"] = {k: v[j] for k, v in aa["correct"].items()}
            r["aa_version"], r["aa_steps"], r["aa_queries"] = aa["version"], aa["steps"], aa["queries"]
        recs.append(r)
    for atk, res in idls.items():
        log(f"{name}: {atk}/cam ASR {res['asr']:.2f}, IoU@25% (all) {res['iou@0.25_all']:.2f}")
        recs += [{"kind": "idls", "model": name, "attack": atk, "interpreter": "cam", "params": params,
                  "index": int(idx[j]), "label": int(y[j]), "target": res["targets"][j],
                  "success": res["success"][j], "iou": res["iou"][j]} for j in range(len(res["success"]))]
    return recs


def _weights_tag(name, model) -> str:
    """A model's cache folder suffix: its name and the first 12 hex digits of the SHA-256 of its
    parameters, so new weights under the same name never reuse an old cache."""
    from idlsec.defenses import model_fingerprint

    return f"{name}-{model_fingerprint(model)[:12]}"


def _clean_records(name, model, test, idx) -> list[dict]:
    recs = []
    for s in range(0, idx.numel(), 500):
        xb, yb = test.get(idx[s:s + 500])
        with torch.no_grad():
            ok = (model(xb).argmax(1) == yb).tolist()
        recs += [{"kind": "clean", "model": name, "index": int(i), "correct": c}
                 for i, c in zip(idx[s:s + 500].tolist(), ok)]
    return recs


def _claim(path: Path) -> bool:
    """Take the chunk at ``path`` for this worker (a ``.claim`` file created atomically beside it):
    workers started with the same ``--aa-stride`` share the chunks, whenever each was started."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.with_suffix(".claim").open("x").close()
    except FileExistsError:
        return False
    return True


def _autoattack_chunks(model, x, y, a, log, cache: Path) -> dict:
    """AutoAttack on the first ``--aa-n`` images, ``--aa-chunk`` at a time, until the CPU budget
    ``--aa-budget-s`` is spent (a chunk once started is finished): per-image ``correct`` lists.
    Each chunk is kept in ``cache`` as it finishes (keyed by its images and settings), so a rerun
    resumes; a cached chunk costs no budget."""
    from idlsec.defenses.robustness import autoattack_accuracy

    kw = {"steps": a.aa_steps, "queries": a.aa_queries} if a.aa == "fast" else {}
    m = min(a.aa_n or len(y), len(y))
    out, start, done = None, time.process_time(), 0
    me, workers = map(int, a.aa_stride.split("/")) if a.aa_stride else (0, 1)
    for s in range(0, m, a.aa_chunk):
        if (s // a.aa_chunk) % workers != me:
            continue
        e = min(s + a.aa_chunk, m)
        path = cache / f"{a.aa}-{a.aa_steps}-{a.aa_queries}-seed{a.seed}-{s}-{e}.json"
        if path.is_file():
            part = json.loads(path.read_text())
        elif a.aa_budget_s is not None and out is not None and time.process_time() - start > a.aa_budget_s:
            log(f"  AutoAttack: CPU budget {a.aa_budget_s:.0f} s spent, stopped at image {s} of {m}")
            break  # before claiming: a chunk this worker will not run stays free for the others
        elif a.aa_stride and not _claim(path):  # a worker beside this one has taken the chunk
            continue
        else:
            part = autoattack_accuracy(model, x[s:e], y[s:e], version=a.aa, seed=a.seed, per_image=True, log=log,
                                       **kw)
            cache.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(part) + "\n")
        if out is None:
            out = part
        else:
            for key, v in part["correct"].items():
                out["correct"][key] += v
        done += e - s
        log(f"  AutoAttack ({a.aa}) images {s}-{e}: robust {sum(list(out['correct'].values())[-1])} of {done} "
            f"so far ({time.process_time() - start:.0f} CPU-s)")
    return out


def part_transform(name, a, test, log) -> list[dict]:
    from idlsec.defenses.adaptive import ThroughTransform
    from idlsec.defenses.robustness import pgd_accuracy
    from idlsec.defenses.transforms import get_defense
    from idlsec.models import load_model

    model = ThroughTransform(load_model("cifar10-resnet20"), get_defense(name, seed=a.seed)
                             if name == "rp" else get_defense(name)).eval()
    recs = []
    idx = test.sample(min(a.clean_n, 1000, len(test)), seed=a.seed)
    x, y = test.get(idx)
    with torch.no_grad():
        ok = torch.cat([model(x[s:s + 250]).argmax(1) == y[s:s + 250] for s in range(0, len(y), 250)])
    recs += [{"kind": "clean", "model": "cifar10-resnet20", "defense": name, "index": int(i), "correct": c}
             for i, c in zip(idx.tolist(), ok.tolist())]
    idx = test.sample(min(a.transform_n, len(test)), seed=a.seed)
    x, y = test.get(idx)
    pgd = pgd_accuracy(model, x, y, steps=20, seed=a.seed, per_image=True)
    log(f"{name}: clean {ok.float().mean():.3f}, adaptive PGD-20 {pgd['robust_accuracy']:.3f} on {pgd['n']}")
    recs += [{"kind": "robust", "model": "cifar10-resnet20", "defense": name, "adaptive": True,
              "index": int(i), "clean": c, "pgd20": r}
             for i, c, r in zip(idx.tolist(), pgd["clean_correct"], pgd["robust_correct"])]
    return recs


def part_latency(a, test, transforms, log) -> list[dict]:
    from idlsec.defenses import BlackLight, EnsembleDetector, FeatureSqueezing
    from idlsec.defenses.transforms import defend, get_defense
    from idlsec.interpreters import get_interpreter
    from idlsec.models import load_model

    x, y = test.get(test.sample(256, seed=a.seed))
    base = load_model("cifar10-resnet20")  # every robust resnet20 of the zoo has its architecture
    nograd = lambda f: (lambda v: torch.no_grad()(f)(v))  # noqa: E731
    cands = {"cifar10-resnet20 (any resnet20 of the zoo)": nograd(base)}
    cands.update({f"cifar10-resnet20 + {t}": nograd(defend(base, get_defense(t)).eval()) for t in transforms})
    cam = get_interpreter("cam", base)
    cands["CAM map (the interpreter)"] = lambda v: cam.logits_and_maps(v, base(v).argmax(1), create_graph=False)
    fs = FeatureSqueezing(base).fit(x[:128], fpr=0.05)
    cands["feature squeezing (score)"] = fs.score
    det = EnsembleDetector(base, ["cam", "gradcam", "grad"], score="zmax")  # same features as logistic
    det.fit(x[:128], fpr=0.05)
    cands["ensemble detector (score)"] = det.score
    recs = []
    for label, fn in cands.items():
        for bs in (1, 256):
            xb = x[:bs] if bs > 1 else x[:1]
            reps = a.repeats if bs > 1 else a.repeats * 4
            ms = _cpu_ms_per_image(fn, xb, reps) if bs > 1 else statistics.median(
                _cpu_ms_per_image(fn, x[i:i + 1], a.repeats) for i in range(8))
            recs.append({"kind": "latency", "what": label, "batch": bs, "cpu_ms_per_image": ms})
            log(f"latency {label}, batch {bs}: {ms:.3f} ms/image")
    q = (x[:64] * 255).round() / 255
    times = []
    for _ in range(a.repeats):
        bl = BlackLight()
        t = time.process_time()
        bl.observe(q)
        times.append((time.process_time() - t) / q.shape[0] * 1000)
    recs.append({"kind": "latency", "what": "BlackLight (per query, 64-query stream)", "batch": 1,
                 "cpu_ms_per_image": statistics.median(times)})
    return recs


def summarize(records: list[dict]) -> dict:
    """The figures of a records file: per model / transform, the accuracies and IDLS rates."""
    mean = lambda v: statistics.fmean(float(b) for b in v) if v else None  # noqa: E731
    out: dict = {"models": {}, "transforms": {}, "latency": {}}
    for r in records:
        if r["kind"] == "latency":
            out["latency"].setdefault(r["what"], {})[f"batch {r['batch']}"] = r["cpu_ms_per_image"]
    keys = sorted({(r["model"], r.get("defense")) for r in records if r["kind"] != "latency"},
                  key=lambda k: (k[1] is not None, k[1] or "", k[0]))
    for model, defense in keys:
        mine = [r for r in records if r.get("model") == model and r.get("defense") == defense]
        clean = [r["correct"] for r in mine if r["kind"] == "clean"]
        rob = [r for r in mine if r["kind"] == "robust"]
        d = {"clean_accuracy": mean(clean), "clean_n": len(clean), "n": len(rob),
             "pgd20_accuracy": mean([r["pgd20"] for r in rob]),
             "clean_accuracy_on_n": mean([r["clean"] for r in rob])}
        aa = [r for r in rob if "aa" in r]
        if aa:
            d["autoattack"] = {"version": aa[0]["aa_version"], "steps": aa[0]["aa_steps"],
                               "queries": aa[0]["aa_queries"], "n": len(aa),
                               "after": {k: mean([r["aa"][k] for r in aa]) for k in aa[0]["aa"]}}
            d["autoattack_accuracy"] = d["autoattack"]["after"][list(aa[0]["aa"])[-1]]
        for atk in sorted({r["attack"] for r in mine if r["kind"] == "idls"}):
            rs = [r for r in mine if r["kind"] == "idls" and r["attack"] == atk]
            ok = [r["iou"] for r in rs if r["success"]]
            d.setdefault("idls", {})[f"{atk}/{rs[0]['interpreter']}"] = {
                "n": len(rs), "asr": mean([r["success"] for r in rs]), "iou_all": mean([r["iou"] for r in rs]),
                "iou_successes": mean(ok), "params": rs[0]["params"]}
        (out["transforms"] if defense else out["models"])[defense or model] = d
    return out


def read_records(out: Path) -> list[dict]:
    with gzip.open(out / "records.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def update_cards(summary: dict, command: str) -> list[str]:
    from idlsec.models import get_card
    from idlsec.models.zoo import WEIGHTS_DIR

    done = []
    for name, d in summary["models"].items():
        packaged = get_card(name).packaged
        path = WEIGHTS_DIR / Path(packaged).with_suffix(".json").name if packaged else None
        if path is None or not path.is_file():
            continue
        card = json.loads(path.read_text())
        card["benchmark"] = {"command": command, "records": "benchmarks/results/runs/robust-zoo/records.jsonl.gz",
                             **{k: d[k] for k in ("clean_accuracy", "clean_n", "n", "pgd20_accuracy",
                                                  "autoattack_accuracy", "autoattack", "idls") if k in d}}
        path.write_text(json.dumps(card, indent=2) + "\n")
        done.append(path.name)
    return done


def main(argv=None) -> int:
    from idlsec.data import load_dataset
    from idlsec.runtime import machine_info

    a = _args(argv)
    torch.manual_seed(a.seed)
    out = Path(a.out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    test = load_dataset("cifar10", "test")
    models = [m for m in a.models.split(",") if m]
    if a.pre_only:  # worker: the clean, PGD-20 and IDLS pieces of the models into the cache only
        from argparse import Namespace

        for m in models:
            part_model(m, Namespace(**{**vars(a), "aa": "none"}), test, lambda msg: print(msg, flush=True))
        return 0
    if a.aa_stride:  # worker: AutoAttack chunks into the cache only
        from idlsec.models import load_model

        for m in models:
            x, y = test.get(test.sample(min(a.n, len(test)), seed=a.seed))
            model = load_model(m)
            _autoattack_chunks(model, x, y, a, lambda msg: print(msg, flush=True),
                               out / "parts" / f"aa-{_weights_tag(m, model)}")
        return 0
    transforms = [t for t in a.transforms.split(",") if t]
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    jobs = [(f"model-{m}", lambda m=m: part_model(m, a, test, log)) for m in models]
    jobs += [(f"transform-{t}", lambda t=t: part_transform(t, a, test, log)) for t in transforms]
    if a.latency:
        jobs.append(("latency", lambda: part_latency(a, test, transforms, log)))
    if a.recompute is not None:
        recompute = {k for k in a.recompute.split(",") if k}
        unknown = recompute - {key for key, _ in jobs}
        if unknown:
            raise SystemExit(f"--recompute: no part(s) {sorted(unknown)}; parts: {[key for key, _ in jobs]}")
        for key in recompute:  # the caches below it are keyed by the weights, so they stay
            (out / "parts" / f"{key}.json").unlink(missing_ok=True)
        log(f"from the committed run: {', '.join(parts_from_run(out, [k for k, _ in jobs], recompute)) or 'none'}")
    seconds, records = {}, []
    for key, fn in jobs:
        path = out / "parts" / f"{key}.json"
        if path.is_file():
            part = json.loads(path.read_text())
        else:
            w, c = time.perf_counter(), time.process_time()
            part = {"records": fn(), "wall_s": round(time.perf_counter() - w, 1),
                    "cpu_s": round(time.process_time() - c, 1), "args": vars(a)}
            path.write_text(json.dumps(part) + "\n")
        seconds[key] = {"wall_s": part["wall_s"], "cpu_s": part["cpu_s"],
                        **({"args": part["args"]} if part.get("args") not in (None, vars(a)) else {})}
        records += part["records"]
    with gzip.GzipFile(out / "records.jsonl.gz", "wb", mtime=0) as g:
        g.write("".join(json.dumps(r) + "\n" for r in records).encode())
    command = "python benchmarks/robust_zoo.py " + " ".join(shlex.quote(s) for s in (argv or sys.argv[1:]))
    meta = {"command": command, "machine": machine_info("cpu"), "args": vars(a), "seconds": seconds,
            "note": "CPU (process) time on a 2-core machine shared with other jobs"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    summary = summarize(records)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if a.update_cards:
        print("updated", ", ".join(update_cards(summary, command)) or "no card")
    return 0


if __name__ == "__main__":
    sys.exit(main())
