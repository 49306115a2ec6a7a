"""The model-spec grammar: zoo | torchvision:<arch> | timm:<name> | file.py:factory |
package.module:factory, with weights / num_classes / input_size / mean / std / labels."""

import os
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from idlsec.errors import ConfigError, IdlsecError, ResourceError
from idlsec.models import check_model_spec, load_model, model_card
from idlsec.models.normalize import IMAGENET_MEAN

USER_MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    class Small(nn.Module):
        def __init__(self, classes=4):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
            self.fc = nn.Linear(8, classes)

        def forward(self, x):
            return self.fc(self.features(x).mean((2, 3)))

    def build():
        torch.manual_seed(0)
        return Small()

    def build_sized():
        m = build()
        m.input_size = (1, 64, 64)
        return m

    def not_a_model():
        return 3
""")


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(USER_MODEL)
    return path


def _reference_small(seed=0):
    """The same network built here, independently of idlsec's import machinery."""
    ns = {}
    exec(compile(USER_MODEL, "ref", "exec"), ns)
    torch.manual_seed(seed)
    return ns["Small"]().eval()


def test_user_file_factory_runs_with_identity_normalisation(user_file):
    model = load_model(f"{user_file}:build", input_size=(1, 64, 64))
    x = torch.rand(3, 1, 64, 64)
    assert torch.allclose(model(x), _reference_small()(x), atol=1e-6)  # no normalisation added
    card = model.card
    assert (card.name, card.dataset, card.num_classes) == (f"{user_file}:build", None, 4)
    assert card.input_size == (1, 64, 64) and card.classes is None
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_user_file_input_size_from_attribute_or_required(user_file):
    assert load_model(f"{user_file}:build_sized").card.input_size == (1, 64, 64)
    with pytest.raises(ConfigError, match="--input-size"):
        load_model(f"{user_file}:build")


def test_user_model_wrong_input_size_and_wrong_class_count_are_clear(user_file):
    with pytest.raises(
        ConfigError, match=r"does not run on a \(1, 3, 64, 64\) input.*--input-size"
    ):
        load_model(f"{user_file}:build", input_size="3,64,64")
    with pytest.raises(ConfigError, match="outputs 4 classes but --num-classes 10"):
        load_model(f"{user_file}:build", input_size=(1, 64, 64), num_classes=10)
    with pytest.raises(ConfigError, match="returned int, not an nn.Module"):
        load_model(f"{user_file}:not_a_model", input_size=(1, 64, 64))
    with pytest.raises(ConfigError, match="has no 'nope'; its callables: .*build"):
        check_model_spec(f"{user_file}:nope")


def test_module_factory(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)  # the working directory is importable, as with python -m
    try:
        model = load_model("userpkg.nets:build", input_size=(1, 64, 64), mean=(0.5,), std=(0.25,))
        x = torch.rand(2, 1, 64, 64)
        assert torch.allclose(model(x), _reference_small()((x - 0.5) / 0.25), atol=1e-5)
    finally:
        for name in [n for n in sys.modules if n.startswith("userpkg")]:
            del sys.modules[name]


def test_weights_as_safetensors_and_as_state_dict(user_file, tmp_path):
    trained = _reference_small(seed=7)
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    st, pt = tmp_path / "w.safetensors", tmp_path / "w.pt"
    save_file(state, str(st))
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, pt)  # DataParallel
    x = torch.rand(2, 1, 64, 64)
    for path in (st, pt):
        model = load_model(f"{user_file}:build", weights=path, input_size=(1, 64, 64))
        assert torch.allclose(model(x), trained(x), atol=1e-6)
    # a saved NormalizedModel (net. prefix + normalize buffers) fits too
    wrapped = load_model(f"{user_file}:build", weights=st, input_size=(1, 64, 64))
    torch.save(wrapped.state_dict(), pt)
    again = load_model(f"{user_file}:build", weights=pt, input_size=(1, 64, 64))
    assert torch.allclose(again(x), trained(x), atol=1e-6)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_with_code_is_refused_and_never_run(user_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(4, 8), "payload": _Evil()}, bad)
    with pytest.raises(ConfigError, match="never unpickles code"):
        load_model(f"{user_file}:build", weights=bad, input_size=(1, 64, 64))
    assert not (tmp_path / "PWNED").exists()
    whole = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Linear(8, 4)), whole)  # a pickled nn.Module, not a state dict
    with pytest.raises(ConfigError, match="state_dict"):
        load_model(f"{user_file}:build", weights=whole, input_size=(1, 64, 64))


