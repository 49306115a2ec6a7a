"""Training recipes (TRADES, cyclic learning rate) and the robustness evaluation
(AutoAttack through torchattacks, PGD, IDLS attacks; ``idlsec robustness``). Tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import make_tiny_resnet, needs_mirror
from idlsec.cli import main
from idlsec.defenses.adversarial_training import AdversarialTrainer, TradesPGD, trades_kl
from idlsec.defenses.robustness import autoattack_accuracy, autoattack_components, pgd_accuracy
from idlsec.errors import ConfigError


def _data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _trades(model, **kw):
    kw = {"epochs": 2, **kw}
    return AdversarialTrainer(model, "trades", batch_size=8, steps=2, lr=0.05, seed=3, progress=False, **kw)


def test_trades_kl_is_zero_on_equal_outputs_and_positive_otherwise():
    logits = torch.randn(4, 10)
    p = torch.softmax(logits, 1)
    assert trades_kl(logits, p).abs() < 1e-6
    assert trades_kl(logits + torch.randn(4, 10), p) > 1e-3


def test_trades_pgd_raises_the_kl_inside_the_ball_and_is_seeded(tiny_model):
    x, y = _data(4)
    atk = TradesPGD(tiny_model, steps=5, seed=1)
    r1, r2 = atk.run(x, y), atk.run(x, y)
    assert torch.equal(r1.x_adv, r2.x_adv)
    assert (r1.x_adv - x).abs().max() <= 8 / 255 + 1e-6
    p = torch.softmax(tiny_model(x), 1)
    start = trades_kl(tiny_model((x + 0.001 * torch.randn_like(x)).clamp(0, 1)), p)
    assert trades_kl(tiny_model(r1.x_adv), p) > 10 * start


def test_trades_training_resumes_bit_identically(tmp_path):
    x, y = _data()
    ref_model = make_tiny_resnet(0)
    _trades(ref_model).fit(x, y)
    model = make_tiny_resnet(0)

    def interrupt(step, total):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _trades(model, callback=interrupt).fit(x, y, checkpoint_dir=tmp_path)
    resumed_model = make_tiny_resnet(7)
    history = _trades(resumed_model).fit(x, y, checkpoint_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in history] == [1, 2] and history[0]["loss"] > 0
    for (k, a), b in zip(ref_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k
    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert state["config"]["beta"] == 6.0 and state["config"]["lr_schedule"] == "cosine"
    with pytest.raises(ConfigError, match="lr_schedule"):
        _trades(make_tiny_resnet(0), lr_schedule="cyclic").fit(x, y, checkpoint_dir=tmp_path, resume=True)


def test_validation_keeps_the_best_epoch_and_resumes_it(tmp_path):
    """fit(val=...) measures clean and PGD accuracy after every epoch and keeps the weights of the
    best epoch by val_robust (ties: the later); an interrupted run resumes the same best_state."""
    x, y = _data()
    xv, yv = _data(8, seed=5)
    ref_model = make_tiny_resnet(0)
    ref = _trades(ref_model, epochs=3)
    history = ref.fit(x, y, val=(xv, yv), val_steps=2)
    assert all({"val_clean", "val_robust", "val_n"} <= set(h) and h["val_n"] == 8 for h in history)
    assert all(h["val_robust"] <= h["val_clean"] for h in history)
    best = ref.best_epoch()
    scores = [(h["val_robust"], h["epoch"]) for h in history]
    assert best == max(scores)[1]
    if best < 3:  # the best weights are not the last ones
        assert any(not torch.equal(a, b) for a, b in zip(ref.best_state.values(), ref_model.state_dict().values()))

    def interrupt(step, total):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _trades(make_tiny_resnet(0), epochs=3, callback=interrupt).fit(x, y, checkpoint_dir=tmp_path,
                                                                       val=(xv, yv), val_steps=2)
    resumed = _trades(make_tiny_resnet(7), epochs=3)
    resumed.fit(x, y, checkpoint_dir=tmp_path, resume=True, val=(xv, yv), val_steps=2)
    assert resumed.best_epoch() == best and json.loads((tmp_path / "checkpoint.json").read_text())["best"]["epoch"] == best
    for k, v in ref.best_state.items():
        assert torch.equal(v, resumed.best_state[k]), k


def test_pgd_accuracy_counts_a_clean_mistake_as_not_robust(tiny_model):
    """The one PGD accuracy rule: robust = correct clean and correct after the attack."""
    x, _ = _data(8)
    y = tiny_model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 10
    res = pgd_accuracy(tiny_model, x, y, eps=1e-6, alpha=1e-6, steps=1, per_image=True)
    assert res["clean_correct"][:2] == [False, False] and res["robust_correct"][:2] == [False, False]
    assert res["robust_accuracy"] == pytest.approx(0.75) and res["clean_accuracy"] == pytest.approx(0.75)
    assert res["attack"] == "PGD-1 eps=0.0000" and "clean" in res["rule"]
    tiny_model.train()
    pgd_accuracy(tiny_model, x, y, eps=2 / 255, steps=1)
    assert tiny_model.training  # left in the mode it was in
    tiny_model.eval()


def test_trades_changes_weights_differently_from_pgd():
    x, y = _data()
    a, b = make_tiny_resnet(0), make_tiny_resnet(0)
    AdversarialTrainer(a, "trades", epochs=1, batch_size=8, steps=2, seed=1, progress=False).fit(x, y)
    AdversarialTrainer(b, "pgd", epochs=1, batch_size=8, steps=2, seed=1, progress=False).fit(x, y)
    w0 = make_tiny_resnet(0).net.linear.weight
    assert not torch.equal(a.net.linear.weight, w0) and not torch.equal(a.net.linear.weight, b.net.linear.weight)


def test_cyclic_schedule_is_a_triangle_peaking_at_two_fifths(tiny_model):
    tr = AdversarialTrainer(tiny_model, "fgsm", lr=0.2, progress=False)
    assert tr.lr_schedule == "cyclic"
    total = 100
    lrs = [tr._lr_at(s, total) for s in range(total)]
    peak = max(range(total), key=lrs.__getitem__)
    assert peak in (39, 40) and math.isclose(max(lrs), 0.2, rel_tol=0.02)
    assert lrs[0] < 0.01 and lrs[-1] < 0.01
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    cos = AdversarialTrainer(tiny_model, "pgd", lr=0.2, progress=False)
    assert cos.lr_schedule == "cosine" and cos._lr_at(0, total) == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="lr_schedule"):
        AdversarialTrainer(tiny_model, "pgd", lr_schedule="step")
    with pytest.raises(ConfigError, match="beta"):
        AdversarialTrainer(tiny_model, "trades", beta=-1)


def test_autoattack_is_at_most_pgd_and_monotone(tiny_model):
    x, y = _data(12, seed=2)
    y = tiny_model(x).argmax(1)  # all correct clean: robust accuracy starts at 1
    aa = autoattack_accuracy(tiny_model, x, y, eps=2 / 255, version="fast", steps=5, queries=20)
    after = list(aa["after"].values())
    assert aa["clean_accuracy"] == 1.0 and list(aa["after"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert all(a >= b for a, b in zip(after, after[1:])) and aa["robust_accuracy"] == after[-1]
    pgd = pgd_accuracy(tiny_model, x, y, eps=2 / 255, steps=5)
    assert aa["robust_accuracy"] <= pgd["robust_accuracy"] + 1 / 12
    assert aa["robust_accuracy"] < 1.0


def test_autoattack_standard_is_the_reference_setting(tiny_model):
    comps = dict(autoattack_components(tiny_model, eps=8 / 255))
    assert comps["apgd-ce"].steps == 100 and comps["square"].n_queries == 5000
    assert comps["apgd-t"].n_target_classes == 9 and comps["fab-t"].multi_targeted
    with pytest.raises(ConfigError, match="fast"):
        autoattack_components(tiny_model, eps=8 / 255, steps=10)


@needs_mirror
def test_cli_robustness_side_by_side(tmp_path, capsys):
    out = tmp_path / "rb"
    argv = ["robustness", "--model", "cifar10-resnet20-robust", "--also", "cifar10-resnet20", "--n", "4",
            "--autoattack", "fast", "--aa-steps", "2", "--aa-queries", "10", "--idls", "adv2", "--idls-n", "2",
            "--idls-param", "warmup_steps=2", "--idls-param", "steps=2", "--out", str(out)]
    assert main(argv) == 0
    rows = json.loads((out / "robustness.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["cifar10-resnet20-robust", "cifar10-resnet20"]
    assert rows[1]["autoattack"]["robust_accuracy"] <= rows[1]["pgd"]["clean_accuracy"]
    assert "cifar10-resnet20-robust" in (out / "robustness.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--idls-param", "nope=1"], "no parameter"),
    (["--aa-steps", "5"], "fast"),
    (["--also", "fmnist-cnn"], "share a dataset"),
    (["--interpreter", "bogus"], "interpreter"),
])
def test_cli_robustness_refuses_before_work(tmp_path, capsys, argv, message):
    out = tmp_path / "rb"
    assert main(["robustness", "--model", "cifar10-resnet20", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err and not out.exists()
