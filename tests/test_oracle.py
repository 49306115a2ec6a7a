"""The black-box boundary (BlackBox) and the input-transform defenses."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from conftest import make_tiny_resnet
from idlsec.attacks import BlackBox
from idlsec.defenses import DEFENSES, DefendedModel, get_defense
from idlsec.errors import ConfigError, InputError, QueryBudgetExceeded
from idlsec.interpreters import CAM


class StubVictim(nn.Module):
    """Counts the rows it evaluates; logits depend on the input so that gradients could flow."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 10, generator=torch.Generator().manual_seed(0)))
        self.rows = 0
        self.calls = 0

    def forward(self, x):
        self.rows += x.shape[0]
        self.calls += 1
        return x.mean((2, 3)) @ self.weight


def test_counts_every_image_exactly():
    stub = StubVictim()
    bb = BlackBox(stub, max_queries=100)
    x = torch.rand(6, 3, 8, 8)
    bb(x)                                             # ids 0..5
    bb(x[:3], torch.tensor([0, 0, 4]))                # image 0 twice, image 4 once
    assert bb.queries == stub.rows == 9
    assert bb.queries_per_image().tolist() == [3, 1, 1, 1, 2, 1]
    assert bb.queries_per_image(torch.tensor([0, 9])).tolist() == [3, 0]
    assert bb.remaining(torch.tensor([0, 1])).tolist() == [97, 99]
    bb.reset()
    assert bb.queries == 0 and bb.queries_per_image().numel() == 0


def test_budget_is_all_or_nothing():
    stub = StubVictim()
    bb = BlackBox(stub, max_queries=3)
    x = torch.rand(2, 3, 8, 8)
    bb(x, torch.tensor([0, 0]))
    with pytest.raises(QueryBudgetExceeded, match="budget of 3"):
        bb(x, torch.tensor([0, 0]))                  # image 0 would reach 4
    assert stub.rows == 2 and bb.queries == 2        # nothing evaluated, nothing counted
    bb(x[:1], torch.tensor([0]))                      # exactly at the budget is allowed
    assert bb.remaining(torch.tensor([0])).item() == 0
    assert BlackBox(stub, max_queries=None).remaining(torch.tensor([0])).item() > 10 ** 12


def test_refuses_gradients():
    stub = StubVictim()
    bb = BlackBox(stub, output="logits")
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    out = bb(x)
    assert not out.requires_grad and out.grad_fn is None
    with pytest.raises(RuntimeError):
        torch.autograd.grad(out.sum(), x)
    assert stub.weight.grad is None and x.grad is None
    assert "StubVictim" not in repr(bb) and not hasattr(bb, "model")
    with pytest.raises(TypeError):
        pickle.dumps(bb)


def test_outputs(tiny_model, images):
    x, _ = images
    probs = BlackBox(tiny_model)(x)
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
    logits = BlackBox(tiny_model, output="logits")(x)
    assert torch.allclose(logits.softmax(1), probs, atol=1e-6)
    labels = BlackBox(tiny_model, output="label")(x)
    assert labels.dtype == torch.long and torch.equal(labels, logits.argmax(1))


def test_maps_only_when_exposed(tiny_model, images):
    x, _ = images
    with pytest.raises(ConfigError, match="exposes no maps"):
        BlackBox(tiny_model)(x, maps=True)
    interp = CAM(tiny_model)
    bb = BlackBox(tiny_model, interpreter=interp)
    scores, maps = bb(x.clone().requires_grad_(True), maps=True)
    assert maps.shape == (4, 1, 8, 8) and not maps.requires_grad
    assert torch.allclose(maps, interp(x, scores.argmax(1)))
    assert bb.queries == 4                          # a map comes with its query, not on top of it


def test_defense_inside_the_oracle(tiny_model, images):
    x, _ = images
    bits = get_defense("bitdepth", bits=1)
    out = BlackBox(tiny_model, output="logits", defense=bits)(x)
    with torch.no_grad():
        assert torch.allclose(out, tiny_model(bits(x)))
        assert torch.allclose(out, DefendedModel(tiny_model, bits)(x))