def test_torchvision_random_resnet18_with_a_new_head():
    model = load_model("torchvision:resnet18", weights="random", num_classes=10)
    card = model.card
    assert card.num_classes == 10 and card.input_size == (3, 224, 224) and card.dataset is None
    assert tuple(card.mean) == IMAGENET_MEAN and card.reshape is None
    assert model.net.fc.out_features == 10
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 10)


def test_torchvision_head_mismatch_names_the_keys_and_the_flag(tmp_path):
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), path)
    with pytest.raises(
        ConfigError,
        match=r"fc\.weight \(7, 512\) in the file vs \(1000, 512\).*"
        r"--num-classes 7",
    ):
        load_model("torchvision:resnet18", weights=path)
    with pytest.raises(ConfigError, match="drop it to use the file's head"):
        load_model("torchvision:resnet18", weights=path, num_classes=10)
    model = load_model("torchvision:resnet18", weights=path, num_classes=7)
    ref = torchvision.models.resnet18(num_classes=7)
    ref.load_state_dict(torch.load(path, weights_only=True))
    x = torch.rand(1, 3, 224, 224)
    assert torch.allclose(
        model(x), ref.eval()((x - model.normalize.mean) / model.normalize.std), atol=1e-5
    )


def test_torchvision_vit_is_marked_for_token_reshape():
    card = model_card("torchvision:vit_b_16", input_size=(3, 32, 32), num_classes=3)
    assert (card.reshape, card.num_classes, card.input_size) == ("vit", 3, (3, 32, 32))


def test_torchvision_default_weights_come_from_local_caches_only(monkeypatch, tmp_path):
    import torchvision

    from idlsec.errors import ChecksumError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("IDLSEC_CACHE", str(tmp_path / "idlsec"))
    with pytest.raises(ResourceError, match="--weights random"):
        load_model("torchvision:resnet18")
    ref = torchvision.models.resnet18().eval()
    legacy = tmp_path / "idlsec" / "models" / "torchvision" / "resnet18.pth"
    legacy.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), legacy)
    x = torch.rand(1, 3, 224, 224)
    model = load_model("torchvision:resnet18")
    assert torch.allclose(
        model(x), ref((x - model.normalize.mean) / model.normalize.std), atol=1e-5
    )
    # torchvision's own file name carries its SHA-256 prefix: a file that does not match is refused
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    name = os.path.basename(torchvision.models.ResNet18_Weights.DEFAULT.url)
    torch.save(ref.state_dict(), hub / name)
    with pytest.raises(ChecksumError, match="sha256"):
        load_model("torchvision:resnet18")


def test_timm_tiny_vit_random():
    pytest.importorskip("timm")
    model = load_model(
        "timm:vit_tiny_patch16_224", weights="random", num_classes=5, input_size=(3, 32, 32)
    )
    card = model.card
    assert (card.num_classes, card.input_size, card.reshape) == (5, (3, 32, 32), "vit")
    assert card.mean == (0.5, 0.5, 0.5)  # timm's pretrained_cfg, not ImageNet's
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_labels_imagenet_and_from_a_file(tmp_path, user_file):
    card = model_card("torchvision:resnet18", labels="imagenet")
    assert (
        len(card.classes) == 1000
        and card.classes[0] == "tench"
        and card.classes[-1] == "toilet tissue"
    )
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\nfish\n\n")
    assert model_card(f"{user_file}:build", input_size=(1, 64, 64), labels=names).classes == (
        "cat",
        "dog",
        "bird",
        "fish",
    )
    with pytest.raises(ConfigError, match="4 class names but .* has 1000 classes"):
        model_card("torchvision:resnet18", labels=names)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: cifar10-resnet20.*torchvision:resnet50\\?"):
        check_model_spec("resnet50")
    with pytest.raises(ConfigError, match="valid: alexnet, convnext_base"):
        check_model_spec("torchvision:resnet1000")
    with pytest.raises(ConfigError, match="--weights"):
        check_model_spec("my_model.pth")


