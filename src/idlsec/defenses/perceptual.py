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
only by querying outside the ball (queries moved per query by more than about 2 * eps per cell,
e.g. a random cell shift: benchmarks/stateful_piha.py measures that attacker, whose shifts also
corrupt the answers it learns from) or by succeeding at its first query, which no history-based
monitor can flag (``DetectorGate(PIHA(), detector)`` puts a detector in front for that query).

    mon = PIHA()                              # the defaults below
    flags = mon.observe(x)                    # bool (N,): one history (one client)
    flags = mon.observe(x, streams=ids)       # one history per stream id (per client / image)
    dist = mon.distances(x, streams=ids)      # the nearest earlier query's distance instead

Cost: a query is compared with its stream's whole history by one batched distance call on the
fingerprints' device (the history is a tensor per stream that doubles when full): linf, an L∞
``torch.cdist`` over the 192 cell means, after a pre-filter on the 12 quadrant means (averages of
cells: a stored query whose quadrant means differ by more than the threshold cannot match, so it
is skipped); hamming, one matrix product of ±1 bits. Measured (benchmarks/stateful_piha.py, one
CPU thread, shared machine): linf 0.23 ms per query against 1,000 stored queries and 0.52 ms
against 10,000 (hamming 0.30 / 1.03 ms), against BlackLight's 3.7 ms at 1,000.

Defaults (tuned on the CIFAR-10 'val' benign streams of benchmarks/stateful_piha.py, 3 x 1,000
distinct images): ``block`` 4; ``metric`` "linf" with ``threshold`` 16/255 = 2 * 8/255, what the
guarantee above needs at eps 8/255 (0 false alarms on val; values up to 61/255 kept them
<= 1 %); hamming: 336 bits at 32x32, ``threshold`` 83 bits, the largest with <= 1 % false alarms
on val. Deviations from PIHA: no Gaussian filter and no HSV conversion (a box filter per RGB
channel); the default compares the cell means themselves (L∞) rather than their bits; rows of one
call are observed in order, each against the history that includes the earlier rows of the same
call.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..validation import check_choice, check_images, check_int, check_positive
from .stateful import stream_ids


class PIHA:
    """Low-pass fingerprint query monitor (Choi et al., AsiaCCS 2023); see the module docstring.

    Args:
        block: side of the averaged cells in pixels (4).
        metric: ``"linf"`` (cell means, L∞ distance) or ``"hamming"`` (difference-hash bits).
        threshold: flag at distance <= threshold (linf: pixel units in [0, 1], default 16/255;
            hamming: bits, default 83).
    """

    METRICS = ("linf", "hamming")
    TOLERANCE = 1e-6   # float32 cell means: a distance of exactly 2 * eps may round just above

    def __init__(self, *, block: int = 4, metric: str = "linf", threshold: float | None = None):
        self.block = check_int("block", block, minimum=1)
        self.metric = check_choice("metric", metric, self.METRICS)
        if threshold is None:
            threshold = 16 / 255 if metric == "linf" else 83
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
        """(N, C, H, W) in [0, 1] -> (N, D) float on x's device: the cell means (linf) or the
        difference-hash bits as ±1 (hamming)."""
        return self._rows(x)[:, self._key_size(x):]

    def _key_size(self, x: torch.Tensor) -> int:
        return 4 * x.shape[1] if self.metric == "linf" else 0

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """What a stream stores per query: linf: the pre-filter key (the means of the 2x2
        quadrants of the cell grid, per channel) then the cell means; hamming: the ±1 bits."""
        check_images(x.detach())
        b = self.block
        if x.shape[-1] < b or x.shape[-2] < b:
            raise InputError(f"images of {tuple(x.shape[-2:])} are smaller than one block ({b})")
        m = F.avg_pool2d(x.detach().float(), b, b)
        if self.metric == "linf":
            return torch.cat([F.adaptive_avg_pool2d(m, 2).flatten(1), m.flatten(1)], 1)
        if m.shape[-1] < 2 or m.shape[-2] < 2:
            raise InputError("the Hamming fingerprint needs at least 2x2 cells")
        bits = torch.cat([(m[..., :, 1:] > m[..., :, :-1]).flatten(1),
                          (m[..., 1:, :] > m[..., :-1, :]).flatten(1)], 1)
        return bits.float() * 2 - 1

    def _distance(self, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(M, D) x (K, D) fingerprints -> (M, K) distances under the metric."""
        if self.metric == "linf":
            return torch.cdist(a, h, p=float("inf"))
        return (a.shape[1] - a @ h.T) / 2      # ±1 bits: the Hamming distance, one matmul

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
        streams = stream_ids(streams, n)
        rows, k = self._rows(x), self._key_size(x)
        s = streams.detach().reshape(-1).cpu()
        out = torch.full((n,), float("inf"))
        for sid in torch.unique(s).tolist():
            mine = torch.nonzero(s == sid).flatten()
            out[mine] = self._add(rows[mine.to(rows.device)], int(sid), k)
        self._seen += n
        return out

    def _add(self, q: torch.Tensor, stream: int, k: int) -> torch.Tensor:
        """Nearest-earlier distances of the rows ``q`` (in order) in ``stream``; then store them.
        The history is a tensor that doubles when full (amortised O(1) appends)."""
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
            best = self._nearest(q, hist[:size], k)
        if len(q) > 1:   # earlier rows of the same call
            d = self._distance(q[:, k:], q[:, k:])
            d = d.masked_fill(torch.ones_like(d, dtype=torch.bool).triu(), float("inf"))
            best = torch.minimum(best, d.min(1).values)
        hist[size:size + len(q)] = q
        self._size[stream] = size + len(q)
        return best.cpu()

    def _nearest(self, q: torch.Tensor, h: torch.Tensor, k: int) -> torch.Tensor:
        """Per row of q, its smallest distance to the history h. linf, long histories: a stored
        query is compared in full only if its quadrant means (averages of cells, so within the
        threshold of q's whenever all cells are) pass; the rest read ``inf``."""
        if k and h.shape[0] > 256:
            near = torch.cdist(q[:, :k], h[:, :k], p=float("inf")) <= self.threshold + self.TOLERANCE
            cand = torch.nonzero(near.any(0)).flatten()
            best = torch.full((len(q),), float("inf"), device=q.device)
            if len(cand):
                best = self._distance(q[:, k:], h[cand, k:]).min(1).values
            return best
        return self._distance(q[:, k:], h[:, k:]).min(1).values

    def __repr__(self) -> str:
        t = f"{self.threshold * 255:g}/255" if self.metric == "linf" else str(self.threshold)
        return (f"PIHA(block={self.block}, metric={self.metric!r}, threshold={t}, "
                f"observed={self.observed})")

