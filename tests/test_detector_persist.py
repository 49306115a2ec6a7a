"""Fitted detectors saved to one safetensors file and loaded back (``Detector.save``,
``load_detector``): every registered detector round-trips to the same scores and threshold, and a
file for another model, another file, or a corrupt one is refused."""

from __future__ import annotations

import hashlib

import pytest
import torch

from conftest import make_tiny_resnet
from idlsec.defenses import detector_names, get_detector, load_detector, model_fingerprint
from idlsec.errors import ChecksumError, ConfigError, InputError

# the cheapest arguments that still exercise what each detector learns
FIT_KWARGS = {
    "ensemble": {"interpreters": ["cam", "gradcam"]},
    "ensemble-random": {"interpreters": ["cam"]},
    "lid": {"k": 5, "n_reference": 20},
    "union": {"members": ["squeeze-nlm", "lid", "ensemble-random"], "interpreters": ["cam"],
              "member_kwargs": {"lid": {"k": 5, "n_reference": 20}}},
}


def _data():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(60, 3, 4, 4, generator=g), size=32, mode="bilinear")
    noisy = (smooth[:20] + 0.3 * torch.randn(20, 3, 32, 32, generator=g)).clamp(0, 1)
    return smooth[:40], noisy, smooth[40:]


@pytest.mark.parametrize("name", detector_names())
def test_every_registered_detector_round_trips(name, tiny_model, tmp_path):
    benign, adv, fresh = _data()
    det = get_detector(name, tiny_model, **FIT_KWARGS.get(name, {})).fit(benign, adv, fpr=0.1)
    before = det.score(torch.cat([fresh, adv]))
    path = det.save(tmp_path / "det.safetensors")
    again = load_detector(path, make_tiny_resnet())  # a new instance of the same weights
    assert type(again) is type(det) and again.threshold == det.threshold and again.fpr == det.fpr
    if getattr(det, "random", False):  # random squeezers: a fresh generator, the same seed
        det = load_detector(path, tiny_model)
        before = det.score(torch.cat([fresh, adv]))
    report = again.detect(torch.cat([fresh, adv]))
    assert torch.allclose(before, report.scores, atol=1e-6), (before - report.scores).abs().max()
    assert torch.equal(report.flags, before > det.threshold)


def test_load_refuses_other_weights_files_and_checksums(tiny_model, tmp_path):
    benign, adv, _ = _data()
    det = get_detector("squeeze", tiny_model).fit(benign, fpr=0.1)
    path = det.save(tmp_path / "det.safetensors")
    with pytest.raises(ConfigError, match="other weights"):
        load_detector(path, make_tiny_resnet(seed=1))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_detector(path, tiny_model, sha256=digest).threshold == det.threshold
    with pytest.raises(ChecksumError, match="does not match"):
        load_detector(path, tiny_model, sha256="0" * 64)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ChecksumError, match="not a saved idlsec detector"):
        load_detector(bad, tiny_model)
    with pytest.raises(InputError, match="not found"):
        load_detector(tmp_path / "none.safetensors", tiny_model)
    with pytest.raises(ConfigError, match="not fitted"):
        get_detector("squeeze", tiny_model).save(tmp_path / "x.safetensors")
    with pytest.raises(ConfigError, match=".safetensors"):
        det.save(tmp_path / "det.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "det.safetensors"]  # no temp left


def test_model_fingerprint_is_the_weights():
    a, b = make_tiny_resnet(), make_tiny_resnet()
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)
