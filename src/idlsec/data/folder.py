"""A plain image folder: ``root/<class>/<image>``, classes sorted by name (torchvision's layout)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError, ResourceError
from .dataset import Dataset

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm"}


def load_image_folder(root: str | os.PathLike, *, size: int | tuple[int, int] | None = None,
                      channels: int = 3, split: str = "all") -> Dataset:
    """Decode every image under ``root``; resize to ``size`` (H, W) if given, else all must match."""
    root = Path(root)
    if not root.is_dir():
        raise ResourceError(f"image folder {root} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ResourceError(f"image folder {root} has no class sub-folders")
    mode = "RGB" if channels == 3 else "L"
    hw = (size, size) if isinstance(size, int) else size
    images, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in EXTENSIONS:
                continue
            images.append(load_image(f, mode=mode, size=hw))
            labels.append(label)
    if not images:
        raise ResourceError(f"image folder {root} contains no images ({', '.join(sorted(EXTENSIONS))})")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise InputError(f"images in {root} have different sizes {sorted(shapes)}; pass size=")
    arr = torch.from_numpy(np.stack(images))
    arr = arr.unsqueeze(1) if arr.dim() == 3 else arr.permute(0, 3, 1, 2)
    return Dataset(root.name, split, arr.contiguous(), torch.tensor(labels, dtype=torch.long), classes)


def load_image(path_or_bytes, *, mode: str = "RGB", size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file (path or bytes) to a uint8 HxW[xC] array."""
    import io

    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    try:
        img = Image.open(src)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"not a readable image: {e}") from None
    img = img.convert(mode)
    if size is not None:
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)
