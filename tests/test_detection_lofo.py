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


def test_pooled_rows_flag_each_seed_at_its_own_threshold_and_pair_the_adaptive_rows():
    """Two seeds with different thresholds: the pooled TPR counts each image against its own seed's
    threshold, failures count in ASR and evasion only, the adaptive row is paired with the same
    images' non-adaptive row; intervals are the bootstrap's over the pooled flags."""
    from idlsec.bench.detection_lofo import pooled_rows
    from idlsec.metrics.stats import bootstrap_ci

    def result(thr, benign, adv, adaptive):
        imgs = [{"set": "benign", "index": 100 + k, "scores": {"ensemble": s}} for k, s in enumerate(benign)]
        imgs += [{"set": "adv2", "adaptive_against": None, "index": k, "success": ok, "scores": {"ensemble": s}}
                 for k, (s, ok) in enumerate(adv)]
        imgs += [{"set": "adaptive-adv2", "adaptive_against": "ensemble", "index": k, "success": ok,
                  "scores": {"ensemble": s}} for k, (s, ok) in enumerate(adaptive)]
        rows = [{"attack": "adv2", "detector": "ensemble", "adaptive": False, "trained_on": False},
                {"attack": "adaptive-adv2", "detector": "ensemble", "adaptive": True, "trained_on": False}]
        return {"thresholds": {"ensemble": thr}, "images": imgs, "rows": rows, "config": {"fpr": 0.05, "seed": 0}}

    r0 = result(1.0, [0.0, 2.0], [(3.0, True), (0.5, True), (9.0, False)], [(0.2, True)])
    r1 = result(5.0, [0.0, 1.0], [(3.0, True), (6.0, True)], [(7.0, True), (0.0, False)])
    plain, adaptive = pooled_rows([r0, r1])
    assert plain["n"] == 5 and plain["asr"] == 4 / 5 and plain["n_adv"] == 4
    assert plain["tpr"] == 2 / 4  # 3>1 yes, 0.5 no (seed 0); 3>5 no, 6>5 yes (seed 1)
    assert plain["fpr"] == 1 / 4 and plain["evasion"] == 2 / 5
    assert plain["tpr_ci"] == bootstrap_ci([1.0, 0.0, 0.0, 1.0])
    assert adaptive["tpr"] == 1 / 2 and adaptive["evasion"] == 1 / 3
    # the same images without the detector term: seed 0 image 0 (3 > 1), seed 1 images 0 and 1 (3, 6 vs 5)
    assert adaptive["paired"]["n"] == 3 and adaptive["paired"]["tpr"] == 2 / 3 and adaptive["paired"]["evasion"] == 1 / 3
