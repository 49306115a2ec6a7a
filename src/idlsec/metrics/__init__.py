"""Metrics as pure per-sample functions on tensors (no NumPy, any device)."""

from .attack import attack_success, class_confidence, l2, linf, query_stats, ssim
from .maps import DEFAULT_K_GRID, map_l1, map_l2, spearman, topk_iou, topk_iou_curve, topk_mask

__all__ = ["DEFAULT_K_GRID", "attack_success", "class_confidence", "l2", "linf", "map_l1", "map_l2",
           "query_stats", "spearman", "ssim", "topk_iou", "topk_iou_curve", "topk_mask"]
