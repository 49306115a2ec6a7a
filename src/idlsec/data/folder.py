"""Image folders for real use: ``root/<class>/<image>`` (torchvision's layout), a CSV of
``file,label`` rows, or unlabeled images (the model's prediction becomes the label).

Only the headers are read when a folder is loaded (sizes and modes are checked there, so a folder
of mixed sizes without ``size=`` is refused at once); pixels are decoded on demand, in batches, by
``get``/``get_readable`` (``select_images`` decodes only the images it examines). Every image is
converted to ``channels`` (1: ITU-R 601-2 luma, 3: grayscale replicated, alpha dropped as
torchvision's loader does) and, with ``size=(H, W)``, resized with Pillow's antialiased bilinear
filter (JPEGs are first decoded at a reduced scale, ``Image.draft``). A file that cannot be decoded
is reported (``Dataset.dropped`` and a warning), never fatal to the whole folder.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, InputError, ResourceError
from .dataset import NO_LABEL, Dataset

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff",
              ".gif"}
MAX_SIDE = 4096  # without size=, a larger image is refused (it would be kept at full resolution)
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_WNID = re.compile(r"n\d{8}")


def _max_pixels() -> int:
    """Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``; 89.5 Mpx by default)."""
    return int(Image.MAX_IMAGE_PIXELS or 89_478_485)


def _open(src) -> Image.Image:
    """``Image.open`` with the decompression-bomb warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(src)
        if img.width * img.height > _max_pixels():
            img.close()
            raise Image.DecompressionBombError(
                f"{img.width}x{img.height} px is over Pillow's limit of {_max_pixels()} pixels")
        return img


def _reason(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "not an image format Pillow can read"
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:200]


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to ``"L"`` or ``"RGB"``."""
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):  # 16-bit / float grayscale
        arr = np.asarray(img, dtype=np.float32)
        scale = 257.0 if img.mode.startswith("I;16") or float(arr.max(initial=0)) > 255 else 1.0
        if img.mode == "F" and float(arr.max(initial=0)) <= 1.0:
            scale = 1 / 255
        img = Image.fromarray(np.clip(arr / scale + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
    return img if img.mode == mode else img.convert(mode)


def _decode(src, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image (path or file object) to a uint8 (H, W) or (H, W, 3) array; raises on failure."""
    with _open(src) as img:
        if size is not None:
            img.draft(None, (size[1], size[0]))  # JPEG: decode at a reduced scale >= size
        img.load()
        out = _to_mode(img, mode)
        if size is not None and out.size != (size[1], size[0]):
            out = out.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(out, dtype=np.uint8)


