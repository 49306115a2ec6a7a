"""``idlsec explain``: maps of n seeded images; writes DIR/maps.png and DIR/maps.safetensors
(``images`` (N, C, H, W) in [0, 1], ``targets`` (N), ``maps`` (N, 1, h, w) at native resolution)
so that the maps can be recomputed with another library and compared."""

from .common import (
    POSITIVE,
    add_data_args,
    add_model_args,
    add_runtime_args,
    dataset_options,
    load_model_from,
    print_selection,
    runtime_of,
)


def add_parser(sub, name):
    p = sub.add_parser(name, help="explain n images with an interpreter; write DIR/maps.png and maps.safetensors")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--interpreter", required=True)
    p.add_argument("--n", type=POSITIVE, default=8)
    p.add_argument("--out", required=True)
    p.add_argument("--target", default="pred", choices=["pred", "label"],
                   help="explain the model's prediction (default) or the true label")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="interpreter option (repeatable), e.g. --param form=paper")
    p.add_argument("--compile", action="store_true",
                   help="run the model compiled with torch.compile (CAM, Grad-CAM, Grad; eager otherwise)")
    add_runtime_args(p)
    return p


def _params(args) -> dict:
    from .attack import parse_params

    params = parse_params(args.param)
    if args.compile:
        params["compile"] = True
    return params


def check(args):
    from ..errors import unknown_name
    from ..interpreters import INTERPRETERS
    from ..spec import _check_keywords
    from .common import check_model_data, check_out, check_runtime

    check_runtime(args)
    check_model_data(args)
    if args.interpreter not in INTERPRETERS:
        raise unknown_name("interpreter", args.interpreter, INTERPRETERS)
    _check_keywords(f"interpreter {args.interpreter!r}", INTERPRETERS[args.interpreter], _params(args))
    check_out(args)


def run(args):
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from ..data import load_dataset_for, select_images
    from ..errors import ConfigError
    from ..interpreters import get_interpreter
    from ..report.maps import map_grid

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    device = runtime_of(args)
    model = load_model_from(args, device)
    if model.card.dataset and not args.dataset.startswith("folder:") and args.dataset != model.card.dataset:
        raise ConfigError(f"model {args.model} is trained on {model.card.dataset}, not {args.dataset}")
    interp = get_interpreter(args.interpreter, model, **_params(args))
    # the model always: it converts images to its channels and labels unlabeled folders
    sel = select_images(load_dataset_for(model, args.dataset, args.split, **dataset_options(args)), args.n,
                        seed=args.seed, model=model, correct_only=not args.all_images, device=device)
    print_selection(sel.report)
    x = sel.x.to(device)
    with torch.no_grad():
        pred = model(x).argmax(1)
    # a copy: on CPU sel.y.to(device) IS sel.y, and safetensors refuses tensors that share memory
    targets = pred if args.target == "pred" else sel.y.to(device, copy=True)
    maps = interp(x, targets)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # checked writable before any work
    save_file({"images": x.cpu().contiguous(), "targets": targets.cpu().contiguous(),
               "maps": maps.cpu().contiguous(), "labels": sel.y.contiguous(), "indices": sel.indices.contiguous()},
              str(out / "maps.safetensors"),
              metadata={"model": args.model, "dataset": args.dataset, "interpreter": args.interpreter,
                        "seed": str(args.seed), "params": str(_params(args))})
    titles = [f"#{int(i)} t={int(t)}" for i, t in zip(sel.indices, targets.cpu())]
    map_grid(out / "maps.png", x, maps, titles=titles)
    print(f"wrote {out}/maps.png and {out}/maps.safetensors ({args.n} maps of shape {tuple(maps.shape[1:])})")
    return 0
