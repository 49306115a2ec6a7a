"""Datasets as float [0, 1] NCHW tensors with int64 labels, and deterministic image selection."""

from __future__ import annotations

from ..errors import unknown_name
from .cifar10 import load_cifar10
from .dataset import Dataset
from .fashion_mnist import load_fashion_mnist
from .folder import load_image, load_image_folder
from .resolve import Remote, cache_dir, mirror_dir, resolve
from .select import Selection, select_images

DATASETS = {"cifar10": load_cifar10, "fashion-mnist": load_fashion_mnist}


def load_dataset(name: str, split: str = "test", path=None) -> Dataset:
    """``cifar10`` | ``fashion-mnist`` | ``folder:<path>`` (a plain image folder)."""
    if name.startswith("folder:"):
        return load_image_folder(name.split(":", 1)[1], split=split)
    if name not in DATASETS:
        raise unknown_name("dataset", name, list(DATASETS) + ["folder:<path>"])
    return DATASETS[name](split, path)


__all__ = ["DATASETS", "Dataset", "Remote", "Selection", "cache_dir", "load_cifar10", "load_dataset",
           "load_fashion_mnist", "load_image", "load_image_folder", "mirror_dir", "resolve",
           "select_images"]
