"""``idlsec serve``: the lab, a local web app to run attacks and explore interpretations.

Models: without ``--model``/``--models-file`` the lab offers every zoo model whose weights are at
hand. ``--model SPEC`` (repeatable) offers any model the CLI accepts; the options that follow a
``--model`` (``--weights``, ``--num-classes``, ``--input-size``, ``--mean``, ``--std``,
``--labels``, ``--dataset``, ``--image-labels``, ``--name``) apply to that model only:

    idlsec serve --model cifar10-resnet20 \
                 --model torchvision:resnet50 --weights r50.pth --labels imagenet --dataset folder:photos \
                 --model my_net.py:build --weights w.safetensors --input-size 1,64,64

``--models-file FILE`` reads the same from YAML: a list of ``{model, weights, num_classes,
input_size, mean, std, labels, datasets, image_labels, name}`` (paths relative to the file)."""

import argparse
import threading

from .common import add_runtime_args, int_in, runtime_of

# the options of one --model (models-file key, flag, metavar, help)
MODEL_OPTIONS = [
    ("weights", "--weights", "PATH|random", "weights file (.safetensors or a state dict) or 'random'"),
    ("num_classes", "--num-classes", "N", "class count (replaces or checks the head)"),
    ("input_size", "--input-size", "C,H,W", "input size (uploads and folder images are resized to it)"),
    ("mean", "--mean", "a,b,c", "normalisation mean"),
    ("std", "--std", "a,b,c", "normalisation std"),
    ("labels", "--labels", "FILE|imagenet", "class names: a file (one per line) or 'imagenet'"),
    ("datasets", "--dataset", "SPEC", "an image source for it: folder:DIR or a built-in dataset (repeatable)"),
    ("image_labels", "--image-labels", "subfolders|none|FILE.csv", "labels of its folders' images"),
    ("name", "--name", "NAME", "what the lab calls it (default: the spec)"),
]


class _NewModel(argparse.Action):
    """--model SPEC: starts a model; the model options after it belong to it."""

    def __call__(self, parser, namespace, value, option_string=None):
        models = list(getattr(namespace, self.dest, None) or [])
        models.append({"model": value})
        setattr(namespace, self.dest, models)


class _ModelOption(argparse.Action):
    """An option of the preceding --model."""

    def __call__(self, parser, namespace, value, option_string=None):
        models = getattr(namespace, "models", None)
        if not models:
            parser.error(f"{option_string} applies to a model: put it after the --model it belongs to")
        current = models[-1]
        if self.dest == "datasets":
            current.setdefault("datasets", []).append(value)
        elif self.dest in current:
            parser.error(f"{option_string} given twice for --model {current['model']}")
        else:
            current[self.dest] = value


def add_parser(sub, name):
    p = sub.add_parser(name, help="start the lab (web app + HTTP API) on http://127.0.0.1:8765")
    p.add_argument("--port", type=int_in(1, 65535), default=8765)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; the API runs code on request: "
                        "do not expose it to a network you do not trust)")
    p.add_argument("--token", default=None, metavar="TOKEN",
                   help="require TOKEN on every request (X-Idlsec-Token header, or open /?token=TOKEN "
                        "once in the browser); required with a --host beyond loopback")
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="folder of runs to browse and write (created if absent); the lab's jobs and uploads persist "
                   "in its .lab/")
    p.add_argument("--openapi", default=None, metavar="FILE",
                   help="write the API's OpenAPI schema to FILE ('-' for stdout) and exit")
    g = p.add_argument_group("models (default: every zoo model whose weights are at hand)")
    g.add_argument("--model", dest="models", action=_NewModel, metavar="SPEC",
                   help="offer this model (repeatable): a zoo name, torchvision:<arch>, timm:<name>, "
                        "path/to/file.py:factory or package.module:factory; the options below apply "
                        "to the --model before them")
    for key, flag, metavar, text in MODEL_OPTIONS:
        g.add_argument(flag, dest=key, action=_ModelOption, metavar=metavar, help=text,
                       default=argparse.SUPPRESS)
    g.add_argument("--models-file", default=None, metavar="FILE",
                   help="YAML list of models: {model, weights, num_classes, input_size, mean, std, "
                        "labels, datasets, image_labels, name}")
    add_runtime_args(p, seed=False)
    return p


def model_entries(args) -> list | None:
    """The models the lab offers, from --model/--models-file (None: the zoo's defaults)."""
    from ..lab.models import entry_from_dict, read_models_file

    entries = []
    if getattr(args, "models_file", None):
        entries += read_models_file(args.models_file)
    for i, d in enumerate(getattr(args, "models", None) or []):
        entries.append(entry_from_dict(d, where=f"--model {d['model']} (#{i + 1})"))
    return entries or None


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def openapi_json(app) -> str:
    import json

    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check(args):
    """Port free, host/token rules, files read and written, the models: before the lab starts."""
    from ..errors import ConfigError
    from ..validation import check_input_path, check_output_path
    from .common import check_runtime

    check_runtime(args)
    loopback = args.host in LOOPBACK
    token = getattr(args, "token", None)
    if not loopback and not token and not args.openapi:
        raise ConfigError(f"--host {args.host} is beyond loopback: anyone who reaches it can run code on "
                          "this machine; give --token TOKEN (e.g. from `python -c 'import secrets; "
                          "print(secrets.token_urlsafe())'`)")
    if token is not None and len(token) < 16:
        raise ConfigError("--token must have at least 16 characters")
    if args.runs is not None:  # a folder the lab can write (its jobs and uploads persist there)
        check_output_path(args.runs, what="--runs", kind="dir")
    if args.models_file is not None:
        check_input_path(args.models_file, what="--models-file")
    if args.openapi not in (None, "-"):
        check_output_path(args.openapi, what="--openapi", kind="file")
    model_entries(args)
    if args.openapi is None:
        _check_bind(args.host, args.port)


def _check_bind(host: str, port: int) -> None:
    """Bind the address once (and let it go) so that a busy port is an error, not uvicorn's."""
    import socket

    from ..errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {host}: cannot be resolved ({e})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e} "
                              "(another server there? pick another --port)") from None


def run(args):
    from pathlib import Path

    from ..errors import ConfigError

    try:
        import uvicorn

        from ..lab.app import create_app
    except ImportError as e:
        raise ConfigError(f"the lab needs its extra: pip install 'idlsec[lab]' ({e})") from None
    loopback = args.host in LOOPBACK
    token = getattr(args, "token", None)
    if args.runs is not None and args.openapi is None:
        Path(args.runs).mkdir(parents=True, exist_ok=True)
    app = create_app(args.runs, runtime_of(args), allowed_hosts=sorted(LOOPBACK | {"[::1]"}) if loopback else None,
                     models=model_entries(args), token=token)
    if args.openapi:
        text = openapi_json(app)
        if args.openapi == "-":
            print(text, end="")
        else:
            from ..validation import write_text_atomic

            write_text_atomic(args.openapi, text)
        app.state.queue.shutdown()
        return 0
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"idlsec lab on http://{host}:{args.port}  (API schema: /openapi.json; Ctrl-C stops)", flush=True)
    queue = app.state.queue

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # SIGINT/SIGTERM: end the event streams and the job now
            threading.Thread(target=queue.shutdown, daemon=True).start()
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                          timeout_graceful_shutdown=3)).run()
    return 0
