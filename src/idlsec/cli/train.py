"""``idlsec train``: train a zoo architecture (fmnist-cnn, cifar10-vgg) and write its weights card."""

from .common import add_device, device_of, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="train a zoo model from scratch")
    p.add_argument("--model", required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="weights file (.safetensors); default: the packaged location")
    add_device(p)
    return p


def run(args):
    from ..errors import ConfigError
    from ..models.zoo import WEIGHTS_DIR, get_card
    from ..train.classifier import train_classifier

    card = get_card(args.model)
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    out = args.out or (WEIGHTS_DIR / card.packaged if card.packaged else None)
    if out is None:
        raise ConfigError(f"{args.model} has published weights; pass --out to train your own copy")
    info = train_classifier(args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            seed=args.seed, out=out, device=device_of(args))
    print_json(info)
    return 0
