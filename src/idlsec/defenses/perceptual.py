"""Stateful query monitoring on low-pass fingerprints, in the style of PIHA (Choi, Lee, Hwang,
Lee & Kim, "Stateful Defense Against Black-box Adversarial Attacks Using Perceptual Image
Hashing", AsiaCCS 2023).

BlackLight (:mod:`.stateful`) hashes windows of exact quantized pixels, so dense ±eps noise (a
transfer start, a fresh random vertex) changes almost every window and goes unseen. PIHA's idea
is a fingerprint of the image's low frequencies: an average over a block barely moves under
dense small noise, and two natural images almost never agree on all of them. Here:

1. fingerprint: the mean of every ``block`` x ``block`` cell of each colour channel (a box
   low-pass filter and a downsampling; 32x32 CIFAR images with ``block`` 4 give 8x8x3 = 192
   values);
2. ``metric="linf"`` (default): flag a query when some earlier query of its stream has every
   fingerprint value within ``threshold`` of its own (L∞ distance of the fingerprints).
   ``metric="hamming"``: PIHA's binary form; the fingerprint becomes bits (each cell brighter
   than its right and its lower neighbour, per channel: a difference hash) and a query is
   flagged within ``threshold`` bits (Hamming distance) of an earlier one.

A guarantee of the L∞ form: a cell mean is an average of pixels, so any two queries within L∞
``eps`` of the same image have fingerprints within ``2 * eps`` (clipping to [0, 1] only shrinks
the change). With ``threshold >= 2 * eps`` every query of an L∞-``eps`` attack after its first
one is flagged, whatever the attacker does inside the ball (adaptive or not). An attacker escapes
only by querying outside the ball (intermediate queries beyond eps that the final example is not
close to) or by succeeding at its first query, which no history-based monitor can flag.

    mon = PIHA()                              # the defaults below
    flags = mon.observe(x)                    # bool (N,): one history (one client)
    flags = mon.observe(x, streams=ids)       # one history per stream id (per client / image)
    dist = mon.distances(x, streams=ids)      # the nearest earlier query's distance instead

Cost: a query is compared with its stream's whole history by one batched distance call on the
fingerprints' device (``torch.cdist``; the history is a growing tensor per stream); 192 values per
stored query. A pre-filter on the per-channel image means (which an L∞ match must also agree on
within ``threshold``) skips the full comparison for most of a long history.

Defaults: ``block`` 4, ``metric`` "linf", ``threshold`` 16/255 (the largest multiple of 1/255
with ≤ 0.5 % false alarms on the CIFAR-10 'val' benign streams of benchmarks/stateful_piha.py
was higher; 16/255 = 2 * 8/255 is what the guarantee above needs at eps 8/255, and a lower value
keeps false alarms on augmented copies lower). Hamming form: 336 bits at 32x32, ``threshold`` in
bits (the benchmark tunes it on 'val'). Deviations from PIHA: no Gaussian filter and no HSV
conversion (a box filter per RGB channel); the default compares the cell means themselves (L∞)
rather than their bits; rows of one call are observed in order, each against the history that
includes the earlier rows of the same call.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..validation import check_choice, check_images, check_int, check_positive


class PIHA:
    """Low-pass fingerprint query monitor (Choi et al., AsiaCCS 2023); see the module docstring.

    Args:
        block: side of the averaged cells in pixels (4).
        metric: ``"linf"`` (cell means, L∞ distance) or ``"hamming"`` (difference-hash bits).
        threshold: flag at distance <= threshold (linf: pixel units in [0, 1], default 16/255;
            hamming: bits, default 48).
    """

    METRICS = ("linf", "hamming")
    TOLERANCE = 1e-6   # float32 cell means: a distance of exactly 2 * eps may round just above

    def __init__(self, *, block: int = 4, metric: str = "linf", threshold: float | None = None):
        self.block = check_int("block", block, minimum=1)
        self.metric = check_choice("metric", metric, self.METRICS)
        if threshold is None:
            threshold = 16 / 255 if metric == "linf" else 48
        if metric == "hamming":
            self.threshold = check_int("threshold", threshold, minimum=0)
        else:
            self.threshold = float(check_positive("threshold", threshold, upper=1.0))
        self.reset()

    def reset(self) -> None:
        """Forget every stream's history."""
        self._hist: dict[int, torch.Tensor] = {}
        self._size: dict[int, int] = defaultdict(int)
        self._seen = 0

    @property
    def observed(self) -> int:
        """Queries observed since the last reset, all streams together."""
        return self._seen

    # --- fingerprints ----------------------------------------------------------------------------
    def fingerprint(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> (N, D) float: cell means (linf) or 0/1 bits (hamming); on
        x's device."""
        check_images(x.detach())
        b = self.block
        if x.shape[-1] < b or x.shape[-2] < b:
            raise InputError(f"images of {tuple(x.shape[-2:])} are smaller than one block ({b})")
        m = F.avg_pool2d(x.detach().float(), b, b)
        if self.metric == "linf":
            return m.flatten(1)
        if m.shape[-1] < 2 or m.shape[-2] < 2:
            raise InputError("the Hamming fingerprint needs at least 2x2 cells")
        return torch.cat([(m[..., :, 1:] > m[..., :, :-1]).flatten(1),
                          (m[..., 1:, :] > m[..., :-1, :]).flatten(1)], 1).float()

    def _distance(self, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(M, D) x (K, D) -> (M, K) distances under the metric."""
        if self.metric == "linf":
            return torch.cdist(a, h, p=float("inf"))
        return torch.cdist(a, h, p=1)        # bits: L1 = Hamming

    # --- detection -------------------------------------------------------------------------------
    def observe(self, x: torch.Tensor, streams=None) -> torch.Tensor:
        """Add the queries ``x`` (N, C, H, W) to their streams' histories, in row order; return the
        bool (N,) flags (True: within ``threshold`` of an earlier query of its stream)."""
        return self.distances(x, streams) <= self.threshold + self.TOLERANCE

    def distances(self, x: torch.Tensor, streams=None) -> torch.Tensor:
        """Like ``observe``, but return per query the distance to the nearest earlier query of its
        stream (float (N,) on the CPU; ``inf`` for a stream's first query). Exact up to the
        threshold; above it a linf distance may read ``inf`` (pruned by the pre-filter)."""
        n = x.shape[0]
        if streams is None:
            streams = torch.zeros(n, dtype=torch.long)
        if not isinstance(streams, torch.Tensor) or streams.is_floating_point() \
                or streams.dtype == torch.bool or streams.numel() != n:
            raise InputError(f"streams must be an integer tensor with one id per query ({n})")
        fp = self.fingerprint(x)
        s = streams.detach().reshape(-1).cpu()
        out = torch.full((n,), float("inf"))
        for sid in torch.unique(s).tolist():
            rows = torch.nonzero(s == sid).flatten()
            out[rows] = self._add(fp[rows.to(fp.device)], int(sid), x.shape[1])
        self._seen += n
        return out

    def _add(self, q: torch.Tensor, stream: int, channels: int) -> torch.Tensor:
        """Nearest-earlier distances of the rows ``q`` (in order) in ``stream``; then store them."""
        size = self._size[stream]
        hist = self._hist.get(stream)
        if hist is not None and hist.shape[1] != q.shape[1]:
            raise InputError(f"stream {stream} holds fingerprints of {hist.shape[1]} values, this "
                             f"query has {q.shape[1]} (another image size)")
        if hist is None or hist.shape[0] < size + len(q) or hist.device != q.device:
            grown = torch.empty(max(2 * (size + len(q)), 64), q.shape[1], device=q.device)
            if hist is not None:
                grown[:size] = hist[:size].to(q.device)
            hist = self._hist[stream] = grown
        best = torch.full((len(q),), float("inf"), device=q.device)
        if size:
            h = hist[:size]
            best = self._nearest(q, h, channels)
        if len(q) > 1:   # earlier rows of the same call
            d = self._distance(q, q)
            d = d.masked_fill(torch.ones_like(d, dtype=torch.bool).triu(), float("inf"))
            best = torch.minimum(best, d.min(1).values)
        hist[size:size + len(q)] = q
        self._size[stream] = size + len(q)
        return best.cpu()

    def _nearest(self, q: torch.Tensor, h: torch.Tensor, c: int) -> torch.Tensor:
        """Per row of q, its smallest distance to h; linf: only rows of h whose per-channel means
        agree within the threshold are compared in full (a match must agree on them)."""
        if self.metric == "linf" and h.shape[0] > 256:
            qm, hm = q.view(len(q), c, -1).mean(2), h.view(len(h), c, -1).mean(2)
            near = torch.cdist(qm, hm, p=float("inf")) <= self.threshold + self.TOLERANCE
            cand = near.any(0)
            if not bool(cand.any()):
                return torch.full((len(q),), float("inf"), device=q.device)
            d = torch.full((len(q), len(h)), float("inf"), device=q.device)
            d[:, cand] = self._distance(q, h[cand])
            return d.min(1).values
        return self._distance(q, h).min(1).values

    def __repr__(self) -> str:
        t = f"{self.threshold * 255:g}/255" if self.metric == "linf" else str(self.threshold)
        return (f"PIHA(block={self.block}, metric={self.metric!r}, threshold={t}, "
                f"observed={self.observed})")

