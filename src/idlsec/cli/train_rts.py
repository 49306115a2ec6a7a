"""``idlsec train-rts``: train the RTS masking model of a zoo classifier; write its weights + card."""

from .common import add_device, device_of, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="train an RTS masking model (Dabkowski & Gal 2017) for a zoo model")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default=None, help="default: the model's dataset")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the training split (may be fractional)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-encoder", action="store_true",
                   help="fine-tune a copy of the classifier as encoder (ADV^2's fix_encoder=False)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--n-eval", type=int, default=1000, help="test images for the quality figures")
    p.add_argument("--out", default=None,
                   help="weights file (.safetensors); default: the packaged rts-<model>.safetensors")
    add_device(p)
    return p


def run(args):
    from ..errors import ConfigError
    from ..train.rts import train_rts

    if args.n_eval < 1:
        raise ConfigError(f"--n-eval must be >= 1, got {args.n_eval}")
    info = train_rts(args.model, args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                     seed=args.seed, device=device_of(args), out=args.out, train_encoder=args.train_encoder,
                     max_seconds=args.max_seconds, n_eval=args.n_eval)
    info.pop("history", None)
    print_json(info)
    return 0
