"""Per-image result records and summaries. Summaries are always computed from records."""

from __future__ import annotations

import math
import statistics

import torch

from ..attacks.base import AttackResult
from ..metrics import DEFAULT_K_GRID, l2, linf, map_l1, map_l2, spearman, ssim, topk_iou_curve
from ..metrics.edges import EDGE_THRESHOLD, edge_energy_ratio, sobel_edges


def records_from_result(
    res: AttackResult,
    indices,
    *,
    k_grid=DEFAULT_K_GRID,
    true_labels=None,
    edge_threshold: float = EDGE_THRESHOLD,
) -> list[dict]:
    """One JSON-ready dict per image. ``res.info["per_sample"]`` (name -> Tensor(N)) adds fields.
    ``edge_energy_ratio``: share of the perturbation's energy on benign Sobel edges >
    edge_threshold."""
    n = len(res)
    per = {
        "linf": linf(res.x_adv, res.x),
        "l2": l2(res.x_adv, res.x),
        "ssim_image": ssim(res.x, res.x_adv),
        "edge_energy_ratio": edge_energy_ratio(
            res.x_adv - res.x, sobel_edges(res.x), edge_threshold
        ),
    }
    if res.benign_map is not None and res.adv_map is not None:
        curve = topk_iou_curve(res.adv_map, res.benign_map, k_grid)
        per.update(
            iou_topk_mean=curve.mean(1),
            map_l1=map_l1(res.adv_map, res.benign_map),
            map_l2=map_l2(res.adv_map, res.benign_map),
            spearman=spearman(res.adv_map, res.benign_map),
        )
    else:
        curve = None
    for name, values in res.info.get("per_sample", {}).items():
        per[name] = values
    per = {k: v.detach().float().cpu().tolist() for k, v in per.items()}
    if res.queries is not None:  # the oracle's exact per-image count (an integer)
        per["queries"] = [int(q) for q in res.queries.detach().cpu().tolist()]
    labels, pred, conf = res.labels.tolist(), res.pred.tolist(), res.confidence.tolist()
    success = res.success.tolist()
    true = true_labels.tolist() if true_labels is not None else [None] * n
    out = []
    for i in range(n):
        rec = {
            "index": int(indices[i]),
            "label": true[i],
            ("target" if res.targeted else "label_attacked"): labels[i],
            "pred": pred[i],
            "success": bool(success[i]),
            "confidence": conf[i],
            "seconds": res.seconds / n,
        }
        if curve is not None:
            rec["iou_topk"] = curve[i].tolist()
        rec.update({k: v[i] for k, v in per.items()})
        out.append(rec)
    return out


def _mean(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(vals) if vals else None


def summarize(records: list[dict], *, k_grid=DEFAULT_K_GRID) -> dict:
    """Aggregate records: rates and means over all images (``iou_topk_success_mean``: over the
    successful ones); maxima for norms."""
    if not records:
        return {"n": 0}
    s = {
        "n": len(records),
        "asr": _mean([float(r["success"]) for r in records]),
        "confidence_mean": _mean([r["confidence"] for r in records]),
    }
    skip = {
        "index",
        "label",
        "target",
        "label_attacked",
        "pred",
        "success",
        "confidence",
        "iou_topk",
        "detected_at",  # query indices with -1 for never: monitor_summary summarises them
        "fooled_at",
    }
    keys = [k for k in records[0] if k not in skip and isinstance(records[0][k], (int, float))]
    for k in keys:
        s[k if k.endswith("_mean") else f"{k}_mean"] = _mean([r.get(k) for r in records])
    if "iou_topk_mean" in records[0]:  # the black-box tables average the IoU over successful images
        ok = [r.get("iou_topk_mean") for r in records if r["success"]]
        s["iou_topk_success_mean"] = _mean(ok)
    if "linf" in records[0]:
        s["linf_max"] = max(r["linf"] for r in records)
    if "iou_topk" in records[0]:
        curve = torch.tensor([r["iou_topk"] for r in records]).mean(0).tolist()
        s["iou_topk_curve"] = dict(zip([f"{k:g}" for k in k_grid], curve))
    if "queries" in records[0]:
        from ..metrics import query_stats

        s.update(query_stats([r["queries"] for r in records], [r["success"] for r in records]))
    s["seconds"] = sum(r["seconds"] for r in records)
    s.pop("seconds_mean", None)
    return s
