"""``idlsec info``: what is registered (models, datasets, interpreters, attacks)."""


def add_parser(sub, name):
    p = sub.add_parser(name, help="list models, datasets, interpreters and attacks")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args):
    from .. import registry_info
    from .common import print_json

    info = registry_info()
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k}: {', '.join(v)}")
    return 0
