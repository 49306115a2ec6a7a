"""Every interpreter x white-box attack pair runs on the zoo's own fmnist-cnn and cifar10-vgg as
installed: packaged classifier weights and packaged RTS masking models, no extra files (issue 14).
Tiny schedules (2 steps, few MASK / SmoothGrad iterations): this checks that each pair runs and
keeps its contract, not how well it attacks."""

import pytest
import torch

from idlsec.attacks import make_attack
from idlsec.interpreters import INTERPRETERS, get_interpreter
from idlsec.models import load_model

MODELS = ["fmnist-cnn", "cifar10-vgg"]
ATTACKS = ["pgd", "adv2", "advedge", "advedge+"]
FAST = {"mask": {"iterations": 3, "unroll": 1}, "smoothgrad": {"n_samples": 2}}
EPS = 8 / 255


def _native(name: str, size: tuple) -> tuple[int, int]:
    """Each interpreter's map resolution on a small input, from the methods' definitions: the last
    conv map (/4 on both models) for CAM, Grad-CAM and MASK's small-input mask, the input for the
    gradients, half the input for RTS (out stride 2)."""
    h, w = size[1:]
    return {"cam": (h // 4, w // 4), "gradcam": (h // 4, w // 4), "mask": (h // 4, w // 4),
            "grad": (h, w), "smoothgrad": (h, w), "rts": (h // 2, w // 2)}[name]


@pytest.fixture(scope="module", params=MODELS)
def zoo_model(request):
    return load_model(request.param)


@pytest.mark.parametrize("interp_name", sorted(INTERPRETERS))
@pytest.mark.parametrize("attack_name", ATTACKS)
def test_pair_runs_on_the_installed_zoo_model(zoo_model, attack_name, interp_name):
    size = zoo_model.card.input_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, *size, generator=g)
    target = torch.tensor([1, 7])
    interp = get_interpreter(interp_name, zoo_model, **FAST.get(interp_name, {}))
    if attack_name == "pgd":
        params = {"steps": 2, "alpha": 2 / 255, "random_start": False}
    else:
        params = {"warmup_steps": 1, "steps": 2, "mask_resolve_every": 1, "mask_inner_steps": 1,
                  "mask_bisection": 2}
    res = make_attack(attack_name, zoo_model, interp, eps=EPS, targeted=True, seed=0,
                      **params).run(x, target)
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    shape = (2, 1, *_native(interp_name, size))
    assert res.benign_map.shape == shape and res.adv_map.shape == shape
    assert torch.isfinite(res.adv_map).all() and torch.isfinite(res.x_adv).all()
