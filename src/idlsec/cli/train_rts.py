"""``idlsec train-rts``: train the RTS masking model (Dabkowski & Gal 2017) of any classifier
(a zoo name or any model spec) on a built-in dataset or an image folder; write weights + card."""

from .common import (
    NONNEGATIVE_FLOAT,
    POSITIVE,
    POSITIVE_FLOAT,
    add_model_args,
    add_runtime_args,
    model_options,
    print_json,
    runtime_of,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="train an RTS masking model (Dabkowski & Gal 2017) for any "
                                  "classifier")
    add_model_args(p)
    p.add_argument("--dataset", default=None,
                   help="cifar10 | fashion-mnist | folder:DIR (default: the model's dataset)")
    p.add_argument("--image-labels", default=None,
                   help="folders: subfolders | none (train on predictions) | FILE.csv")
    p.add_argument("--epochs", type=POSITIVE_FLOAT, default=1.0,
                   help="passes over the training images (may be fractional)")
    p.add_argument("--batch-size", type=POSITIVE, default=64)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=3e-3)
    p.add_argument("--train-encoder", action="store_true",
                   help="fine-tune a copy of the classifier as encoder (ADV^2's fix_encoder=False)")
    for term, default in (("area", 8.0), ("smooth", 0.5), ("destroyer", 1.0), ("preserver", 0.3)):
        p.add_argument(f"--{term}", type=NONNEGATIVE_FLOAT, default=default, help=f"{term} loss weight")
    p.add_argument("--feature-layer", default=None,
                   help="the encoder's feature layer (default: the card's, else found)")
    p.add_argument("--max-seconds", type=POSITIVE_FLOAT, default=None,
                   help="stop training after this many seconds")
    p.add_argument("--n-eval", type=POSITIVE, default=1000, help="test images for the quality figures")
    p.add_argument("--out", default=None,
                   help="weights file (.safetensors); default, zoo models only: the packaged "
                        "rts-<model>.safetensors")
    add_runtime_args(p)
    return p


def check(args):
    from ..errors import ConfigError
    from ..models import CARDS
    from ..train.rts import _check_arguments
    from ..validation import check_output_path
    from .common import check_model_data, check_runtime

    check_runtime(args)
    _check_arguments(args.model, args.dataset, args.out, args.epochs, args.batch_size, args.lr, args.n_eval,
                     args.max_seconds)
    check_model_data(args)
    if args.out is None and (args.model not in CARDS or args.weights is not None):
        raise ConfigError("only zoo models (with their own weights) have a packaged RTS location: "
                          "pass --out FILE.safetensors")
    if args.out is None:
        from ..interpreters.rts import rts_weights_path

        check_output_path(rts_weights_path(args.model), what="the packaged RTS weights", kind="file")
    else:
        check_output_path(args.out, what="--out", kind="file")


def run(args):
    import sys

    from ..errors import ConfigError
    from ..train.rts import train_rts

    if args.n_eval < 1:
        raise ConfigError(f"--n-eval must be >= 1, got {args.n_eval}")
    device = runtime_of(args)  # --threads applied
    info = train_rts(args.model, args.dataset, weights=args.weights,
                     model_options=model_options(args),
                     image_labels=args.image_labels, epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     device=device, out=args.out, train_encoder=args.train_encoder,
                     feature_layer=args.feature_layer, max_seconds=args.max_seconds,
                     area=args.area, smooth=args.smooth, destroyer=args.destroyer,
                     preserver=args.preserver,
                     n_eval=args.n_eval)
    info.pop("history", None)
    held = " (held out of the same images)" if str(info["dataset"]).startswith("folder:") else ""
    print(f"images: {info['n_train']} to train on, {info['n_eval']} to measure{held}",
          file=sys.stderr)  # stdout is JSON
    print_json(info)
    return 0
