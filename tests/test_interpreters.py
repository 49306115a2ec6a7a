"""Interpreters: agreement with Captum and pytorch-grad-cam, the CAM/Grad-CAM identity, batching,
second-order gradients, hook hygiene and bad inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from idlsec.errors import ChecksumError, ConfigError, InputError, ResourceError
from idlsec.interpreters import (
    CAM,
    INTERPRETERS,
    MASK,
    RTS,
    Grad,
    GradCAM,
    SmoothGrad,
    get_interpreter,
    minmax,
)
from idlsec.interpreters.rts_net import SaliencyNet
from idlsec.models import NormalizedModel

TARGETS = torch.tensor([3, 7, 0, 5])


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


# the invariant tests run over every registered interpreter (registering one puts it under test);
# settings that keep them fast:
FAST = {"smoothgrad": {"n_samples": 6, "batch_size": 5}, "mask": {"iterations": 3}, "rts": {"weights": "random"}}
REGISTERED = sorted(INTERPRETERS)


def _make(name, model):
    return get_interpreter(name, model, **FAST.get(name, {}))


# -- agreement with the peers -----------------------------------------------------------------

@pytest.mark.parametrize("form", ["paper", "adv2"])
def test_grad_matches_captum_saliency(tiny_model, images, form):
    from captum.attr import Saliency

    x, _ = images
    ours = Grad(tiny_model, form=form)(x, TARGETS)
    fwd = tiny_model if form == "paper" else (lambda z: F.log_softmax(tiny_model(z), 1))
    theirs = Saliency(fwd).attribute(x, target=TARGETS, abs=True).amax(1, keepdim=True)
    assert ours.shape == (4, 1, 32, 32)
    assert (ours - minmax(theirs)).abs().max() <= 1e-5


def test_grad_pooling_at_224_and_none_at_32(tiny_model, images):
    assert Grad(tiny_model).pool_for(torch.zeros(1, 3, 224, 224)) == 4
    assert Grad(tiny_model).pool_for(images[0]) == 1
    raw = Grad(tiny_model, pool=4, normalize=False)(images[0], TARGETS)
    full = Grad(tiny_model, pool=1, normalize=False)(images[0], TARGETS)
    assert raw.shape == (4, 1, 8, 8)
    assert torch.allclose(raw, F.avg_pool2d(full, 4), atol=1e-7)


def test_gradcam_matches_pytorch_grad_cam_and_captum(tiny_model, images):
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x, _ = images
    layer = tiny_model.net.layer2  # a middle layer (16x16), not the default
    ours = GradCAM(tiny_model, target_layer=layer)(x, TARGETS)
    with PGCGradCAM(model=tiny_model, target_layers=[layer]) as cam:
        cam.get_target_width_height = lambda _x: None  # their maps before upsampling
        # our model's weights are frozen, so their backward needs an input that requires grad
        pgc = torch.from_numpy(cam(x.clone().requires_grad_(), targets=[ClassifierOutputTarget(int(t)) for t in TARGETS]))
    cap = LayerGradCam(tiny_model, layer).attribute(x, target=TARGETS, relu_attributions=True)
    assert ours.shape == (4, 1, 16, 16) and pgc.shape == (4, 16, 16)
    assert (ours[:, 0] - pgc).abs().max() <= 1e-5
    assert (ours - minmax(cap)).abs().max() <= 1e-5
    assert _hooks(tiny_model) == 0


def test_cam_equals_gradcam_at_last_conv(tiny_model, images):
    x, _ = images
    cam_raw = CAM(tiny_model, normalize=False)(x, TARGETS)
    exact = GradCAM(tiny_model, relu=False)(x, TARGETS)  # no ReLU: CAM / (h w) exactly
    assert (CAM(tiny_model)(x, TARGETS) - exact).abs().max() <= 1e-5
    with_relu = GradCAM(tiny_model)(x, TARGETS)          # standard Grad-CAM: ReLU(CAM) / (h w)
    assert (minmax(F.relu(cam_raw)) - with_relu).abs().max() <= 1e-5
    scale = GradCAM(tiny_model, relu=False, normalize=False)(x, TARGETS) / cam_raw
    assert torch.allclose(scale, torch.full_like(scale, 1 / 64), rtol=1e-3)


# -- batching and determinism -----------------------------------------------------------------

@pytest.mark.parametrize("name", REGISTERED)
def test_batch_with_per_sample_targets_equals_one_at_a_time(tiny_model, images, name):
    x, _ = images
    interp = _make(name, tiny_model)
    batch = interp(x, TARGETS)
    single = torch.cat([interp(x[i:i + 1], int(TARGETS[i])) for i in range(4)])
    assert batch.shape[0] == 4 and batch.min() >= 0 and batch.max() <= 1
    # MASK's Adam normalises tiny gradients, which amplifies the batch-size-dependent rounding of conv
    assert (batch - single).abs().max() <= (1e-3 if name == "mask" else 1e-5)
    assert torch.equal(interp(x, TARGETS), batch)  # seeded: repeatable


def test_targets_change_the_map(tiny_model, images):
    x, _ = images
    a, b = GradCAM(tiny_model)(x, 1), GradCAM(tiny_model)(x, 2)
    assert (a - b).abs().max() > 1e-3


def test_default_target_is_the_prediction(tiny_model, images):
    x, _ = images
    pred = tiny_model(x).argmax(1)
    assert torch.equal(Grad(tiny_model)(x), Grad(tiny_model)(x, pred))


def test_smoothgrad_with_zero_noise_is_the_base_map(tiny_model, images):
    x, _ = images
    sg = SmoothGrad(tiny_model, n_samples=3, sigma=0.0)(x, TARGETS)
    assert (sg - Grad(tiny_model)(x, TARGETS)).abs().max() <= 1e-5
    noisy = SmoothGrad(tiny_model, n_samples=3, sigma=0.2)(x, TARGETS)
    assert (noisy - sg).abs().max() > 1e-2


def test_upsample_to_input_size(tiny_model, images):
    maps = CAM(tiny_model, upsample=True)(images[0], TARGETS)
    assert maps.shape == (4, 1, 32, 32)


# -- second order ----------------------------------------------------------------------------

def _second_order(interp, x, target):
    xa = x.clone().requires_grad_()
    logits, maps = interp.logits_and_maps(xa, target, create_graph=True)
    assert logits.shape == (x.shape[0], 10)
    loss = ((maps - 0.5) ** 2).sum()
    (g,) = torch.autograd.grad(loss, xa, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


@pytest.mark.parametrize("name", [n for n in REGISTERED if getattr(INTERPRETERS[n], "differentiable", True)])
def test_create_graph_gives_nonzero_second_order_gradients(tiny_model, images, name):
    g = _second_order(_make(name, tiny_model), images[0], TARGETS)
    assert torch.isfinite(g).all()
    assert g.abs().sum() > 0
    assert (g.flatten(1).abs().sum(1) > 0).all()  # every sample gets a gradient


def test_grad_needs_the_surrogate_for_second_order(tiny_model, images):
    x = images[0]
    # the logit's gradient map of a ReLU net is piecewise constant: exactly zero second order
    assert _second_order(Grad(tiny_model, form="paper", surrogate=None), x, TARGETS).abs().max() == 0
    assert _second_order(Grad(tiny_model, form="paper"), x, TARGETS).abs().max() > 0
    assert _second_order(Grad(tiny_model, surrogate="softplus", surrogate_param=10.0), x, TARGETS).abs().max() > 0


def test_grad_surrogate_keeps_logits_and_is_close_to_the_true_map(tiny_model, images):
    x = images[0]
    xa = x.clone().requires_grad_()
    logits, maps = Grad(tiny_model).logits_and_maps(xa, TARGETS, create_graph=True)
    assert torch.allclose(logits, tiny_model(x), atol=1e-6)
    true_map = Grad(tiny_model)(x, TARGETS)
    assert (maps - true_map).abs().mean() < 0.05
    _, sharp = Grad(tiny_model, surrogate_param=1e-12).logits_and_maps(xa, TARGETS, create_graph=True)
    assert (sharp - true_map).abs().mean() < 1e-3  # tau -> 0 recovers the true map
    assert all(p.grad is None for p in tiny_model.parameters())


def test_interpreter_call_with_create_graph_returns_a_graph(tiny_model, images):
    x = images[0].clone().requires_grad_()
    assert GradCAM(tiny_model)(x, TARGETS, create_graph=True).requires_grad
    assert not GradCAM(tiny_model)(x, TARGETS).requires_grad


def test_mask_unrolled_steps_api(tiny_model, images):
    x = images[0]
    mask = MASK(tiny_model, iterations=2)  # Adam at lr 0.1 saturates cells at 0/1 within ~5 steps
    state = mask.solve(x, TARGETS)
    assert state.step == 2 and state.m.shape == (4, 1, 8, 8) and not state.m.requires_grad
    assert 0 <= state.m.min() and state.m.max() <= 1
    xa = x.clone().requires_grad_()
    nxt = mask.steps(xa, TARGETS, state, 2, create_graph=True)
    assert nxt.step == 4 and nxt.m.requires_grad
    (g,) = torch.autograd.grad((mask.state_map(nxt) ** 2).sum(), xa)
    assert g.abs().sum() > 0
    detached = mask.steps(xa, TARGETS, state, 2)
    assert not detached.m.requires_grad
    assert torch.allclose(detached.m, nxt.m.detach(), atol=1e-6)


def test_mask_defaults_scale_with_input_size():
    from idlsec.interpreters.mask import mask_defaults

    big = mask_defaults("v2", 224)
    assert (big["mask_size"], big["jitter"], big["iterations"], big["l1"]) == (28, 4, 300, 1e-4)
    assert round(big["image_sigma"], 6) == 3.5 and big["image_ksize"] == 21
    small = mask_defaults("v2", 32)
    assert (small["mask_size"], small["jitter"], small["image_sigma"]) == (8, 0, 1.5)
    assert mask_defaults("v1", 224)["iterations"] == 400


def test_mask_jitter_at_224_runs_and_is_seeded():
    torch.manual_seed(0)
    from idlsec.models import CifarResNet

    net = CifarResNet(8)
    card = dataclasses.replace(_tiny_card(), input_size=(3, 112, 112))
    model = NormalizedModel(net, card.mean, card.std, card=card).eval()
    x = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    mask = MASK(model, iterations=3)
    assert mask.params(x)["jitter"] == 2 and mask.params(x)["mask_size"] == 14
    a, b = mask(x, 1), mask(x, 1)
    assert a.shape == (2, 1, 14, 14) and torch.equal(a, b)
    assert not torch.equal(a, MASK(model, iterations=3, seed=1)(x, 1))


def _tiny_card():
    from conftest import make_tiny_resnet

    return make_tiny_resnet().card


# -- RTS ---------------------------------------------------------------------------------------

def test_rts_architecture_and_encoder_logits(tiny_model, images):
    rts = RTS(tiny_model, weights="random")
    assert rts.net.skip_layers == ["net.layer2"]
    x = images[0]
    logits, enc, maps = rts.logits_encoder_and_maps(x, TARGETS)
    assert maps.shape == (4, 1, 16, 16)
    assert torch.equal(logits, enc) and torch.allclose(rts.encoder_logits(x), tiny_model(x))
    assert not any(k.startswith("encoder") for k in rts.net.state_dict())
    assert _hooks(tiny_model) == 0


def test_rts_trainable_encoder_is_a_private_copy(tiny_model, images):
    net = SaliencyNet.for_model(tiny_model, train_encoder=True)
    assert net.encoder is not tiny_model and any(k.startswith("encoder.") for k in net.state_dict())
    net.train()
    assert not net.encoder.training and not tiny_model.training
    rts = RTS(tiny_model, net=net)
    logits, enc, _ = rts.logits_encoder_and_maps(images[0], TARGETS)
    assert torch.allclose(logits, enc, atol=1e-5) and logits is not enc


def test_rts_save_load_roundtrip_and_checksum(tiny_model, images, tmp_path):
    import json

    from idlsec.data.resolve import file_digest
    from idlsec.interpreters.rts import verify_packaged

    net = SaliencyNet.for_model(tiny_model)
    path = net.save(tmp_path / "rts.safetensors")
    loaded = RTS(tiny_model, weights=path)
    assert torch.equal(loaded(images[0], TARGETS), RTS(tiny_model, net=net)(images[0], TARGETS))
    path.with_suffix(".json").write_text(json.dumps({"sha256": file_digest(path)}))
    verify_packaged(path)
    path.with_suffix(".json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(ChecksumError):
        verify_packaged(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError):
        RTS(tiny_model, weights=bad)


def test_rts_on_fmnist_and_missing_weights(tiny_fmnist_model):
    x = torch.rand(2, 1, 28, 28)
    maps = RTS(tiny_fmnist_model, weights="random")(x, 1)
    assert maps.shape == (2, 1, 14, 14)
    with pytest.raises(ResourceError, match="train-rts"):
        RTS(tiny_fmnist_model)
    with pytest.raises(ResourceError):
        RTS(tiny_fmnist_model, weights="/nonexistent/rts.safetensors")


# -- hooks and memory ------------------------------------------------------------------------

def _rss_mb():
    with open("/proc/self/statm") as f:
        import os

        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.parametrize("name", ["gradcam", "cam", "rts"])
def test_thousand_calls_leave_no_hooks_and_no_memory_growth(tiny_model, name):
    interp = _make(name, tiny_model)
    x = torch.rand(1, 3, 32, 32)
    t = torch.tensor([1])
    for _ in range(50):
        interp(x, t)
    before = _rss_mb()
    for _ in range(1000):
        interp(x, t)
    assert _hooks(tiny_model) == 0
    assert _rss_mb() - before < 20


def test_hooks_released_when_the_layer_is_wrong(tiny_model, images):
    with pytest.raises(ConfigError, match="convolutional"):
        GradCAM(tiny_model, target_layer="net.linear")(images[0], TARGETS)
    assert _hooks(tiny_model) == 0


# -- bad inputs -----------------------------------------------------------------------------

def test_cam_finds_and_verifies_its_layers_without_a_card_entry(tiny_model, images):
    card = dataclasses.replace(tiny_model.card, cam_layer=None, fc_layer=None, gradcam_layer=None)
    model = NormalizedModel(tiny_model.net, card.mean, card.std, card=card)
    cam = CAM(model)
    assert (cam.layer, cam.fc) == (tiny_model.net.layer3, tiny_model.net.linear)
    assert torch.equal(cam(images[0], TARGETS), CAM(tiny_model)(images[0], TARGETS))
    assert GradCAM(model).layer is tiny_model.net.layer3
    with pytest.raises(ConfigError, match="fc_layer=.net.layer3. is a Sequential, not nn.Linear"):
        CAM(tiny_model, fc_layer="net.layer3")
    with pytest.raises(ConfigError, match="target_layer='net.layer2'.*GAP"):
        CAM(tiny_model, target_layer="net.layer2")(images[0], TARGETS)  # 32 channels, fc takes 64
    with pytest.raises(ConfigError, match="target_layer='net.layer2'.*GAP"):  # a probe, now
        CAM(tiny_model, target_layer="net.layer2", input_size=(3, 32, 32))
    with pytest.raises(ConfigError, match="target_layer='net.layer3.0.conv2'.*not the global average"):
        CAM(tiny_model, target_layer="net.layer3.0.conv2")(images[0], TARGETS)  # 64 ch., 8x8


def test_cam_on_a_vgg_is_a_config_error():
    torchvision = pytest.importorskip("torchvision")
    from idlsec.models import with_normalization

    torch.manual_seed(0)  # VGG's head is three linear layers: no GAP+linear to find
    model = with_normalization(torchvision.models.vgg11(num_classes=10), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ConfigError, match="classifier.6.*no 4-D output.*target_layer=.*fc_layer="):
        CAM(model.eval(), input_size=(3, 32, 32))
    with pytest.raises(ConfigError, match="classifier.6.*no 4-D output"):  # found on the first call
        CAM(model)(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("target", [10, -1, torch.tensor([0, 1]), torch.tensor([0.5, 1, 2, 3]), True])
def test_bad_targets(tiny_model, images, target):
    with pytest.raises(InputError):
        Grad(tiny_model)(images[0], target)


@pytest.mark.parametrize("name", REGISTERED)
def test_bad_images(tiny_model, name):
    interp = _make(name, tiny_model)
    x = torch.rand(2, 3, 32, 32)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        interp(x, 1)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        interp(torch.rand(2, 3, 32, 32) * 3, 1)
    with pytest.raises(InputError, match="shape"):
        interp(torch.rand(3, 32, 32), 1)


@pytest.mark.parametrize("kwargs", [{"form": "logit"}, {"pool": 0}, {"surrogate": "relu6"}])
def test_bad_grad_options(tiny_model, kwargs):
    with pytest.raises(ConfigError):
        Grad(tiny_model, **kwargs)


@pytest.mark.parametrize("kwargs", [{"config": "v3"}, {"iterations": 0}, {"lr": -1.0}, {"mask_size": 2.5}])
def test_bad_mask_options(tiny_model, kwargs):
    with pytest.raises(ConfigError):
        MASK(tiny_model, **kwargs)


def test_bad_smoothgrad_options_and_unknown_name(tiny_model):
    with pytest.raises(ConfigError):
        SmoothGrad(tiny_model, n_samples=0)
    with pytest.raises(ConfigError):
        SmoothGrad(tiny_model, base="nope")
    with pytest.raises(ConfigError, match="valid"):
        get_interpreter("lime", tiny_model)


def test_rts_on_a_torchvision_resnet_skips_reused_relus():
    import torchvision

    from idlsec.models import get_card

    torch.manual_seed(0)
    card = dataclasses.replace(get_card("torchvision:resnet50"), input_size=(3, 128, 128), num_classes=10)
    model = NormalizedModel(torchvision.models.resnet18(num_classes=10), card.mean, card.std, card=card).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rts = RTS(model, weights="random")  # BasicBlock calls one nn.ReLU twice: never a skip source
    assert rts.net.skip_layers == ["net.layer3", "net.layer2", "net.layer1"]
    x = torch.rand(1, 3, 128, 128).requires_grad_()
    _, maps = rts.logits_and_maps(x, torch.tensor([2]))
    assert maps.shape == (1, 1, 32, 32)  # 4 -> 8 -> 16 -> 32: out stride 4, as 7 -> 56 at 224
    assert torch.autograd.grad(maps.sum(), x)[0].abs().sum() > 0
    assert _hooks(model) == 0
