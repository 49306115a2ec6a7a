"""The results store of a benchmark directory.

``DIR/results.jsonl``: one JSON record per (configuration, image); each record carries the
configuration's ``config`` key and the image's position ``pos`` in the seeded selection, so a
re-run skips what is done and never writes a record twice. Every line is written whole with one
``write`` on an O_APPEND descriptor, then fsynced. ``DIR/suite.json``: the configurations (grid
order) and a log of the runs. ``DIR/images/<key>-<start>.safetensors``: benign/adversarial images
and maps (uint8) of the first ``gallery`` images of each configuration, for the report.

A line that is not a complete JSON record (a torn write, an edit) is an error that names its line
number; with ``skip_corrupt`` it is reported and set aside in ``results.corrupt.jsonl`` before the
store is appended to again, and everything else is kept.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError, InputError

RESULTS = "results.jsonl"
SUITE = "suite.json"
CORRUPT = "results.corrupt.jsonl"
IMAGES = "images"
# fields a bench record adds to what records_from_result gives
CONFIG_FIELDS = (
    "config",
    "model",
    "dataset",
    "interpreter",
    "attack",
    "defense",
    "eps",
    "seed",
    "pos",
)
# fields that differ between identical runs (wall-clock time)
VOLATILE_FIELDS = ("seconds",)


class CorruptResults(InputError):
    """results.jsonl holds lines that are not complete records."""


@dataclass
class ReadResult:
    records: list[dict]
    corrupt: list[tuple[int, str, str]] = field(default_factory=list)  # (line number, reason, text)
    duplicates: int = 0


def read_records(path, *, skip_corrupt: bool = False, warn=None) -> ReadResult:
    """Read a results.jsonl (or a gzipped results.jsonl.gz); raise :class:`CorruptResults` (line numbers included) on a bad line
    unless ``skip_corrupt``; keep the first of duplicate (config, pos) records."""
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    path = Path(path)
    if not path.is_file():
        return ReadResult([])
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    out = ReadResult([])
    seen = set()
    lines = data.split(b"\n")
    for no, raw in enumerate(lines, start=1):
        last = no == len(lines)
        if last and raw == b"":
            break
        if not raw.strip():
            continue
        reason = None
        rec = None
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            reason = (
                f"truncated line (no newline at the end of the file): {e}"
                if last
                else f"not JSON: {e}"
            )
        if reason is None and not (isinstance(rec, dict) and ("index" in rec)):
            reason = "not a result record (a JSON object with an 'index')"
        if reason is not None:
            out.corrupt.append((no, reason, raw.decode("utf-8", "replace")))
            continue
        ident = (rec.get("config"), rec.get("pos", rec.get("index")))
        if ident in seen:
            out.duplicates += 1
            continue
        seen.add(ident)
        out.records.append(rec)
    if out.corrupt:
        where = "; ".join(f"line {no}: {why}" for no, why, _ in out.corrupt[:5])
        more = f" (and {len(out.corrupt) - 5} more)" if len(out.corrupt) > 5 else ""
        if not skip_corrupt:
            raise CorruptResults(
                f"{path}: {len(out.corrupt)} corrupt line(s): {where}{more}. Re-run with "
                f"--skip-corrupt to skip them (they are kept in {CORRUPT}; their images "
                "are recomputed by a bench run)"
            )
        warn(f"{path}: skipping {len(out.corrupt)} corrupt line(s): {where}{more}")
    if out.duplicates:
        warn(f"{path}: ignored {out.duplicates} duplicate record(s) (same config and image)")
    return out


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def dumps(rec: dict) -> bytes:
    return (json.dumps(rec, separators=(", ", ": ")) + "\n").encode()


def write_records(path, records) -> None:
    """Replace ``path`` atomically with ``records`` (temporary file, fsync, rename)."""
    _atomic_write(Path(path), b"".join(dumps(r) for r in records))


class ResultStore:
    """An append-only results.jsonl inside a locked benchmark directory."""

    def __init__(self, out_dir, *, skip_corrupt: bool = False):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / RESULTS
        self._fd = None
        self._lock = open(self.dir / ".lock", "a+")  # noqa: SIM115 (held for the whole run)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise ConfigError(
                f"another idlsec bench is writing to {self.dir}; give each process (shard) "
                "its own --out and combine them with `idlsec bench merge`"
            ) from None
        try:
            res = read_records(self.path, skip_corrupt=skip_corrupt)
        except BaseException:
            self._unlock()
            raise
        if res.corrupt or res.duplicates:
            self._set_aside(res)
        elif (
            self.path.is_file()
            and self.path.stat().st_size
            and not self.path.read_bytes().endswith(b"\n")
        ):
            write_records(self.path, res.records)  # a complete last record without its newline
        self.records = res.records
        self.done = {(r.get("config"), r.get("pos")) for r in self.records}
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _set_aside(self, res: ReadResult) -> None:
        with open(self.dir / CORRUPT, "a") as f:
            f.writelines(
                json.dumps({"line": no, "reason": why, "text": text}) + "\n"
                for no, why, text in res.corrupt
            )
        write_records(self.path, res.records)

    def append(self, records) -> None:
        """Write each new record as one whole line (one ``write``), then fsync once for the batch:
        a killed process leaves only whole lines; a crashed machine loses at most this batch."""
        wrote = False
        for rec in records:
            ident = (rec["config"], rec["pos"])
            if ident in self.done:
                continue
            line = dumps(rec)
            n = os.write(self._fd, line)
            if n != len(
                line
            ):  # a short write (disk full): the torn line is reported by the next read
                raise OSError(f"short write to {self.path} ({n} of {len(line)} bytes)")
            wrote = True
            self.done.add(ident)
            self.records.append(rec)
        if wrote:
            os.fsync(self._fd)

    def rewrite(self, records) -> None:
        """Replace the file with ``records`` (same set, canonical order) atomically."""
        os.close(self._fd)
        write_records(self.path, records)
        self.records = list(records)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- suite.json -------------------------------------------------------------------------------
def read_suite_json(out_dir) -> dict:
    p = Path(out_dir) / SUITE
    if not p.is_file():
        return {"configs": [], "runs": []}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(
            f"{p}: not valid JSON ({e}); it is rewritten by the next `idlsec bench` run"
        ) from None


def update_suite_json(
    out_dir,
    configs: list[dict],
    run_info: dict | None = None,
    *,
    name: str | None = None,
    jobs: list[dict] = (),
):
    """Add configurations and jobs (keeping the order of those already known) and a run to the
    log."""
    meta = read_suite_json(out_dir)
    known = {c["key"] for c in meta.get("configs", [])}
    meta.setdefault("configs", [])
    meta["configs"] += [c for c in configs if c["key"] not in known]
    if jobs:
        known = {j["key"] for j in meta.get("jobs", [])}
        meta.setdefault("jobs", []).extend(j for j in jobs if j["key"] not in known)
    if name is not None:
        meta.setdefault("name", name)
    if run_info is not None:
        meta.setdefault("runs", []).append(run_info)
    write_suite_json(out_dir, meta)
    return meta


def write_suite_json(out_dir, meta: dict) -> None:
    _atomic_write(Path(out_dir) / SUITE, (json.dumps(meta, indent=1, default=str) + "\n").encode())


def canonical_order(records: list[dict], config_order: list[str]) -> list[dict]:
    """Records sorted by the grid order of their configuration, then by image position."""
    rank = {k: i for i, k in enumerate(config_order)}
    big = len(rank)
    return sorted(
        records,
        key=lambda r: (rank.get(r.get("config"), big), str(r.get("config")), r.get("pos", 0)),
    )


# --- gallery images ---------------------------------------------------------------------------
def to_uint8(t: torch.Tensor) -> torch.Tensor:
    return (t.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


def save_gallery(out_dir, key: str, start: int, tensors: dict) -> None:
    from safetensors.torch import save

    d = Path(out_dir) / IMAGES
    d.mkdir(exist_ok=True)
    _atomic_write(
        d / f"{key}-{start:06d}.safetensors", save({k: v.contiguous() for k, v in tensors.items()})
    )


def load_gallery(out_dir, key: str) -> dict | None:
    """The gallery tensors of one configuration (float [0,1]), or None."""
    from safetensors.torch import load_file

    files = sorted((Path(out_dir) / IMAGES).glob(f"{key}-*.safetensors"))
    if not files:
        return None
    parts = [load_file(str(f)) for f in files]
    out = {}
    for k in parts[0]:
        if all(k in p for p in parts):
            t = torch.cat([p[k] for p in parts])
            out[k] = t.float() / 255 if t.dtype == torch.uint8 else t
    return out
