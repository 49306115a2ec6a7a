"""What a report says about a run besides its tables: the header lines (commands, machines) and
class names. Below both the Markdown (``build``) and the HTML (``html``) writers."""

from __future__ import annotations


def class_names(dataset: str | None):
    try:
        if dataset == "cifar10":
            from ..data.cifar10 import CLASSES
        elif dataset == "fashion-mnist":
            from ..data.fashion_mnist import CLASSES
        else:
            return None
        return list(CLASSES)
    except ImportError:
        return None


def machine_text(m: dict) -> str:
    parts = [f"{m['cpu']} ({m['cpus']} cores)" if m.get("cpus") else m.get("cpu")]
    parts += [f"GPU {m['gpu']}" if m.get("gpu") else None, f"device {m['device']}" if m.get("device") else None,
              f"torch {m['torch']}" if m.get("torch") else None,
              f"{m['threads']} thread(s)" if m.get("threads") else None]
    return ", ".join(p for p in parts if p)


def header_lines(run) -> list[str]:
    """The lines above the tables: what was run, how, on which machine (``run``: a ``build.Run``)."""
    what = f"benchmark suite {run.name}" if run.kind == "bench" else "idlsec attack"
    n = sum(len(g.records) for g in run.groups)
    lines = [f"Run `{run.dir}` ({what}), {len(run.groups)} configuration(s), {n} image record(s)."]
    seen = set()
    for r in run.meta.get("runs", []):
        if "command" in r:
            cmd = " ".join(r["command"]) if isinstance(r["command"], list) else str(r["command"])
            m = r.get("machine", {})
            mach = machine_text(m)
            line = f"Command: `{cmd}` on {mach}" if mach else f"Command: `{cmd}`"
            if line not in seen:
                seen.add(line)
                lines.append(line)
        elif "merged" in r:
            lines.append(f"Merged from: {', '.join(r['merged'])}")
    if run.kind == "attack":
        c = run.groups[0].config
        lines.append("Command: `idlsec attack " + " ".join(
            f"--{k.replace('_', '-')} {c[k]}" for k in ("model", "dataset", "interpreter", "attack", "n", "seed")
            if k in c) + "`")
    return lines
