"""Acceptance test of issue 13: an attack registered in this module alone (no other file knows
it) runs through ``idlsec attack``, a suite (``idlsec bench``) and the lab, with equal records
for the same spec, and the registry-parametrized invariant tests pick it up.

The toy is registered by a fixture and unregistered in its finalizer, so other tests never see
it; loaded as a plugin (``pytest -p test_registry_toy``) it registers itself before collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from idlsec.attacks import ATTACKS, Attack, project_linf, register_attack, unregister_attack
from idlsec.validation import check_positive

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
MODEL = "cifar10-resnet20"
mirror = pytest.mark.skipif(
    not os.environ.get("IDLSEC_MIRROR"), reason="no local mirror (../shared)"
)


class ToyStep(Attack):
    """One signed-gradient step of size ``scale``·eps (FGSM, Goodfellow et al., ICLR 2015)."""

    name = "toy-step"

    def __init__(
        self,
        model,
        interpreter=None,
        *,
        eps=8 / 255,
        scale=1.0,
        targeted=False,
        seed=0,
        progress=False,
        callback=None,
    ):
        super().__init__(
            model,
            interpreter,
            eps=eps,
            targeted=targeted,
            seed=seed,
            progress=progress,
            callback=callback,
        )
        self.scale = scale
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_positive("scale", self.scale, upper=1.0)

    def _run(self, x, y, target_map):
        for _ in self._steps(1):
            xg = x.clone().requires_grad_(True)
            loss = F.cross_entropy(self.model(xg), y)
            (g,) = torch.autograd.grad(loss, xg)
        sign = -1.0 if self.targeted else 1.0
        x_adv = project_linf(x + sign * self.scale * self.eps * g.sign(), x, self.eps)
        return x_adv, {"steps": 1, "loss_history": [float(loss.detach())]}


def pytest_configure(config):
    """Only when this module is loaded as a plugin (the invariant run below)."""
    register_attack(ToyStep)


@pytest.fixture
def toy():
    register_attack(ToyStep)
    yield ToyStep
    unregister_attack(ToyStep.name)


def test_registration_is_all_it_takes_and_is_undone(toy):
    assert ATTACKS["toy-step"] is ToyStep
    assert ToyStep.param_names() == ["eps", "targeted", "seed", "progress", "callback", "scale"]
    import idlsec

    assert "toy-step" in idlsec.registry_info()["attacks"]


def test_other_tests_do_not_see_the_toy():
    assert "toy-step" not in ATTACKS


def _records(path):
    from idlsec.bench.store import CONFIG_FIELDS, VOLATILE_FIELDS

    drop = set(VOLATILE_FIELDS) | set(CONFIG_FIELDS) | {"pos"}
    return [
        {k: v for k, v in json.loads(line).items() if k not in drop}
        for line in Path(path).read_text().splitlines()
    ]


@mirror
def test_cli_and_suite_give_equal_records(toy, tmp_path, capsys):
    from idlsec.cli import main

    assert (
        main(
            [
                "attack",
                "--model",
                MODEL,
                "--dataset",
                "cifar10",
                "--interpreter",
                "cam",
                "--attack",
                "toy-step",
                "--n",
                "4",
                "--batch-size",
                "2",
                "--param",
                "scale=0.5",
                "--untargeted",
                "--device",
                "cpu",
                "--json",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["n"] == 4 and summary["config"]["attack"] == "toy-step"
    suite = tmp_path / "toy.yaml"
    suite.write_text(
        "name: toy\nsettings: {n: 4, seed: 0, batch_size: 2, targeted: false}\n"
        f"models: [{MODEL}]\ninterpreters: [cam]\n"
        "attacks: [{name: toy-step, params: {scale: 0.5}}]\n"
    )
    assert main(["bench", str(suite), "--out", str(tmp_path / "bench"), "--device", "cpu"]) == 0
    cli, bench = (
        _records(tmp_path / "cli" / "results.jsonl"),
        _records(tmp_path / "bench" / "results.jsonl"),
    )
    assert len(cli) == 4 and cli == bench
    # an independent check of the records: the toy's one untargeted step moved every image by eps/2
    assert all(abs(r["linf"] - 0.5 * 8 / 255) < 1e-6 for r in cli)


@mirror
def test_the_cli_and_a_suite_describe_the_same_spec(toy):
    from idlsec.bench.job import AttackJob
    from idlsec.bench.suite import parse_suite, to_spec

    job = AttackJob(
        model=MODEL,
        dataset="cifar10",
        interpreter="cam",
        attack="toy-step",
        n=4,
        targeted=False,
        params={"scale": 0.5},
        batch_size=2,
        device="cpu",
    )
    suite = parse_suite(
        {
            "name": "t",
            "settings": {"n": 4, "batch_size": 2, "targeted": False},
            "models": [MODEL],
            "interpreters": ["cam"],
            "attacks": [{"name": "toy-step", "params": {"scale": 0.5}}],
        },
        "t.yaml",
    )
    assert to_spec(suite.configs[0], "cpu").to_dict() == job.spec().to_dict()


@mirror
def test_the_lab_lists_and_runs_it(toy):
    from fastapi.testclient import TestClient

    from idlsec.lab.app import create_app

    with TestClient(create_app(None, "cpu")) as client:
        reg = client.get("/api/registry").json()
        entry = next(a for a in reg["attacks"] if a["name"] == "toy-step")
        [scale] = entry["params"]  # nothing describes it: typed from its default
        assert (scale["name"], scale["default"], scale["kind"], scale["help"]) == ("scale", 1.0, "float", "")
        assert "FGSM" in entry["doc"]
        job = client.post(
            "/api/jobs",
            json={
                "model": MODEL,
                "index": 0,
                "interpreter": "cam",
                "attack": "toy-step",
                "targeted": False,
                "params": {"scale": 0.25},
            },
        ).json()
        end = time.monotonic() + 60
        while (state := client.get(f"/api/jobs/{job['id']}").json()["state"]) not in (
            "done",
            "failed",
        ):
            assert time.monotonic() < end, "the lab job did not finish"
            time.sleep(0.05)
        assert state == "done"
        r = client.get(f"/api/jobs/{job['id']}/result").json()
        assert r["attack"] == "toy-step" and r["params"]["scale"] == 0.25
        assert abs(r["metrics"]["linf"] - 0.25 * 8 / 255) < 1e-6
        assert r["benign_map"] is not None and r["adversarial_map"] is not None


@pytest.mark.slow  # a fresh interpreter: about a minute on 2 cores
def test_the_invariant_tests_pick_it_up():
    """Run the registry-parametrized invariant tests with this module as a plugin: the toy is
    registered before they are collected, and every interpreter pair of it must pass."""
    from idlsec.interpreters import INTERPRETERS

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        "-p",
        "test_registry_toy",
        str(TESTS / "test_attacks_whitebox.py"),
        "-k",
        "test_invariants and toy-step",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{len(INTERPRETERS)} passed" in proc.stdout, proc.stdout[-2000:]
