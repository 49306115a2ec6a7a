"""Issue 18 item 4: the OR-union of detectors (``union``), its joint calibration and its
union-aware adaptive attacker."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_resnet, needs_mirror
from idlsec.attacks.adv2 import ADV2
from idlsec.defenses import detector_names, get_detector
from idlsec.defenses.adaptive import AdaptiveADV2
from idlsec.errors import ConfigError
from idlsec.interpreters import CAM


def _smooth(n, seed):
    """Benign: smooth images (a 4x4 grid upsampled); positives: the same with noise."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=32, mode="bilinear")


def _noisy(x, seed, s=0.3):
    return (x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_union_is_registered_and_checks_members(tiny_model):
    assert "union" in detector_names()
    det = get_detector("union", tiny_model, members="squeeze-nlm,ensemble-random", interpreters=["cam", "gradcam"])
    assert det.member_names == ["squeeze-nlm", "ensemble-random"] and set(det.interpreters) == {"cam", "gradcam"}
    assert det.members["ensemble-random"].random
    for bad, msg in ((["nope"], "unknown union member"), (["union"], "unknown union member"),
                     (["lid", "lid"], "distinct"), ([], "at least one")):
        with pytest.raises(ConfigError, match=msg):
            get_detector("union", tiny_model, members=bad)
    with pytest.raises(ConfigError, match="not fitted"):
        det.score(_smooth(2, 0))


def test_union_calibration_gives_the_stated_fpr_and_is_an_or_of_its_members(tiny_model):
    x = _smooth(400, 0)
    fit, calib, fresh = x[:120], x[120:260], x[260:]
    pos = _noisy(fit[:40], 1)
    det = get_detector("union", tiny_model, members=["squeeze", "lid"], member_kwargs={"lid": {"k": 10}})
    det.fit(fit, pos, fpr=0.1, x_calib=calib)
    cal_fpr = float((det.score(calib) > det.threshold).float().mean())
    assert 0.05 <= cal_fpr <= 0.1 + 1e-6  # the union's FPR on its calibration images is the stated one
    fresh_fpr = float(det.detect(fresh).flags.float().mean())
    assert fresh_fpr <= 0.22  # and on new benign images up to sampling error (n = 140)
    # OR semantics: flagged by the union iff some member's own score passes its union-level threshold
    xs = torch.cat([fresh[:40], _noisy(fresh[:40], 2)])
    flags = det.detect(xs).flags
    anyof = torch.zeros(len(xs), dtype=torch.bool)
    for m, d in det.members.items():
        anyof |= d.score(xs) > d.threshold + det.threshold * det.spread[m]
    assert torch.equal(flags, anyof)
    assert flags[40:].float().mean() > flags[:40].float().mean() + 0.3  # the union detects the noise
    assert sum(f.any() for f in det.member_flags(xs[40:]).values()) == 2  # both members contribute
    # the attacker's term is zero exactly where no member passes its threshold (deterministic members)
    term, _ = det.adaptive_term(xs, None)
    assert torch.equal(term > 0, flags)


def test_union_aware_attacker_reduces_the_union_score_on_a_toy_case():
    """ADV^2 with and without the union's term (a randomised member: EOT, two draws per step; a
    margin of 2 so that the term is active on the tiny model's unflagged examples too): the aware
    examples score lower on the union under the defender's own, independent draws."""
    model = make_tiny_resnet()
    x = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    det = get_detector("union", model, members=["ensemble-random", "squeeze-nlm"], interpreters=["cam", "gradcam"])
    kw = dict(warmup_steps=3, steps=10, seed=0)
    crafted = ADV2(model, CAM(model), **kw).run(x[8:16], torch.tensor([1, 2, 3, 4, 1, 2, 3, 4]))
    det.fit(x[:8], crafted.x_adv, fpr=0.1)
    xt, tt = x[16:24], torch.tensor([5, 6, 7, 8, 5, 6, 7, 8])
    scores = []
    for w in (0.0, 1.0):
        r = AdaptiveADV2(model, CAM(model), detector=det, detector_weight=w, detector_eot=2, detector_margin=2.0,
                         **kw).run(xt, tt)
        assert (r.x_adv - xt).abs().max() <= 8 / 255 + 1e-6
        scores.append(torch.stack([det.score(r.x_adv) for _ in range(4)]).mean(0))
    blind, aware = scores
    assert (aware < blind).sum() >= 7 and aware.mean() < blind.mean() - 0.4


@needs_mirror
def test_lofo_job_attacks_the_union_and_records_every_member():
    from idlsec.bench.detection import DetectionJob, run_detection_job
    from idlsec.bench.detection_lofo import pooled_rows, transfer_rows

    job = DetectionJob(protocol="lofo", attacks=("pgd", "adv2"), train_attacks=("pgd",), interpreters=("cam",),
                       n=2, n_benign=44, warmup_steps=1, steps=2, pgd_steps=2,
                       detectors=("squeeze-nlm", "lid", "ensemble-random", "union"), adaptive=True, adaptive_n=2,
                       adaptive_steps=1, adaptive_attacks=("adv2",), adaptive_detectors=("union",))
    r = run_detection_job(job, log=lambda m: None)
    assert {"union", "squeeze-nlm", "lid", "ensemble-random"} <= set(r["thresholds"])
    assert {i.get("adaptive_against") for i in r["images"]} == {None, "union"}
    benign = [i["scores"]["union"] > r["thresholds"]["union"] for i in r["images"] if i["set"] == "benign"]
    assert len(benign) == 44 and sum(benign) <= 10  # 5% on val; the test FPR up to sampling error
    assert any(x["detector"] == "union" and x["adaptive"] for x in pooled_rows([r]))
    assert transfer_rows([r], detectors=["ensemble-random", "squeeze-nlm", "lid"])
