"""``idlsec attack``: attack n seeded, correctly classified images; write summary, records, pictures."""

from .common import (
    POSITIVE,
    add_data_args,
    add_model_args,
    add_runtime_args,
    check_model_data,
    check_out,
    check_runtime,
    dataset_options,
    model_options,
    parse_eps,
    print_selection,
    print_table,
    runtime_of,
)


def _registered(kind: str) -> str:
    if kind == "attack":
        from ..attacks import ATTACKS as reg
    else:
        from ..interpreters import INTERPRETERS as reg
    return ", ".join(sorted(reg))


def add_parser(sub, name):
    p = sub.add_parser(name, help="run an attack on n images and write DIR/summary.json, results.jsonl, examples.png")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--interpreter", required=True, help=f"registered: {_registered('interpreter')}")
    p.add_argument("--attack", required=True, help=f"registered: {_registered('attack')}")
    p.add_argument("--n", type=POSITIVE, default=8)
    p.add_argument("--out", required=True)
    p.add_argument("--eps", type=parse_eps, default=8 / 255, help="L∞ budget in [0,1] units (0.031 or 8/255)")
    p.add_argument("--alpha", type=parse_eps, default=None, help="step size in [0,1] units")
    p.add_argument("--steps", type=POSITIVE, default=None, help="main-loop steps")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other attack hyperparameter (repeatable), e.g. --param warmup_steps=100")
    p.add_argument("--interpreter-param", action="append", default=[], metavar="KEY=VALUE",
                   help="interpreter option (repeatable), e.g. --interpreter-param weights=rts.safetensors")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--targeted", dest="targeted", action="store_true", default=True,
                   help="random target class != true class (default)")
    g.add_argument("--untargeted", dest="targeted", action="store_false")
    p.add_argument("--surrogate", default=None, metavar="S[,S2]",
                   help="black-box attacks: local surrogate model(s), comma-separated")
    p.add_argument("--max-queries", type=POSITIVE, default=None, metavar="Q",
                   help="black-box attacks: query budget per image (default: the attack's, 10000 for quscore)")
    p.add_argument("--defense", default=None, help="black-box attacks: input transform inside the oracle "
                   "(rp, bitdepth, jpeg, median)")
    p.add_argument("--monitor", default=None, metavar="NAME",
                   help="black-box attacks: a stateful query monitor in the oracle, recorded only (blacklight, "
                   "piha); summary.json gets detection before success, each record detected_at / fooled_at")
    p.add_argument("--monitor-param", action="append", default=[], metavar="KEY=VALUE",
                   help="monitor option (repeatable), e.g. --monitor-param threshold=0.05; "
                   "detector=PATH puts a saved detector (Detector.save) in front (a DetectorGate)")
    p.add_argument("--batch-size", type=POSITIVE, default=32)
    p.add_argument("--compile", action="store_true",
                   help="white-box attacks: run the model compiled with torch.compile (a one-off compile, "
                   "then faster steps; eager with a warning if compiling fails)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="PGD, ADV^2, AdvEdge(+) on CUDA: replay each step from a captured CUDA graph (fixed "
                   "shapes; the ordinary step, with a warning, on the CPU). Mixed precision: --param amp=bf16")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    add_runtime_args(p)
    return p


def parse_params(items, flag: str = "--param") -> dict:
    """``KEY=VALUE`` texts of a repeatable ``flag`` as a dict, each VALUE read as YAML."""
    import yaml

    from ..errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if not k.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise ConfigError(f"{flag} {k.strip()}: not a YAML value: {v!r} ({e.__class__.__name__})") from None
    return out


def build_job(args):
    """The one AttackJob of these arguments (checked by ``check``, run by ``run``)."""
    from ..bench.job import AttackJob
    from .common import device_of

    params = parse_params(args.param)
    if args.steps is not None:
        params["steps"] = args.steps
    if args.alpha is not None:
        params["alpha"] = args.alpha
    if args.compile:
        params["compile"] = True
    if args.cuda_graph:
        params["cuda_graph"] = True
    return AttackJob(model=args.model, dataset=args.dataset, interpreter=args.interpreter, attack=args.attack,
                     n=args.n, seed=args.seed, split=args.split, targeted=args.targeted, eps=args.eps,
                     params=params, batch_size=args.batch_size, device=device_of(args), weights=args.weights,
                     surrogate=[t.strip() for t in args.surrogate.split(",") if t.strip()] if args.surrogate else [],
                     max_queries=args.max_queries, defense=args.defense, model_options=model_options(args),
                     data_options=dataset_options(args), all_images=args.all_images,
                     interpreter_params=parse_params(args.interpreter_param), monitor=monitor_of(args))


def monitor_of(args) -> dict:
    """``--monitor NAME`` and its ``--monitor-param`` items as a ``{name, **params}`` mapping."""
    from ..errors import ConfigError

    params = parse_params(args.monitor_param, "--monitor-param")
    if args.monitor is None:
        if params:
            raise ConfigError("--monitor-param given without --monitor")
        return {}
    return {"name": args.monitor, **params}


def check(args):
    from ..bench.job import check_job

    check_runtime(args)
    check_model_data(args)
    check_out(args)
    if args.compile:
        from ..attacks import ATTACKS
        from ..errors import ConfigError

        if getattr(ATTACKS.get(args.attack), "black_box", False):
            white = ", ".join(sorted(k for k, v in ATTACKS.items() if not v.black_box))
            raise ConfigError(f"--compile applies to white-box attacks ({white}); {args.attack} queries an "
                              "oracle")
    if args.cuda_graph:
        from ..attacks import ATTACKS
        from ..errors import ConfigError

        cls = ATTACKS.get(args.attack)
        if cls is not None and "cuda_graph" not in cls.param_names():
            graphed = ", ".join(sorted(k for k, v in ATTACKS.items() if "cuda_graph" in v.param_names()))
            raise ConfigError(f"--cuda-graph applies to {graphed}; {args.attack} has no graphed step")
    args._job = build_job(args)
    check_job(args._job)


def run(args):
    from ..bench.job import run_attack_job
    from .common import print_json

    runtime_of(args)  # --threads
    job = args._job if getattr(args, "_job", None) is not None else build_job(args)
    out = run_attack_job(job, args.out)
    summary = out["summary"]
    print_selection(summary["selection"], json_mode=args.json)
    if args.json:
        print_json(summary)
    else:
        print_table(summary)
        if "monitor" in summary:
            print_table({f"monitor.{k}": v for k, v in summary["monitor"].items()})
        print(f"wrote {args.out}/summary.json, results.jsonl, examples.png")
    return 0
