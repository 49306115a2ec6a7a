"""Datasets as float [0, 1] NCHW tensors with int64 labels, and deterministic image selection."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import ConfigError, unknown_name
from .cifar10 import load_cifar10
from .dataset import NO_LABEL, Dataset, match_channels
from .fashion_mnist import load_fashion_mnist
from .folder import FolderDataset, load_image, load_image_folder, map_labels
from .resolve import Remote, cache_dir, mirror_dir, resolve
from .select import Selection, select_images, selection_message

DATASETS = {"cifar10": load_cifar10, "fashion-mnist": load_fashion_mnist}
SPLITS = ("test", "val", "train")
VAL_SIZE = 5000  # images carved from the training split for tuning (docs/protocol.md)
VAL_SEED = 0  # fixed: the validation split is the same set on every machine and in every run


def validation_indices(n_train: int, size: int = VAL_SIZE) -> torch.Tensor:
    """Indices into the training split that form the validation split: a fixed seeded random
    subset of ``size`` images (sorted). Hyperparameters are tuned on these images and figures are
    reported on the test split, so tuning and reporting never share an image."""
    if not 0 < size <= n_train:
        raise ConfigError(f"validation size must be in 1..{n_train}, got {size}")
    g = torch.Generator().manual_seed(VAL_SEED)
    return torch.randperm(n_train, generator=g)[:size].sort().values


def load_dataset(name: str, split: str = "test", path=None, *, size=None, channels=None,
                 image_labels=None, class_names=None) -> Dataset:
    """``cifar10`` | ``fashion-mnist`` | ``folder:<DIR>`` (an image folder, see ``load_image_folder``:
    ``split`` is ``"test"``, ``"train"`` or ``"val"`` (built-in datasets: :data:`VAL_SIZE` training
    images chosen by :func:`validation_indices`, for tuning; never a test image);
    ``size`` (H, W) resizes, ``image_labels`` is ``"subfolders"`` (default) | ``"none"`` | a CSV
    path, ``class_names`` maps label names to the model's class indices).

    ``channels`` (1 or 3) converts the images (grayscale replicated / luma). The built-in datasets
    keep their own size and labels: ``size`` other than their native size and ``image_labels``
    are refused for them, ``class_names`` is ignored."""
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    if name.startswith("folder:"):
        return load_image_folder(name.split(":", 1)[1], split=split, size=size, channels=channels,
                                 image_labels=image_labels, class_names=class_names)
    if name not in DATASETS:
        raise unknown_name("dataset", name, list(DATASETS) + ["folder:<path>"])
    if image_labels not in (None, "subfolders"):
        raise ConfigError(f"image_labels (--image-labels) applies to folder:DIR datasets, not {name}")
    if split not in SPLITS:
        raise unknown_name("split", split, list(SPLITS))
    if split == "val":
        train = DATASETS[name]("train", path)
        idx = validation_indices(len(train))
        ds = replace(train, split="val", images=train.images[idx], labels=train.labels[idx])
    else:
        ds = DATASETS[name](split, path)
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if hw != tuple(ds.images.shape[2:]):
            raise ConfigError(f"{name} images are {ds.images.shape[2]}x{ds.images.shape[3]}; size "
                              "(--size) resizes folder:DIR datasets only")
    if channels is not None and channels != ds.images.shape[1]:
        ds = replace(ds, images=match_channels(ds.images, channels))
    return ds


def folder_options(card, name: str, options: dict) -> dict:
    """``options`` for loading dataset ``name`` for a model with ``card``: a folder's label names
    are mapped through the card's class names and its images converted to the card's input
    channels, unless ``options`` set ``class_names``/``channels`` themselves."""
    options = dict(options)
    if card is not None and name.startswith("folder:"):
        if getattr(card, "classes", None) and "class_names" not in options:
            options["class_names"] = list(card.classes)
        if getattr(card, "input_size", None) and "channels" not in options:
            options["channels"] = int(card.input_size[0])
    return options


def load_dataset_for(model, name: str, split: str = "test", **options) -> Dataset:
    """``load_dataset`` for ``model`` (see :func:`folder_options`)."""
    return load_dataset(name, split, **folder_options(getattr(model, "card", None), name, options))


__all__ = ["DATASETS", "NO_LABEL", "SPLITS", "VAL_SIZE", "Dataset", "FolderDataset", "Remote", "Selection", "cache_dir",
           "folder_options", "load_cifar10", "load_dataset", "load_dataset_for", "load_fashion_mnist", "load_image",
           "load_image_folder",
           "map_labels", "match_channels", "mirror_dir", "resolve", "select_images",
           "selection_message", "validation_indices"]
