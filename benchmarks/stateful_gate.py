"""The stateful monitor with a detector in front (idlsec.defenses.DetectorGate): PIHA linf OR the
ensemble detector, against QuScore's and Square's query streams, beside PIHA alone on the same
queries. A history cannot flag a stream's first query, and QuScore's transfer start fools
cifar10-resnet56 at its first query on every image (benchmarks/stateful-piha.yaml), so PIHA
alone stops none of those runs; the detector judges that query on its own.

Protocol, per victim (cifar10-resnet56, cifar10-vgg), everything chosen on 'val':
1. The defender's positives, from its own models only (never the attacker's surrogate, resnet20):
   ``transfer``: MI-FGSM transfer examples of cifar10-resnet32 + cifar10-resnet44 at 8/255, taken
   to their ±eps sign vertex (the shape of a transfer start), on 1,000 val images;
   ``transfer+pgd``: the same plus PGD-10 on the victim itself (white-box, the defender's model)
   on 300 of them.
2. The ensemble detector (logistic, default features) fitted on 1,000 other val images and the
   positives; its threshold at ``--fpr`` on 1,000 further val images (calibration).
3. Choice: the candidate with the higher detection rate on the first queries that fool the victim
   of QuScore runs on 500 further val images (correctly classified ones).
4. On 'test': benign false alarms per query (1,000 distinct images of the stateful_piha streams,
   seeds 0, 1, 2, then with augmented copies; the gate judges every query, ``sticky=False``);
   QuScore (preset idlsec, surrogate resnet20, CAM) and Square, untargeted, 8/255, 1,000 queries,
   20 correctly classified images per seed (seeds 0, 1, 2, the selection of stateful-piha.yaml),
   record mode; a run is stopped when flagged at or before the query that first fooled the model
   (bench.kinds.monitor_summary), PIHA alone and the gate on the same queries.

5. Adaptive attacker (``--adaptive``, on the same test images): PIHA flags every later query
   inside the ball, so within it the attacker must win at its first query, unflagged by the
   detector it cannot see. It fits a shadow of the defense on its own surrogate (the ensemble
   detector on resnet20, its positives resnet20 PGD-10 sign vertices on 1,000 val images,
   threshold at the same fpr on 1,000 further val images) and crafts its first query by MI-FGSM
   (10 steps, 8/255) on resnet20's cross-entropy minus ``mu * max(0, s(x) - tau)`` of the shadow
   (BPDA squeezers, maps with create_graph), sent as it is (not taken to the sign vertex);
   ``mu = 0`` is the plain transfer example without the vertex. Evaded: that query fools the
   victim and the defender's detector does not flag it.

6. The attacker who leaves the ball (``--shifted``): stateful_piha.py's adaptive attacker (a fresh
   random ±sigma shift per 4x4 cell and channel on every query, the returned example submitted
   unshifted; 20 test images, seed 0, 300 queries), which no PIHA threshold flags, against the
   gate (the chosen detector refitted) and PIHA alone on the same queries.

    python benchmarks/stateful_gate.py [--fpr 0.005] [--adaptive]
    python benchmarks/stateful_gate.py --adaptive-only   # refits the chosen detectors, adds step 5
    python benchmarks/stateful_gate.py --shifted         # refits the chosen detectors, adds step 6
    python benchmarks/stateful_gate.py --save-only       # refits the chosen detectors, saves them

Every run that fits a victim's chosen detector also saves it (``Detector.save``) as
``benchmarks/results/detectors/<victim>-gate.safetensors`` (``--save-dir``), the files that
``benchmarks/stateful-gate.yaml`` puts in front of PIHA in the oracle (``monitor: {name: piha,
detector: PATH}``); a refit must reproduce the recorded threshold, or the script stops.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from stateful_defense import augment, run_header
from stateful_piha import Recorder, adaptive_on

from idlsec.attacks import PGD, BlackBox, QuScore, Square
from idlsec.attacks.transfer import mi_fgsm, transfer_example
from idlsec.bench.kinds import FirstFool, monitor_summary, stopped_runs
from idlsec.data import load_dataset, select_images
from idlsec.defenses import PIHA, DetectorGate, get_detector
from idlsec.metrics.stats import bootstrap_ci
from idlsec.models import load_model

ROOT = Path(__file__).resolve().parents[1]
EPS = 8 / 255
SEEDS = (0, 1, 2)
VICTIMS = ("cifar10-resnet56", "cifar10-vgg")
ATTACKER_SURROGATE = "cifar10-resnet20"
DEFENDER_MODELS = ("cifar10-resnet32", "cifar10-resnet44")


class FirstCall(torch.nn.Module):
    """The victim, keeping the rows of the first call the oracle makes (each stream's first
    query, then its second candidate: QuScore's first call holds two per image)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.card, self.rows = model, model.card, None

    def forward(self, x):
        if self.rows is None:
            self.rows = x.detach().clone()
        return self.model(x)


def quscore(oracle, surrogate, budget, seed):
    return QuScore(oracle, surrogates=[surrogate], preset="idlsec", eps=EPS, surrogate_interpreter="cam",
                   max_queries=budget, seed=seed)


def first_queries(model, surrogate, x, y):
    """QuScore's first query of each stream (its transfer start) and whether it fools."""
    rec = FirstCall(model)
    quscore(BlackBox(rec, max_queries=2), surrogate, 2, 0).run(x, y)
    first = rec.rows[:len(x)]
    with torch.no_grad():
        return first, model(first).argmax(1) != y


CANDIDATES = ("transfer", "transfer+pgd")


def val_split():
    """The val images of steps 1-3: [0, 1000) fit, [1000, 2000) positives, [2000, 3000)
    calibration, [3000, 3500) the choice."""
    return select_images(load_dataset("cifar10", "val"), 3500, seed=1)


def fit_detector(model, own, val, candidate, fpr):
    """Steps 1-2 for one candidate positive set: the ensemble detector fitted and calibrated."""
    x, y = val.x[1000:2000], val.y[1000:2000]
    xt, _ = transfer_example(own, x, y, eps=EPS, steps=10, step=EPS / 4, gen=torch.Generator().manual_seed(0))
    pos = (x + EPS * torch.sign(xt - x)).clamp(0, 1)
    if candidate == "transfer+pgd":
        pos = torch.cat([pos, PGD(model, eps=EPS, steps=10, seed=0)(x[:300], y[:300])])
    det = get_detector("ensemble", model).fit(val.x[:1000], pos, fpr=fpr, x_calib=val.x[2000:3000])
    return det, len(pos)


def fit_and_choose(model, surrogate, own, fpr):
    val = val_split()
    with torch.no_grad():
        ok = model(val.x[3000:]).argmax(1) == val.y[3000:]
    first, fools = first_queries(model, surrogate, val.x[3000:][ok], val.y[3000:][ok])
    cands = {}
    for name in CANDIDATES:
        t = time.process_time()
        det, n_pos = fit_detector(model, own, val, name, fpr)
        caught = (det.score(first[fools]) > det.threshold).float()
        cands[name] = {"detector": det, "positives": n_pos, "val_first_query_tpr": caught.mean().item(),
                       "val_fooling_first_queries": int(fools.sum()), "fit_cpu_s": time.process_time() - t}
        print(name, {k: v for k, v in cands[name].items() if k != "detector"}, flush=True)
    best = max(cands, key=lambda k: cands[k]["val_first_query_tpr"])
    return best, cands


def benign_false_alarms(det, piha_threshold, n=1000):
    data = load_dataset("cifar10", "test")
    out = {"distinct": [], "augmented": []}
    for s in SEEDS:
        g = torch.Generator().manual_seed(s)
        x = data.images[torch.randperm(len(data.images), generator=g)[:n]].float() / 255
        both = torch.cat([x, augment(x, g)])
        both = both[torch.randperm(len(both), generator=g)]
        for kind, stream in (("distinct", x), ("augmented", both)):
            gate = DetectorGate(PIHA(threshold=piha_threshold), det, sticky=False)
            out[kind].append(torch.cat([gate.observe(stream[i:i + 100]) for i in range(0, len(stream), 100)]))
    res = {}
    for kind, flags in out.items():
        f = torch.cat(flags).float()
        lo, hi = bootstrap_ci(f.tolist())
        res[kind] = {"rate": f.mean().item(), "ci95": [lo, hi], "queries": len(f)}
    return res


def attack_runs(model, surrogate, det, piha_threshold, budget):
    test = load_dataset("cifar10", "test")
    rows = {}
    for name in ("quscore", "square"):
        recs = {"piha": [], "gate": []}
        for seed in SEEDS:
            sel = select_images(test, 20, seed=seed, model=model, correct_only=True)
            both = Recorder({"gate": DetectorGate(PIHA(threshold=piha_threshold), det),
                             "piha": PIHA(threshold=piha_threshold)})
            ff = FirstFool(both, model, sel.y, False)
            oracle = BlackBox(model, max_queries=budget, monitor=ff)
            atk = (quscore(oracle, surrogate, budget, seed) if name == "quscore"
                   else Square(oracle, eps=EPS, max_queries=budget, seed=seed))
            res = atk.run(sel.x, sel.y)
            for i in range(len(sel.x)):
                for k in recs:
                    recs[k].append({"detected_at": both.first[k].get(i, -1), "fooled_at": int(ff.first[i]),
                                    "success": bool(res.success[i]), "queries": int(res.queries[i])})
        rows[name] = {}
        for k, rs in recs.items():
            s = monitor_summary(rs)
            lo, hi = bootstrap_ci([float(v) for v in stopped_runs(rs)])
            rows[name][k] = {**s, "detection_ci95": [lo, hi]}
        print(name, json.dumps(rows[name]), flush=True)
    return rows


def shadow_detector(surrogate, fpr):
    """The attacker's stand-in for the defense: the ensemble detector on its own surrogate."""
    val = select_images(load_dataset("cifar10", "val"), 3000, seed=2)
    pos = PGD(surrogate, eps=EPS, steps=10, seed=0)(val.x[1000:2000], val.y[1000:2000])
    pos = (val.x[1000:2000] + EPS * torch.sign(pos - val.x[1000:2000])).clamp(0, 1)
    return get_detector("ensemble", surrogate).fit(val.x[:1000], pos, fpr=fpr, x_calib=val.x[2000:])


def detector_aware_start(surrogate, shadow, x, y, mu, steps=10):
    """MI-FGSM (attacks.transfer.mi_fgsm, from x) on the surrogate's cross-entropy minus
    mu * max(0, shadow score - threshold), the shadow explaining the current prediction."""
    def loss_fn(xa, labels):
        logits = surrogate(xa)
        score = shadow.score_differentiable(xa, logits.argmax(1).detach())
        return -mu * torch.relu(score - shadow.threshold).sum(), logits

    return mi_fgsm([surrogate], x, x, y, eps=EPS, steps=steps, step=EPS / 4,
                   loss_fn=loss_fn if mu > 0 else None)


def adaptive_runs(model, surrogate, shadow, det, mus):
    test = load_dataset("cifar10", "test")
    rows = {}
    sels = [select_images(test, 20, seed=seed, model=model, correct_only=True) for seed in SEEDS]
    x, y = torch.cat([s.x for s in sels]), torch.cat([s.y for s in sels])
    first, _ = first_queries(model, surrogate, x, y)
    starts = {"quscore start (vertex)": first}
    for mu in mus:
        t = time.process_time()
        starts[f"mu {mu:g}"] = torch.cat([detector_aware_start(surrogate, shadow, x[i:i + 20], y[i:i + 20], mu)
                                          for i in range(0, len(x), 20)])
        print("crafted mu", mu, time.process_time() - t, flush=True)
    for name, xa in starts.items():
        with torch.no_grad():
            fooled = model(xa).argmax(1) != y
        flagged = det.score(xa) > det.threshold
        shadow_flag = shadow.score(xa) > shadow.threshold
        evaded = (fooled & ~flagged).float()
        lo, hi = bootstrap_ci(evaded.tolist())
        rows[name] = {"runs": len(y), "fooled_q1": fooled.float().mean().item(),
                      "flagged_q1": flagged.float().mean().item(), "shadow_flagged": shadow_flag.float().mean().item(),
                      "evaded": evaded.mean().item(), "evaded_ci95": [lo, hi],
                      "linf_255": float((xa - x).abs().amax() * 255)}
        print(name, rows[name], flush=True)
    return rows


def pct(r):
    return f"{100 * r['rate']:.2f}% [{100 * r['ci95'][0]:.2f}, {100 * r['ci95'][1]:.2f}]"


def markdown(out):
    lines = ["## Stateful oracle defense with a detector in front (DetectorGate: PIHA OR ensemble)", "",
             f"Command: `{out['command']}`  ", f"Machine: {out['machine']}.  ",
             "PIHA linf (16/255) OR the ensemble detector, fitted per victim on 'val' with the "
             "defender's own positives (transfer sign vertices of resnet32 + resnet44; "
             "`transfer+pgd` adds PGD-10 on the victim), threshold at "
             f"{100 * out['fpr']:.1f}% FPR on 1,000 val calibration images, the positive set chosen "
             "by the detection rate of QuScore's fooling first queries on further val images; "
             "reported on 'test' (module docstring of benchmarks/stateful_gate.py).", "",
             "| victim | positives (val first-query TPR per candidate) | benign false alarms, distinct "
             "| with augmented copies | detector CPU ms / query |", "|---|---|---|---|---|"]
    for v, r in out["victims"].items():
        cands = ", ".join(f"{'**' + k + '**' if k == r['chosen'] else k} {c['val_first_query_tpr']:.2f} "
                          f"(n {c['val_fooling_first_queries']})" for k, c in r["candidates"].items())
        lines.append(f"| {v.removeprefix('cifar10-')} | {cands} | {pct(r['benign']['distinct'])} | "
                     f"{pct(r['benign']['augmented'])} | {r['ms_per_query']:.1f} |")
    lines += ["", "Attack runs (untargeted, 8/255, 1,000 queries, 20 correctly classified test images "
              "x seeds 0, 1, 2; record mode). Stopped: flagged at or before the query that first "
              "fooled the model, 95% bootstrap interval; fooled at q1: runs whose first query fooled "
              "the model, which PIHA alone cannot stop.", "",
              "| victim | attack | runs | ASR undefended | fooled at q1 | stopped, PIHA alone | stopped, gate "
              "| gate median query of detection |", "|---|---|---|---|---|---|---|---|"]
    for v, r in out["victims"].items():
        for a, d in r["attacks"].items():
            p, g = d["piha"], d["gate"]
            ci = lambda s: f"{s['detection_rate']:.2f} [{s['detection_ci95'][0]:.2f}, {s['detection_ci95'][1]:.2f}]"  # noqa: E731
            lines.append(f"| {v.removeprefix('cifar10-')} | {a} | {g['runs']} | {g['asr_undefended']:.2f} | "
                         f"{g['fooled_at_first_query']:.2f} | {ci(p)} | {ci(g)} | {g['queries_to_detection_median']} |")
    if any("adaptive" in r for r in out["victims"].values()):
        lines += ["", "Adaptive attacker (step 5 of the protocol; same 60 test images per victim): its "
                  "first query, crafted on resnet20 against its shadow detector. Evaded: the query "
                  "fools the victim and the defender's detector does not flag it (PIHA cannot flag "
                  "a first query; every later query inside the ball it flags).", "",
                  "| victim | first query | runs | fools the victim | flagged by the gate | "
                  "flagged by the shadow | evaded, 95% CI |", "|---|---|---|---|---|---|---|"]
        for v, r in out["victims"].items():
            for name, d in (r.get("adaptive") or {}).items():
                lines.append(f"| {v.removeprefix('cifar10-')} | {name} | {d['runs']} | {d['fooled_q1']:.2f} | "
                             f"{d['flagged_q1']:.2f} | {d['shadow_flagged']:.2f} | {d['evaded']:.2f} "
                             f"[{d['evaded_ci95'][0]:.2f}, {d['evaded_ci95'][1]:.2f}] |")
    if any("shifted" in r for r in out["victims"].values()):
        lines += ["", "The attacker who leaves the ball (step 6; stateful_piha.py's shifted attacker, 20 test "
                  "images, seed 0, 300 queries): evaded = the unshifted final answer fools the victim and "
                  "no query of the stream was flagged.", "",
                  "| victim | attack | sigma | final ASR | evaded, PIHA alone | evaded, gate | flagged, gate |",
                  "|---|---|---|---|---|---|---|"]
        for v, r in out["victims"].items():
            for d in r.get("shifted") or []:
                ev = [f"{d[k]['evaded']:.2f} [{d[k]['evaded_ci95'][0]:.2f}, {d[k]['evaded_ci95'][1]:.2f}]"
                      for k in ("piha", "gate")]
                lines.append(f"| {v.removeprefix('cifar10-')} | {d['attack']} | {d['sigma_255']:g}/255 | "
                             f"{d['asr_final']:.2f} | {ev[0]} | {ev[1]} | {d['gate']['flagged']:.2f} |")
    return "\n".join(lines) + "\n"


def measure(victim, model, surrogate, own, piha_threshold, args):
    """Steps 1-4 for one victim: the record and the chosen, fitted detector."""
    chosen, cands = fit_and_choose(model, surrogate, own, args.fpr)
    det = cands[chosen]["detector"]
    x = load_dataset("cifar10", "test").images[:200].float() / 255
    t = time.process_time()
    det.score(x)
    r = {"chosen": chosen, "threshold": det.threshold, "candidates": {k: {n: v for n, v in c.items() if n != "detector"}
                                          for k, c in cands.items()},
         "ms_per_query": 1000 * (time.process_time() - t) / len(x),
         "benign": benign_false_alarms(det, piha_threshold)}
    print(victim, json.dumps(r["benign"]), flush=True)
    r["attacks"] = attack_runs(model, surrogate, det, piha_threshold, args.budget)
    return r, det


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fpr", type=float, default=0.005, help="the detector's benign flag rate on val calibration")
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--victims", nargs="+", default=list(VICTIMS))
    p.add_argument("--adaptive", action="store_true", help="also run the adaptive attacker (step 5)")
    p.add_argument("--adaptive-only", action="store_true",
                   help="add step 5 to an existing --out: refit each victim's chosen detector, run the attacker")
    p.add_argument("--shifted", action="store_true",
                   help="add step 6 to an existing --out: the shifted attacker against the refitted gate")
    p.add_argument("--sigmas", type=float, nargs="+", default=[24.0, 40.0], help="step 6 shifts, in 1/255")
    p.add_argument("--adaptive-budget", type=int, default=300, help="step 6 queries per image")
    p.add_argument("--mus", type=float, nargs="+", default=[0.0, 1.0, 10.0, 100.0])
    p.add_argument("--save-only", action="store_true",
                   help="refit each victim's chosen detector of an existing --out and save it, nothing else")
    p.add_argument("--save-dir", default=str(ROOT / "benchmarks/results/detectors"),
                   help="where the chosen detectors are saved (<victim>-gate.safetensors)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/stateful_gate.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = {**run_header("stateful_gate.py", argv), "fpr": args.fpr, "victims": {}}
    piha_threshold = PIHA().threshold
    surrogate = load_model(ATTACKER_SURROGATE)
    own = [load_model(m) for m in DEFENDER_MODELS]
    shadow = shadow_detector(surrogate, args.fpr) if args.adaptive or args.adaptive_only else None
    refit = args.adaptive_only or args.shifted or args.save_only
    if refit:
        out = json.loads(Path(args.out).read_text())
        if not args.save_only:
            out["command"] += " && " + run_header("stateful_gate.py", argv)["command"]
    for victim in args.victims:
        model = load_model(victim)
        if refit:
            r = out["victims"][victim]
            det, _ = fit_detector(model, own, val_split(), r["chosen"], args.fpr)
            recorded = r.get("threshold", r.get("refit_threshold"))  # older records: the first refit's
            if det.threshold != recorded:
                raise SystemExit(f"{victim}: the refit threshold {det.threshold} is not the recorded "
                                 f"{recorded}: the protocol no longer reproduces the detector")
        else:
            r, det = measure(victim, model, surrogate, own, piha_threshold, args)
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
        saved = det.save(Path(args.save_dir) / f"{victim}-gate.safetensors")
        print(victim, "detector saved:", saved, flush=True)
        if args.save_only:
            continue
        if shadow is not None:
            r["adaptive"] = adaptive_runs(model, surrogate, shadow, det, args.mus)
        if args.shifted:
            sel = select_images(load_dataset("cifar10", "test"), 20, seed=0, model=model, correct_only=True)
            r["shifted"] = adaptive_on(args, None, victim, model, surrogate, sel, monitors=lambda det=det: {
                "gate": DetectorGate(PIHA(threshold=piha_threshold), det), "piha": PIHA(threshold=piha_threshold)})
        out["victims"][victim] = r
        Path(args.out).write_text(json.dumps(out, indent=2))
    if not args.save_only:
        Path(args.out).with_suffix(".md").write_text(markdown(out))


if __name__ == "__main__":
    main()
