"""Leave-one-family-out detection and the detector's adaptive attacker (issues 17.4, 18.4)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_resnet, needs_mirror
from idlsec.attacks.adv2 import ADV2
from idlsec.defenses import EnsembleDetector
from idlsec.defenses.adaptive import AdaptiveADV2
from idlsec.errors import ConfigError
from idlsec.interpreters import CAM


def test_adaptive_attack_reduces_the_detector_score_on_a_toy_case():
    """The same ADV^2 run (seed, steps, ensemble map terms) with and without the detector term:
    descending the detector's calibrated score lowers every image's score."""
    model = make_tiny_resnet()
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    det = EnsembleDetector(model, ["cam", "gradcam"])
    kw = dict(warmup_steps=3, steps=5, seed=0)
    crafted = ADV2(model, CAM(model), **kw).run(x[8:12], torch.tensor([1, 2, 3, 4]))
    det.fit_features(det.features(x[:8]), det.features(crafted.x_adv), fpr=0.1)
    xt, tt = x[12:16], torch.tensor([5, 6, 7, 8])
    blind = AdaptiveADV2(model, CAM(model), detector=det, detector_weight=0.0, **kw).run(xt, tt)
    aware = AdaptiveADV2(model, CAM(model), detector=det, detector_weight=1.0, **kw).run(xt, tt)
    s_blind, s_aware = det.score(blind.x_adv), det.score(aware.x_adv)
    assert (s_aware < s_blind).all() and s_aware.mean() < s_blind.mean() - 1.0
    assert (aware.x_adv - xt).abs().max() <= 8 / 255 + 1e-6


def test_lofo_refuses_interpretation_attacks_in_training():
    from idlsec.bench.detection import DetectionJob, _check

    with pytest.raises(ConfigError, match="PGD family"):
        _check(DetectionJob(protocol="lofo", attacks=("pgd", "adv2"), train_attacks=("pgd", "adv2")))
    with pytest.raises(ConfigError, match="seen"):
        _check(DetectionJob(protocol="lofo", attacks=("pgd", "adv2"), train_attacks=("pgd",), seen_detector=True))
    with pytest.raises(ConfigError, match="harden"):
        _check(DetectionJob(protocol="lofo", attacks=("pgd",), train_attacks=("pgd",),
                            adaptive_detectors=("ensemble-hardened",)))
    with pytest.raises(ConfigError, match="protocol"):
        _check(DetectionJob(protocol="nope"))


@needs_mirror
def test_lofo_job_fits_on_val_reports_on_test():
    from idlsec.bench.detection import DetectionJob, run_detection_job
    from idlsec.data import load_dataset

    job = DetectionJob(protocol="lofo", attacks=("pgd", "pgd-weak", "adv2"), train_attacks=("pgd", "pgd-weak"),
                       interpreters=("cam", "grad"), squeezers=("median:2",), n=3, n_benign=6, warmup_steps=1,
                       steps=2, pgd_steps=2, adaptive=True, adaptive_n=2, adaptive_steps=1,
                       adaptive_attacks=("adv2",), harden=True, harden_n=2)
    r = run_detection_job(job, log=lambda m: None)
    assert r["splits"] == {"fit": "val", "calibrate": "val", "train_attacks": "val", "report": "test"}
    # fit/calibration/training images come from the val split (training images: never test
    # images); the benign and the attacked test images are disjoint
    assert len(r["val_indices"]) == 2 * 6 + 3 + 2 and max(r["val_indices"]) < len(load_dataset("cifar10", "val"))
    bench = [i["index"] for i in r["images"] if i["set"] == "benign"]
    attacked = {i["index"] for i in r["images"] if i["set"] != "benign"}
    assert len(bench) == 6 and not set(bench) & attacked
    rows = {(x["attack"], x["detector"]): x for x in r["rows"]}
    assert not rows[("adv2", "ensemble")]["trained_on"] and rows[("pgd", "ensemble")]["trained_on"]
    assert {("adaptive-adv2", "ensemble"), ("adaptive-adv2", "ensemble-hardened")} <= set(rows)
    row = rows[("adv2", "ensemble")]
    if "tpr_at_threshold" in row:  # positives: the successful examples, flagged at the val threshold
        adv = [i for i in r["images"] if i["set"] == "adv2" and i["success"]]
        thr = r["thresholds"]["ensemble"]
        assert row["tpr_at_threshold"] == pytest.approx(sum(i["scores"]["ensemble"] > thr for i in adv) / len(adv),
                                                        abs=1e-4)
        assert row["tpr_at_threshold_ci95_lo"] <= row["tpr_at_threshold"] <= row["tpr_at_threshold_ci95_hi"]
