"""CIFAR-10 (Krizhevsky 2009): the JPEG-export archives of the local mirror, or the official
python release by download. The two differ slightly in pixels, so their caches are kept apart."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, ResourceError
from ._cache import cached_arrays
from .dataset import Dataset
from .resolve import Remote, cache_dir, mirror_dir, resolve

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

JPEG = {
    "train": Remote("cifar10-jpeg-train.tar.gz", "data/cifar10/cifar10-jpeg-train.tar.gz",
                    "41ec5e12a3e562c0418b6cd2ff35236b790d2a88b1c03a4dc976a2555a88b74d"),
    "test": Remote("cifar10-jpeg-test.tar.gz", "data/cifar10/cifar10-jpeg-test.tar.gz",
                   "be9bb77e95e7f659dd189abfbb7c31526ca56a2b6b153ea25ad454554a31da26"),
}
OFFICIAL = Remote("cifar-10-python.tar.gz", "data/cifar10/cifar-10-python.tar.gz",
                  "c58f30108f718f92721af3b95e74349a", algorithm="md5",
                  url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")


def load_cifar10(split: str = "test", path: str | os.PathLike | None = None) -> Dataset:
    """Load a CIFAR-10 split as uint8 images. ``path`` may point at either archive format."""
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r} for cifar10; valid: test, train")
    if path is not None:
        p = Path(path)
        fmt = "python" if "python" in p.name else "jpeg"
        remote = OFFICIAL if fmt == "python" else JPEG[split]
        return _build(split, fmt, resolve(remote, p))
    for fmt in ("jpeg", "python"):  # an already decoded copy in the user cache wins
        if (cache_dir() / "decoded" / f"cifar10-{fmt}-{split}.safetensors").is_file():
            return _build(split, fmt, None)
    mirror = mirror_dir()
    if (cache_dir() / JPEG[split].relpath).is_file() or (
        mirror is not None and (mirror / JPEG[split].relpath).is_file()
    ):
        return _build(split, "jpeg", resolve(JPEG[split]))
    return _build(split, "python", resolve(OFFICIAL))


def _build(split: str, fmt: str, archive: Path | None) -> Dataset:
    def decode():
        if archive is None:
            raise ResourceError("cifar10 cache entry vanished while loading")
        return _decode_jpeg(archive, split) if fmt == "jpeg" else _decode_python(archive, split)

    arrays = cached_arrays(f"cifar10-{fmt}-{split}", decode)
    return Dataset("cifar10", split, arrays["images"], arrays["labels"], list(CLASSES))


def _decode_jpeg(archive: Path, split: str) -> dict[str, torch.Tensor]:
    """Archive members are ``<split>/<class>/<NNNN>.jpg``; order: class, then file number."""
    items = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or not parts[-1].lower().endswith(".jpg"):
                continue
            cls, fname = parts[-2], parts[-1]
            if cls not in CLASSES:
                continue
            data = tar.extractfile(member).read()
            img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
            items.append((CLASSES.index(cls), int(Path(fname).stem), img))
    if not items:
        raise ResourceError(f"{archive} holds no CIFAR-10 JPEG images")
    items.sort(key=lambda t: (t[0], t[1]))
    images = torch.from_numpy(np.stack([t[2] for t in items])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([t[0] for t in items], dtype=torch.long)
    return {"images": images, "labels": labels}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The official release is pickled; allow only the numpy reconstruction it needs, so that
    loading it cannot execute arbitrary code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _decode_python(archive: Path, split: str) -> dict[str, torch.Tensor]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    data, labels = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for name in names:
            f = tar.extractfile(f"cifar-10-batches-py/{name}")
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
            data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch[b"labels"])
    return {"images": torch.from_numpy(np.concatenate(data)),
            "labels": torch.tensor(labels, dtype=torch.long)}
