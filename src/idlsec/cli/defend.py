"""``idlsec defend``: attack a defended model (an input transform or another zoo model such as
cifar10-resnet20-robust), non-adaptively and adaptively; writes DIR/summary.json."""

from ..errors import ConfigError
from .common import NONNEGATIVE, POSITIVE, add_runtime_args, parse_eps, print_json, runtime_of


def _names(text):
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_parser(sub, name):
    p = sub.add_parser(name, help="evaluate defenses (rp, bitdepth, jpeg, median, model:NAME) against attacks")
    p.add_argument("--model", default="cifar10-resnet20")
    p.add_argument("--defense", type=_names, default=("none", "median", "bitdepth", "jpeg", "rp"),
                   help="comma-separated: none, rp, bitdepth, jpeg, median, model:<zoo name>")
    p.add_argument("--attack", type=_names, default=("pgd", "adv2"), help="pgd, adv2, advedge, advedge+")
    p.add_argument("--interpreter", default="cam")
    p.add_argument("--n", type=POSITIVE, default=16)
    p.add_argument("--eps", type=parse_eps, default=8 / 255)
    p.add_argument("--steps", type=POSITIVE, default=None, help="IDLS joint-stage steps (default: the attack's)")
    p.add_argument("--warmup-steps", type=NONNEGATIVE, default=None)
    p.add_argument("--no-adaptive", dest="adaptive", action="store_false",
                   help="skip the attacks through the transforms (BPDA/EOT)")
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("--out", required=True)
    add_runtime_args(p)
    return p


def check(args):
    from ..errors import unknown_name
    from ..interpreters import INTERPRETERS
    from ..spec import model_card
    from .common import check_out, check_runtime

    check_runtime(args)
    model_card(args.model)
    if args.interpreter not in INTERPRETERS:
        raise unknown_name("interpreter", args.interpreter, INTERPRETERS)
    if not args.defense or not args.attack:
        raise ConfigError("--defense and --attack each need at least one name")
    check_out(args)


def run(args):
    import json
    from pathlib import Path

    from ..bench.defense import DefenseJob, run_defense_job
    from ..validation import write_text_atomic

    job = DefenseJob(model=args.model, defenses=args.defense, attacks=args.attack, interpreter=args.interpreter,
                     n=args.n, eps=args.eps, steps=args.steps, warmup_steps=args.warmup_steps,
                     adaptive=args.adaptive, seed=args.seed, batch_size=args.batch_size, device=runtime_of(args))
    out = run_defense_job(job, log=lambda m: print(m, flush=True))
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    write_text_atomic(d / "summary.json", json.dumps(out, indent=2) + "\n")
    for r in out["rows"]:
        iou = "-" if r["iou"] is None else f"{r['iou']:.2f}"
        print(f"{r['defense']:<28} {r['attack']:<10} {r['mode']:<9} clean {r['clean_accuracy']:.2f}  "
              f"asr {r['asr']:.2f}  acc {r['accuracy_under_attack']:.2f}  iou {iou}")
    print_json({"seconds": out["seconds"]})
    print(f"wrote {d}/summary.json")
    return 0
