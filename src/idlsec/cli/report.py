"""``idlsec report DIR``: tables (table.md, table.csv), plots and a self-contained report.html for a
benchmark directory (``idlsec bench``) or a single ``idlsec attack --out`` directory."""

from .common import NONNEGATIVE


def add_parser(sub, name):
    p = sub.add_parser(name, help="write DIR/table.md, table.csv, plots and report.html for a run directory")
    p.add_argument("dir", metavar="DIR", help="an `idlsec bench` or `idlsec attack` output directory")
    p.add_argument("--skip-corrupt", action="store_true", help="skip corrupt lines of results.jsonl")
    p.add_argument("--gallery", type=NONNEGATIVE, default=None, help="images per configuration in the HTML gallery")
    p.add_argument("--no-html", action="store_true", help="tables and plots only")
    return p


def check(args):
    from ..validation import check_input_path, check_output_path

    check_input_path(args.dir, what="report", kind="dir")
    check_output_path(args.dir, what="report", kind="dir")


def run(args):
    from ..report.build import write_report

    paths = write_report(args.dir, skip_corrupt=args.skip_corrupt, gallery=args.gallery, html=not args.no_html)
    for key in ("table_md", "table_csv"):
        print(f"wrote {paths[key]}")
    for p in paths["plots"]:
        print(f"wrote {p}")
    if paths.get("html"):
        print(f"wrote {paths['html']}")
    return 0
