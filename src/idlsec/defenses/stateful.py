"""Stateful query monitoring: BlackLight (Li, Shan, Wenger, Zhang, Zheng & Zhao, "Blacklight:
Scalable Defense for Neural Networks against Query-Based Black-Box Attacks", USENIX Security 2022).

A query-based black-box attack walks in small steps, so it sends queries that are nearly equal to
each other; natural traffic rarely does. BlackLight fingerprints every query and flags one that
shares many fingerprint entries with an earlier query of the same client:

1. quantize each pixel on the 0..255 scale to a multiple of ``quant_step`` (round to nearest);
2. flatten the quantized image (height, width, channel order) and hash every window of
   ``window`` consecutive values (stride ``stride``) with SHA-256;
3. keep the ``top_k`` largest distinct hashes as the query's fingerprint;
4. flag the query when some earlier query of its stream shares at least ``threshold`` of them.
   The history is an inverted index (hash -> ids of the queries holding it), so a query costs
   its postings, not a pass over the whole history.

    mon = BlackLight()                         # the defaults below
    flags = mon.observe(x)                     # bool (N,): one history (one client)
    flags = mon.observe(x, streams=ids)        # one history per stream id (per client / image)
    mon.reset()

Inside the oracle: ``BlackBox(model, monitor=BlackLight(), on_detect="record")`` records per
image id the first query the monitor flagged (``bb.detections()``); ``on_detect="refuse"``
refuses every call that holds a query of a flagged stream.

Defaults: ``quant_step`` 50, ``window`` 20, ``stride`` 1, ``top_k`` 50, ``threshold`` 25, the
setting used for BlackLight in the reimplementation of the stateful-attack study (OARS: Feng,
Hooda, Mangaokar, Fawaz, Jha & Prakash, CCS 2023). Deviations:
- Hashes are compared by the first 8 bytes of the SHA-256 digest (a 64-bit integer); top-k keeps
  the largest of those (reimplementations sort hex digests, some reversed: any fixed order of a
  cryptographic hash selects an equally random subset).
- Duplicate windows within one query count once (the fingerprint is a set, as in those codes).
- The flag is ``shared >= threshold`` (the reimplementation above uses ``>``).
- No secret salt is added to the pixels before quantization (that reimplementation adds a random
  per-defender offset); the windows run over the image in HWC order.
- Rows of one call are observed in order, each against the history that includes the earlier
  rows of the same call (the paper's queries arrive one at a time).

Limits: a query is only ever compared with earlier ones, so an attack that fools the model on its
first query of a stream (a transferred example) cannot be flagged before it succeeds (a detector
that judges each query on its own can: ``DetectorGate``, :mod:`idlsec.defenses.gate`); a benign
client who sends translated copies of one image (crops: rows keep their windows) is flagged.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import torch

from ..errors import InputError
from ..validation import check_images, check_int


def stream_ids(streams, n: int) -> torch.Tensor:
    """The stream (client) id of each of ``n`` queries: ``streams`` checked (an integer tensor,
    one id per query), or one stream (0) for all when None."""
    if streams is None:
        return torch.zeros(n, dtype=torch.long)
    if not isinstance(streams, torch.Tensor) or streams.is_floating_point() \
            or streams.dtype == torch.bool or streams.numel() != n:
        raise InputError(f"streams must be an integer tensor with one id per query ({n})")
    return streams


class BlackLight:
    """Query-similarity monitor (Li et al., USENIX Security 2022); see the module docstring.

    Args:
        quant_step: quantization step on the 0..255 pixel scale (50).
        window: values per hashed window of the flattened quantized image (20).
        stride: step between windows (1).
        top_k: hashes kept per query (50).
        threshold: shared hashes with one earlier query that flag a query (25; <= top_k).
    """

    def __init__(self, *, quant_step: int = 50, window: int = 20, stride: int = 1, top_k: int = 50,
                 threshold: int = 25):
        self.quant_step = check_int("quant_step", quant_step, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self.stride = check_int("stride", stride, minimum=1)
        self.top_k = check_int("top_k", top_k, minimum=1)
        self.threshold = check_int("threshold", threshold, minimum=1)
        if threshold > top_k:
            from ..errors import ConfigError

            raise ConfigError(f"threshold ({threshold}) cannot exceed top_k ({top_k})")
        self.reset()

    def reset(self) -> None:
        """Forget every stream's history."""
        self._index: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        self._seen: dict[int, int] = defaultdict(int)     # queries observed per stream

    @property
    def observed(self) -> int:
        """Queries observed since the last reset, all streams together."""
        return sum(self._seen.values())

    # --- fingerprints ----------------------------------------------------------------------------
    def quantize(self, x: torch.Tensor) -> np.ndarray:
        """(N, C, H, W) in [0, 1] -> (N, H*W*C) uint8 quantized values in HWC order."""
        v = torch.round(x.detach().float().cpu() * 255.0 / self.quant_step) * self.quant_step
        v = v.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return v.contiguous().numpy()

    def fingerprint(self, x: torch.Tensor) -> list[list[int]]:
        """Per query, its top-k hashes (64-bit prefixes of SHA-256), largest first."""
        check_images(x.detach())
        q = self.quantize(x)
        if q.shape[1] < self.window:
            raise InputError(f"images have {q.shape[1]} values, fewer than the window "
                             f"({self.window})")
        starts = range(0, q.shape[1] - self.window + 1, self.stride)
        w, sha = self.window, hashlib.sha256
        out = []
        for row in q:   # hashlib has no batched form: one digest per window
            b = row.tobytes()
            hs = {int.from_bytes(sha(b[i:i + w]).digest()[:8], "big") for i in starts}
            out.append(sorted(hs, reverse=True)[:self.top_k])
        return out

    # --- detection -------------------------------------------------------------------------------
    def observe(self, x: torch.Tensor, streams=None) -> torch.Tensor:
        """Add the queries ``x`` (N, C, H, W) to their streams' histories, in row order; return the
        bool (N,) flags (True: the query shares >= threshold hashes with an earlier query of its
        stream). ``streams``: int tensor (N,) of stream ids, default one stream (0)."""
        return self.matches(x, streams) >= self.threshold

    def matches(self, x: torch.Tensor, streams=None) -> torch.Tensor:
        """Like ``observe``, but return per query the largest number of hashes it shares with one
        earlier query of its stream (LongTensor (N,))."""
        streams = stream_ids(streams, x.shape[0])
        fps = self.fingerprint(x)
        return torch.tensor([self._add(fp, s) for fp, s in zip(fps, streams.reshape(-1).tolist())],
                            dtype=torch.long)

    def _add(self, fp: list[int], stream: int) -> int:
        """Best overlap of ``fp`` with an earlier query of ``stream``; then index ``fp``."""
        index, qid = self._index[stream], self._seen[stream]
        posts = [index[h] for h in fp if h in index]
        best = 0
        if posts:
            ids = np.concatenate([np.asarray(p, dtype=np.int64) for p in posts])
            best = int(np.bincount(ids).max())
        for h in fp:
            index[h].append(qid)
        self._seen[stream] = qid + 1
        return best

    def __repr__(self) -> str:
        return (f"BlackLight(quant_step={self.quant_step}, window={self.window}, "
                f"stride={self.stride}, top_k={self.top_k}, threshold={self.threshold}, "
                f"observed={self.observed})")
