"""Fashion-MNIST (Xiao et al. 2017), from the official IDX files: an explicit folder, the user
cache, Debian's ``dataset-fashion-mnist`` package, the mirror, or the official download. Files are
verified by the SHA-256 of their *decompressed* content, so any gzip re-packing is accepted."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ChecksumError, ConfigError, ResourceError
from ._cache import cached_arrays
from .dataset import Dataset
from .resolve import Remote, cache_dir, download, mirror_dir

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle-boot"]
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # file -> sha256 of the decompressed IDX bytes
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def load_fashion_mnist(split: str = "test", path: str | os.PathLike | None = None) -> Dataset:
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r} for fashion-mnist; valid: test, train")
    prefix = "train" if split == "train" else "t10k"

    def decode():
        folder = _find_folder(prefix, path)
        images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        return {"images": torch.from_numpy(images).unsqueeze(1).contiguous(),
                "labels": torch.from_numpy(labels.astype(np.int64))}

    key = f"fashion-mnist-{split}" if path is None else f"fashion-mnist-{split}-{_path_key(path)}"
    arrays = cached_arrays(key, decode)
    return Dataset("fashion-mnist", split, arrays["images"], arrays["labels"], list(CLASSES))


def _path_key(path) -> str:
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]


def _find_folder(prefix: str, explicit) -> Path:
    names = [n for n in FILES if n.startswith(prefix)]
    candidates = [Path(explicit)] if explicit is not None else [cache_dir() / "data/fashion-mnist",
                                                                 SYSTEM_DIR]
    if explicit is None and mirror_dir() is not None:
        candidates.append(mirror_dir() / "data/fashion-mnist")
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            return folder
    if explicit is not None:
        raise ResourceError(f"{explicit} does not contain {', '.join(names)}")
    dest = cache_dir() / "data/fashion-mnist"
    for n in names:
        # The official files are verified after decompression, in _read_idx.
        download(_Unverified(n, f"data/fashion-mnist/{n}", "", url=URL + n), dest / n)
    return dest


class _Unverified(Remote):
    def verify(self, path):
        return path


def _read_idx(path: Path) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as e:
        raise ChecksumError(f"{path}: not a valid gzip file ({e})") from None
    expected = FILES[path.name]
    got = hashlib.sha256(raw).hexdigest()
    if got != expected:
        raise ChecksumError(f"{path}: sha256 of the decompressed content is {got}, expected {expected}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()
