"""Helpers shared by the benchmark and report tests: tiny suites and synthetic run directories."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from idlsec.bench.store import (
    VOLATILE_FIELDS,
    save_gallery,
    to_uint8,
    write_records,
    write_suite_json,
)
from idlsec.bench.suite import BenchConfig

TINY_SUITE = """
name: tiny
settings: {n: 6, seed: 0, batch_size: 2, gallery: 3, params: {steps: 2}}
models: [cifar10-resnet20]
interpreters: [cam]
attacks: [pgd, {name: pgd, label: pgd-3, params: {steps: 3, alpha: 1/255}}]
"""


def write_suite(tmp_path: Path, text: str = TINY_SUITE, name: str = "suite.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def stable(records):
    """Records without their wall-clock fields, in file order."""
    return [{k: v for k, v in r.items() if k not in VOLATILE_FIELDS} for r in records]


def read_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def fake_run(directory: Path, *, models=("m-a", "m-b"), attacks=("pgd", "quscore"), n=4, gallery=2,
             queries=True, seed=0) -> dict:
    """A synthetic benchmark directory (suite.json, results.jsonl, images/) without running anything."""
    g = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    configs, records = [], []
    k_grid = [0.1, 0.2, 0.3]
    for m in models:
        for a in attacks:
            cfg = BenchConfig(model=m, dataset="cifar10", interpreter="cam", attack=a, n=n, k_grid=k_grid,
                              gallery=gallery, batch_size=n)
            configs.append(cfg.to_dict())
            for pos in range(n):
                curve = torch.rand(3, generator=g).tolist()
                rec = {"config": cfg.key, "model": m, "dataset": "cifar10", "interpreter": "cam", "attack": a,
                       "defense": "none", "eps": cfg.eps, "seed": 0, "pos": pos, "index": 100 + pos, "label": pos,
                       "target": (pos + 1) % 10, "pred": (pos + 1) % 10 if pos % 2 == 0 else pos,
                       "success": pos % 2 == 0, "confidence": float(torch.rand(1, generator=g)), "seconds": 0.01,
                       "iou_topk": curve, "linf": 8 / 255, "l2": 1.0, "iou_topk_mean": sum(curve) / 3,
                       "map_l1": float(torch.rand(1, generator=g)) * 10, "map_l2": float(torch.rand(1, generator=g))}
                if queries and a == "quscore":
                    rec["queries"] = float(10 ** (1 + pos))
                records.append(rec)
            x = torch.rand(gallery, 3, 32, 32, generator=g)
            save_gallery(directory, cfg.key, 0, {
                "pos": torch.arange(gallery), "images": to_uint8(x), "adversarial": to_uint8(x.flip(-1)),
                "benign_maps": to_uint8(torch.rand(gallery, 1, 8, 8, generator=g)),
                "adversarial_maps": to_uint8(torch.rand(gallery, 1, 8, 8, generator=g))})
    write_records(directory / "results.jsonl", records)
    write_suite_json(directory, {"name": "fake", "configs": configs,
                                 "runs": [{"command": ["idlsec", "bench", "fake.yaml"], "machine": {"cpu": "test"}}]})
    return {"configs": configs, "records": records}