@pytest.mark.parametrize(
    "options, match",
    [
        ({"num_classes": 0}, "positive integer"),
        ({"input_size": "3,224"}, "three positive integers"),
        ({"input_size": (3, 32, 32), "mean": (0.5, 0.5)}, "2 values but the input has 3 channels"),
        ({"std": (0.0,)}, "std must be positive"),
        ({"weights": "/nonexistent.safetensors"}, "does not exist"),
        ({"labels": "/nonexistent.txt"}, "does not exist"),
        ({"device": "gpu7"}, "unknown device"),
        ({"device": "cuda:99"}, "CUDA device"),
    ],
)
def test_bad_options_are_config_errors_before_building(options, match):
    with pytest.raises(ConfigError, match=match):
        check_model_spec("torchvision:resnet18", **options)


def test_zoo_models_keep_their_card_and_refuse_conflicting_options():
    card = model_card("cifar10-resnet20")
    assert card.dataset == "cifar10" and card.classes[0] == "airplane"
    with pytest.raises(ConfigError, match="has 10 classes"):
        check_model_spec("cifar10-resnet20", num_classes=100)
    with pytest.raises(ConfigError, match="drop --input-size"):
        check_model_spec("fmnist-cnn", input_size=(1, 32, 32))


def test_errors_are_idlsec_errors_never_raw_runtime_errors(user_file, tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(IdlsecError, match="missing"):
        load_model(f"{user_file}:build", weights=other, input_size=(1, 64, 64))


def test_factory_may_return_a_normalized_model(tmp_path):
    path = tmp_path / "wrapped.py"
    path.write_text(
        USER_MODEL
        + textwrap.dedent("""
        from idlsec.models import with_normalization

        def build_wrapped():
            return with_normalization(build(), (0.25,), (0.5,))
    """)
    )
    model = load_model(f"{path}:build_wrapped", input_size=(1, 64, 64))
    x = torch.rand(2, 1, 64, 64)
    assert torch.allclose(model(x), _reference_small()((x - 0.25) / 0.5), atol=1e-5)
    assert isinstance(model.net, nn.Module) and model.card.mean == (0.25,)


def test_info_lists_the_zoo_and_the_spec_forms(capsys):
    from idlsec.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for needle in (
        "fmnist-cnn",
        "torchvision:<arch>",
        "timm:<name>",
        "path/to/file.py:factory",
        "package.module:factory",
        "--labels FILE|imagenet",
        "vit_b_16",
    ):
        assert needle in out


def test_info_into_a_closed_pipe_ends_without_a_traceback():
    import subprocess

    code = "import sys; from idlsec.cli import main; sys.exit(main(['info']))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    proc.stdout.close()  # the reader is gone before the first line is written (like `| head`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_torchvision_layer_hints_are_the_gap_linear_head(arch):
    """The names a derived card carries for torchvision's CNN families must be the map that
    global-average-pooling (after ReLU for DenseNet) and the linear layer turn into the logits."""
    from idlsec.models import get_card, get_layer, model_names

    assert not any(n.startswith("torchvision:") for n in model_names())  # specs, not zoo entries
    model = load_model(f"torchvision:{arch}", weights="random", input_size=(3, 64, 64))
    card = get_card(f"torchvision:{arch}")
    assert card.dataset is None and card.cam_layer == model.card.cam_layer
    feats = {}
    layer = get_layer(model, card.cam_layer)
    handle = layer.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
    x = torch.rand(2, 3, 64, 64)
    logits = model(x)
    handle.remove()
    a = torch.relu(feats["a"]) if card.cam_relu else feats["a"]
    fc = get_layer(model, card.fc_layer)
    assert torch.allclose(fc(a.mean((2, 3))), logits, atol=1e-4)


def test_a_library_refusing_the_options_is_a_config_error():
    # torchvision's ViT asserts that the image size is a multiple of the patch size
    with pytest.raises(ConfigError, match=r"cannot build torchvision:vit_b_16 with --input-size"):
        model_card("torchvision:vit_b_16", input_size=(3, 40, 40))