def load_image(path_or_bytes, *, mode: str = "RGB", size: tuple[int, int] | None = None
               ) -> np.ndarray:
    """Decode one image file (path or bytes) to a uint8 HxW[xC] array in ``mode`` ("RGB" or "L"),
    resized to ``size`` (H, W) if given; an unreadable or oversized image raises InputError."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    try:
        return _decode(src, mode, size)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "not a readable image"
        raise InputError(f"not a readable image: {_reason(e)}") from None


def _threads(n: int) -> int:
    return max(1, min(n, torch.get_num_threads(), os.cpu_count() or 1, 16))


def _map(fn, items: list) -> list:
    """``[fn(i) for i in items]`` on ``torch.get_num_threads()`` threads (Pillow releases the GIL
    while it reads and decodes)."""
    workers = _threads(len(items))
    if workers == 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _header(path) -> tuple[tuple[int, int], str] | str:
    """``((W, H), mode)`` from the header alone, or why the file cannot be read."""
    try:
        with _open(path) as img:
            return img.size, img.mode
    except FileNotFoundError:
        return "no such file"
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return _reason(e)


class FolderDataset(Dataset):
    """A ``Dataset`` whose pixels stay on disk until asked for (see the module docstring).

    ``images`` decodes (and keeps) the whole folder for code that wants the full tensor; an image
    that fails to decode there raises InputError naming it (indices cannot shift silently).
    """

    def __init__(self, name: str, split: str, files: list[Path], labels: torch.Tensor,
                 classes: list[str], *, mode: str, size: tuple[int, int], labeled: bool = True,
                 dropped: dict[str, list[str]] | None = None, root: Path | None = None):
        self.name, self.split, self.files = name, split, list(files)
        self.labels, self.classes = labels, list(classes)
        self.labeled, self.dropped = labeled, dict(dropped or {})
        self.mode, self.size, self.root = mode, tuple(size), root
        self._images: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (f"FolderDataset({str(self.root or self.name)!r}, {len(self)} images, "
                f"{self.channels}x{self.size[0]}x{self.size[1]}, {self.num_classes} classes, "
                f"labeled={self.labeled})")

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def images(self) -> torch.Tensor:
        if self._images is None:
            arrays, failures = self._decode(range(len(self)))
            if failures:
                raise InputError(f"{len(failures)} images of {self.name} cannot be decoded: "
                                 + "; ".join(failures[:5]))
            self._images = self._stack(arrays)
        return self._images

    def _stack(self, arrays: list[np.ndarray]) -> torch.Tensor:
        if not arrays:
            return torch.zeros((0, self.channels, *self.size), dtype=torch.uint8)
        arr = torch.from_numpy(np.stack(arrays))
        arr = arr.unsqueeze(1) if arr.dim() == 3 else arr.permute(0, 3, 1, 2)
        return arr.contiguous()

    def _decode(self, indices) -> tuple[list[np.ndarray | None], list[str]]:
        """Decode ``indices`` (a thread pool of ``torch.get_num_threads()`` workers; Pillow releases
        the GIL while decoding). Returns one array or None per index, and the failures."""
        paths = [self.files[int(i)] for i in indices]

        def one(path):
            try:
                arr = _decode(path, self.mode, self.size)
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                return None, f"{path}: {_reason(e)}"
            if arr.shape[:2] != self.size:
                return None, f"{path}: decoded as {arr.shape[1]}x{arr.shape[0]}, header said otherwise"
            return arr, None

        results = _map(one, paths)
        return [a for a, _ in results], [f for _, f in results if f is not None]

    def get(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        if indices is None or self._images is not None:
            return super().get(indices)
        idx = self._index(indices)
        arrays, failures = self._decode(idx)
        if failures:
            raise InputError(f"cannot decode {'; '.join(failures[:5])}")
        return self._stack(arrays).float().div_(255), self.labels[idx].clone()

    def get_readable(self, indices):
        idx = self._index(indices)
        if self._images is not None:
            return super().get_readable(idx)
        arrays, failures = self._decode(idx)
        ok = torch.tensor([a is not None for a in arrays], dtype=torch.bool)
        x = self._stack([a for a in arrays if a is not None]).float().div_(255)
        return idx[ok], x, self.labels[idx[ok]].clone(), failures


# --- labels ---------------------------------------------------------------------------------

def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def map_labels(names, class_names=None) -> tuple[dict[str, int | None], list[str], list[str]]:
    """Map label strings (sub-folder names or CSV labels) to class indices.

    With ``class_names`` (the model's classes), a name matches a class case-insensitively, with
    ``_``/``-``/spaces equivalent (``great_white_shark`` = "great white shark"); otherwise a
    decimal index below ``len(class_names)``, or, for a 1000-class model, an ImageNet WordNet id
    (``n01440764`` = class 0). A name matching two classes (ImageNet's two "crane"s) or none maps
    to None. Without ``class_names``: all-decimal names are indices, else the sorted distinct
    names are the classes (torchvision's ``ImageFolder`` order).
    Returns ``(mapping, classes, problems)``, ``problems`` describing each unmapped name.
    """
    names = sorted(set(names))
    if class_names is None:
        if names and all(n.isdigit() for n in names):
            top = max(int(n) for n in names)
            return {n: int(n) for n in names}, [str(i) for i in range(top + 1)], []
        return {n: i for i, n in enumerate(names)}, list(names), []
    class_names = [str(c) for c in class_names]
    k = len(class_names)
    lookup: dict[str, list[int]] = {}
    for i, c in enumerate(class_names):
        lookup.setdefault(_norm(c), []).append(i)
    wnids = None
    mapping: dict[str, int | None] = {}
    problems = []
    for n in names:
        hits = lookup.get(_norm(n), [])
        if len(hits) == 1:
            mapping[n] = hits[0]
        elif hits:
            mapping[n] = None
            problems.append(f"{n!r} is ambiguous (classes {', '.join(map(str, hits))}; "
                            "use the index or the WordNet id)")
        elif n.isdigit() and int(n) < k:
            mapping[n] = int(n)
        elif k == 1000 and _WNID.fullmatch(n):
            if wnids is None:
                from ._wnids import WNIDS

                wnids = {w: i for i, w in enumerate(WNIDS)}
            mapping[n] = wnids.get(n)
            if mapping[n] is None:
                problems.append(f"{n!r} is not an ImageNet-1k WordNet id")
        else:
            mapping[n] = None
            problems.append(f"{n!r} is not one of the model's {k} classes")
    return mapping, class_names, problems


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")


def _images_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if _is_image(p)
                  and not any(part.startswith(".") for part in p.relative_to(d).parts))


def _entries_from_csv(root: Path, path: Path) -> tuple[list[Path], list[str]]:
    files, labels = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    first = True
    for lineno, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not any(row) or row[0].startswith("#"):
            continue
        if len(row) < 2:
            raise ConfigError(f"{path}:{lineno}: expected 'file,label', got {','.join(row)!r}")
        if first and row[1].lower() in ("label", "class", "target", "y"):
            first = False
            continue  # a header row
        first = False
        f = Path(row[0])
        files.append(f if f.is_absolute() else root / f)
        labels.append(row[1])
    if not files:
        raise ConfigError(f"{path} has no 'file,label' rows")
    return files, labels


def _parse_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, str):  # "H,W" or "S"
        try:
            size = tuple(int(v) for v in size.replace("x", ",").split(","))
        except ValueError:
            raise ConfigError(f"size must be H,W (e.g. 224,224), got {size!r}") from None
        size = size * 2 if len(size) == 1 else size
    hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE
                               for v in hw):
        raise ConfigError(f"size must be (H, W) with 1 <= H, W <= {MAX_SIDE}, got {size!r}")
    return hw


def load_image_folder(root: str | os.PathLike, *, size=None, channels: int | None = None,
                      image_labels: str | os.PathLike | None = None, class_names=None,
                      split: str = "all") -> FolderDataset:
    """An image folder as a lazily decoded dataset.

    image_labels: None / ``"subfolders"`` (labels = sub-folder names, through ``map_labels``;
    images may sit deeper inside each class folder) | ``"none"`` (every image under ``root``,
    unlabeled) | a CSV path (``file,label`` rows, files relative to ``root``; other files are
    ignored). size: (H, W) or an int (square); without it all images must have one size.
    channels: 1 or 3; None = 1 when every image is grayscale, else 3. class_names: the model's
    classes (``ModelCard.classes``). Files whose label is not a class, or that cannot be read, are
    left out, listed in ``dataset.dropped`` and warned about; none left is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise ResourceError(f"image folder {root} does not exist")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    hw = _parse_size(size)
    mode = str(image_labels) if image_labels is not None else "subfolders"
    dropped: dict[str, list[str]] = {"unreadable": [], "unknown_class": []}
    if mode == "subfolders":
        dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        files, raw = [], []
        for d in dirs:
            found = _images_under(d)
            files += found
            raw += [d.name] * len(found)
        if not files:
            loose = [p for p in root.iterdir() if _is_image(p)]
            if loose:
                raise ConfigError(f"image folder {root} has images but no class sub-folders with "
                                  "images; pass image_labels='none' (--image-labels none) to label "
                                  "them by the model's prediction, or a CSV of file,label")
    elif mode == "none":
        files = _images_under(root)
        raw = None
    else:
        csv_path = Path(image_labels)
        if not csv_path.is_file():
            raise ConfigError(f"image labels {image_labels!r}: no such file; use 'subfolders', "
                              "'none' or a CSV of file,label rows")
        files, raw = _entries_from_csv(root, csv_path)
    if not files:
        raise ResourceError(f"image folder {root} contains no images "
                            f"({', '.join(sorted(EXTENSIONS))})")
    if raw is None:
        classes = [str(c) for c in class_names] if class_names is not None else []
        labels = [NO_LABEL] * len(files)
    else:
        mapping, classes, problems = map_labels(raw, class_names)
        if all(v is None for v in mapping.values()):
            shown = ", ".join(list(mapping)[:8]) + (", ..." if len(mapping) > 8 else "")
            examples = ", ".join(classes[:5])
            raise ConfigError(
                f"none of the labels of {root} ({shown}) is a class of the model (e.g. {examples})"
                "; use the model's class names, indices or WordNet ids, a CSV of file,label rows, "
                "or image_labels='none' (--image-labels none) to take the model's prediction")
        keep_files, labels = [], []
        for f, name in zip(files, raw):
            if mapping[name] is None:
                dropped["unknown_class"].append(str(f))
            else:
                keep_files.append(f)
                labels.append(mapping[name])
        if problems:
            warnings.warn(f"{root}: {len(dropped['unknown_class'])} images left out, labels not "
                          f"among the model's classes: {'; '.join(problems[:5])}"
                          + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
                          stacklevel=2)
        files = keep_files
    # headers only: size and mode
    good, good_labels, sizes, gray = [], [], {}, True
    for f, y, head in zip(files, labels, _map(_header, files)):
        if isinstance(head, str):
            dropped["unreadable"].append(f"{f}: {head}")
            continue
        wh, m = head
        good.append(f)
        good_labels.append(y)
        sizes.setdefault((wh[1], wh[0]), []).append(f)
        gray = gray and m in GRAY_MODES
    if dropped["unreadable"]:
        n_bad = len(dropped["unreadable"])
        warnings.warn(f"{root}: {n_bad} unreadable files left out: "
                      + "; ".join(dropped["unreadable"][:5])
                      + (f" (and {n_bad - 5} more)" if n_bad > 5 else ""), stacklevel=2)
    if not good:
        raise ResourceError(f"image folder {root}: none of its {len(files)} images can be read "
                            f"(e.g. {dropped['unreadable'][0]})")
    if hw is None:
        big = [s for s in sizes if max(s) > MAX_SIDE]
        if big:
            raise InputError(f"images in {root} are up to {big[0][1]}x{big[0][0]} px, over "
                             f"{MAX_SIDE} px a side; pass size=(H, W) (--size H,W) to resize them")
        if len(sizes) > 1:
            common = sorted(sizes, key=lambda s: -len(sizes[s]))
            shown = ", ".join(f"{w}x{h} ({len(sizes[(h, w)])})" for h, w in common[:4])
            raise InputError(f"images in {root} have {len(sizes)} different sizes (WxH: {shown}"
                             f"{', ...' if len(sizes) > 4 else ''}); pass size=(H, W) "
                             "(--size H,W) to resize them all")
        hw = next(iter(sizes))
    c = channels if channels is not None else (1 if gray else 3)
    dropped = {k: v for k, v in dropped.items() if v}
    return FolderDataset(root.name or str(root), split, good,
                         torch.tensor(good_labels, dtype=torch.long), classes,
                         mode="L" if c == 1 else "RGB", size=hw, labeled=raw is not None,
                         dropped=dropped, root=root)
