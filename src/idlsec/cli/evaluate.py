"""``idlsec eval``: clean accuracy of a zoo model on a dataset split."""

from .common import (
    POSITIVE,
    add_data_args,
    add_model_args,
    add_runtime_args,
    dataset_options,
    model_options,
    runtime_of,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="clean accuracy of a model")
    add_model_args(p)
    add_data_args(p, selection=False)
    p.add_argument("--n", type=POSITIVE, default=None, help="N seeded random images of the split (default: all)")
    p.add_argument("--batch-size", type=POSITIVE, default=500)
    p.add_argument("--json", action="store_true")
    add_runtime_args(p, seed=False)
    return p


def check(args):
    from .common import check_model_data, check_runtime

    check_runtime(args)
    check_model_data(args)


def run(args):
    from ..train.evaluate import accuracy
    from .common import print_json

    result = accuracy(args.model, args.dataset, split=args.split, n=args.n, weights=args.weights,
                      batch_size=args.batch_size, device=runtime_of(args),
                      model_options=model_options(args), data_options=dataset_options(args))
    if args.json:
        print_json(result)
    else:
        print(f"{args.model} on {args.dataset}/{args.split}: accuracy {result['accuracy']:.4f} (n={result['n']})")
    return 0
