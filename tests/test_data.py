import os

import numpy as np
import pytest
import torch
from PIL import Image

from idlsec.data import load_dataset, load_image_folder, select_images
from idlsec.data.resolve import Remote, resolve
from idlsec.errors import ChecksumError, ConfigError, InputError, ResourceError


def test_cifar10_test_split(cifar_test):
    assert len(cifar_test) == 10_000
    assert cifar_test.images.dtype == torch.uint8 and cifar_test.images.shape[1:] == (3, 32, 32)
    assert torch.bincount(cifar_test.labels).tolist() == [1000] * 10
    x, y = cifar_test.get([0, 5, 9999])
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.dtype == torch.int64
    assert cifar_test.class_index("cat") == 3 and cifar_test.class_index("3") == 3
    with pytest.raises(ConfigError, match="valid: airplane"):
        cifar_test.class_index("dragon")
    with pytest.raises(InputError, match="out of range"):
        cifar_test.get([10_000])


def test_sample_is_seeded_random_not_the_first_images(cifar_test):
    idx = cifar_test.sample(500)
    assert torch.equal(idx, cifar_test.sample(500)) and len(set(idx.tolist())) == 500
    assert len(torch.unique(cifar_test.labels[idx])) == 10  # the split is stored by class
    assert torch.equal(cifar_test.sample(20_000), torch.arange(10_000))
    for bad in (0, -5, 2.5, True):
        with pytest.raises(InputError, match="positive integer"):
            cifar_test.sample(bad)


def test_fashion_mnist_from_debian_package():
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("dataset-fashion-mnist is not installed")
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 10_000 and ds.images.shape[1:] == (1, 28, 28)
    assert torch.bincount(ds.labels).tolist() == [1000] * 10


def test_selection_is_deterministic_and_targets_differ(cifar_test):
    a = select_images(cifar_test, 16, seed=3)
    b = select_images(cifar_test, 16, seed=3)
    c = select_images(cifar_test, 16, seed=4)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.indices, c.indices)
    assert (a.targets != a.y).all() and a.targets.min() >= 0 and a.targets.max() < 10


def test_selection_draws_are_those_of_earlier_releases(cifar_test, resnet20):
    # pinned from the release before image folders: benchmark runs must select the same images
    a = select_images(cifar_test, 6, seed=3)
    assert a.indices.tolist() == [8986, 1428, 155, 6259, 6332, 2965]
    assert a.targets.tolist() == [3, 6, 3, 2, 4, 9]
    b = select_images(cifar_test, 6, seed=1, model=resnet20, correct_only=True)
    assert b.indices.tolist() == [5845, 4470, 9002, 5321, 1463, 5598]
    assert b.targets.tolist() == [1, 3, 2, 7, 4, 8]


def test_selection_correct_only(cifar_test, resnet20):
    sel = select_images(cifar_test, 32, seed=0, model=resnet20, correct_only=True)
    with torch.no_grad():
        assert torch.equal(resnet20(sel.x).argmax(1), sel.y)
    with pytest.raises(ConfigError, match="needs a model"):
        select_images(cifar_test, 4, correct_only=True)
    with pytest.raises(ConfigError, match="positive integer"):
        select_images(cifar_test, 0)


def test_image_folder(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path)
    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.images.shape == (4, 3, 8, 8)
    (tmp_path / "b" / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="1 unreadable files left out.*broken.png"):
        assert len(load_image_folder(tmp_path)) == 4  # reported, not fatal
    with pytest.raises(ResourceError, match="does not exist"):
        load_image_folder(tmp_path / "missing")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError, match="valid: cifar10, fashion-mnist"):
        load_dataset("imagenet-21k")
    with pytest.raises(ConfigError, match="unknown split"):
        load_dataset("cifar10", "validation")


def test_resolve_order_and_checksum(tmp_path, monkeypatch):
    payload = b"weights"
    import hashlib

    remote = Remote("w.bin", "models/x/w.bin", hashlib.sha256(payload).hexdigest(), url="http://example.invalid/w.bin")
    monkeypatch.setenv("IDLSEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IDLSEC_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(ResourceError, match="downloads are disabled"):
        resolve(remote)
    (tmp_path / "mirror/models/x").mkdir(parents=True)
    (tmp_path / "mirror/models/x/w.bin").write_bytes(payload)
    assert resolve(remote) == tmp_path / "mirror/models/x/w.bin"
    (tmp_path / "cache/models/x").mkdir(parents=True)
    (tmp_path / "cache/models/x/w.bin").write_bytes(payload)
    assert resolve(remote) == tmp_path / "cache/models/x/w.bin"  # the cache wins over the mirror
    explicit = tmp_path / "explicit.bin"
    explicit.write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="sha256"):
        resolve(remote, explicit)


@pytest.mark.parametrize("target", ["label", "pred"])
def test_explain_target_label_writes_the_labels(tmp_path, resnet20, target):
    # regression: on CPU `--target label` made `targets` the very tensor `labels`, and safetensors
    # refused to save "tensors that share memory"
    from safetensors.torch import load_file

    from idlsec.cli import main

    out = tmp_path / "e"
    assert main(["explain", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter",
                 "cam", "--n", "3", "--target", target, "--out", str(out), "--device", "cpu"]) == 0
    saved = load_file(str(out / "maps.safetensors"))
    if target == "label":
        assert torch.equal(saved["targets"], saved["labels"])
    else:
        with torch.no_grad():
            assert torch.equal(saved["targets"], resnet20(saved["images"]).argmax(1))
