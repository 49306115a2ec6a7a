"""SmoothGrad (Smilkov et al., 2017): the average of a gradient interpreter's raw map over
``n_samples`` noisy copies ``x + N(0, sigma^2)`` of the input.

- ``base``: the wrapped interpreter, a registered name (default ``"grad"``, i.e. :class:`Grad`
  with its defaults) or an :class:`Interpreter` instance; its *raw* maps are averaged and the
  result is min-max normalised once.
- ``n_samples`` = 50 and ``sigma`` = 0.15 (15% of the [0, 1] range), the paper's recommended
  10-20% noise level.
- ``batch_size``: how many noisy images go through the model at once (default 64), as Captum's
  ``nt_samples_batch_size``.
- ``seed``: each call draws its ``n_samples`` noise images from a fresh ``torch.Generator``
  seeded with ``seed`` and adds the same ones to every sample, so a call is deterministic and a
  sample's map does not depend on the other samples of its batch.
  Noisy images are not clipped to [0, 1] (as in the paper and in Captum's NoiseTunnel).

``create_graph=True`` is passed to the base interpreter (the noise is a constant).
"""

from __future__ import annotations

import torch
from torch import nn

from ..validation import check_int, check_positive
from .base import Interpreter


class SmoothGrad(Interpreter):
    name = "smoothgrad"
    stochastic = True

    def __init__(self, model: nn.Module, *, base="grad", n_samples: int = 50, sigma: float = 0.15,
                 batch_size: int = 64, seed: int = 0, base_kwargs: dict | None = None, **kwargs):
        super().__init__(model, **kwargs)
        if isinstance(base, Interpreter):
            self.base = base
        else:
            from .registry import get_interpreter

            self.base = get_interpreter(base, model, **(base_kwargs or {}))
        self.n_samples = check_int("n_samples", n_samples, minimum=1)
        self.sigma = check_positive("sigma", sigma, allow_zero=True)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed)

    def compute(self, x, target, *, create_graph):
        n, k = x.shape[0], self.n_samples
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = self.sigma * torch.randn((k, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
        chunks = []
        for start in range(0, n * k, self.batch_size):
            idx = torch.arange(start, min(start + self.batch_size, n * k), device=x.device)
            sample, draw = idx // k, idx % k
            chunks.append(self.base.compute(x[sample] + noise[draw], target[sample], create_graph=create_graph))
        maps = torch.cat(chunks)
        return maps.view(n, k, *maps.shape[1:]).mean(1)
