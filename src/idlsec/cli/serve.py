"""``idlsec serve``: the lab, a local web app to run attacks and explore interpretations."""

from .common import add_runtime_args, runtime_of


def add_parser(sub, name):
    p = sub.add_parser(name, help="start the lab (web app + HTTP API) on http://127.0.0.1:8765")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; the API runs code on request: "
                        "do not expose it to a network you do not trust)")
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="folder of finished runs to browse (folders with summary.json / results.jsonl)")
    p.add_argument("--openapi", default=None, metavar="FILE",
                   help="write the API's OpenAPI schema to FILE ('-' for stdout) and exit")
    add_runtime_args(p, seed=False)
    return p


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def openapi_json(app) -> str:
    import json

    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def run(args):
    from ..errors import ConfigError

    try:
        import uvicorn

        from ..lab.app import create_app
    except ImportError as e:
        raise ConfigError(f"the lab needs its extra: pip install 'idlsec[lab]' ({e})") from None
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    loopback = args.host in LOOPBACK
    app = create_app(args.runs, runtime_of(args), allowed_hosts=sorted(LOOPBACK | {"[::1]"}) if loopback else None)
    if args.openapi:
        text = openapi_json(app)
        if args.openapi == "-":
            print(text, end="")
        else:
            with open(args.openapi, "w", encoding="utf-8") as f:
                f.write(text)
        app.state.queue.shutdown()
        return 0
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"idlsec lab on http://{host}:{args.port}  (API docs: /docs; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
