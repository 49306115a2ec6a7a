"""The opt-in compiled path (``compile=True``, :mod:`idlsec.compiling`; issue 19): compiled and eager
examples agree to 1e-5 on CPU (PGD, and ADV^2 on CAM and Grad-CAM), the compiled model is cached and
reused, a failing compiler falls back to eager with a warning, and the option is validated.

By default the tests compile with the ``aot_eager`` backend (Dynamo's and AOTAutograd's real graphs,
no code generation: seconds). ``IDLSEC_TEST_INDUCTOR=1`` (opt-in: minutes of compiling) adds the same
agreement checks with Inductor, the backend users get (about a minute of compilation on one
shared CPU thread; Inductor caches it on disk afterwards)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from conftest import make_tiny_resnet
from idlsec import compiling
from idlsec.attacks import ADV2, PGD
from idlsec.errors import ConfigError
from idlsec.interpreters import CAM, Grad, GradCAM

INDUCTOR = os.environ.get("IDLSEC_TEST_INDUCTOR") == "1"


@pytest.fixture(autouse=True)
def fast_backend(monkeypatch):
    monkeypatch.setenv("IDLSEC_COMPILE_BACKEND", "aot_eager")


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g), torch.tensor([1, 2, 3, 4])


def test_pgd_compiled_agrees_with_eager(batch):
    model = make_tiny_resnet()
    x, t = batch
    settings = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 5, "targeted": True}
    eager = PGD(model, **settings)(x, t)
    atk = PGD(model, compile=True, **settings)
    compiled = atk(x, t)
    assert (compiled - eager).abs().max() <= 1e-5
    assert atk.model is model  # restored after the call
    assert "model" in model.__dict__[compiling._CACHE]  # the attack compiled (and cached) the model
    cm = compiling.compiled_model(model)
    assert not cm.failed and cm is compiling.compiled_model(model)  # one compiled copy per model
    # reused across batches and attacks: a second batch of the same shape gives the same result
    assert torch.equal(PGD(model, compile=True, **settings)(x, t), compiled)


@pytest.mark.parametrize("interp_cls", [CAM, GradCAM])
def test_adv2_compiled_agrees_with_eager(batch, interp_cls):
    model = make_tiny_resnet()
    x, t = batch
    settings = {"warmup_steps": 2, "steps": 3}
    interp = interp_cls(model)
    eager = ADV2(model, interp, **settings).run(x, t)
    res = ADV2(model, interp, compile=True, **settings).run(x, t)
    assert (res.x_adv - eager.x_adv).abs().max() <= 1e-5
    assert not interp.compile and interp.compiling is False  # the attack's override is undone
    split = compiling.compiled_split(model, "net.layer3")
    assert split is not None and not split[0].failed
    # the interpreter's own compiled path gives the eager map (CAM verifies its layers eager first)
    own = interp_cls(model, compile=True)
    own(x, t)
    assert (own(x, t) - interp(x, t)).abs().max() <= 1e-5


def test_grad_compiled_first_order_agrees(batch):
    model = make_tiny_resnet()
    x, t = batch
    assert (Grad(model, compile=True)(x, t) - Grad(model)(x, t)).abs().max() <= 1e-5
    assert not model.__dict__[compiling._CACHE]["model"].failed


def test_failing_compiler_falls_back_to_eager(batch, monkeypatch):
    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(compiling, "backend", lambda: broken)
    model = make_tiny_resnet()
    x, t = batch
    eager = PGD(model, steps=2, targeted=True)(x, t)
    with pytest.warns(RuntimeWarning, match="running it eager"):
        out = PGD(model, steps=2, targeted=True, compile=True)(x, t)
    assert torch.equal(out, eager)
    assert compiling.compiled_model(model).failed
    # the model's own errors still reach the caller, unchanged
    with pytest.raises(RuntimeError, match="channels|size|shape"):
        compiling.compiled_model(model)(torch.rand(1, 5, 32, 32))


def test_untraceable_model_keeps_the_eager_maps(batch, monkeypatch):
    model = make_tiny_resnet()
    x, t = batch
    monkeypatch.setattr(compiling, "split_at", lambda *a: (_ for _ in ()).throw(TypeError("untraceable")))
    cam = CAM(model, compile=True)
    cam(x, t)  # verifies the declared layers (eager)
    with pytest.warns(RuntimeWarning, match="untraceable"):
        got = cam(x, t)
    assert torch.allclose(got, CAM(model)(x, t))


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_compile_is_validated(bad):
    model = make_tiny_resnet()
    with pytest.raises(ConfigError, match="compile"):
        PGD(model, compile=bad)
    with pytest.raises(ConfigError, match="compile"):
        ADV2(model, CAM(model), compile=bad)
    with pytest.raises(ConfigError, match="compile"):
        CAM(model, compile=bad)


@pytest.mark.slow
@pytest.mark.skipif(not INDUCTOR, reason="Inductor compiles for minutes: opt in with IDLSEC_TEST_INDUCTOR=1")
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("clang++")),
                    reason="Inductor needs a C++ compiler (the fallback test covers its absence)")
def test_inductor_agrees_with_eager(batch, monkeypatch):
    monkeypatch.setenv("IDLSEC_COMPILE_BACKEND", "inductor")
    model = make_tiny_resnet()
    x, t = batch
    pgd = {"steps": 5, "targeted": True}
    assert (PGD(model, compile=True, **pgd)(x, t) - PGD(model, **pgd)(x, t)).abs().max() <= 1e-5
    for interp in (CAM(model), GradCAM(model)):
        eager = ADV2(model, interp, warmup_steps=2, steps=3)(x, t)
        compiled = ADV2(model, interp, warmup_steps=2, steps=3, compile=True)(x, t)
        assert (compiled - eager).abs().max() <= 1e-5
    assert not compiling.compiled_model(model).failed
    assert not compiling.compiled_split(model, "net.layer3")[0].failed


def test_suite_and_cli_switches():
    from idlsec.bench.suite import apply_sets, parse_suite, to_spec
    from idlsec.cli import build_parser

    grid = {"name": "s", "models": ["cifar10-resnet20"], "interpreters": ["cam"],
            "attacks": ["pgd", {"name": "square", "max_queries": 10}]}
    eager = parse_suite(grid, "s.yaml").configs
    compiled = parse_suite(apply_sets(grid, ["compile=true"]), "s.yaml").configs
    assert [c.key for c in compiled] == [c.key for c in eager]  # a run resumes across the switch
    specs = {c.attack: to_spec(c) for c in compiled}
    assert specs["pgd"].params.get("compile") is True and "compile" not in specs["square"].params
    assert "compile" not in to_spec(eager[0]).params
    with pytest.raises(ConfigError, match="compile"):
        parse_suite({**grid, "settings": {"compile": "yes"}}, "s.yaml")
    args = build_parser().parse_args(["bench", "suite.yaml", "--out", "o", "--compile", "--set", "n=2"])
    assert sorted(args.sets) == ["compile=true", "n=2"]


def test_compile_where_it_does_not_apply(tmp_path, capsys):
    from idlsec.cli import main
    from idlsec.interpreters import MASK

    with pytest.warns(RuntimeWarning, match="no compiled path"):
        MASK(make_tiny_resnet(), compile=True)
    out = tmp_path / "o"
    assert main(["attack", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
                 "--attack", "square", "--compile", "--out", str(out)]) == 2
    assert "--compile applies to white-box attacks" in capsys.readouterr().err and not out.exists()
