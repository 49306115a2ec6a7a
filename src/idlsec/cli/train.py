"""``idlsec train``: train a zoo architecture (fmnist-cnn, cifar10-vgg) and write its weights card."""

from .common import (
    NONNEGATIVE,
    NONNEGATIVE_FLOAT,
    POSITIVE,
    POSITIVE_FLOAT,
    add_runtime_args,
    parse_eps,
    print_json,
    runtime_of,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="train a zoo model from scratch")
    p.add_argument("--model", required=True)
    p.add_argument("--epochs", type=POSITIVE, default=5)
    p.add_argument("--lr", type=POSITIVE_FLOAT, default=0.05)
    p.add_argument("--batch-size", type=POSITIVE, default=128)
    p.add_argument("--out", default=None, help="weights file (.safetensors); default: the packaged location")
    add_runtime_args(p)
    g = p.add_argument_group("adversarial training (idlsec.defenses.adversarial_training)")
    g.add_argument("--defense", choices=["adv", "pgd", "fgsm", "trades"], default=None,
                   help="adv: interpretation-aware (MapPGD + map term); pgd: Madry; fgsm: random-start "
                   "FGSM (cyclic lr); trades: TRADES (CE + beta*KL)")
    g.add_argument("--beta", type=NONNEGATIVE_FLOAT, default=None, help="TRADES: weight of the KL term (default 6)")
    g.add_argument("--lr-schedule", choices=["cosine", "cyclic"], default=None,
                   help="default: cyclic for fgsm, cosine otherwise")
    g.add_argument("--eps", type=parse_eps, default=None, help="default 8/255")
    g.add_argument("--attack-steps", type=POSITIVE, default=None, help="inner attack steps (adv 5, pgd 7, fgsm 1)")
    g.add_argument("--map-weight", type=NONNEGATIVE_FLOAT, default=None, help="weight of the map term (adv: 1.0)")
    g.add_argument("--clean-weight", type=NONNEGATIVE_FLOAT, default=None,
                   help="weight of the clean loss (default 0: Madry)")
    g.add_argument("--steps-per-epoch", type=POSITIVE, default=None, help="batches per epoch (default: all)")
    g.add_argument("--init", choices=["standard", "random"], default=None,
                   help="fine-tune the published weights (default) or train from scratch")
    g.add_argument("--checkpoint-dir", default=None, help="checkpoint after every epoch here")
    g.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    g.add_argument("--eval-n", type=POSITIVE, default=None, help="test images for the clean accuracy (default 1000)")
    g.add_argument("--robust-eval-n", type=NONNEGATIVE, default=None, help="test images for the PGD-10 accuracy (default 200)")
    g.add_argument("--val-n", type=NONNEGATIVE, default=None,
                   help="leave the val split out of training, measure PGD-10 on VAL_N of its images after every "
                        "epoch and keep the best epoch (default 0: off)")
    return p


# the flags of adversarial training (--defense), their defaults filled in by _run_defense
DEFENSE_FLAGS = {"eps": 8 / 255, "beta": 6.0, "lr_schedule": None, "attack_steps": None, "map_weight": None, "clean_weight": 0.0,
                 "steps_per_epoch": None, "init": "standard", "checkpoint_dir": None, "resume": False,
                 "eval_n": 1000, "robust_eval_n": 200, "val_n": 0}


def check(args):
    from ..errors import ConfigError
    from ..models import get_card
    from ..models.zoo import WEIGHTS_DIR
    from .common import check_out, check_runtime

    check_runtime(args)
    card = get_card(args.model)
    if args.defense is None:
        given = [k for k in DEFENSE_FLAGS if getattr(args, k) not in (None, False)]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ConfigError(f"{flags} apply to adversarial training only: add --defense adv|pgd|fgsm|trades")
        if args.out is None and not card.packaged:
            raise ConfigError(f"{args.model} has published weights; pass --out to train your own copy")
        out = args.out or WEIGHTS_DIR / card.packaged
    else:
        if args.out is None:
            raise ConfigError("--defense needs --out (a .safetensors file)")
        if args.resume and args.checkpoint_dir is None:
            raise ConfigError("--resume needs --checkpoint-dir")
        if args.resume:
            from ..validation import check_input_path

            check_input_path(args.checkpoint_dir, what="--checkpoint-dir", kind="dir")
        check_out(args, attr="checkpoint_dir", flag="--checkpoint-dir")
        out = args.out
    from ..validation import check_output_path

    check_output_path(out, what="--out", kind="file")


def run(args):
    from ..models import get_card
    from ..models.zoo import WEIGHTS_DIR
    from ..train.classifier import train_classifier

    card = get_card(args.model)
    if args.defense is not None:
        return _run_defense(args)
    out = args.out or WEIGHTS_DIR / card.packaged
    info = train_classifier(args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            seed=args.seed, out=out, device=runtime_of(args))
    print_json(info)
    return 0


def _run_defense(args):
    import sys

    from ..defenses.adversarial_training import train_robust_model

    for key, default in DEFENSE_FLAGS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    info = train_robust_model(
        args.model, args.defense, out=args.out, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
        init=args.init, eval_n=args.eval_n, robust_eval_n=args.robust_eval_n, val_n=args.val_n,
        device=runtime_of(args),
        command="idlsec " + " ".join(sys.argv[1:]), epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        seed=args.seed, eps=args.eps, steps=args.attack_steps, map_weight=args.map_weight,
        steps_per_epoch=args.steps_per_epoch, clean_weight=args.clean_weight, beta=args.beta,
        lr_schedule=args.lr_schedule)
    print_json({k: v for k, v in info.items() if k != "history"})
    return 0
