"""SingleADV: the universal (source → target) perturbation."""

from __future__ import annotations

import os

import pytest
import torch

from idlsec.attacks.singleadv import SingleADV, margin_loss
from idlsec.errors import ConfigError, IdlsecError, InputError
from idlsec.interpreters import CAM


def _images(n, seed, lo=0.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, 3, 32, 32, generator=g)


@pytest.fixture
def source_images():
    return _images(24, 1)


@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.5)])
def test_norm_bound_respected(tiny_model, source_images, norm, eps):
    atk = SingleADV(tiny_model, CAM(tiny_model), source=0, target=3, norm=norm, eps=eps, iterations=12,
                    batch_size=8, eval_every=6, target_fooling=1.0, step_size=8 / 255)
    delta = atk.fit(source_images)
    assert delta.shape == source_images.shape[1:]
    if norm == "linf":
        assert float(delta.abs().max()) <= eps + 1e-7
        assert float(delta.abs().max()) == pytest.approx(eps, rel=1e-5)  # large steps: it hits the bound
    else:
        assert float(delta.norm()) <= eps + 1e-6
        assert float(delta.norm()) == pytest.approx(eps, rel=1e-4)
    x_adv = atk(source_images)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert len(atk.history) == 2 and atk.history[-1]["iteration"] == 12


def test_default_budgets(tiny_model):
    linf = SingleADV(tiny_model, CAM(tiny_model), source=0, target=1)
    l2 = SingleADV(tiny_model, CAM(tiny_model), source=0, target=1, norm="l2")
    assert linf.budget((3, 32, 32)) == pytest.approx(8 / 255)
    # the released η = 4500 (0..255, 224x224x3) at the same per-pixel RMS
    assert l2.budget((3, 224, 224)) == pytest.approx(4500 / 255)
    assert l2.budget((3, 32, 32)) == pytest.approx(4500 / 255 * 32 / 224)


def test_apply_and_fit_are_deterministic(tiny_model, source_images):
    kw = {"source": 0, "target": 3, "eps": 8 / 255, "iterations": 4, "batch_size": 8, "inhibition_batch_size": 8,
              "eval_every": 2, "target_fooling": 1.0}
    others = _images(8, 2)
    a = SingleADV(tiny_model, CAM(tiny_model), seed=5, **kw)
    b = SingleADV(tiny_model, CAM(tiny_model), seed=5, **kw)
    da, db = a.fit(source_images, others=others), b.fit(source_images, others=others)
    assert torch.equal(da, db)
    assert a.history == b.history
    x = _images(5, 9)
    assert torch.equal(a(x), a(x))
    assert torch.equal(a(x), (x + da).clamp(0, 1))
    tiny_model.train()
    a.set_params(iterations=1).fit(source_images[:4])
    assert tiny_model.training  # the model's mode is restored


def test_fit_reaches_fooling_target(tiny_model):
    source = _images(16, 1, 0.0, 0.25)
    with torch.no_grad():
        assert float((tiny_model(source).argmax(1) == 7).float().mean()) == 0
    atk = SingleADV(tiny_model, CAM(tiny_model), source=0, target=7, eps=16 / 255, iterations=100,
                    batch_size=16, eval_every=5, target_fooling=0.9, step_size=2 / 255)
    atk.fit(source)
    assert atk.converged
    assert atk.fooling_rate >= 0.9
    assert atk.history[-1]["iteration"] < 100  # it stopped early
    with torch.no_grad():
        rate = float((tiny_model(atk(source)).argmax(1) == 7).float().mean())
    assert rate == pytest.approx(atk.fooling_rate)


def test_inhibition_lowers_unintended_fooling(tiny_model):
    # dark source images, bright other-class images: clipping at 1 lets a perturbation that
    # moves dark pixels up fool the source while sparing the others, if the inhibition asks for it
    source, others = _images(32, 1, 0.0, 0.25), _images(32, 2, 0.8, 1.0)
    kw = {"source": 0, "target": 7, "eps": 32 / 255, "iterations": 40, "batch_size": 16, "inhibition_batch_size": 16,
              "eval_every": 10, "target_fooling": 1.0, "step_size": 4 / 255, "kappa": 5.0}
    with torch.no_grad():
        before = tiny_model(others).argmax(1)
    rates = {}
    for w in (0.0, 0.2):
        atk = SingleADV(tiny_model, CAM(tiny_model), inhibition=w, polish_steps=10 if w else 0, **kw)
        atk.fit(source, others=others)
        if w:  # polished: the kept δ is an evaluated one that meets the target
            best = next(h for h in atk.history if h["iteration"] == atk.best_iteration)
            assert best["fooling_rate"] == 1.0 and atk.history[-1]["iteration"] >= atk.best_iteration
            assert best["unintended_rate"] == min(h["unintended_rate"] for h in atk.history if h["fooling_rate"] == 1.0)
        with torch.no_grad():
            rates[w] = float((tiny_model(atk(others)).argmax(1) != before).float().mean())
        assert atk.fooling_rate == 1.0
        assert ("unintended_rate" in atk.history[-1]) == (w > 0)
    assert rates[0.0] > 0.5
    assert rates[0.2] < 0.1


def test_margin_loss():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    cls = torch.tensor([0, 1])
    assert torch.allclose(margin_loss(logits, cls, 1.0), torch.tensor([-1.0, 3.0]))
    assert torch.allclose(margin_loss(logits, cls, 10.0), torch.tensor([-2.0, 3.0]))


