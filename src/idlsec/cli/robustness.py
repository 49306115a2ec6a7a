"""``idlsec robustness``: a model's robust accuracy (PGD-k, AutoAttack) and the IDLS attacks'
success and map similarity on it, beside other models on the same images
(:mod:`idlsec.defenses.robustness`). Writes ``DIR/robustness.json`` and ``DIR/robustness.md``."""

from __future__ import annotations

from .common import POSITIVE, add_runtime_args, parse_eps, print_json, runtime_of

ATTACK_PARAM_HELP = "KEY=VALUE for the IDLS attacks (repeatable; VALUE is YAML), e.g. steps=150"


def add_parser(sub, name):
    p = sub.add_parser(name, help="robust accuracy (PGD, AutoAttack) and IDLS attacks, side by side")
    p.add_argument("--model", required=True, metavar="SPEC", help="the model to evaluate (zoo name or spec)")
    p.add_argument("--also", action="append", default=[], metavar="SPEC",
                   help="more models on the same images (repeatable), e.g. the standard model")
    p.add_argument("--n", type=POSITIVE, default=1000, help="test images (default 1000)")
    p.add_argument("--eps", type=parse_eps, default=8 / 255, help="L-inf budget (default 8/255)")
    p.add_argument("--pgd-steps", type=POSITIVE, default=20, help="PGD-k steps (default 20)")
    p.add_argument("--autoattack", choices=["standard", "fast", "none"], default="standard",
                   help="standard: the reference AutoAttack; fast: fewer steps/queries (labelled)")
    p.add_argument("--aa-steps", type=POSITIVE, default=None, help="fast: APGD/FAB steps")
    p.add_argument("--aa-queries", type=POSITIVE, default=None, help="fast: Square queries")
    p.add_argument("--idls", default="adv2,advedge", help="IDLS attacks, comma-separated ('' for none)")
    p.add_argument("--interpreter", default="cam", help="interpreter of the IDLS attacks (default cam)")
    p.add_argument("--idls-n", type=POSITIVE, default=32, help="images for the IDLS attacks")
    p.add_argument("--idls-param", action="append", default=[], metavar="KEY=VALUE", help=ATTACK_PARAM_HELP)
    p.add_argument("--batch-size", type=POSITIVE, default=256)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_runtime_args(p)
    return p


def check(args) -> dict:
    """Every argument checked, before any work: names, values, the output folder."""
    from ..attacks.registry import attack_class
    from ..errors import ConfigError
    from ..interpreters.registry import INTERPRETERS, unknown_name
    from ..models.spec import model_card
    from .attack import parse_params
    from .common import check_out, check_runtime

    if args.autoattack == "standard" and (args.aa_steps or args.aa_queries):
        raise ConfigError("--aa-steps/--aa-queries change AutoAttack's reference setting: add --autoattack fast")
    models = [args.model, *args.also]
    cards = [model_card(m) for m in models]
    if len({c.dataset for c in cards}) != 1:
        raise ConfigError("--model and --also must share a dataset: "
                          + ", ".join(f"{m} ({c.dataset})" for m, c in zip(models, cards)))
    idls = [a for a in args.idls.split(",") if a]
    if idls and args.interpreter not in INTERPRETERS:
        raise unknown_name("interpreter", args.interpreter, INTERPRETERS)
    params = parse_params(args.idls_param, flag="--idls-param")
    for a in idls:
        attack_class(a, params)
    check_runtime(args)
    check_out(args)
    return {"models": models, "dataset": cards[0].dataset, "idls": idls, "params": params}


def run(args):
    import json
    from pathlib import Path

    import torch

    from ..bench.robustness import idls_attack_summary
    from ..data import load_dataset
    from ..defenses.robustness import autoattack_accuracy, pgd_accuracy
    from ..models import load_model

    plan = check(args)
    device = runtime_of(args)
    test = load_dataset(plan["dataset"], "test")
    idx = test.sample(min(args.n, len(test)), seed=args.seed)
    x, y = (t.to(device) for t in test.get(idx))
    rows = []
    for spec in plan["models"]:
        model = load_model(spec, device=device)
        print(f"{spec}: {x.shape[0]} test images, eps {args.eps:.4f}")
        row = {"model": spec, "n": int(x.shape[0]), "eps": args.eps,
               "pgd": pgd_accuracy(model, x, y, eps=args.eps, steps=args.pgd_steps, batch_size=args.batch_size,
                                   seed=args.seed)}
        print(f"  clean {row['pgd']['clean_accuracy']:.3f}, PGD-{args.pgd_steps} {row['pgd']['robust_accuracy']:.3f}")
        if args.autoattack != "none":
            row["autoattack"] = autoattack_accuracy(model, x, y, eps=args.eps, version=args.autoattack,
                                                    steps=args.aa_steps, queries=args.aa_queries,
                                                    batch_size=args.batch_size, seed=args.seed, log=print)
        row["idls"] = [idls_attack_summary(spec, a, x[:args.idls_n], y[:args.idls_n], model=model,
                                           interpreter=args.interpreter, eps=args.eps, params=plan["params"],
                                           seed=args.seed, device=device) for a in plan["idls"]]
        for r in row["idls"]:
            print(f"  {r['attack']} on {r['interpreter']}: ASR {r['asr']:.2f}, IoU@25% {r['iou@0.25_all']:.2f}")
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"command": "idlsec robustness", "seed": args.seed, "device": device,
              "torch": torch.__version__, "rows": rows}
    (out / "robustness.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "robustness.md").write_text(markdown(result))
    print_json({"out": str(out), "models": [r["model"] for r in rows]})
    return 0


def markdown(result: dict) -> str:
    """The side-by-side table of a robustness.json."""
    lines = ["| model | n | clean | PGD | AutoAttack | IDLS attack: ASR / IoU@25% (all) |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in result["rows"]:
        aa = r.get("autoattack")
        aa_txt = "—" if aa is None else f"{aa['robust_accuracy']:.3f} ({aa['version']})"
        idls = "; ".join(f"{i['attack']}/{i['interpreter']} {i['asr']:.2f} / {i['iou@0.25_all']:.2f}"
                         for i in r["idls"]) or "—"
        lines.append(f"| {r['model']} | {r['n']} | {r['pgd']['clean_accuracy']:.3f} | "
                     f"{r['pgd']['robust_accuracy']:.3f} (PGD-{r['pgd']['steps']}) | {aa_txt} | {idls} |")
    return "\n".join(lines) + "\n"
