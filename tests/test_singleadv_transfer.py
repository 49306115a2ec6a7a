"""SingleADV black-box transfer, fooling accounting over correctly classified sources, the L2
ball, and the disjointness of fitting, tuning and reporting images (issues #16, #17)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_tiny_resnet
from idlsec.attacks.singleadv import SingleADV
from idlsec.bench.universal import (
    UniversalJob,
    evaluate_delta,
    evaluate_oracle,
    fitting_indices,
    fooling_accounting,
    run_universal_job,
)
from idlsec.data import validation_indices
from idlsec.errors import ConfigError
from idlsec.interpreters import CAM, get_interpreter


def _images(n, seed):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_fooling_accounting_counts_correct_sources_only():
    source, target = 3, 9
    # 10 source images: 6 correct (4 of them fooled), 2 already the target, 2 another wrong class
    clean = torch.tensor([3, 3, 3, 3, 3, 3, 9, 9, 1, 5])
    adv = torch.tensor([9, 9, 9, 9, 3, 1, 9, 9, 9, 5])
    out = fooling_accounting(clean, adv, source=source, target=target)
    assert out["fooling_rate"] == pytest.approx(4 / 6)
    assert out["fooling_rate_all"] == pytest.approx(7 / 10)  # the old figure: counts the 2 already-target
    assert out["already_target_share"] == pytest.approx(0.2)
    assert out["misclassified_share"] == pytest.approx(0.2)
    assert out["correct_share"] == pytest.approx(0.6)
    assert (out["n_source"], out["n_correct"]) == (10, 6)
    none = fooling_accounting(torch.tensor([9, 1]), torch.tensor([9, 9]), source=source, target=target)
    assert math.isnan(none["fooling_rate"]) and none["fooling_rate_all"] == 1.0


def test_fitting_tuning_and_reporting_images_are_disjoint():
    n = 50_000
    fit, val = fitting_indices(n), validation_indices(n)
    assert len(val) == 5000 and len(fit) == n - 5000
    assert not set(fit.tolist()) & set(val.tolist())
    assert sorted(fit.tolist() + val.tolist()) == list(range(n))
    # the reporting split is a different split (test); a job refuses to tune or report on 'train'
    with pytest.raises(ConfigError, match="split must be 'test'.*or 'val'"):
        run_universal_job(UniversalJob(model="cifar10-resnet20", dataset="cifar10", interpreter="cam",
                                       source=0, target=1, split="train", device="cpu"))


def test_l2_projection_and_fit_stay_in_the_ball(tiny_model):
    atk = SingleADV(tiny_model, CAM(tiny_model), source=0, target=3, norm="l2", eps=0.75, iterations=6,
                    batch_size=4, inhibition_batch_size=4, eval_every=3, target_fooling=1.0, step_size=0.1)
    big = torch.ones(3, 32, 32)
    assert float(atk.project(big, 0.75).norm()) == pytest.approx(0.75, rel=1e-5)
    small = torch.full((3, 32, 32), 1e-3)
    assert torch.equal(atk.project(small, 0.75), small)  # inside the ball: unchanged
    delta = atk.fit(_images(8, 1), others=_images(8, 2))
    assert float(delta.norm()) <= 0.75 + 1e-5 and float(delta.abs().max()) > 0.75 / math.sqrt(delta.numel())


def test_transfer_through_the_oracle_matches_the_white_box_view():
    surrogate, victim = make_tiny_resnet(0), make_tiny_resnet(1)
    atk = SingleADV(surrogate, CAM(surrogate), source=0, target=3, iterations=4, batch_size=4,
                    inhibition_batch_size=4, eval_every=2, target_fooling=1.0, step_size=4 / 255)
    delta = atk.fit(_images(8, 1), others=_images(8, 2))
    xs, xo = _images(12, 3), _images(6, 4)
    # the victim's clean predictions stand in for the source class so that some count as correct
    source = int(victim(xs).argmax(1).mode().values)
    kw = {"source": source, "target": 3, "source_images": xs, "other_images": xo, "max_map_images": 5}
    bb = evaluate_oracle(victim, CAM(victim), delta, transfer_interpreters=["gradcam", "grad"], **kw)
    wb = evaluate_delta(victim, CAM(victim), delta, **kw)
    for key in ("fooling_rate", "fooling_rate_all", "already_target_share", "misclassified_share",
                "unintended_fooling_rate", "iou_topk_mean", "target_confidence_mean"):
        assert bb[key] == pytest.approx(wb[key], abs=1e-6, nan_ok=True), key
    n_maps = bb["n_maps"]
    assert 1 <= n_maps <= 5
    # queries: source clean + adv, others clean + adv, and benign + adv maps for 3 interpreters
    assert bb["victim_queries"] == 2 * 12 + 2 * 6 + 3 * 2 * n_maps
    assert set(bb["interpreters"]) == {"gradcam", "grad"}
    grad_wb = evaluate_delta(victim, get_interpreter("grad", victim), delta, **kw)
    assert bb["interpreters"]["grad"]["iou_topk_mean"] == pytest.approx(grad_wb["iou_topk_mean"], abs=1e-6)
    # the surrogate's own figures differ from the victim's (another model)
    sur = evaluate_delta(surrogate, CAM(surrogate), delta, **kw)
    assert sur["target_confidence_mean"] != pytest.approx(bb["target_confidence_mean"], abs=1e-9) or \
        sur["correct_share"] != bb["correct_share"]


def test_black_box_job_rejects_bad_settings_before_any_work():
    base = {"model": "cifar10-resnet56", "dataset": "cifar10", "interpreter": "cam", "source": 0,
            "target": 1, "device": "cpu"}
    with pytest.raises(ConfigError, match="unknown interpreter 'nope'"):
        run_universal_job(UniversalJob(**base, surrogate="cifar10-resnet20", surrogate_interpreter="nope"))
    with pytest.raises(ConfigError, match="fmnist-cnn is trained on fashion-mnist"):
        run_universal_job(UniversalJob(**base, surrogate="fmnist-cnn"))
    with pytest.raises(ConfigError, match="max_map_images"):
        run_universal_job(UniversalJob(**base, max_map_images=0))
