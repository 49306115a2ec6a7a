"""Grad's cross-entropy gradient is exact in float32 for confident predictions (issue 16).

With ``F.cross_entropy`` the gradient's y component ``p_y - 1`` rounds to 0 once ``p_y`` rounds to
1 in float32 and the ADV^2-form Grad map is rounding noise. The references here are float64
computations with the textbook formula (autograd through ``F.cross_entropy``), on inputs built so
that float64 still resolves ``1 - p_y`` (> 1e-11) while float32 rounds ``p_y`` to exactly 1."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_resnet
from idlsec.attacks import _idls
from idlsec.interpreters import Grad, SmoothGrad
from idlsec.interpreters.grad import exact_cross_entropy
from idlsec.models.smooth_relu import smooth_relu

TOL = 1e-4


def _minmax(m):
    flat = m.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo)).view_as(m)


def _textbook_map(model64, x64, y, *, create_graph=False, reduce=True):
    """float64 ADV^2-form Grad map, written independently: |d CE / dx|, channel max, min-max."""
    xg = x64 if x64.requires_grad else x64.detach().requires_grad_()
    with smooth_relu("tau") if create_graph else nullcontext():
        ce = F.cross_entropy(model64(xg), y, reduction="sum")
        (g,) = torch.autograd.grad(ce, xg, create_graph=create_graph)
    out = _minmax(g.abs().amax(1, keepdim=True)) if reduce else g
    return out if create_graph else out.detach()


def _confident_pairs(margin=20.0, n=4):
    """n (float32 model, float64 copy, image, label) whose logits are scaled so that the top
    margin is ``margin``: float32 p_y == 1 exactly, float64 1 - p_y well above its rounding."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=g)
    out = []
    for i in range(n):
        m32 = make_tiny_resnet(0)
        with torch.no_grad():
            z = m32(x[i:i + 1])
            top = z.topk(2, 1).values
            s = margin / float(top[0, 0] - top[0, 1])
            m32.net.linear.weight.mul_(s)
            m32.net.linear.bias.mul_(s)
        y = m32(x[i:i + 1]).argmax(1)
        out.append((m32, copy.deepcopy(m32).double(), x[i:i + 1], y))
    return out


def test_inputs_are_in_the_hard_regime():
    for m32, m64, x, y in _confident_pairs():
        with torch.no_grad():
            assert float(m32(x).softmax(1)[0, y]) == 1.0
            assert float(1 - m64(x.double()).softmax(1)[0, y]) > 1e-11
        # the textbook float32 map is wrong here: what the exact gradient fixes
        naive = _textbook_map(m32, x, y)
        ref = _textbook_map(m64, x.double(), y)
        assert float((naive.double() - ref).abs().max()) > 0.05


@pytest.mark.parametrize("create_graph", [False, True])
def test_float32_grad_map_equals_float64(create_graph):
    for m32, m64, x, y in _confident_pairs():
        _, maps = Grad(m32).logits_and_maps(x, y, create_graph=create_graph)
        ref = _textbook_map(m64, x.double(), y, create_graph=create_graph).detach()
        assert float((maps.detach().double() - ref).abs().max()) <= TOL
        assert torch.allclose(Grad(m32)(x, y).double(), _textbook_map(m64, x.double(), y), atol=TOL)


def test_smoothgrad_on_grad_is_exact_too():
    for m32, m64, x, y in _confident_pairs(n=2):
        sg = SmoothGrad(m32, n_samples=3, sigma=0.01, seed=0)
        noise = 0.01 * torch.randn((3, *x.shape[1:]), generator=torch.Generator().manual_seed(0))
        ref = _minmax(torch.stack([_textbook_map(m64, (x + e).double(), y, reduce=False)
                                   .abs().amax(1, keepdim=True) for e in noise]).mean(0))
        with torch.no_grad():
            assert bool((m32(x + noise).softmax(1)[:, y] == 1).all())
        assert float((sg(x, y).double() - ref).abs().max()) <= TOL


def _joint_loss_grad(logits, maps, xg, y, target_map):
    """Gradient w.r.t. the image of ADV^2's joint loss on Grad: CE to the class + c * the map
    distance with Grad's reduction (the pieces the attack sums, attacks/_idls.py)."""
    loss = _idls.ce(logits, y) + 0.5 * _idls.map_distance(maps, target_map, reduction="sum")
    return torch.autograd.grad(loss.sum(), xg)[0]


def test_attack_loss_gradient_equals_float64():
    """The joint loss's gradient through the smooth surrogate: float32 vs a float64 reference."""
    target_map = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    for m32, m64, x, y in _confident_pairs():
        x32 = x.clone().requires_grad_()
        g32 = _joint_loss_grad(*Grad(m32).logits_and_maps(x32, y), x32, y, target_map)
        x64 = x.double().requires_grad_()
        with smooth_relu("tau"):
            logits64 = m64(x64)
        maps64 = _textbook_map(m64, x64, y, create_graph=True)
        g64 = _joint_loss_grad(logits64, maps64, x64, y, target_map.double())
        scale = float(g64.abs().max())
        assert scale > 0
        assert float((g32.double() - g64).abs().max()) / scale <= TOL


def test_exact_cross_entropy_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(6, 10, generator=g, dtype=torch.float64) * 4).requires_grad_()
    y = torch.randint(0, 10, (6,), generator=g)
    for red in ("none", "sum", "mean"):
        assert torch.allclose(exact_cross_entropy(z, y, red), F.cross_entropy(z, y, reduction=red))
    (gz,) = torch.autograd.grad(exact_cross_entropy(z, y), z, create_graph=True)
    assert torch.allclose(gz, z.softmax(1) - F.one_hot(y, 10))          # dCE/dz = p - onehot
    (hz,) = torch.autograd.grad((gz * torch.arange(10.0, dtype=z.dtype)).sum(), z)
    assert torch.isfinite(hz).all() and hz.abs().sum() > 0               # twice differentiable
    # float32, confident: the y component equals -sum of the others, not 0
    zc = torch.tensor([[30.0, 5.0, 0.0]], requires_grad=True)
    (gc,) = torch.autograd.grad(exact_cross_entropy(zc, torch.tensor([0])), zc)
    p = torch.tensor([30.0, 5.0, 0.0], dtype=torch.float64).softmax(0)
    expected = torch.stack([-(p[1] + p[2]), p[1], p[2]])     # p_y - 1 without the subtraction
    assert torch.allclose(gc[0].double(), expected, rtol=1e-6, atol=0)


def test_confident_cifar_images_resnet20(cifar_test, resnet20):
    """resnet20 on the CIFAR-10 test images it classifies with p_y == 1 in float32."""
    x, y = cifar_test.get(torch.arange(256))
    with torch.no_grad():
        p = resnet20(x).softmax(1)
    keep = (p.argmax(1) == y) & (p.gather(1, y[:, None])[:, 0] == 1)
    assert int(keep.sum()) >= 3
    x, y = x[keep][:8], y[keep][:8]
    m64 = copy.deepcopy(resnet20).double()
    ref = _textbook_map(m64, x.double(), y)
    assert float((Grad(resnet20)(x, y).double() - ref).abs().max()) <= TOL
