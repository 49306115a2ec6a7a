"""Issue 18 item 4: NLM squeezing, LID, the randomised ensemble and its EOT attacker, the detector
registry and iterated refits."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_resnet, needs_mirror
from idlsec.attacks.adv2 import ADV2
from idlsec.defenses import (
    RANDOM_SQUEEZERS,
    EnsembleDetector,
    FeatureSqueezing,
    LIDDetector,
    detector_names,
    get_detector,
    nl_means,
    parse_squeezer,
)
from idlsec.defenses.adaptive import AdaptiveADV2
from idlsec.defenses.lid import lid_mle
from idlsec.errors import ConfigError
from idlsec.interpreters import CAM


def test_nl_means_known_cases():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((2, 3, 16, 16), 0.4)
    assert torch.allclose(nl_means(flat, 7, 3, 10.0), flat, atol=1e-6)  # a constant image is a fixed point
    noisy = (flat + 0.05 * torch.randn(flat.shape, generator=g)).clamp(0, 1)
    out = nl_means(noisy, 7, 3, 40.0)  # strong filter: the noise is averaged away
    assert (out - 0.4).std() < 0.5 * (noisy - 0.4).std()
    step = torch.zeros(1, 1, 16, 16)
    step[..., 8:] = 1.0
    assert torch.allclose(nl_means(step, 13, 3, 2.0), step, atol=1e-4)  # edges kept: no blur across them
    assert (nl_means(noisy, 7, 3, 2.0) - noisy).abs().mean() < (out - noisy).abs().mean()  # weaker at low h
    x = noisy.clone().requires_grad_(True)
    nl_means(x, 5, 3, 10.0).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_random_squeezers_are_seeded_per_image_and_bounded():
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    fn = parse_squeezer("bits:1|bits:8")
    assert fn.random and not parse_squeezer("bits:5").random
    a = fn(x, generator=torch.Generator().manual_seed(3))
    b = fn(x, generator=torch.Generator().manual_seed(3))
    c = fn(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    one_bit = (a == a.round()).flatten(1).all(1)
    assert 10 < int(one_bit.sum()) < 54  # each image draws its own alternative
    noise = parse_squeezer("noise:8")(x, generator=torch.Generator().manual_seed(0))
    assert (noise - x).abs().max() <= 8 / 255 + 1e-6 and (noise - x).abs().max() > 4 / 255
    assert torch.equal(parse_squeezer("nlm:13-3-2")(x), nl_means(x, 13, 3, 2.0))
    for bad in ("nlm:13-3", "nlm:12-3-2", "noise:0", "bits:4|blur:3", "median:4"):
        with pytest.raises(ConfigError):
            parse_squeezer(bad)


def test_lid_estimate_recovers_known_dimensions():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 32, generator=g))[0]
    for dim in (2, 8):
        pts = torch.rand(2000, dim, generator=g) @ basis[:dim]
        est = lid_mle(pts[:200], pts, 20).median()
        assert abs(float(est) - dim) < 0.35 * dim, (dim, float(est))


def test_lid_detector_separates_and_is_differentiable(tiny_model):
    """Benign: smooth images (a 4x4 grid upsampled: a low-dimensional set); positives: the same
    with high-frequency noise, off that set."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(120, 3, 4, 4, generator=g), size=32, mode="bilinear")
    far = (x[1:80:2] + 0.3 * torch.randn(x[1:80:2].shape, generator=g)).clamp(0, 1)  # not in the reference
    det = LIDDetector(tiny_model, k=10).fit(x[:80], far, fpr=0.1, x_calib=x[80:])
    near = (x[80:] + 0.3 * torch.randn(x[80:].shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert det.detect(near).flags.float().mean() > 0.6 and det.score(near).mean() > det.score(x[80:]).mean() + 1
    assert det.detect(x[80:]).flags.float().mean() <= 0.15
    xa = near[:4].clone().requires_grad_(True)
    det.score_differentiable(xa).sum().backward()
    assert xa.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="benign"):
        LIDDetector(tiny_model, k=20).fit(x[:10], far, fpr=0.1)


def test_registry_names_every_detector(tiny_model):
    assert {"squeeze", "squeeze-nlm", "lid", "ensemble", "ensemble-random"} <= set(detector_names())
    assert get_detector("squeeze-nlm", tiny_model).squeezers == ["bits:5", "median:2", "nlm:13-3-2"]
    assert get_detector("ensemble-random", tiny_model, interpreters=["cam"]).random
    with pytest.raises(ConfigError, match="unknown detector"):
        get_detector("nope", tiny_model)


def test_randomised_ensemble_draws_per_query_and_is_seeded(tiny_model):
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    det = EnsembleDetector(tiny_model, ["cam"], squeezers=RANDOM_SQUEEZERS, seed=3)
    f1, f2 = det.features(x), det.features(x)
    assert not torch.allclose(f1, f2)  # a fresh draw per query
    again = EnsembleDetector(tiny_model, ["cam"], squeezers=RANDOM_SQUEEZERS, seed=3)
    assert torch.allclose(again.features(x), f1)  # the same seed, the same draws
    fs = FeatureSqueezing(tiny_model, squeezers=["noise:8"], seed=1)
    assert not torch.equal(fs.score(x), fs.score(x))


def test_eot_attacker_reduces_the_randomised_detectors_score_on_a_toy_case():
    """ADV^2 with and without the randomised detector's term (EOT: a fresh draw of the squeezers
    at every step from the attacker's generator): the aware examples score lower under the
    defender's own, independent draws."""
    model = make_tiny_resnet()
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    det = EnsembleDetector(model, ["cam", "gradcam"], squeezers=RANDOM_SQUEEZERS, seed=0)
    kw = dict(warmup_steps=3, steps=6, seed=0)
    crafted = ADV2(model, CAM(model), **kw).run(x[8:12], torch.tensor([1, 2, 3, 4]))
    det.fit_features(det.features(x[:8]), det.features(crafted.x_adv), fpr=0.1)
    xt, tt = x[12:16], torch.tensor([5, 6, 7, 8])
    blind = AdaptiveADV2(model, CAM(model), detector=det, detector_weight=0.0, **kw).run(xt, tt)
    aware = AdaptiveADV2(model, CAM(model), detector=det, detector_weight=1.0, detector_eot=2, **kw).run(xt, tt)
    s_blind = torch.stack([det.score(blind.x_adv) for _ in range(4)]).mean(0)
    s_aware = torch.stack([det.score(aware.x_adv) for _ in range(4)]).mean(0)
    assert s_aware.mean() < s_blind.mean() - 0.5 and (s_aware < s_blind).sum() >= 3
    assert (aware.x_adv - xt).abs().max() <= 8 / 255 + 1e-6


def test_lofo_checks_detectors_and_rounds():
    from idlsec.bench.detection import DetectionJob, _check

    base = dict(protocol="lofo", attacks=("pgd", "adv2"), train_attacks=("pgd",))
    with pytest.raises(ConfigError, match="unknown detector"):
        _check(DetectionJob(**base, detectors=("nope",)))
    with pytest.raises(ConfigError, match="harden_detector"):
        _check(DetectionJob(**base, harden=True, harden_detector="lid"))
    with pytest.raises(ConfigError, match="harden_rounds"):
        _check(DetectionJob(**base, harden=True, harden_rounds=0))
    with pytest.raises(ConfigError, match="is not one of"):
        _check(DetectionJob(**base, detectors=("lid",), harden=True, harden_detector="lid",
                            adaptive_detectors=("lid-hardened3",)))
    _check(DetectionJob(**base, detectors=("lid",), harden=True, harden_detector="lid", harden_rounds=3,
                        adaptive_detectors=("lid", "lid-hardened2", "lid-hardened3")))


@needs_mirror
def test_lofo_job_with_registered_detectors_and_refit_rounds():
    from idlsec.bench.detection import DetectionJob, run_detection_job
    from idlsec.bench.detection_lofo import pooled_rows, transfer_rows

    job = DetectionJob(protocol="lofo", attacks=("pgd", "adv2"), train_attacks=("pgd",),
                       interpreters=("cam",), n=3, n_benign=6, warmup_steps=1, steps=2, pgd_steps=2,
                       detectors=("squeeze-nlm", "ensemble-random"), adaptive=True, adaptive_n=2,
                       adaptive_steps=1, adaptive_attacks=("adv2",), harden=True, harden_n=2,
                       harden_detector="ensemble-random", harden_rounds=2,
                       adaptive_detectors=("squeeze-nlm", "ensemble-random", "ensemble-random-hardened2"))
    r = run_detection_job(job, log=lambda m: None)
    assert set(r["thresholds"]) == {"ensemble", "squeeze-nlm", "ensemble-random", "ensemble-random-hardened",
                                    "ensemble-random-hardened2", "squeeze"}
    assert [h["against"] for h in r["hardening"].values()] == ["ensemble-random", "ensemble-random-hardened"]
    against = {i.get("adaptive_against") for i in r["images"]}
    assert against == {None, "squeeze-nlm", "ensemble-random", "ensemble-random-hardened2"}
    assert all(set(i["scores"]) >= set(r["thresholds"]) for i in r["images"])
    assert r["cpu_seconds_per_image"]["squeeze-nlm"] > 0
    rows = pooled_rows([r])
    assert any(x["detector"] == "ensemble-random-hardened2" and x["adaptive"] for x in rows)
    assert transfer_rows([r], detectors=list(r["thresholds"]))


@pytest.mark.parametrize("argv, message", [
    (["--protocol", "lofo", "--detectors", "nope"], "unknown detector 'nope'"),
    (["--detectors", "lid"], "need --protocol lofo"),
    (["--protocol", "lofo", "--harden-rounds", "2"], None),
    (["--protocol", "lofo", "--detectors", "lid", "--harden-detector", "squeeze-nlm"], "--harden-detector"),
])
def test_cli_detect_refuses_bad_detectors(argv, message, tmp_path, monkeypatch, capsys):
    from idlsec.cli import main

    monkeypatch.chdir(tmp_path)
    if message is None:  # accepted by check(): stop before any work by an impossible --fpr instead
        assert main(["detect", "--out", "d", "--fpr", "1", *argv]) == 2
        assert "argument --fpr" in capsys.readouterr().err
        return
    assert main(["detect", "--out", "d", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "d").exists()
