"""Input-transform defenses: ``nn.Module``s mapping an image batch in [0, 1] to a transformed batch
in [0, 1], to be put in front of a classifier (``defend(model, transform)``) or inside a
black-box oracle (``BlackBox(model, defense=transform)``). These are the four pre-processing
defenses QuScore is evaluated against (ALGORITHMS.md §6.2, the authors' ``utils.py``):

- ``rp``: random resize-and-pad (Xie et al., ICLR 2018): resize to a random side in
  [H, out), then pad at a random position to ``out`` x ``out`` with value 0.5. ``out`` defaults to
  round(H * 331/299) (36 for CIFAR-10), the ratio of the authors' 299 -> 331 setting. One random
  size per call (as in the released code), one random offset per image. Seeded: its own
  ``torch.Generator``; the same seed gives the same sequence of transforms (``reset()`` rewinds).
- ``bitdepth``: bit-depth reduction to ``bits`` = 3 bits per channel (Xu et al., NDSS 2018).
- ``jpeg``: JPEG compression at ``quality`` = 75 (Dziugaite et al. 2016), through Pillow, one
  image at a time on the CPU (the encoder is not a tensor op; about 0.1 ms per 32x32 image).
  Not differentiable (there is no gradient through it; the oracle never needs one).
- ``median``: median filter, ``kernel`` = 3, reflect padding (Xu et al. 2018), torch-native.

All are deterministic given their seed and the input, and stay on the input's device (except
JPEG's round trip through the CPU encoder). Registry: ``DEFENSES`` / ``get_defense(name, **kw)``.
"""

from __future__ import annotations

import io
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, unknown_name
from ..validation import check_images, check_int


class InputTransform(nn.Module):
    """Base class: ``forward(x) -> x'``, both (N, C, H, W) in [0, 1]."""

    name: ClassVar[str] = "transform"
    randomized: ClassVar[bool] = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        return self.transform(x)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        """Rewind the random stream (randomized transforms only)."""


class RandomResizePad(InputTransform):
    name = "rp"
    randomized = True

    def __init__(self, *, out_size: int | None = None, pad_value: float = 0.5, seed: int = 0):
        super().__init__()
        if out_size is not None:
            check_int("out_size", out_size, minimum=1)
        if not 0.0 <= float(pad_value) <= 1.0:
            raise ConfigError(f"pad_value must be in [0, 1], got {pad_value}")
        self.out_size, self.pad_value, self.seed = out_size, float(pad_value), seed
        self.reset()

    def reset(self) -> None:
        self._gen = torch.Generator().manual_seed(self.seed)

    def transform(self, x):
        n, c, h, w = x.shape
        out = self.out_size or round(max(h, w) * 331 / 299)
        if out < max(h, w):
            raise ConfigError(f"rp out_size {out} is smaller than the input ({h}x{w})")
        side = int(torch.randint(max(h, w), out + 1, (1,), generator=self._gen)) if out > max(h, w) else out
        side = min(side, out)
        resized = F.interpolate(x, size=(side, side), mode="nearest") if side != h or side != w else x
        off = torch.randint(0, out - side + 1, (2, n), generator=self._gen).to(x.device)
        canvas = x.new_full((n, c, out, out), self.pad_value)
        ar = torch.arange(side, device=x.device)
        rows = (off[0].view(n, 1) + ar).view(n, side, 1)
        cols = (off[1].view(n, 1) + ar).view(n, 1, side)
        canvas[torch.arange(n, device=x.device).view(n, 1, 1), :, rows, cols] = resized.permute(0, 2, 3, 1)
        return canvas


class BitDepthReduction(InputTransform):
    name = "bitdepth"

    def __init__(self, *, bits: int = 3):
        super().__init__()
        check_int("bits", bits, minimum=1)
        if bits > 8:
            raise ConfigError(f"bits must be <= 8, got {bits}")
        self.bits = bits

    def transform(self, x):
        levels = 2 ** self.bits - 1
        return torch.round(x * levels) / levels


class JPEGCompression(InputTransform):
    name = "jpeg"

    def __init__(self, *, quality: int = 75):
        super().__init__()
        check_int("quality", quality, minimum=1)
        if quality > 100:
            raise ConfigError(f"quality must be in [1, 100], got {quality}")
        self.quality = quality

    def transform(self, x):
        import numpy as np
        from PIL import Image

        arr = (x.detach() * 255).round_().clamp_(0, 255).to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
        mode = "L" if arr.shape[-1] == 1 else "RGB"
        out = np.empty_like(arr)
        for i, img in enumerate(arr):
            buf = io.BytesIO()
            Image.fromarray(img[..., 0] if mode == "L" else img, mode).save(buf, "JPEG", quality=self.quality)
            buf.seek(0)
            dec = np.asarray(Image.open(buf).convert(mode))
            out[i] = dec[..., None] if mode == "L" else dec
        return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).to(x.dtype).div_(255)


class MedianFilter(InputTransform):
    name = "median"

    def __init__(self, *, kernel: int = 3):
        super().__init__()
        check_int("kernel", kernel, minimum=1)
        if kernel % 2 == 0:
            raise ConfigError(f"kernel must be odd, got {kernel}")
        self.kernel = kernel

    def transform(self, x):
        k, r = self.kernel, self.kernel // 2
        n, c, h, w = x.shape
        padded = F.pad(x, (r, r, r, r), mode="reflect") if r else x
        patches = F.unfold(padded, k).view(n, c, k * k, h * w)
        return patches.median(dim=2).values.view(n, c, h, w)


class DefendedModel(nn.Module):
    """``model(transform(x))``, keeping the model's card with its layer names re-rooted under
    ``model.`` so interpreters still find their layers."""

    def __init__(self, model: nn.Module, transform: nn.Module):
        import dataclasses

        super().__init__()
        self.transform, self.model = transform, model
        card = getattr(model, "card", None)
        if card is not None:
            layers = {k: f"model.{getattr(card, k)}" for k in ("cam_layer", "fc_layer", "gradcam_layer")
                      if getattr(card, k, None)}
            card = dataclasses.replace(card, **layers)
        self.card = card
        self.train(model.training)   # the wrapper starts in the model's mode (eval for a loaded model)

    def forward(self, x):
        return self.model(self.transform(x))


def defend(model: nn.Module, transform: nn.Module) -> DefendedModel:
    return DefendedModel(model, transform)


DEFENSES: dict[str, type[InputTransform]] = {
    cls.name: cls for cls in (RandomResizePad, BitDepthReduction, JPEGCompression, MedianFilter)}


def get_defense(name: str, **kwargs) -> InputTransform:
    """Build a registered input-transform defense by name (rp, bitdepth, jpeg, median)."""
    if name not in DEFENSES:
        raise unknown_name("defense", name, DEFENSES)
    return DEFENSES[name](**kwargs)