def test_bad_inputs(tiny_model, images):
    x, _ = images
    bb = BlackBox(tiny_model)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        bb(x * 2)
    with pytest.raises(InputError, match="shape"):
        bb(x[0])
    with pytest.raises(InputError, match="shape"):
        bb(torch.rand(2, 3, 16, 16))
    with pytest.raises(InputError, match="one entry per row"):
        bb(x, torch.tensor([0, 1]))
    with pytest.raises(InputError, match=">= 0"):
        bb(x, torch.tensor([0, 1, 2, -1]))
    with pytest.raises(InputError, match="integer"):
        bb(x, torch.zeros(4))
    with pytest.raises(ConfigError, match="output"):
        BlackBox(tiny_model, output="softmax")
    with pytest.raises(ConfigError, match="max_queries"):
        BlackBox(tiny_model, max_queries=0)
    with pytest.raises(ConfigError, match="nn.Module"):
        BlackBox(lambda z: z)
    with pytest.raises(ConfigError, match="own model"):
        BlackBox(tiny_model, interpreter=CAM(make_tiny_resnet(1)))


# --- input transforms -------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_transforms_range_and_determinism(name, images):
    x, _ = images
    a = get_defense(name)(x)
    b = get_defense(name)(x)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and a.shape[:2] == x.shape[:2]


def test_random_resize_pad_is_seeded(images):
    x, _ = images
    d = get_defense("rp", seed=3)
    first, second = d(x), d(x)
    assert first.shape == (4, 3, 35, 35)             # round(32 * 331 / 299)
    d.reset()
    assert torch.equal(d(x), first) and torch.equal(d(x), second)
    outs = {tuple(get_defense("rp", seed=s)(x).flatten()[:200].tolist()) for s in range(4)}
    assert len(outs) > 1                            # the seed matters
    assert (first == 0.5).any()                     # padding value


def test_transform_values(images):
    x, _ = images
    q = get_defense("bitdepth", bits=2)(x)
    assert set(torch.unique(q * 3).round().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    const = torch.full((1, 3, 8, 8), 0.25)
    assert torch.allclose(get_defense("median")(const), const)
    spike = const.clone()
    spike[0, :, 4, 4] = 1.0
    assert torch.allclose(get_defense("median")(spike), const)       # an isolated pixel is removed
    smooth = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(2, 3, 32, 32).contiguous()
    j = get_defense("jpeg", quality=95)(smooth)
    assert (j - smooth).abs().mean() < 0.02 and not torch.equal(j, smooth)


def test_transform_bad_params():
    with pytest.raises(ConfigError, match="unknown defense"):
        get_defense("blur")
    with pytest.raises(ConfigError, match="bits"):
        get_defense("bitdepth", bits=9)
    with pytest.raises(ConfigError, match="quality"):
        get_defense("jpeg", quality=0)
    with pytest.raises(ConfigError, match="odd"):
        get_defense("median", kernel=2)
    with pytest.raises(ConfigError, match="pad_value"):
        get_defense("rp", pad_value=2)
    with pytest.raises(InputError):
        get_defense("median")(torch.rand(2, 3, 8, 8) + 1)


def test_victim_runs_in_eval_mode_and_its_mode_is_restored():
    net = make_tiny_resnet(0)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = torch.softmax(net.eval()(x), 1)
    net.train()
    out = BlackBox(net)(x)
    assert torch.allclose(out, expected, atol=1e-6)   # batch norm used its running statistics
    assert all(m.training for m in net.modules())     # the training mode is restored
    net.eval()
    assert torch.allclose(BlackBox(net)(x), expected, atol=1e-6)
    assert not any(m.training for m in net.modules())


def test_a_wrapper_in_train_mode_around_an_eval_model_comes_back_as_it_was():
    """The oracle restores each module's own mode: a fresh nn.Module wrapper is in train mode, the
    model it wraps in eval mode (the shape of a recording victim); pushing the wrapper's flag down
    would leave the model's batch norm on batch statistics for every later caller."""
    class Wrapper(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.card = model, model.card

        def forward(self, x):
            return self.model(x)

    net = make_tiny_resnet(0).eval()
    frozen_bn = make_tiny_resnet(1).train()
    bn = next(m for m in frozen_bn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.eval()
    x = torch.rand(3, 3, 32, 32)
    BlackBox(Wrapper(net))(x)
    assert not any(m.training for m in net.modules())
    BlackBox(frozen_bn)(x)
    assert not bn.training and frozen_bn.training
