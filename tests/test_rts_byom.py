"""RTS for any classifier: feature layers found on user modules (any channel count, any input
size), training on a tiny user model and data, the trained file loading back, clear errors."""

import inspect
import json

import pytest
import torch
from torch import nn

from idlsec.data import Dataset
from idlsec.errors import ConfigError, ResourceError
from idlsec.interpreters import RTS
from idlsec.interpreters.rts_net import SaliencyNet, load_saliency_net
from idlsec.train.rts import rts_quality, train_rts


class UserCNN(nn.Module):
    """A user's module without a card: three stride-2 convs (/8), GAP, linear."""

    def __init__(self, channels: int = 1, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 8, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)  # (N, 32, 1, 1): 4-D, but no feature map
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.pool(self.body(x)).flatten(1))


def _user_model(channels=1, classes=3, seed=0):
    torch.manual_seed(seed)
    return UserCNN(channels, classes).eval()


def _features_seen(net, model, x, target):
    """The tensor the masking model reads as its feature map, captured by a hook of our own."""
    store = {}
    layer = dict(model.named_modules())[net.feature_layer]
    h = layer.register_forward_hook(lambda _m, _i, out: store.setdefault("f", out))
    try:
        net(x, target)
    finally:
        h.remove()
    return store["f"]


@pytest.mark.parametrize("size, mask_hw", [((1, 64, 64), (32, 32)), ((3, 96, 128), (48, 64))])
def test_a_bare_user_module_gets_its_last_conv_map_and_a_mask_at_half_resolution(size, mask_hw):
    model = _user_model(channels=size[0])
    net = SaliencyNet(model, input_size=size)
    x = torch.rand(2, *size)
    feat = _features_seen(net, model, x, torch.tensor([0, 2]))
    assert torch.equal(feat, model.body(x))  # the deepest spatial map, not the 1x1 pooled one
    assert net.config["num_classes"] == 3  # the logits' width
    # skips at /4 and /2 of the input, i.e. 2x and 4x the feature map
    outs = {}
    hooks = [dict(model.named_modules())[n].register_forward_hook(
        lambda _m, _i, o, n=n: outs.__setitem__(n, o.shape[-2:])) for n in net.skip_layers]
    model(x)
    for h in hooks:
        h.remove()
    h, w = size[1:]
    assert [tuple(outs[n]) for n in net.skip_layers] == [(h // 4, w // 4), (h // 2, w // 2)]
    maps = RTS(model, net=net)(x, torch.tensor([0, 2]))
    assert maps.shape == (2, 1, *mask_hw)


def test_a_bare_module_needs_its_input_size_and_a_card_free_model_needs_weights():
    model = _user_model()
    with pytest.raises(ConfigError, match="input_size"):
        SaliencyNet(model)
    with pytest.raises(ConfigError, match="does not run"):
        SaliencyNet(model, input_size=(3, 64, 64))  # the model takes 1 channel
    with pytest.raises(ConfigError, match="weights="):
        RTS(model)
    with pytest.raises(ConfigError, match="no layer"):
        SaliencyNet(model, input_size=(1, 64, 64), feature_layer="nope")
    with pytest.raises(ConfigError, match="feature map"):
        SaliencyNet(model, input_size=(1, 64, 64), feature_layer="fc")


def _tiny_data(n=20, size=(1, 64, 64), classes=3, labeled=True):
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(n, *size, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g) if labeled else torch.full((n,), -1)
    return Dataset("tiny", "train", images, labels, [str(c) for c in range(classes)])


def test_train_rts_on_a_tiny_user_model_saves_weights_that_load_back(tmp_path):
    model = _user_model()
    data = _tiny_data()
    path = tmp_path / "rts-user.safetensors"
    info = train_rts(model, data, epochs=1, batch_size=4, n_eval=4, out=path, progress=False)
    # 20 images, a hold-out of min(n_eval, 20%) = 4, so 16 to train on: 4 steps of 4
    assert info["steps"] == 4 and info["quality"]["n"] == 4
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["config"]["input_size"] == [1, 64, 64] and card["sha256"] == info["sha256"]
    loaded = load_saliency_net(model, path)  # no card: the file's metadata says everything
    torch.manual_seed(0)
    fresh = SaliencyNet(model, input_size=(1, 64, 64))
    trained = loaded.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.state_dict().items()
               if v.is_floating_point())  # the training steps changed the weights
    # the loaded net reproduces the quality figures measured on the net that was trained
    hold = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:4]
    assert rts_quality(loaded, model, data, indices=hold) == info["quality"]
    x = torch.rand(3, 1, 64, 64)
    a, b = RTS(model, weights=path)(x, 1), RTS(model, weights=str(path))(x, 1)
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b)


