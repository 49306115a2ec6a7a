"""Leave-one-family-out detection (``DetectionJob(protocol="lofo")``; docs/defenses.md, issue 17
item 4 and issue 18 item 4).

Protocol (one seeded run; every choice is made on the validation split, every figure on test):
1. *Validation* (``load_dataset(name, "val")``, training images never in the test split): 2·n_benign
   benign images in a seeded order (fit: the logistic combination and the Mahalanobis class
   statistics; calibrate: the threshold at ``fpr``), and n correctly classified others on which
   the ``train_attacks`` run: the **PGD family only** (``pgd``, ``pgd-weak``). No interpretation
   attack is seen in training, so ADV^2, AdvEdge and AdvEdge+ are all unseen.
2. *Test*: n_benign benign test images (the FPR measured at the validation threshold) and n
   correctly classified others, each with a seeded random target; every attack of ``attacks``
   runs on them. A row reports, over the successful examples, the TPR at the validation
   threshold with its 95% bootstrap interval (docs/protocol.md), the FPR measured on the test
   benign images at that threshold (interval), the AUROC, and the *evasion* rate: attacked
   images that are both successful and unflagged, over all attacked images.
   ``detectors``: further registered detectors (``defenses.get_detector``: ``squeeze-nlm``,
   ``lid``, ``ensemble-random``, …) fitted, trained and calibrated on the same images.
3. ``adaptive``: ADV^2 / AdvEdge(+) re-run on the first ``adaptive_n`` test images against each of
   ``adaptive_detectors`` (default: every detector of the job), descending its calibrated score
   (``defenses.adaptive``: straight-through squeezers, maps with ``create_graph``; a randomised
   detector's score drawn afresh at every step from the attacker's own generator, EOT, with
   ``adaptive_eot`` draws per step).
4. ``harden``: the ``harden_attacks`` run adaptively against ``harden_detector`` (default
   ``ensemble``) on ``harden_n`` further validation images; ``<detector>-hardened`` is the same
   detector refitted on the PGD positives plus these (replicated so that they carry half of the
   positives' weight), calibrated on the same validation benign images. With ``harden_rounds``
   = k > 1 the refits are iterated: in round r the attacker re-aims at the round r − 1 detector
   on the same validation images, and ``<detector>-hardened<r>`` is refitted on every round's
   adaptive examples so far. The adaptive attacker is then run afresh against each.

The result carries per-image records (``images``: every benign test image and every attacked
image with each detector's score) from which the report recomputes every figure, pools seeds
and draws ROC curves."""

from __future__ import annotations

import math
import time

import torch

from ..data import load_dataset_for
from ..defenses import EnsembleDetector, FeatureSqueezing, get_detector
from ..errors import ConfigError
from ..interpreters import get_interpreter
from ..metrics.detection import detection_summary
from ..metrics.stats import bootstrap_ci
from ..models import load_model

IDLS_ATTACKS = ("adv2", "advedge", "advedge+")  # the interpretation attacks (with adaptive versions)
LOFO_TRAIN = ("pgd", "pgd-weak")
DETECTORS = ("ensemble", "ensemble-hardened", "squeeze")


def hardened_name(base: str, r: int) -> str:
    return f"{base}-hardened" + ("" if r == 1 else str(r))


def lofo_detectors(job) -> list[str]:
    """Every detector a lofo job fits, in order (``squeeze`` is always scored)."""
    names = ["ensemble", *[d for d in job.detectors if d != "ensemble"]]
    if job.harden:
        names += [hardened_name(job.harden_detector, r) for r in range(1, job.harden_rounds + 1)]
    return names


