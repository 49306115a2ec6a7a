"""``idlsec detect``: how well the ensemble detector and feature squeezing flag each attack."""

from .common import (
    NONNEGATIVE,
    NONNEGATIVE_FLOAT,
    POSITIVE,
    add_data_args,
    add_model_args,
    add_runtime_args,
    dataset_options,
    float_in,
    model_options,
    parse_eps,
    print_json,
    runtime_of,
)


def _names(text):
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_parser(sub, name):
    p = sub.add_parser(name, help="detection TPR at a fixed FPR and AUROC of the ensemble detector and "
                                  "feature squeezing, per attack; writes DIR/summary.json")
    add_model_args(p, default="cifar10-resnet20")
    add_data_args(p, required=False, help_default="the model's", split=False, selection=False)
    p.add_argument("--interpreters", type=_names, default=("cam", "gradcam", "grad"),
                   help="the ensemble's interpreters, comma-separated (e.g. cam,gradcam,grad,rts)")
    p.add_argument("--attack", type=_names, default=("pgd", "adv2"),
                   help="attacks, comma-separated: pgd, pgd-weak (eps/4, 2 steps: near-boundary training "
                        "examples), adv2, advedge, advedge+, quscore")
    p.add_argument("--train-attacks", type=_names, default=None,
                   help="attacks whose examples train the combination (default: those of pgd, pgd-weak and "
                        "adv2 given, else the first attack)")
    p.add_argument("--attack-interpreter", default="cam", help="the interpreter the IDLS attacks target")
    p.add_argument("--n", type=POSITIVE, default=32, help="attacked images per half (train/test)")
    p.add_argument("--n-benign", type=POSITIVE, default=200, help="benign images per part (fit / calibrate / report)")
    p.add_argument("--fpr", type=float_in(0, 1, open_lo=True, open_hi=True), default=0.05)
    p.add_argument("--eps", type=parse_eps, default=8 / 255)
    p.add_argument("--steps", type=POSITIVE, default=None, help="IDLS joint-stage steps (default: the attack's)")
    p.add_argument("--warmup-steps", type=NONNEGATIVE, default=None)
    p.add_argument("--quscore-queries", type=POSITIVE, default=1000)
    p.add_argument("--adaptive", action="store_true", help="also run adaptive ADV^2/AdvEdge(+) against each detector")
    p.add_argument("--adaptive-n", type=POSITIVE, default=None)
    p.add_argument("--adaptive-steps", type=POSITIVE, default=None)
    p.add_argument("--seen", action="store_true",
                   help="also an 'ensemble-seen' detector trained on the train half of every attack")
    p.add_argument("--protocol", choices=("halves", "lofo"), default="halves",
                   help="halves: train/test halves of the test split; lofo: leave-one-family-out, fitted, "
                        "calibrated and trained on split val with the PGD family only, reported on test")
    p.add_argument("--harden", action="store_true",
                   help="lofo: also 'ensemble-hardened', refitted on adaptive ADV^2 examples of val images")
    p.add_argument("--harden-n", type=POSITIVE, default=None, help="lofo: val images for the hardening examples")
    p.add_argument("--detectors", type=_names, default=(),
                   help="lofo: further registered detectors, comma-separated (squeeze-nlm, lid, ensemble-random)")
    p.add_argument("--harden-detector", default="ensemble",
                   help="lofo: the detector --harden refits (ensemble or one of --detectors)")
    p.add_argument("--harden-rounds", type=POSITIVE, default=1,
                   help="lofo: refit rounds, the adaptive attacker re-aiming at each refit")
    p.add_argument("--cache-dir", default=None, help="reuse/save the crafted adversarial sets here")
    p.add_argument("--time-cap", type=NONNEGATIVE_FLOAT, default=None, help="seconds: past it no new attack starts")
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("--out", required=True)
    add_runtime_args(p)
    return p