def test_unlabeled_images_train_on_the_prediction(tmp_path):
    model = _user_model()
    info = train_rts(model, _tiny_data(labeled=False), epochs=1, batch_size=8, n_eval=4,
                     out=tmp_path / "r.safetensors", progress=False)
    assert info["steps"] == 2 and info["quality"]["clean_accuracy"] == 1.0  # label = prediction


def test_train_rts_refuses_bad_input_before_any_work(tmp_path):
    model = _user_model()
    with pytest.raises(ConfigError, match="out="):
        train_rts(model, _tiny_data())
    with pytest.raises(ConfigError, match="ImageNet"):
        train_rts("torchvision:resnet50")
    with pytest.raises(ConfigError, match="labels up to 4"):
        train_rts(model, _tiny_data(classes=5), out=tmp_path / "r.safetensors")
    with pytest.raises(ConfigError, match="positive"):
        train_rts(model, _tiny_data(), epochs=0, out=tmp_path / "r.safetensors")


def test_cli_refuses_imagenet_training_clearly(capsys):
    from idlsec.cli import main

    assert main(["train-rts", "--model", "torchvision:resnet50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "ImageNet" in err and "folder:DIR" in err


def test_an_imagenet_model_without_packaged_rts_says_why():
    pytest.importorskip("torchvision")
    from idlsec.models import load_model

    model = load_model("torchvision:resnet50", weights="random")
    with pytest.raises(ResourceError, match="ImageNet"):
        RTS(model)


def test_cli_trains_a_user_model_file_on_an_image_folder(tmp_path, capsys):
    """End to end with the model-spec grammar and image folders (branches `models`, `data`)."""
    pytest.importorskip("idlsec.models.spec")
    from idlsec.data import load_dataset

    if "size" not in inspect.signature(load_dataset).parameters:
        pytest.skip("image folders without --size support")
    from PIL import Image

    from idlsec.cli import main

    (tmp_path / "my_model.py").write_text(inspect.getsource(UserCNN).join([
        "import torch\nfrom torch import nn\n\n\n",
        "\n\ndef build():\n    torch.manual_seed(0)\n    return UserCNN(1, 2)\n"]))
    g = torch.Generator().manual_seed(0)
    for cls in ("0", "1"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):  # RGB 40x50 files: converted to the model's 1x64x64
            px = (torch.rand(40, 50, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(px).save(tmp_path / "imgs" / cls / f"{i}.png")
    out = tmp_path / "rts.safetensors"
    rc = main(["train-rts", "--model", f"{tmp_path / 'my_model.py'}:build", "--weights", "random",
               "--input-size", "1,64,64", "--num-classes", "2", "--dataset",
               f"folder:{tmp_path / 'imgs'}", "--epochs", "1", "--batch-size", "5",
               "--n-eval", "2", "--out", str(out), "--threads", "1", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    info = json.loads(capsys.readouterr().out)
    assert info["steps"] == 2 and info["quality"]["n"] == 2 and out.is_file()


@pytest.mark.parametrize("name, dataset, kept", [("fmnist-cnn", "fashion-mnist", 0.6),
                                                 ("cifar10-vgg", "cifar10", 0.75)])
def test_packaged_rts_of_the_zoo_cnns_is_verified_and_masks_the_object(name, dataset, kept):
    """The CPU-trained masking models shipped for fmnist-cnn and cifar10-vgg (issue 14): found,
    SHA-256 checked, and on 64 held-out test images (another seed than their card's 1000) the
    classifier still recognises most images from the masked region alone, with a small mask."""
    from idlsec.data import load_dataset
    from idlsec.interpreters.rts import rts_weights_path
    from idlsec.models import load_model

    card = json.loads(rts_weights_path(name).with_suffix(".json").read_text())
    assert card["model"] == name and card["device"] == "cpu" and card["command"].startswith(
        f"idlsec train-rts --model {name}")
    model = load_model(name)
    rts = RTS(model)  # the packaged file, after its SHA-256 check
    try:
        test = load_dataset(dataset, "test")
    except ResourceError as e:
        pytest.skip(str(e))
    q = rts_quality(rts.net, model, test, n=64, seed=1)
    assert q["mean_mask_area"] < 0.45 and q["accuracy_kept"] > kept
