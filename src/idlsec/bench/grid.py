"""The grid scheduler of ``idlsec bench`` (local backend, the default; ``grid=False`` /
``--no-grid`` keeps the one-configuration-at-a-time order).

Configurations that share a model and an image set run one after another, grouped by
interpreter: the model, the dataset and the seeded selection (with its benign predictions) are
loaded once (the runner keeps the last of each), and the benign map of each chunk of images is
computed once per (model, interpreter, images) and handed to every white-box attack on them
(``Attack.run(benign_map=...)``), instead of once per attack configuration.

The records are those of the one-at-a-time path, bit for bit on the CPU: the map is computed on
the same chunk, after the same ``torch.manual_seed(seed + start)``, by the same interpreter, and
the global RNG state it leaves (a stochastic interpreter draws from it) is restored before each
attack that reuses it. Not shared: black-box attacks (their maps are the oracle's and cost
queries) and randomized defenses (each call advances the transform's own stream); they run as
before, in their group's turn. Only the order of work changes; a finished run's results.jsonl is
rewritten in grid order as before, so complete runs are identical either way.
"""

from __future__ import annotations

import json

import torch

from .suite import BenchConfig, _is_black_box


def selection_key(cfg: BenchConfig, device: str) -> str:
    """What the seeded images of a configuration depend on (model, data, n, seed, batches)."""
    return json.dumps([cfg.model, cfg.weights, cfg.model_options, device, cfg.dataset, cfg.split,
                       cfg.data_options, cfg.n, cfg.seed, cfg.all_images, cfg.batch_size],
                      sort_keys=True, default=str)


def benign_key(cfg: BenchConfig, device: str) -> str | None:
    """The key of the benign maps a configuration may share (None: it computes its own)."""
    from ..defenses import DEFENSES

    if _is_black_box(cfg):
        return None
    if cfg.defense != "none" and getattr(DEFENSES.get(cfg.defense), "randomized", True):
        return None
    return json.dumps([selection_key(cfg, device), cfg.interpreter, cfg.interpreter_params,
                       cfg.defense, cfg.defense_params], sort_keys=True, default=str)


def schedule(pending: list, device: str) -> list:
    """``pending`` [(config, done)] reordered so configurations with the same images, then the
    same benign maps, are adjacent; groups keep the order of their first member (grid order)."""
    sel_rank: dict = {}
    grp_rank: dict = {}
    order = []
    for i, (cfg, _) in enumerate(pending):
        s = sel_rank.setdefault(selection_key(cfg, device), len(sel_rank))
        g = grp_rank.setdefault(benign_key(cfg, device) or f"solo:{cfg.key}", len(grp_rank))
        order.append((s, g, i))
    return [pending[i] for _, _, i in sorted(order)]


class BenignMaps:
    """The benign maps of one group (one key at a time: a new key drops the old maps), per chunk
    start, with the global RNG state the computation left. ``computed`` counts computations."""

    def __init__(self):
        self.key, self.maps, self.computed = None, {}, 0

    def get(self, key: str | None, start: int, compute):
        """The map of chunk ``start`` under ``key``, computed by ``compute()`` the first time
        (call right after seeding, where the attack would have computed it); None when ``key``
        is None (not shared)."""
        if key is None:
            return None
        if key != self.key:
            self.key, self.maps = key, {}
        if start not in self.maps:
            value = compute().detach()
            self.maps[start] = (value, _rng_state())
            self.computed += 1
        value, state = self.maps[start]
        _set_rng_state(state)
        return value.clone()  # an attack may write into the map it is given


def _rng_state():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