def build_detector(name: str, model, job):
    """A registered detector with the job's settings (interpreters, squeezers, l2, seed)."""
    from ..defenses.registry import DETECTORS as REGISTRY

    if name not in REGISTRY:
        raise ConfigError(f"unknown detector {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    if name.startswith("ensemble"):
        kw = {"l2": job.l2, "seed": job.seed}
        if name == "ensemble":
            kw["squeezers"] = list(job.squeezers)
        return get_detector(name, model, interpreters=list(job.interpreters), **kw)
    if name.startswith("squeeze"):
        return get_detector(name, model, seed=job.seed)
    if name == "lid":
        return get_detector(name, model, l2=job.l2)
    if name == "union":
        return get_detector(name, model, interpreters=list(job.interpreters), l2=job.l2, seed=job.seed)
    return get_detector(name, model)


def check_lofo(job) -> None:
    if not job.train_attacks or any(a not in LOFO_TRAIN for a in job.train_attacks):
        raise ConfigError(f"protocol 'lofo' trains on the PGD family only: train_attacks must be among "
                          f"{list(LOFO_TRAIN)}, got {list(job.train_attacks)}")
    if job.seen_detector:
        raise ConfigError("protocol 'lofo' has no seen detector (seen_detector: false)")
    for a in job.harden_attacks:
        if a not in IDLS_ATTACKS:
            raise ConfigError(f"harden attack {a!r} has no adaptive version; valid: {list(IDLS_ATTACKS)}")
    from ..defenses.registry import DETECTORS as REGISTRY

    for d in job.detectors:
        if d not in REGISTRY:
            raise ConfigError(f"unknown detector {d!r}; valid: {', '.join(sorted(REGISTRY))}")
    if job.harden and job.harden_detector not in ("ensemble", *job.detectors):
        raise ConfigError(f"harden_detector {job.harden_detector!r} is not among the job's detectors "
                          f"{['ensemble', *job.detectors]}")
    if not isinstance(job.harden_rounds, int) or job.harden_rounds < 1:
        raise ConfigError(f"harden_rounds must be an integer >= 1, got {job.harden_rounds!r}")
    if not isinstance(job.adaptive_eot, int) or job.adaptive_eot < 1:
        raise ConfigError(f"adaptive_eot must be an integer >= 1, got {job.adaptive_eot!r}")
    valid = lofo_detectors(job)
    for d in job.adaptive_detectors or ():
        if d not in valid:
            if "hardened" in d and not job.harden:
                raise ConfigError(f"adaptive detector {d!r} needs harden: true")
            raise ConfigError(f"adaptive detector {d!r} is not one of {valid}")


def _pick(dataset, model, job, n_any: int, n_correct: int, gen, log):
    """(any_idx, correct_idx, labels): n_any images in a seeded order, then n_correct others the
    model classifies correctly."""
    order = torch.randperm(len(dataset), generator=gen)
    any_idx, rest = order[:n_any], order[n_any:]
    kept, labels = [], []
    for s in range(0, len(rest), 512):
        idx = rest[s:s + 512]
        x, y = dataset.get(idx)
        with torch.no_grad():
            pred = model(x.to(job.device)).argmax(1).cpu()
        if not dataset.labeled:
            y = pred
        kept.append(idx[pred == y])
        labels.append(y[pred == y])
        if sum(len(k) for k in kept) >= n_correct:
            break
    idx = torch.cat(kept)[:n_correct]
    if len(any_idx) < n_any or len(idx) < n_correct:
        raise ConfigError(f"not enough {dataset.split} images of {dataset.name} for this n / n_benign "
                          f"({len(any_idx)} benign of {n_any}, {len(idx)} correctly classified of {n_correct})")
    log(f"{dataset.split}: {n_any} benign, {n_correct} correctly classified images")
    return any_idx, idx, torch.cat(labels)[:n_correct]


def _ci(flags) -> tuple:
    return bootstrap_ci([float(f) for f in flags]) if len(flags) else (None, None)


def _row(attack, s, scores_b, thr, fpr, *, detector, adaptive, trained_on):
    """One table row over a set ``s`` (its successes are the positives)."""
    ok = s["success"].bool()
    sa = s["scores"][detector]
    row = {"attack": attack, "detector": detector, "adaptive": adaptive, "trained_on": trained_on,
           "protocol": "lofo", "n": len(ok), "asr": float(ok.float().mean()),
           "iou": float(s["iou"][ok].nanmean()) if ok.any() else None}
    if not ok.any():
        return row
    flagged_b = (scores_b > thr).tolist()
    flagged_a = (sa[ok] > thr).tolist()
    evaded = [bool(o and not f) for o, f in zip(ok.tolist(), (sa > thr).tolist())]
    row.update(detection_summary(scores_b, sa[ok], fpr=fpr, threshold=thr))
    row["evasion"] = sum(evaded) / len(evaded)
    for key, flags in (("tpr_at_threshold", flagged_a), ("fpr_at_threshold", flagged_b), ("evasion", evaded)):
        row[f"{key}_ci95_lo"], row[f"{key}_ci95_hi"] = _ci(flags)
    return row


def run_lofo_job(job, *, craft, attack, log=print, on_rows=None) -> dict:
    """Run the protocol; ``craft`` / ``attack`` are ``bench.detection``'s (the crafted-set cache and
    one attack in batches, adaptive or not)."""
    _attack = attack
    check_lofo(job)
    start = time.perf_counter()
    over = (lambda: job.time_cap is not None and time.perf_counter() - start > job.time_cap)
    torch.manual_seed(job.seed)
    model = load_model(job.model, weights=job.weights, device=job.device, **job.model_options)
    name = job.dataset or model.card.dataset
    val = load_dataset_for(model, name, "val", **job.data_options)
    test = load_dataset_for(model, name, "test", **job.data_options)
    gen = torch.Generator().manual_seed(job.seed)
    nb, n, hn = job.n_benign, job.n, (job.harden_n or job.n) if job.harden else 0
    vb_idx, va_idx, va_y = _pick(val, model, job, 2 * nb, n + hn, gen, log)
    tb_idx, ta_idx, ta_y = _pick(test, model, job, nb, n, gen, log)
    k = val.num_classes
    va_t = (va_y + torch.randint(1, k, (len(va_y),), generator=gen)) % k
    ta_t = (ta_y + torch.randint(1, k, (len(ta_y),), generator=gen)) % k
    xvb, _ = val.get(vb_idx)
    xva, _ = val.get(va_idx)
    xtb, _ = test.get(tb_idx)
    xta, _ = test.get(ta_idx)
    interp = get_interpreter(job.attack_interpreter, model)
    det = EnsembleDetector(model, list(job.interpreters), squeezers=list(job.squeezers), l2=job.l2)
    fs = FeatureSqueezing(model, squeezers=list(job.reference_squeezers))
    log(f"features of {3 * nb} benign images")
    fvb, ftb = det.features(xvb), det.features(xtb)
    fs.calibrate(fs.score(xvb[nb:]), job.fpr)
    # 1. the PGD family on validation images: the only positives the detector sees
    pos, pos_x = [], []
    for a in job.train_attacks:
        r = craft(a, model, interp, xva[:n], va_y[:n], va_t[:n], job, va_idx[:n], "val")
        pos.append(det.features(r[0])[r[1].bool()])
        pos_x.append(r[0][r[1].bool()])
        log(f"{a} (val): ASR {float(r[1].float().mean()):.2f}")
    pos_x = torch.cat(pos_x)
    det.fit_features(fvb[:nb], torch.cat(pos), fpr=job.fpr, f_calib=fvb[nb:])
    dets: dict = {"ensemble": det}
    costs: dict = {}
    for dname in job.detectors:  # further registered detectors, same images
        if dname == "ensemble":
            continue
        t0 = time.process_time()
        dets[dname] = build_detector(dname, model, job).fit(xvb[:nb], pos_x, fpr=job.fpr, x_calib=xvb[nb:])
        log(f"{dname}: fitted in {time.process_time() - t0:.1f} CPU s")
    skipped: list[str] = []

    def make_set(attack, r, idx, adaptive_against=None):
        f = det.features(r[0])
        s = {"attack": attack, "adaptive_against": adaptive_against, "index": idx, "success": r[1].bool(),
             "iou": r[2], "features": f, "x": r[0], "scores": {"squeeze": fs.score(r[0])}}
        return s

    sets = []
    for a in job.attacks:  # 2. every attack on test images
        if over():
            skipped.append(f"{a} (time cap)")
            continue
        t0 = time.perf_counter()
        r = craft(a, model, interp, xta, ta_y, ta_t, job, ta_idx, "test")
        sets.append(make_set(a, r, ta_idx))
        log(f"{a} (test): {time.perf_counter() - t0:.1f}s, ASR {float(r[1].float().mean()):.2f}")
    m = min(job.adaptive_n or n, n)
    hardening = {}
    eot = {"detector_eot": job.adaptive_eot} if job.adaptive_eot > 1 else {}
    if job.harden:  # 4. adaptive examples on further validation images, refit rounds
        sl, base = slice(n, n + hn), job.harden_detector
        cur, cur_name, hard = dets[base], base, []
        for rnd in range(1, job.harden_rounds + 1):
            name_r = hardened_name(base, rnd)
            for a in job.harden_attacks:
                t0 = time.perf_counter()
                r = _attack(a, model, interp, xva[sl], va_y[sl], va_t[sl], job, detector=cur, adaptive=True, **eot)
                ok = r[1].bool()
                hard.append(r[0][ok])
                flagged = cur.score(r[0]) > cur.threshold
                hardening[f"{name_r}/{a}"] = {"round": rnd, "attack": a, "against": cur_name, "n": hn,
                                              "asr": float(ok.float().mean()),
                                              "evasion": float((ok & ~flagged).float().mean())}
                log(f"hardening round {rnd}: adaptive-{a} (val) vs {cur_name}: {time.perf_counter() - t0:.1f}s, "
                    f"evasion {hardening[f'{name_r}/{a}']['evasion']:.2f}")
            hx = torch.cat(hard)
            reps = max(1, math.ceil(len(pos_x) / max(len(hx), 1)))
            if base == "ensemble":
                new = EnsembleDetector(model, list(det.interpreters.values()), squeezers=list(job.squeezers), l2=job.l2)
                new.fit_features(fvb[:nb], torch.cat([torch.cat(pos), det.features(hx).repeat(reps, 1)]),
                                 fpr=job.fpr, f_calib=fvb[nb:])
            else:
                new = build_detector(base, model, job).fit(xvb[:nb], torch.cat([pos_x, hx.repeat(reps, 1, 1, 1)]),
                                                           fpr=job.fpr, x_calib=xvb[nb:])
            dets[name_r] = new
            cur, cur_name = new, name_r
    if job.adaptive:  # 3. the adaptive attacker of each detector, on the first m test images
        targets = job.adaptive_detectors or tuple(dets)
        chosen = job.adaptive_attacks if job.adaptive_attacks is not None else job.attacks
        for dname in targets:
            for a in [a for a in chosen if a in IDLS_ATTACKS]:
                if over():
                    skipped.append(f"adaptive-{a} vs {dname} (time cap)")
                    continue
                t0 = time.perf_counter()
                r = _attack(a, model, interp, xta[:m], ta_y[:m], ta_t[:m], job, detector=dets[dname], adaptive=True,
                            **eot)
                sets.append(make_set(f"adaptive-{a}", r, ta_idx[:m], adaptive_against=dname))
                log(f"adaptive-{a} vs {dname}: {time.perf_counter() - t0:.1f}s, ASR {float(r[1].float().mean()):.2f}")
    # scores, rows and per-image records; latency: CPU seconds per image of each detector's score
    benign = {"squeeze": fs.score(xtb)}
    t0 = time.process_time()
    fs.score(xtb[:32])
    costs["squeeze"] = (time.process_time() - t0) / len(xtb[:32])
    for dname, d in dets.items():
        feature_based = dname == "ensemble" or (dname.startswith("ensemble-hardened") and job.harden_detector == "ensemble")
        t0 = time.process_time()
        benign[dname] = d.score_features(ftb) if feature_based else d.score(xtb)
        costs[dname] = None if feature_based else (time.process_time() - t0) / len(xtb)
        for s in sets:
            s["scores"][dname] = d.score_features(s["features"]) if feature_based else d.score(s["x"])
    if "ensemble" in dets:  # the ensemble's features were computed apart: time one batch
        t0 = time.process_time()
        det.score(xtb[:32])
        costs["ensemble"] = (time.process_time() - t0) / len(xtb[:32])
    thr = {dname: d.threshold for dname, d in dets.items()} | {"squeeze": fs.threshold}
    rows = []
    for s in sets:
        for dname in ([s["adaptive_against"]] if s["adaptive_against"] else [*dets, "squeeze"]):
            trained = dname in dets and not dname.startswith("squeeze") and s["attack"] in job.train_attacks
            rows.append(_row(s["attack"], s, benign[dname], thr[dname], job.fpr, detector=dname,
                             adaptive=s["adaptive_against"] is not None, trained_on=trained))
    images = [{"set": "benign", "split": "test", "index": int(i),
               "scores": {d: round(float(v[j]), 5) for d, v in benign.items()}}
              for j, i in enumerate(tb_idx.tolist())]
    for s in sets:
        images += [{"set": s["attack"], "adaptive_against": s["adaptive_against"], "split": "test",
                    "index": int(i), "success": bool(s["success"][j]),
                    "iou": None if math.isnan(float(s["iou"][j])) else round(float(s["iou"][j]), 4),
                    "scores": {d: round(float(v[j]), 5) for d, v in s["scores"].items()}}
                   for j, i in enumerate(s["index"].tolist())]
    out = {"config": job.config(), "protocol": "lofo", "rows": rows, "images": images,
           "thresholds": thr, "coefficients": det.coefficients(),
           "coefficients_hardened": dets["ensemble-hardened"].coefficients() if "ensemble-hardened" in dets else {},
           "hardening": hardening, "threshold": det.threshold, "squeeze_threshold": fs.threshold,
           "cpu_seconds_per_image": {k: None if v is None else round(v, 4) for k, v in costs.items()},
           "splits": {"fit": "val", "calibrate": "val", "train_attacks": "val", "report": "test"},
           "val_indices": sorted(set(vb_idx.tolist()) | set(va_idx.tolist())),
           "test_indices": sorted(set(tb_idx.tolist()) | set(ta_idx.tolist())),
           "skipped": skipped, "seconds": round(time.perf_counter() - start, 1)}
    if on_rows is not None:
        on_rows(out)
    return out


def _pooled(recs_by_seed, det):
    """Pooled figures of one detector over (result, records) pairs, one per seed."""
    from ..metrics.detection import auroc

    ok, flag, ev, fp, aucs = [], [], [], [], []
    for r, recs in recs_by_seed:
        thr = r["thresholds"][det]
        b = [i["scores"][det] for i in r["images"] if i["set"] == "benign"]
        fp += [s > thr for s in b]
        succ = [i for i in recs if i["success"]]
        ok += [i["success"] for i in recs]
        flag += [i["scores"][det] > thr for i in succ]
        ev += [i["success"] and not i["scores"][det] > thr for i in recs]
        if succ:
            aucs.append(auroc(b, [i["scores"][det] for i in succ]))
    out = {"n": len(ok), "n_adv": len(flag), "seeds": len(recs_by_seed)}
    for key, vals in (("asr", ok), ("tpr", flag), ("fpr", fp), ("evasion", ev)):
        out[key] = sum(vals) / len(vals) if vals else None
        out[f"{key}_ci"] = _ci(vals)
    out["auroc"] = sum(aucs) / len(aucs) if aucs else None
    out["auroc_range"] = (min(aucs), max(aucs)) if aucs else (None, None)
    return out


def pooled_rows(results: list[dict]) -> list[dict]:
    """Rows pooled over the seeds of lofo results (each ``run_lofo_job`` output): per (attack,
    adaptive target, detector) the attacked images of every seed together, each flagged at its
    own seed's validation threshold. Keys: attack, detector, adaptive, trained_on, seeds, n,
    n_adv, asr, tpr, fpr (test benign), evasion (each a value and its 95% bootstrap interval
    ``*_ci``) and auroc (mean over seeds, with min and max); ``paired`` holds, for an adaptive
    row, the same figures of the non-adaptive attack on the same images."""
    rows, keys = [], []
    for r in results:
        for x in r["rows"]:
            k = (x["attack"], x["detector"], x["adaptive"], x["trained_on"])
            if k not in keys:
                keys.append(k)
    for attack, det, adaptive, trained in keys:
        by_seed, paired = [], []
        for r in results:
            against = det if adaptive else None
            recs = [i for i in r["images"] if i["set"] == attack and i.get("adaptive_against") == against]
            if not recs or det not in r["thresholds"]:
                continue
            by_seed.append((r, recs))
            if adaptive:
                ids = {i["index"] for i in recs}
                base = attack.removeprefix("adaptive-")
                paired.append((r, [i for i in r["images"] if i["set"] == base and i.get("adaptive_against") is None
                                   and i["index"] in ids]))
        if not by_seed:
            continue
        row = {"attack": attack, "detector": det, "adaptive": adaptive, "trained_on": trained,
               **_pooled(by_seed, det)}
        if adaptive and all(p[1] for p in paired):
            row["paired"] = _pooled(paired, det)
        rows.append(row)
    return rows


def transfer_rows(results: list[dict], detectors=DETECTORS) -> list[dict]:
    """The adaptive examples crafted against one detector, scored by the others (of
    ``detectors``) at their own thresholds (does hardening catch the attacker it was refitted on,
    and only that one?)."""
    rows = []
    sets = []
    for r in results:
        for i in r["images"]:
            if i.get("adaptive_against") and (i["set"], i["adaptive_against"]) not in sets:
                sets.append((i["set"], i["adaptive_against"]))
    for attack, against in sets:
        for det in detectors:
            if det == against:
                continue
            by_seed = [(r, [i for i in r["images"] if i["set"] == attack and i.get("adaptive_against") == against])
                       for r in results if det in r["thresholds"]]
            by_seed = [(r, recs) for r, recs in by_seed if recs]
            if by_seed:
                rows.append({"attack": attack, "crafted_against": against, "detector": det, **_pooled(by_seed, det)})
    return rows