@pytest.mark.parametrize("kwargs,match", [
    ({"source": 0, "target": 0}, "differ"),
    ({"source": 0, "target": 10}, "target must be a class index"),
    ({"source": -1, "target": 2}, "source must be a class index"),
    ({"source": True, "target": 2}, "source must be a class index"),
    ({"source": 0, "target": 1, "norm": "l1"}, "norm must be one of"),
    ({"source": 0, "target": 1, "eps": 0.0}, "eps must be > 0"),
    ({"source": 0, "target": 1, "eps": 2.0}, "eps must be <= 1"),
    ({"source": 0, "target": 1, "lam": -1}, "lam must be >= 0"),
    ({"source": 0, "target": 1, "loss": "hinge"}, "loss must be one of"),
    ({"source": 0, "target": 1, "iterations": 0}, "iterations must be an integer >= 1"),
    ({"source": 0, "target": 1, "batch_size": 2.5}, "batch_size"),
    ({"source": 0, "target": 1, "betas": (0.9, 1.0)}, "betas"),
    ({"source": 0, "target": 1, "target_fooling": 1.5}, "target_fooling must be <= 1"),
    ({"source": 0, "target": 1, "inhibition_start": 2.0}, "inhibition_start"),
    ({"source": 0, "target": 1, "seed": "a"}, "seed"),
])
def test_bad_params(tiny_model, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SingleADV(tiny_model, CAM(tiny_model), **kwargs)


def test_bad_inputs(tiny_model, source_images):
    atk = SingleADV(tiny_model, CAM(tiny_model), source=0, target=1, iterations=1)
    with pytest.raises(ConfigError, match="call fit"):
        atk(source_images)
    with pytest.raises(ConfigError, match="interpreter"):
        SingleADV(tiny_model, None, source=0, target=1)
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        atk.fit(source_images * 2)
    with pytest.raises(InputError, match="NaN"):
        atk.fit(torch.full((2, 3, 32, 32), float("nan")))
    with pytest.raises(InputError, match="shape"):
        atk.fit(source_images[0])
    with pytest.raises(InputError, match="others must have"):
        atk.fit(source_images, others=torch.rand(2, 3, 16, 16))
    with pytest.raises(InputError, match="other_labels"):
        atk.fit(source_images, others=torch.rand(2, 3, 32, 32), other_labels=torch.tensor([0, 11]))
    with pytest.raises(InputError, match="without others"):
        atk.fit(source_images, other_labels=torch.tensor([0, 1]))
    atk.fit(source_images)
    with pytest.raises(InputError, match="shape"):
        atk(torch.rand(2, 3, 16, 16))
    with pytest.raises(IdlsecError):
        atk(torch.rand(2, 3, 32, 32) + 1)


@pytest.mark.parametrize("name", ["cam", "gradcam", "grad", "rts"])
def test_every_interpreter(tiny_model, source_images, name):
    from idlsec.interpreters import get_interpreter

    interp = get_interpreter(name, tiny_model, **({"weights": "random"} if name == "rts" else {}))
    atk = SingleADV(tiny_model, interp, source=0, target=3, iterations=2, batch_size=4, inhibition_batch_size=4,
                    eval_every=1, target_fooling=1.0, lam=50.0)
    delta = atk.fit(source_images[:8], others=_images(4, 3))
    assert torch.isfinite(delta).all() and float(delta.abs().max()) > 0
    assert [h["iteration"] for h in atk.history] == [1, 2]


needs_mirror = pytest.mark.skipif(not os.environ.get("IDLSEC_MIRROR"), reason="no local mirror (../shared)")


@needs_mirror
def test_cli_universal(tmp_path, capsys):
    import json

    from idlsec.cli import main

    out = tmp_path / "u"
    rc = main(["universal", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
               "--source", "cat", "--target", "9", "--eps", "8/255", "--out", str(out), "--n-train", "16",
               "--n-inhibition", "16", "--n-test", "24", "--n-test-other", "24", "--iterations", "2",
               "--param", "batch_size=8", "--param", "inhibition_batch_size=8", "--device", "cpu", "--json"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("fooling_rate_train", "fooling_rate_test", "target_confidence_mean", "unintended_fooling_rate",
                "iou_topk_mean", "map_l1_mean", "seconds"):
        assert 0 <= summary[key] < float("inf"), key
    assert summary["source"] == "cat" and summary["target"] == "truck" and summary["n_source"] == 24
    assert (out / "universal.png").stat().st_size > 0
    from safetensors.torch import load_file

    delta = load_file(str(out / "delta.safetensors"))["delta"]
    assert delta.shape == (3, 32, 32) and float(delta.abs().max()) <= 8 / 255 + 1e-7
    capsys.readouterr()
    rc = main(["universal", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
               "--source", "kitten", "--target", "truck", "--out", str(out)])
    assert rc == 2 and "unknown class of cifar10 'kitten'" in capsys.readouterr().err


def test_adaptive_inhibition_weight(tiny_model, source_images):
    atk = SingleADV(tiny_model, CAM(tiny_model), source=0, target=3, iterations=3, batch_size=4,
                    inhibition_batch_size=4, eval_every=1, target_fooling=1.0, inhibition=2.0, adapt_inhibition=0.5)
    atk.fit(source_images[:8], others=_images(4, 3))
    assert all(h["fooling_rate"] < 1.0 for h in atk.history)  # below target: the weight shrinks each time
    assert [h["inhibition_weight"] for h in atk.history] == pytest.approx([2.0, 2.0 / 1.5, 2.0 / 1.5 ** 2])
