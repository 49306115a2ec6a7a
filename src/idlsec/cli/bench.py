"""``idlsec bench SUITE.yaml --out DIR``: run (or resume) a benchmark suite;
``idlsec bench merge DIR1 DIR2 ... --out DIR``: combine shards."""

from pathlib import Path

from .common import NONNEGATIVE_FLOAT, add_runtime_args


def add_parser(sub, name):
    p = sub.add_parser(name, help="run a benchmark suite (resumable, shardable) or merge shard directories",
                       usage="idlsec bench SUITE.yaml --out DIR [options]\n"
                       "       idlsec bench merge DIR1 DIR2 ... --out DIR [--skip-corrupt]",
                       description="Run (or resume) a YAML suite into DIR/results.jsonl, or merge shard "
                       "directories. See docs/benchmarks.md.")
    p.add_argument("target", nargs="+", metavar="ARG",
                   help="a suite file, or 'merge' followed by benchmark directories")
    p.add_argument("--out", required=True, help="benchmark directory (results.jsonl, suite.json, images/)")
    p.add_argument("--shard", default="0/1", help="run shard i of n (0 <= i < n): configurations are dealt round robin in key order")
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    p.add_argument("--gpus-per-task", type=NONNEGATIVE_FLOAT, default=None,
                   help="GPUs per Ray task (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip corrupt lines of results.jsonl (set aside in results.corrupt.jsonl)")
    p.add_argument("--only", action="append", default=[], metavar="FIELD=V1,V2",
                   help="run only the configurations whose model/dataset/interpreter/attack/defense is listed "
                   "(repeatable; all must match)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override a setting (n=100, params.max_queries=10000) or a top-level key "
                   "(seeds=[0,1,2]) of the suite; VALUE is YAML (repeatable)")
    p.add_argument("--no-grid", action="store_true",
                   help="run the configurations one at a time in grid order (default: the grid scheduler "
                   "groups those on the same images and computes each interpreter's benign maps once; "
                   "the records are the same)")
    p.add_argument("--compile", dest="sets", action="append_const", const="compile=true",
                   help="run the white-box attacks compiled with torch.compile (the suite's settings.compile)")
    p.add_argument("--cuda-graph", dest="sets", action="append_const", const="cuda_graph=true",
                   help="CUDA: replay each step of PGD, ADV^2 and AdvEdge(+) from a captured CUDA graph (the "
                   "suite's settings.cuda_graph)")
    p.add_argument("--dry-run", action="store_true", help="list the configurations and exit")
    p.add_argument("--report", action="store_true", help="write the report (idlsec report DIR) at the end")
    add_runtime_args(p, seed=False)
    return p


def check(args):
    """Suite (or merge inputs), --shard, --only/--set and --out, before any configuration runs."""
    from ..bench.store import RESULTS, SUITE, read_suite_json
    from ..bench.suite import filter_suite, load_suite, parse_shard
    from ..errors import ConfigError
    from ..validation import check_input_path
    from .common import check_out, check_runtime

    check_runtime(args)
    if args.target[0] == "merge":
        if len(args.target) < 2:
            raise ConfigError("usage: idlsec bench merge DIR1 DIR2 ... --out DIR")
        names = {}
        for d in args.target[1:]:
            check_input_path(d, what="bench merge", kind="dir")
            if not (Path(d) / RESULTS).is_file() or not (Path(d) / SUITE).is_file():
                raise ConfigError(f"{d} is not a benchmark directory (it needs {RESULTS} and {SUITE}; "
                                  "an `idlsec attack` folder cannot be merged)")
            meta = read_suite_json(d)
            if not isinstance(meta, dict) or not isinstance(meta.get("configs", []), list):
                raise ConfigError(f"{Path(d) / SUITE}: not a suite record (a JSON object with 'configs')")
            names[d] = meta.get("name")
        if len(set(names.values())) > 1:
            listed = ", ".join(f"{d} ({n})" for d, n in names.items())
            raise ConfigError(f"bench merge combines shards of one suite; these are runs of different "
                              f"suites: {listed}")
        check_out(args)
        return
    if len(args.target) != 1:
        raise ConfigError(f"expected one suite file, got {args.target}")
    check_input_path(args.target[0], what="suite", kind="file")
    suite = load_suite(args.target[0], args.sets)
    if args.only:
        filter_suite(suite, args.only)
    parse_shard(args.shard)
    if not args.dry_run:
        check_out(args)


def run(args):
    import sys

    from ..bench.runner import merge_dirs, run_suite
    from ..bench.suite import filter_suite, load_suite, parse_shard, shard_configs
    from ..errors import ConfigError

    if args.target[0] == "merge":
        if len(args.target) < 2:
            raise ConfigError("usage: idlsec bench merge DIR1 DIR2 ... --out DIR")
        merge_dirs(args.target[1:], args.out, skip_corrupt=args.skip_corrupt)
        return 0
    if len(args.target) != 1:
        raise ConfigError(f"expected one suite file, got {args.target}")
    suite = load_suite(args.target[0], args.sets)
    if args.only:
        suite = filter_suite(suite, args.only)
    shard = parse_shard(args.shard)
    if args.dry_run:
        mine = shard_configs(suite.configs, shard)
        print(f"{suite.name}: {len(mine)} of {len(suite.configs)} configuration(s) in shard {args.shard}")
        for c in mine:
            print(f"  {c.key}  {c.title}  n={c.n}")
        for j in shard_configs(suite.jobs, shard):
            print(f"  {j.key}  {j.title}")
        return 0
    from ..runtime import set_threads

    set_threads(args.threads)
    out = run_suite(suite, args.out, shard=shard, backend=args.backend, device=args.device,
                    skip_corrupt=args.skip_corrupt, argv=["idlsec", *sys.argv[1:]], ray_address=args.ray_address,
                    gpus_per_task=args.gpus_per_task, grid=not args.no_grid)
    _print_summaries(out["summaries"])
    if args.report and out["complete"]:
        from ..report.build import write_report

        paths = write_report(args.out)
        print(f"wrote {paths['html']}")
    return 0


def _print_summaries(summaries):
    if not summaries:
        return
    from ..bench.suite import BenchConfig

    rows = [(BenchConfig.from_dict(s["config"]).title, s["n"], s.get("asr"), s.get("iou_topk_mean"),
             s.get("queries_median")) for s in summaries]
    width = max(len(r[0]) for r in rows)
    queries = any(r[4] is not None for r in rows)
    print(f"{'configuration'.ljust(width)}  {'n':>4}  {'ASR':>5}  {'IoU':>5}" + ("  q median" if queries else ""))
    for title, n, asr, iou, q in rows:
        f = lambda v: f"{v:5.2f}" if isinstance(v, float) else "    -"  # noqa: E731
        line = f"{title.ljust(width)}  {n:>4}  {f(asr)}  {f(iou)}"
        if queries:
            line += f"  {q:8.0f}" if isinstance(q, float) and q == q else "         -"
        print(line)
