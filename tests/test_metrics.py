import pytest
import torch

from idlsec.errors import InputError
from idlsec.metrics import (
    DEFAULT_K_GRID,
    attack_success,
    class_confidence,
    map_l1,
    map_l2,
    query_stats,
    spearman,
    ssim,
    topk_iou,
    topk_iou_curve,
)


def test_k_grid_is_5_to_50_percent():
    assert DEFAULT_K_GRID[0] == 0.05 and DEFAULT_K_GRID[-1] == 0.5 and len(DEFAULT_K_GRID) == 10


def test_topk_iou_identical_disjoint_and_partial():
    a = torch.arange(16.0).view(1, 1, 4, 4)
    assert topk_iou(a, a, 0.25).item() == 1.0
    assert topk_iou(a, -a, 0.25).item() == 0.0
    b = a.clone().flatten()
    b[15], b[0] = b[0], b[15]  # swap the best and the worst pixel
    iou = topk_iou(a, b.view(1, 1, 4, 4), 0.25).item()  # top 4: {12..15} vs {12,13,14,0}
    assert iou == pytest.approx(3 / 5)
    curve = topk_iou_curve(a.repeat(3, 1, 1, 1), a.repeat(3, 1, 1, 1))
    assert curve.shape == (3, 10) and torch.all(curve == 1)


def test_map_distances_use_minmax_normalised_maps():
    a = torch.tensor([[0.0, 1.0, 2.0, 4.0]])
    b = 10 * a + 3  # same map after min-max
    assert map_l1(a, b).item() == pytest.approx(0) and map_l2(a, b).item() == pytest.approx(0)
    c = torch.tensor([[4.0, 2.0, 1.0, 0.0]])
    assert map_l1(a, c).item() == pytest.approx(1 + 0.25 + 0.25 + 1)
    with pytest.raises(InputError, match="same shape"):
        map_l1(a, torch.zeros(1, 5))


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 40), generator=g).float()
    b = torch.randint(0, 5, (3, 40), generator=g).float()
    ours = spearman(a, b)
    for i in range(3):
        assert ours[i].item() == pytest.approx(stats.spearmanr(a[i].numpy(), b[i].numpy())[0], abs=1e-5)


def test_success_confidence_ssim_queries():
    pred, y = torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3])
    assert attack_success(pred, y, targeted=True).tolist() == [True, False, True]
    assert attack_success(pred, y, targeted=False).tolist() == [False, True, False]
    logits = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    assert class_confidence(logits, torch.tensor([0, 0])).tolist() == pytest.approx([0.5, 1.0], abs=1e-4)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    assert (ssim(x, (x + 0.3).clamp(0, 1)) < 0.99).all()
    q = query_stats([10, 200, 5000], [True, True, False])
    assert q["queries_median"] == 105 and q["asr_at_budget"]["100"] == pytest.approx(1 / 3)