def check(args):
    from ..errors import ConfigError, unknown_name
    from ..interpreters import INTERPRETERS
    from .common import check_model_data, check_out, check_runtime

    check_runtime(args)
    check_model_data(args)
    for name in (*args.interpreters, args.attack_interpreter):
        if name not in INTERPRETERS:
            raise unknown_name("interpreter", name, INTERPRETERS)
    if not args.attack or not args.interpreters:
        raise ConfigError("--attack and --interpreters each need at least one name")
    from ..defenses.registry import DETECTORS

    for name in args.detectors:
        if name not in DETECTORS:
            raise unknown_name("detector", name, DETECTORS)
    if (args.detectors or args.harden_rounds != 1 or args.harden_detector != "ensemble") and args.protocol != "lofo":
        raise ConfigError("--detectors, --harden-detector and --harden-rounds need --protocol lofo")
    if args.harden_detector not in ("ensemble", *args.detectors):
        raise ConfigError(f"--harden-detector {args.harden_detector!r} must be 'ensemble' or one of --detectors")
    check_out(args)
    check_out(args, attr="cache_dir", flag="--cache-dir")


def run(args):
    import json
    from pathlib import Path

    from ..bench.detection import DetectionJob, run_detection_job
    from ..validation import write_text_atomic

    family = ("pgd", "pgd-weak") if args.protocol == "lofo" else ("pgd", "pgd-weak", "adv2")
    train = args.train_attacks or tuple(a for a in family if a in args.attack) or args.attack[:1]
    job = DetectionJob(model=args.model, interpreters=args.interpreters, attacks=args.attack, train_attacks=train,
                       attack_interpreter=args.attack_interpreter, n=args.n, n_benign=args.n_benign, fpr=args.fpr,
                       eps=args.eps, steps=args.steps, warmup_steps=args.warmup_steps,
                       quscore_queries=args.quscore_queries, adaptive=args.adaptive, adaptive_n=args.adaptive_n,
                       adaptive_steps=args.adaptive_steps, seed=args.seed, batch_size=args.batch_size,
                       seen_detector=args.seen, protocol=args.protocol, harden=args.harden,
                       harden_n=args.harden_n, cache_dir=args.cache_dir, time_cap=args.time_cap,
                       detectors=args.detectors, harden_detector=args.harden_detector,
                       harden_rounds=args.harden_rounds,
                       device=runtime_of(args), dataset=args.dataset, weights=args.weights,
                       model_options=model_options(args), data_options=dataset_options(args))
    out = run_detection_job(job, log=lambda m: print(m, flush=True))
    ens = [r for r in out["rows"] if r.get("detector") == "ensemble" and not r["adaptive"]]
    seen = [r for r in out["rows"] if r.get("detector") == "ensemble-seen" and not r["adaptive"]]
    ada = [r for r in out["rows"] if r.get("detector", "").startswith("ensemble") and r["adaptive"]]
    key = "tpr_at_threshold" if args.protocol == "lofo" else "tpr_at_fpr"  # lofo: at the val threshold
    ens = [r for r in ens if key in r and not r["trained_on"]] if args.protocol == "lofo" else ens
    ada = [r for r in ada if key in r]
    summary = {"tpr_at_fpr": min((r[key] for r in ens), default=None),
               "auroc": min((r["auroc"] for r in ens), default=None),
               "seen_tpr_at_fpr": min((r["tpr_at_fpr"] for r in seen), default=None),
               "adaptive_tpr_at_fpr": min((r[key] for r in ada), default=None), "fpr": args.fpr, **out}
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    write_text_atomic(d / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    for r in out["rows"]:
        if "tpr_at_fpr" in r:
            print(f"{r['attack']:<20} {r['detector']:<13} asr {r['asr']:.2f}  tpr@{args.fpr:g} {r['tpr_at_fpr']:.2f}  "
                  f"auroc {r['auroc']:.3f}")
    print_json({k: summary[k] for k in ("tpr_at_fpr", "auroc", "seen_tpr_at_fpr", "adaptive_tpr_at_fpr", "fpr")})
    print(f"wrote {d}/summary.json")
    return 0
