"""Browse finished runs under ``--runs DIR`` without recomputing anything: every folder (up to
four levels down) holding a summary.json or a results.jsonl is a run; its pictures (and those of
its non-run sub-folders, such as a report's plots/) form the gallery.

Nothing outside ``--runs`` is read: every file is resolved (symlinks followed) and skipped unless
it lies inside the resolved root; symlinked folders are not walked. Pictures are rasters (PNG,
JPEG, WebP) and SVG; the server sends SVG as a download, never as a page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import InputError
from .engine import clean, map_data, png_data_url

MAX_DEPTH = 4
MAX_RUNS = 500
MAX_RECORDS = 5000
MAX_EXAMPLES = 32
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
               ".webp": "image/webp"}


def _scalars(d: dict, prefix: str = "") -> dict:
    """Flatten one level of nesting into dotted keys; keep scalars (and lists of numbers)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not prefix:
            out.update(_scalars(v, f"{key}."))
        elif isinstance(v, (str, bool, int, float)) or v is None or isinstance(v, list) and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v):
            out[key] = v
    return clean(out)


class RunStore:
    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root).resolve() if root else None

    def _inside(self, path: Path) -> bool:
        """``path`` is a regular file whose real path lies inside the root."""
        if self.root is None:
            return False
        real = Path(os.path.realpath(path))
        return real.is_relative_to(self.root) and real.is_file()

    def _scan(self) -> dict[str, Path]:
        if self.root is None or not self.root.is_dir():
            return {}
        found: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            path = Path(dirpath)
            depth = len(path.relative_to(self.root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
            if "summary.json" in filenames or "results.jsonl" in filenames:
                rel = path.relative_to(self.root).as_posix()
                found[rel if rel != "." else "."] = path
                if len(found) >= MAX_RUNS:
                    break
        return found

    def _path(self, run_id: str) -> Path:
        runs = self._scan()
        if run_id not in runs:
            raise InputError(f"unknown run {run_id!r}" + ("" if self.root else " (start the lab with --runs DIR)"))
        return runs[run_id]

    def _records(self, path: Path, limit: int) -> tuple[list[dict], int]:
        f = path / "results.jsonl"
        if not self._inside(f):
            return [], 0
        records, count = [], 0
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                count += 1
                if len(records) < limit:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict):
                        records.append(_scalars(rec))
        return records, count

    def _summary(self, path: Path, records: list[dict]) -> tuple[dict, dict]:
        f = path / "summary.json"
        summary: dict = {}
        if self._inside(f):
            try:
                loaded = json.loads(f.read_text(encoding="utf-8", errors="replace"))
                summary = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                summary = {}
        config = summary.pop("config", None)
        if not isinstance(config, dict):
            config = {}
            keys = ("model", "dataset", "interpreter", "attack", "defense", "eps")
            if records:  # bench records carry their configuration key; show it when it is uniform
                config = {k: records[0][k] for k in keys if k in records[0]
                          and all(r.get(k) == records[0][k] for r in records)}
        flat = {k: v for k, v in _scalars(summary).items() if not isinstance(v, list)}
        if not flat and records:
            flat = _aggregate(records)
        return flat, {k: v for k, v in _scalars(config).items() if not isinstance(v, list)}

    def _images(self, path: Path) -> list[str]:
        """Pictures in the run folder and in its sub-folders that are not runs (e.g. plots/)."""
        found = [p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_TYPES and self._inside(p)]
        for sub in sorted(d for d in path.iterdir()
                          if d.is_dir() and not d.is_symlink() and not d.name.startswith(".")):
            if (sub / "summary.json").is_file() or (sub / "results.jsonl").is_file():
                continue
            found += [f"{sub.name}/{p.name}" for p in sorted(sub.iterdir())
                      if p.suffix.lower() in IMAGE_TYPES and self._inside(p)]
        return sorted(found)[:50]

    def _info(self, run_id: str, path: Path, limit: int) -> dict:
        records, count = self._records(path, limit)
        summary, config = self._summary(path, records)
        return {"id": run_id, "path": str(path), "n_records": count, "summary": summary, "config": config,
                "images": self._images(path), "has_queries": any("queries" in r for r in records[:50]),
                "records": records, "truncated": count > len(records)}

    def list(self) -> list[dict]:
        out = []
        for run_id, path in sorted(self._scan().items()):
            info = self._info(run_id, path, limit=50)
            info.pop("records"), info.pop("truncated")
            out.append(info)
        return out

    def detail(self, run_id: str) -> dict:
        return self._info(run_id, self._path(run_id), MAX_RECORDS)

    def file(self, run_id: str, name: str) -> tuple[Path, str]:
        path = self._path(run_id)
        if name not in self._images(path) or not self._inside(path / name):
            raise InputError(f"run {run_id!r} has no picture {name!r}")
        return Path(os.path.realpath(path / name)), IMAGE_TYPES[Path(name).suffix.lower()]


    # --- examples: the images and maps a run saved --------------------------------------------------
    def examples(self, run_id: str, config: str | None = None, limit: int = MAX_EXAMPLES) -> dict:
        """Benign/adversarial images and maps saved by the run, never recomputed: ``idlsec attack``'s
        adversarial.safetensors, or a bench store's images/<config>-*.safetensors galleries."""
        path = self._path(run_id)
        configs = sorted({f.name.rsplit("-", 1)[0] for f in (path / "images").glob("*.safetensors")
                          if self._inside(f)}) \
            if (path / "images").is_dir() and not (path / "images").is_symlink() else []
        tensors, positions = None, None
        if configs:
            from ..bench.store import load_gallery

            config = config if config is not None else configs[0]
            if config not in configs:
                raise InputError(f"run {run_id!r} has no gallery for configuration {config!r}")
            tensors = load_gallery(path, config)
            if tensors is not None and "pos" in tensors:
                positions = [int(p) for p in tensors["pos"].tolist()]
        elif self._inside(path / "adversarial.safetensors"):
            from safetensors.torch import load_file

            try:
                tensors = load_file(str(path / "adversarial.safetensors"))
            except Exception as e:  # noqa: BLE001 - a damaged file is the run's problem, not a server error
                raise InputError(f"cannot read {run_id}/adversarial.safetensors: {e}") from None
            config = None
        out = {"id": run_id, "config": config, "configs": configs, "examples": []}
        if not tensors or "images" not in tensors or "adversarial" not in tensors:
            return out
        x, xa = _unit(tensors["images"]), _unit(tensors["adversarial"])
        if x.shape != xa.shape or x.dim() != 4:
            raise InputError(f"run {run_id!r}: its saved images have inconsistent shapes")
        bm, am = tensors.get("benign_maps"), tensors.get("adversarial_maps")
        n = min(limit, x.shape[0])
        for i in range(n):
            delta = xa[i] - x[i]
            scale = 0.5 / max(float(delta.abs().max()), 1e-8)
            pred = tensors.get("pred")
            label = tensors.get("labels")
            out["examples"].append({
                "position": positions[i] if positions else i,
                "pred": int(pred[i]) if pred is not None and i < len(pred) else None,
                "label": int(label[i]) if label is not None and i < len(label) else None,
                "benign_image": png_data_url(x[i]), "adversarial_image": png_data_url(xa[i]),
                "perturbation_image": png_data_url(0.5 + scale * delta),
                "benign_map": map_data(_unit(bm[i])) if bm is not None and i < len(bm) else None,
                "adversarial_map": map_data(_unit(am[i])) if am is not None and i < len(am) else None})
        return out


def _unit(t):
    """Saved tensors in [0, 1]: bench galleries store uint8."""
    return t.float() / 255 if t.dtype == torch.uint8 else t.float()


def _aggregate(records: list[dict]) -> dict:
    """Means of the numeric columns (a bench results.jsonl without summary.json)."""
    out: dict = {"n": len(records)}
    labels = ("index", "label", "target", "pred", "label_attacked", "seed", "pos", "eps")
    keys = [k for k, v in records[0].items() if isinstance(v, (int, float)) and k not in labels]
    for k in keys:
        vals = [float(r[k]) for r in records if isinstance(r.get(k), (int, float))]
        if vals:
            name = "asr" if k == "success" else k if k.endswith("_mean") else f"{k}_mean"
            out[name] = sum(vals) / len(vals)
    return clean(out)
