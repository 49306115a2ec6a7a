"""``idlsec train-rts``: train the RTS masking model (Dabkowski & Gal 2017) of any classifier
(a zoo name or any model spec) on a built-in dataset or an image folder; write weights + card."""

from .common import add_device, device_of, print_json


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def add_parser(sub, name):
    p = sub.add_parser(name, help="train an RTS masking model (Dabkowski & Gal 2017) for any "
                                  "classifier")
    p.add_argument("--model", required=True,
                   help="zoo name | torchvision:<arch> | timm:<name> | file.py:factory | "
                        "module:factory")
    p.add_argument("--weights", default=None, help="the classifier's weights: PATH | random")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--input-size", type=_ints, default=None, help="C,H,W")
    p.add_argument("--mean", type=_floats, default=None, help="a,b,c")
    p.add_argument("--std", type=_floats, default=None, help="a,b,c")
    p.add_argument("--labels", default=None, help="class names: FILE | imagenet")
    p.add_argument("--dataset", default=None,
                   help="cifar10 | fashion-mnist | folder:DIR (default: the model's dataset)")
    p.add_argument("--image-labels", default=None,
                   help="folders: subfolders | none (train on predictions) | FILE.csv")
    p.add_argument("--epochs", type=float, default=1.0,
                   help="passes over the training images (may be fractional)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-encoder", action="store_true",
                   help="fine-tune a copy of the classifier as encoder (ADV^2's fix_encoder=False)")
    for term, default in (("area", 8.0), ("smooth", 0.5), ("destroyer", 1.0), ("preserver", 0.3)):
        p.add_argument(f"--{term}", type=float, default=default, help=f"{term} loss weight")
    p.add_argument("--feature-layer", default=None,
                   help="the encoder's feature layer (default: the card's, else found)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop training after this many seconds")
    p.add_argument("--n-eval", type=int, default=1000, help="test images for the quality figures")
    p.add_argument("--out", default=None,
                   help="weights file (.safetensors); default, zoo models only: the packaged "
                        "rts-<model>.safetensors")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch)")
    add_device(p)
    return p


def run(args):
    import sys

    import torch

    from ..errors import ConfigError
    from ..train.rts import train_rts

    if args.n_eval < 1:
        raise ConfigError(f"--n-eval must be >= 1, got {args.n_eval}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    options = {k: getattr(args, k) for k in ("num_classes", "input_size", "mean", "std", "labels")
               if getattr(args, k) is not None}
    info = train_rts(args.model, args.dataset, weights=args.weights, model_options=options,
                     image_labels=args.image_labels, epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     device=device_of(args), out=args.out, train_encoder=args.train_encoder,
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
