"""``idlsec train``: train a zoo architecture (fmnist-cnn, cifar10-vgg) and write its weights card."""

from .common import add_runtime_args, parse_eps, print_json, runtime_of


def add_parser(sub, name):
    p = sub.add_parser(name, help="train a zoo model from scratch")
    p.add_argument("--model", required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default=None, help="weights file (.safetensors); default: the packaged location")
    add_runtime_args(p)
    g = p.add_argument_group("adversarial training (idlsec.defenses.adversarial_training)")
    g.add_argument("--defense", choices=["adv", "pgd", "fgsm", "trades"], default=None,
                   help="adv: interpretation-aware (MapPGD + map term); pgd: Madry; fgsm: random-start "
                   "FGSM (cyclic lr); trades: TRADES (CE + beta*KL)")
    g.add_argument("--beta", type=float, default=6.0, help="TRADES: weight of the KL term (default 6)")
    g.add_argument("--lr-schedule", choices=["cosine", "cyclic"], default=None,
                   help="default: cyclic for fgsm, cosine otherwise")
    g.add_argument("--eps", type=parse_eps, default=8 / 255)
    g.add_argument("--attack-steps", type=int, default=None, help="inner attack steps (adv 5, pgd 7, fgsm 1)")
    g.add_argument("--map-weight", type=float, default=None, help="weight of the map term (adv: 1.0)")
    g.add_argument("--clean-weight", type=float, default=0.0, help="weight of the clean loss (0: Madry)")
    g.add_argument("--steps-per-epoch", type=int, default=None, help="batches per epoch (default: all)")
    g.add_argument("--init", choices=["standard", "random"], default="standard",
                   help="fine-tune the published weights (default) or train from scratch")
    g.add_argument("--checkpoint-dir", default=None, help="checkpoint after every epoch here")
    g.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    g.add_argument("--eval-n", type=int, default=1000, help="test images for the clean accuracy")
    g.add_argument("--robust-eval-n", type=int, default=200, help="test images for the PGD-10 accuracy")
    return p


def run(args):
    from ..errors import ConfigError
    from ..models import get_card
    from ..models.zoo import WEIGHTS_DIR
    from ..train.classifier import train_classifier

    card = get_card(args.model)
    if args.defense is not None:
        return _run_defense(args)
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    out = args.out or (WEIGHTS_DIR / card.packaged if card.packaged else None)
    if out is None:
        raise ConfigError(f"{args.model} has published weights; pass --out to train your own copy")
    info = train_classifier(args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            seed=args.seed, out=out, device=runtime_of(args))
    print_json(info)
    return 0


def _run_defense(args):
    import sys

    from ..defenses.adversarial_training import train_robust_model
    from ..errors import ConfigError

    if args.out is None:
        raise ConfigError("--defense needs --out (a .safetensors file)")
    if args.resume and args.checkpoint_dir is None:
        raise ConfigError("--resume needs --checkpoint-dir")
    info = train_robust_model(
        args.model, args.defense, out=args.out, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
        init=args.init, eval_n=args.eval_n, robust_eval_n=args.robust_eval_n, device=runtime_of(args),
        command="idlsec " + " ".join(sys.argv[1:]), epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        seed=args.seed, eps=args.eps, steps=args.attack_steps, map_weight=args.map_weight,
        steps_per_epoch=args.steps_per_epoch, clean_weight=args.clean_weight, beta=args.beta,
        lr_schedule=args.lr_schedule)
    print_json({k: v for k, v in info.items() if k != "history"})
    return 0
