"""The in-memory dataset every loader returns: uint8 images, int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass
class Dataset:
    """Images are stored as uint8 (N, C, H, W) to keep memory small; ``get`` returns float [0,1]."""

    name: str
    split: str
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def get(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and int64 labels for ``indices`` (all when None)."""
        if indices is None:
            return self.images.float().div_(255), self.labels.clone()
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise InputError(f"index out of range for {self.name}/{self.split} of size {len(self)}")
        return self.images[idx].float().div_(255), self.labels[idx].clone()

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
