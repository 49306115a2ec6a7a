"""``idlsec universal``: fit a SingleADV (source → target) universal perturbation on training
images of the source class (never a validation image); measure it on the held-out images of
``--split``; white-box, or black-box with ``--surrogate`` (fit on the surrogate, the ``--model``
victim seen only through a query oracle); optionally transfer it."""

from .common import (
    NONNEGATIVE,
    NONNEGATIVE_FLOAT,
    POSITIVE,
    add_data_args,
    add_model_args,
    add_runtime_args,
    dataset_options,
    model_options,
    parse_eps,
    print_table,
    runtime_of,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="fit a universal source→target perturbation (SingleADV); write "
                                  "DIR/delta.safetensors, summary.json, universal.png")
    add_model_args(p)
    add_data_args(p, split=False, selection=False)
    p.add_argument("--interpreter", required=True)
    p.add_argument("--source", required=True, help="source class (name or index)")
    p.add_argument("--target", required=True, help="target class (name or index)")
    p.add_argument("--eps", type=parse_eps, default=None,
                   help="budget in [0,1] units (default: 8/255 for linf; the paper's η rescaled for l2)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--out", required=True)
    p.add_argument("--n-train", type=POSITIVE, default=1000, help="training-split source images to fit on")
    p.add_argument("--n-inhibition", type=NONNEGATIVE, default=2000,
                   help="training-split other-class images for the inhibition term (0: none)")
    p.add_argument("--n-test", type=POSITIVE, default=None,
                   help="test-split source images to measure on (default: all of them)")
    p.add_argument("--n-test-other", type=POSITIVE, default=2000,
                   help="test-split other-class images for the unintended fooling rate")
    p.add_argument("--iterations", type=POSITIVE, default=None)
    p.add_argument("--inhibition", type=NONNEGATIVE_FLOAT, default=None, help="inhibition weight w")
    p.add_argument("--lam", type=NONNEGATIVE_FLOAT, default=None, help="interpretation weight λ")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other SingleADV hyperparameter (repeatable), e.g. --param kappa=2")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="where to measure: test (reporting) or val (tuning: 5,000 training images the "
                        "fit never uses)")
    p.add_argument("--surrogate", default=None, metavar="SPEC",
                   help="black-box: fit on this model; --model is then the victim, seen only through "
                        "a query oracle")
    p.add_argument("--surrogate-interpreter", default=None, metavar="NAME",
                   help="the interpreter the fit uses (default: --interpreter)")
    p.add_argument("--transfer-interpreter", action="append", default=[], metavar="NAMES",
                   help="also judge the victim's maps with these interpreters (comma-separated, repeatable)")
    p.add_argument("--max-map-images", type=int, default=None,
                   help="map metrics on the first N correctly classified source images (default: all)")
    p.add_argument("--transfer-to", action="append", default=[], metavar="MODEL",
                   help="also measure the perturbation on this model, through its oracle (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    add_runtime_args(p)
    return p


def check(args):
    from ..errors import unknown_name
    from ..interpreters import INTERPRETERS
    from .attack import parse_params
    from .common import check_model_data, check_out, check_runtime

    check_runtime(args)
    check_model_data(args)
    if args.interpreter not in INTERPRETERS:
        raise unknown_name("interpreter", args.interpreter, INTERPRETERS)
    parse_params(args.param)
    for name in args.transfer_to:
        from ..spec import model_card

        model_card(name)
    check_out(args)


def run(args):
    import sys

    from ..bench.universal import UniversalJob, run_universal_job
    from ..errors import ConfigError
    from .attack import parse_params
    from .common import print_json

    params = parse_params(args.param)
    interps = [n.strip() for text in args.transfer_interpreter for n in text.split(",") if n.strip()]
    if args.max_map_images is not None and args.max_map_images < 1:
        raise ConfigError(f"--max-map-images must be >= 1, got {args.max_map_images}")
    for key in ("iterations", "inhibition", "lam"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    job = UniversalJob(model=args.model, dataset=args.dataset, interpreter=args.interpreter, source=args.source,
                       target=args.target, norm=args.norm, eps=args.eps, n_train=args.n_train,
                       n_inhibition=args.n_inhibition, n_test=args.n_test, n_test_other=args.n_test_other, params=params,
                       transfer_to=args.transfer_to, split=args.split, surrogate=args.surrogate,
                       surrogate_interpreter=args.surrogate_interpreter, transfer_interpreters=interps,
                       max_map_images=args.max_map_images, seed=args.seed, device=runtime_of(args), weights=args.weights,
                       model_options=model_options(args), data_options=dataset_options(args))
    summary = run_universal_job(job, args.out, progress=False)
    print(f"images: {summary['images']}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print_json(summary)
    else:
        print_table(summary)
        for key, title in (("transfer", "transfer to"), ("transfer_interpreters", "victim maps by"),
                           ("surrogate", "on the surrogate")):
            block = summary.get(key, {})
            for name, res in ({"": block} if key == "surrogate" and block else block).items():
                print(f"\n{title} {name or args.surrogate}:")
                print_table(res)
        print(f"wrote {args.out}/delta.safetensors, summary.json, universal.png")
    return 0
