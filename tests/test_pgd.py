import pytest
import torch

from conftest import needs_mirror
from idlsec.attacks import PGD, make_attack
from idlsec.data import select_images
from idlsec.errors import ConfigError, InputError
from idlsec.interpreters import CAM


@needs_mirror
def test_untargeted_pgd_acceptance(cifar_test, resnet20):
    sel = select_images(cifar_test, 64, seed=0, model=resnet20, correct_only=True)
    res = PGD(resnet20, eps=8 / 255, steps=10).run(sel.x, sel.y)
    assert res.success.float().mean() >= 0.95
    assert (res.x_adv - sel.x).abs().max() <= 8 / 255 + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_targeted_pgd_with_cam_result(tiny_model, images):
    x, _ = images
    targets = torch.tensor([1, 2, 3, 4])
    res = PGD(tiny_model, CAM(tiny_model), eps=8 / 255, alpha=2 / 255, steps=5, targeted=True).run(x, targets)
    assert res.benign_map.shape == res.adv_map.shape == (4, 1, 8, 8)
    assert (res.x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert res.loss_history[-1] < res.loss_history[0]
    assert torch.equal(res.success, res.pred == targets)


def test_seeded_runs_are_bit_identical_and_mode_restored(tiny_model, images):
    x, y = images
    tiny_model.train()
    a = PGD(tiny_model, steps=3, seed=7)(x, y)
    b = PGD(tiny_model, steps=3, seed=7)(x, y)
    c = PGD(tiny_model, steps=3, seed=8)(x, y)
    assert tiny_model.training
    tiny_model.eval()
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("bad, message", [
    (lambda x: x * 2, r"must be in \[0, 1\]"),
    (lambda x: x.clone().fill_(float("nan")), "NaN"),
    (lambda x: x[0], r"shape \(N, C, H, W\)"),
    (lambda x: (x * 255).to(torch.uint8), "float tensor"),
])
def test_bad_images_are_refused(tiny_model, images, bad, message):
    x, y = images
    with pytest.raises(InputError, match=message):
        PGD(tiny_model, steps=1)(bad(x), y)


def test_bad_labels_and_params(tiny_model, images):
    x, y = images
    with pytest.raises(InputError, match="shape"):
        PGD(tiny_model, steps=1)(x, y[:2])
    with pytest.raises(InputError, match=r"\[0, 10\)"):
        PGD(tiny_model, steps=1)(x, y + 20)
    with pytest.raises(ConfigError, match="eps"):
        PGD(tiny_model, eps=-0.1)
    with pytest.raises(ConfigError, match="steps"):
        PGD(tiny_model, steps=2.5)
    with pytest.raises(ConfigError, match="no parameter"):
        make_attack("pgd", tiny_model, steps=1, gamma=3)
    with pytest.raises(ConfigError, match="valid: .*pgd"):
        make_attack("fgsm-9000", tiny_model)
    assert "steps=3" in repr(PGD(tiny_model, steps=3))
