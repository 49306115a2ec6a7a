"""The in-memory dataset every loader returns: uint8 images, int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import InputError

NO_LABEL = -1  # an unlabeled image (``image_labels="none"``): the model's prediction is its label


@dataclass
class Dataset:
    """Images are stored as uint8 (N, C, H, W) to keep memory small; ``get`` returns float [0,1].

    ``labeled`` is False for a folder loaded with ``image_labels="none"`` (every label is
    ``NO_LABEL``); ``dropped`` lists what the loader left out and why (``"unreadable"``:
    ``"path: reason"`` entries, ``"unknown_class"``: files whose label is not one of the classes).
    """

    name: str
    split: str
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]
    labeled: bool = True
    dropped: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def _index(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise InputError(f"index out of range for {self.name}/{self.split} of size {len(self)}")
        return idx

    def get(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and int64 labels for ``indices`` (all when None)."""
        if indices is None:
            return self.images.float().div_(255), self.labels.clone()
        idx = self._index(indices)
        return self.images[idx].float().div_(255), self.labels[idx].clone()

    def get_readable(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """``(kept_indices, x, y, failures)``: like ``get`` but an image that cannot be decoded is
        left out and reported (``"path: reason"``) instead of raising. In memory: all readable."""
        idx = self._index(indices)
        x, y = self.get(idx)
        return idx, x, y, []

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` seeded random indices (all of them, in order, when n >= len). Splits stored by class
        (the CIFAR-10 JPEG export) make "the first n images" a biased subset; use this instead."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"sample size must be a positive integer, got {n!r}")
        if n >= len(self):
            return torch.arange(len(self))
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]

    def class_index(self, name_or_index) -> int:
        """Accept a class name (``"cat"``) or an index (``3`` or ``"3"``)."""
        from ..errors import unknown_name

        s = str(name_or_index)
        if s.isdigit() and int(s) < self.num_classes:
            return int(s)
        if s in self.classes:
            return self.classes.index(s)
        raise unknown_name(f"class of {self.name}", s, self.classes)


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) images with C in {1, 3} converted to ``channels``: 1 -> 3 replicates the gray
    channel, 3 -> 1 is ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B, Pillow's ``convert("L")``).
    uint8 stays uint8 (rounded). Other channel counts raise InputError."""
    c = int(x.shape[1])
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
        y = (x.float() * w).sum(1, keepdim=True)
        return y.round().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.to(x.dtype)
    raise InputError(f"cannot convert {c}-channel images to {channels} channels")
