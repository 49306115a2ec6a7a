"""The validation split: a fixed subset of the training images, never a test image."""

import pytest
import torch

from idlsec.data import VAL_SIZE, load_dataset, validation_indices
from idlsec.errors import ConfigError


def test_validation_indices_are_fixed_distinct_and_in_range():
    a, b = validation_indices(50_000), validation_indices(50_000)
    assert torch.equal(a, b)
    assert a.numel() == VAL_SIZE == a.unique().numel()
    assert int(a.min()) >= 0 and int(a.max()) < 50_000
    with pytest.raises(ConfigError):
        validation_indices(10, size=11)


def test_val_split_is_training_images_and_never_a_test_image():
    val, train = load_dataset("fashion-mnist", "val"), load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    idx = validation_indices(len(train))
    assert val.split == "val" and torch.equal(val.images, train.images[idx])
    assert torch.equal(val.labels, train.labels[idx])
    # no validation image is byte-identical to a test image (hash rows, compare as sets)
    def keys(images):
        flat = images.reshape(images.shape[0], -1).long()
        w = torch.randint(1, 2**31 - 1, (flat.shape[1],), generator=torch.Generator().manual_seed(1))
        return set((flat * w).sum(1).tolist())
    assert not keys(val.images) & keys(test.images)


def test_unknown_split_is_refused():
    with pytest.raises(ConfigError, match="split"):
        load_dataset("cifar10", "validation")
