"""Defenses: detection metrics, feature squeezing, the ensemble detector, adaptive attacks,
adversarial training with checkpoint/resume. Tiny models and few images."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import make_tiny_resnet, needs_mirror
from idlsec.cli import main
from idlsec.defenses import EnsembleDetector, FeatureSqueezing
from idlsec.defenses.adaptive import AdaptiveADV2, ThroughTransform, make_adaptive
from idlsec.defenses.adversarial_training import AdversarialTrainer, MapPGD
from idlsec.defenses.squeeze import parse_squeezer
from idlsec.defenses.transforms import get_defense
from idlsec.errors import ConfigError, InputError, ResourceError
from idlsec.interpreters import CAM
from idlsec.metrics.detection import auroc, detection_summary, threshold_at_fpr, tpr_at_fpr


def _imgs(n, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --- metrics ----------------------------------------------------------------------------------
def test_auroc_and_tpr_known_values():
    b, a = torch.tensor([0.0, 1, 2, 3]), torch.tensor([2.0, 3, 4])
    assert auroc(b, a) == pytest.approx(10 / 12)  # ties count one half
    assert auroc(b, b + 10) == 1.0 and auroc(b + 10, b) == 0.0
    s = torch.arange(100.0)
    assert threshold_at_fpr(s, 0.05) == 94.0
    assert tpr_at_fpr(s, torch.tensor([94.0, 95, 96]), 0.05) == pytest.approx(2 / 3)
    out = detection_summary(s, s + 100, fpr=0.05, threshold=94.0)
    assert out["fpr_at_threshold"] == pytest.approx(0.05) and out["tpr_at_threshold"] == 1.0


def test_threshold_gives_requested_fpr_on_held_out_benign():
    g = torch.Generator().manual_seed(0)
    calib, held_out = torch.randn(4000, generator=g), torch.randn(4000, generator=g)
    for fpr in (0.01, 0.05, 0.2):
        t = threshold_at_fpr(calib, fpr)
        measured = float((held_out > t).float().mean())
        sigma = math.sqrt(fpr * (1 - fpr) / 4000) * math.sqrt(2)  # both samples vary
        assert abs(measured - fpr) < 4 * sigma, (fpr, measured)
        assert float((calib > t).double().mean()) <= fpr + 1e-9


@pytest.mark.parametrize("bad", [torch.tensor([]), torch.tensor([1.0, float("nan")])])
def test_metrics_reject_bad_scores(bad):
    with pytest.raises(InputError):
        auroc(bad, torch.ones(3))


@pytest.mark.parametrize("fpr", [0, 1, -0.1, 1.5, True])
def test_metrics_reject_bad_fpr(fpr):
    with pytest.raises(InputError, match="fpr"):
        threshold_at_fpr(torch.arange(10.0), fpr)


# --- detectors --------------------------------------------------------------------------------
def test_detector_calibration_fpr_on_held_out_benign(tiny_model):
    tol = 4 * math.sqrt(0.1 * 0.9 / 200) * math.sqrt(2)  # 4 sigma of the difference of two estimates
    det = EnsembleDetector(tiny_model, ["cam"], score="zmax", squeezers=["bits:4"], batch_size=200)
    feats = det.features(_imgs(400, seed=1))
    det.fit_features(feats[:200], fpr=0.1)
    measured = float((det.score_features(feats[200:]) > det.threshold).float().mean())
    assert abs(measured - 0.1) < tol
    fs = FeatureSqueezing(tiny_model).fit(_imgs(200, seed=2), fpr=0.1)
    report = fs.detect(_imgs(200, seed=3))
    assert abs(float(report.flags.float().mean()) - 0.1) < tol


def test_ensemble_features_and_determinism(tiny_model, tmp_path):
    x = _imgs(6)
    det = EnsembleDetector(tiny_model, ["cam", "gradcam", "grad"], embedding=True)
    f1, f2 = det.features(x), det.features(x)
    assert f1.shape == (6, len(det.feature_names)) and torch.equal(f1, f2)
    assert torch.isfinite(f1).all()
    assert any(n.startswith("disagree_l1[cam|grad]") for n in det.feature_names)
    # the learned combination is deterministic and separates separable features
    g = torch.Generator().manual_seed(0)
    fb = torch.randn(50, f1.shape[1], generator=g)
    fa = torch.randn(50, f1.shape[1], generator=g) + 2.0
    w1 = det.fit_features(fb, fa, fpr=0.05).weight.clone()
    w2 = det.fit_features(fb, fa, fpr=0.05).weight.clone()
    assert torch.equal(w1, w2)
    assert auroc(det.score_features(fb), det.score_features(fa)) > 0.95
    report = det.detect(x)
    assert report.flags.dtype == torch.bool and len(report.to_records()) == 6
    saved = json.loads(json.dumps(det.config()))  # the description is plain JSON
    assert saved["layers"] == det.layers and len(saved["precision"]) == len(det.layers)
    assert saved["weight"] == det.weight.tolist() and saved["threshold"] == det.threshold
    assert set(det.coefficients()) == set(det.combined_names)
    assert "mahalanobis[net.layer3.0]" in det.combined_names


def test_detector_score_is_differentiable(tiny_model):
    det = EnsembleDetector(tiny_model, ["cam", "gradcam"])
    fb = det.features(_imgs(8, 1))
    det.fit_features(fb, fb + 0.5 * torch.randn(fb.shape, generator=torch.Generator().manual_seed(1)), fpr=0.1)
    x = _imgs(3, 2).requires_grad_(True)
    s = det.score_differentiable(x, torch.tensor([1, 2, 3]))
    (g,) = torch.autograd.grad(s.sum(), x)
    assert g.abs().sum() > 0
    fs = FeatureSqueezing(tiny_model)
    (g,) = torch.autograd.grad(fs.score_differentiable(x).sum(), x)  # straight-through bit depth
    assert g.abs().sum() > 0


def test_detector_bad_inputs(tiny_model):
    with pytest.raises(ConfigError, match="unknown interpreter"):
        EnsembleDetector(tiny_model, ["cam", "nope"])
    with pytest.raises(ConfigError, match="score"):
        EnsembleDetector(tiny_model, ["cam"], score="vote")
    with pytest.raises(ConfigError, match="two interpreters"):
        EnsembleDetector(tiny_model, ["cam"], score="disagreement")
    det = EnsembleDetector(tiny_model, ["cam"])
    with pytest.raises(ConfigError, match="not calibrated"):
        det.detect(_imgs(2))
    with pytest.raises(ConfigError, match="x_adv"):
        det.fit(_imgs(4))
    with pytest.raises(InputError, match="shape"):
        det.fit(torch.rand(4, 3, 16, 16))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        det.score(_imgs(2) * 3)
    with pytest.raises(ConfigError, match="fpr"):
        FeatureSqueezing(tiny_model).fit(_imgs(4), fpr=0.0)
    for spec in ("bits", "bits:0", "median:4", "blur:3", "bits:x"):
        with pytest.raises(ConfigError):
            parse_squeezer(spec)


# --- adaptive attacks ---------------------------------------------------------------------------
def test_adaptive_attack_runs_in_budget_and_is_deterministic(tiny_model):
    det = EnsembleDetector(tiny_model, ["cam", "gradcam"])
    fb = det.features(_imgs(8, 1))
    det.fit_features(fb, fb + 1.0, fpr=0.1)
    x, t = _imgs(2, 5), torch.tensor([3, 4])
    runs = [AdaptiveADV2(tiny_model, CAM(tiny_model), detector=det, warmup_steps=2, steps=3, seed=1).run(x, t)
            for _ in range(2)]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv)
    assert (runs[0].x_adv - x).abs().max() <= 8 / 255 + 1e-6
    atk = make_adaptive("advedge+", tiny_model, CAM(tiny_model), detector=FeatureSqueezing(tiny_model),
                        warmup_steps=1, steps=1)
    assert atk.ensemble == [] and atk(x, t).shape == x.shape
    with pytest.raises(ConfigError, match="adaptive"):
        make_adaptive("pgd", tiny_model, CAM(tiny_model))


def test_through_transform_bpda_and_eot(tiny_model):
    x = _imgs(2, 7).requires_grad_(True)
    jp = ThroughTransform(tiny_model, get_defense("jpeg"))
    assert jp.bpda and jp.card.cam_layer == "model.net.layer3"
    (g,) = torch.autograd.grad(jp(x).sum(), x)  # straight-through JPEG
    assert g.abs().sum() > 0
    rp1 = ThroughTransform(tiny_model, get_defense("rp", seed=3), eot_samples=3)
    rp2 = ThroughTransform(tiny_model, get_defense("rp", seed=3), eot_samples=3)
    assert not rp1.bpda and torch.equal(rp1(x), rp2(x))
    assert CAM(rp1.__class__(tiny_model, get_defense("median")))(x.detach()).shape[0] == 2
    with pytest.raises(ConfigError):
        ThroughTransform(tiny_model, get_defense("median"), eot_samples=0)


# --- adversarial training -------------------------------------------------------------------------
def _train_data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)


def _trainer(model, **kw):
    return AdversarialTrainer(model, "adv", epochs=2, batch_size=8, steps=2, lr=0.05, seed=3, progress=False, **kw)


def test_training_resume_matches_uninterrupted(tmp_path):
    x, y = _train_data()
    ref_model = make_tiny_resnet(0)
    ref = _trainer(ref_model)
    ref.fit(x, y)

    model = make_tiny_resnet(0)

    def interrupt(step, total):
        if step == 3:  # the first step of epoch 2: epoch 1's checkpoint exists
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _trainer(model, callback=interrupt).fit(x, y, checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.json").is_file() and (tmp_path / "epoch-001.safetensors").is_file()
    resumed_model = make_tiny_resnet(5)  # different initial weights: all state must come from the checkpoint
    resumed = _trainer(resumed_model)
    history = resumed.fit(x, y, checkpoint_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in history] == [1, 2]
    for (k, a), b in zip(ref_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for p in resumed_model.parameters()) and not resumed_model.training
    assert (tmp_path / "epoch-002.safetensors").is_file() and not (tmp_path / "epoch-001.safetensors").exists()


def test_training_baselines_change_weights_and_are_seeded():
    x, y = _train_data()
    outs = []
    for _ in range(2):
        m = make_tiny_resnet(0)
        AdversarialTrainer(m, "fgsm", epochs=1, batch_size=8, steps_per_epoch=1, seed=1, progress=False,
                           clean_weight=0.5).fit(x, y)
        outs.append(m.net.linear.weight.clone())
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], make_tiny_resnet(0).net.linear.weight)


def test_map_pgd_is_seeded_and_in_budget(tiny_model):
    x, y = _imgs(3, 2), torch.tensor([0, 1, 2])
    a = MapPGD(tiny_model, CAM(tiny_model), steps=2, seed=4)
    r1, r2 = a.run(x, y), a.run(x, y)
    assert torch.equal(r1.x_adv, r2.x_adv) and (r1.x_adv - x).abs().max() <= 8 / 255 + 1e-6


def test_training_bad_inputs(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="attack"):
        AdversarialTrainer(tiny_model, "free")
    with pytest.raises(ConfigError, match="map_weight"):
        AdversarialTrainer(tiny_model, "adv", map_weight=-1)
    with pytest.raises(ConfigError, match="epochs"):
        AdversarialTrainer(tiny_model, "pgd", epochs=0)
    tr = AdversarialTrainer(tiny_model, "fgsm", progress=False)
    x, y = _train_data()
    with pytest.raises(ConfigError, match="checkpoint_dir"):
        tr.fit(x, y, resume=True)
    with pytest.raises(InputError):
        tr.fit(x, y[:3])
    with pytest.raises(ResourceError):
        tr.load_checkpoint(tmp_path)
    # a checkpoint made with other settings is refused
    other = AdversarialTrainer(make_tiny_resnet(0), "fgsm", epochs=1, batch_size=8, steps_per_epoch=1,
                               progress=False)
    other.fit(x, y, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="batch_size"):
        AdversarialTrainer(make_tiny_resnet(0), "fgsm", epochs=1, batch_size=4, steps_per_epoch=1,
                           progress=False).fit(x, y, checkpoint_dir=tmp_path, resume=True)


def test_cli_bad_arguments_exit_2(capsys, tmp_path):
    assert main(["detect", "--fpr", "1.5", "--out", str(tmp_path)]) == 2
    assert "fpr" in capsys.readouterr().err
    assert main(["detect", "--attack", "pgd", "--train-attacks", "adv2", "--out", str(tmp_path)]) == 2
    assert main(["defend", "--defense", "blur", "--out", str(tmp_path)]) == 2
    assert main(["train", "--model", "cifar10-resnet20", "--defense", "adv"]) == 2
    assert "--out" in capsys.readouterr().err


@needs_mirror
def test_cli_detect_and_defend_end_to_end(tmp_path, capsys):
    out = tmp_path / "det"
    assert main(["detect", "--attack", "pgd", "--interpreters", "cam,gradcam", "--n", "2", "--n-benign", "4",
                 "--device", "cpu", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert 0 <= s["tpr_at_fpr"] <= 1 and 0 <= s["auroc"] <= 1
    assert {r["detector"] for r in s["rows"]} == {"ensemble", "disagreement", "squeeze"}
    out = tmp_path / "def"
    assert main(["defend", "--attack", "pgd", "--defense", "none,median", "--n", "2", "--device", "cpu",
                 "--out", str(out)]) == 0
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert {(r["defense"], r["mode"]) for r in rows} == {("none", "white-box"), ("median", "transfer"),
                                                         ("median", "adaptive")}


def test_packaged_robust_model_and_card():
    from idlsec.models import load_model
    from idlsec.models.zoo import WEIGHTS_DIR

    model = load_model("cifar10-resnet20-robust")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    card = json.loads((WEIGHTS_DIR / "cifar10-resnet20-robust.json").read_text())
    assert card["defense"] == "adv" and card["command"].startswith("idlsec train")
    assert {"seed", "test_accuracy", "robust_accuracy", "sha256", "history"} <= set(card)


# --- the ensemble's feature groups ----------------------------------------------------------------
def test_median_2x2_squeezer():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2) / 4
    out = parse_squeezer("median:2")(x)
    # windows (reflect padding at the bottom/right): {1,2,3,4} -> 2, {2,1,4,3} -> 2, {3,4,1,2} -> 2, {4,3,2,1} -> 2
    assert out.shape == x.shape and torch.allclose(out, torch.full_like(x, 0.5))
    img = _imgs(2)
    assert torch.equal(parse_squeezer("median:2")(img), parse_squeezer("median:2")(img))
    with pytest.raises(ConfigError, match="2, 3, 5 or 7"):
        parse_squeezer("median:4")


def test_ensemble_feature_groups_and_batch_independence(tiny_model, tiny_fmnist_model):
    det = EnsembleDetector(tiny_model, ["cam", "grad"])
    assert det.layers == [f"net.layer{i}.0" for i in (1, 2, 3)]  # every block of a ResNet-8
    assert det.map_squeezers == ["median:2", "median:3"]
    for name in ("logit_drop[median:2]", "kl[bits:4]", "emb_shift[median:3,net.layer2.0]",
                 "instability[grad,median:2]", "pred"):
        assert name in det.feature_names
    assert [n for n in det.combined_names if n.startswith("mahalanobis")] == \
        [f"mahalanobis[net.layer{i}.0]" for i in (1, 2, 3)]
    x = _imgs(6, 4)
    f = det.features(x)
    assert f.shape == (6, len(det.feature_names)) and torch.isfinite(f).all()
    # a pure function of each input: the same rows in another batch give the same features
    assert torch.allclose(det.features(x[3:]), f[3:], atol=1e-5)
    emb_shift = f[:, [k for k, n in enumerate(det.feature_names) if n.startswith("emb_shift")]]
    assert (emb_shift >= 0).all() and (emb_shift > 0).any()
    with pytest.raises(ConfigError, match="map squeezer"):
        EnsembleDetector(tiny_model, ["cam"], map_squeezers=["median:5"])
    with pytest.raises(ConfigError, match="shrinkage"):
        EnsembleDetector(tiny_model, ["cam"], shrinkage=1.5)
    with pytest.raises(ConfigError):
        EnsembleDetector(tiny_model, ["cam"], layers=["net.nope"])
    bare = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(ConfigError, match="card"):
        EnsembleDetector(bare, [CAM(tiny_model)])
    assert EnsembleDetector(tiny_model, ["cam"], embedding=False).layers == []
    gray = EnsembleDetector(tiny_fmnist_model, ["cam", "grad"])  # another architecture: its blocks are found
    assert gray.layers[0] == "net.features.0"
    fg = gray.features(torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert fg.shape == (3, len(gray.feature_names)) and torch.isfinite(fg).all()


def test_mahalanobis_separates_shifted_embeddings_and_calibrates_on_x_calib(tiny_model):
    det = EnsembleDetector(tiny_model, ["cam"], score="zmax", squeezers=["median:2"])
    fb = det.features(_imgs(40, 1))
    shifted = fb.clone()
    k = det.feature_names.index("pred") + 1
    shifted[:, k:] += 5 * fb[:, k:].std(0)  # embeddings far from every class mean
    det.fit_features(fb[:20], fpr=0.1, f_calib=fb[20:])
    assert det.threshold == pytest.approx(threshold_at_fpr(det.score_features(fb[20:]), 0.1))
    d = det._derived(shifted[20:])[:, -1] - det._derived(fb[20:])[:, -1]
    assert (d > 0).all()
    # fit(x_calib=...) is fit_features on the calibration set's features
    det2 = EnsembleDetector(tiny_model, ["cam"], score="zmax", squeezers=["median:2"])
    det2.fit(_imgs(20, 1), x_calib=_imgs(40, 1)[20:], fpr=0.1)
    assert det2.threshold == pytest.approx(det.threshold, rel=1e-5)


def test_adaptive_gradient_reaches_every_feature_group(tiny_model):
    det = EnsembleDetector(tiny_model, ["cam", "gradcam"])
    fb = det.features(_imgs(12, 1))
    det.fit_features(fb, fb + 0.5, fpr=0.1)
    x = _imgs(2, 3).requires_grad_(True)
    f = det.compute_features(x, torch.tensor([1, 2]), differentiable=True)
    for prefix in ("logit_drop", "kl", "emb_shift", "instability", "emb["):
        cols = [k for k, n in enumerate(det.feature_names) if n.startswith(prefix)]
        (g,) = torch.autograd.grad(f[:, cols].sum(), x, retain_graph=True)
        assert g.abs().sum() > 0, prefix
    maha = det._derived(f)[:, -1]
    (g,) = torch.autograd.grad(maha.sum(), x)
    assert g.abs().sum() > 0


@needs_mirror
def test_detection_job_cache_and_time_cap(tmp_path):
    from safetensors.torch import load_file

    from idlsec.bench.detection import DetectionJob, run_detection_job
    from idlsec.data import load_dataset

    kw = dict(attacks=("pgd", "pgd-weak"), train_attacks=("pgd",), interpreters=("cam",), n=2, n_benign=4,
              squeezers=("median:2",), cache_dir=str(tmp_path))
    seen = []
    first = run_detection_job(DetectionJob(**kw), log=lambda m: None, on_rows=lambda out: seen.append(len(out["rows"])))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 3 and files[0].startswith("pgd-test-") and seen == [2, 4]  # no pgd-weak train half: unseen
    weak = load_file(str(next(tmp_path.glob("pgd-weak-test-*"))))
    x, _ = load_dataset("cifar10", "test").get(weak["idx"])
    assert (weak["x_adv"] - x).abs().max() <= 2 / 255 + 1e-6  # pgd-weak: eps/4
    again = run_detection_job(DetectionJob(**kw), log=lambda m: None)
    assert [r["auroc"] for r in again["rows"]] == [r["auroc"] for r in first["rows"]]
    capped = run_detection_job(DetectionJob(**{**kw, "time_cap": 0.0}),
                               log=lambda m: None)  # the training attack still runs, the other is dropped
    assert capped["skipped"] == ["pgd-weak (time cap)"] and {r["attack"] for r in capped["rows"]} == {"pgd"}
    with pytest.raises(ConfigError, match="time_cap"):
        run_detection_job(DetectionJob(**{**kw, "time_cap": -1.0}), log=lambda m: None)
