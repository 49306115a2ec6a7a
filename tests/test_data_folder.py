"""Image folders for real use (issue 14): labels through the model's class names, a CSV or none,
--size, channel conversion, unreadable files, the selection report and --all-images."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from idlsec.data import NO_LABEL, load_dataset, load_image_folder, select_images, selection_message
from idlsec.data import folder as folder_mod
from idlsec.errors import ConfigError, InputError, ResourceError

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def save(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr), mode).save(path)
    return path


def flat(value, h=8, w=8, c=3):
    return np.full((h, w, c) if c > 1 else (h, w), value, np.uint8)


def labels_by_file(ds):
    return {p.name: int(y) for p, y in zip(ds.files, ds.labels)}


def load_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_image_folder(*args, **kwargs)


# --- labels ---------------------------------------------------------------------------------

def test_subfolders_map_through_the_models_class_names(tmp_path):
    save(tmp_path / "CAT" / "c.png", flat(10))                 # case-insensitive name
    save(tmp_path / "Bird" / "deep" / "b.png", flat(20))       # nested inside its class folder
    save(tmp_path / "9" / "t.png", flat(30))                   # an index
    save(tmp_path / "dragon" / "d.png", flat(40))              # not a class
    with pytest.warns(UserWarning, match="'dragon' is not one of the model's 10 classes"):
        ds = load_image_folder(tmp_path, class_names=CIFAR)
    assert labels_by_file(ds) == {"c.png": 3, "b.png": 2, "t.png": 9}
    assert ds.classes == CIFAR and ds.labeled
    assert [p.split("/")[-1] for p in ds.dropped["unknown_class"]] == ["d.png"]


def test_wordnet_ids_underscores_and_ambiguous_names(tmp_path):
    names = [f"class {i}" for i in range(1000)]
    names[5] = "great white shark"
    names[134] = names[517] = "crane"  # ImageNet really has two "crane" classes
    save(tmp_path / "n01440764" / "tench.png", flat(1))        # the first ILSVRC synset
    save(tmp_path / "n01443537" / "goldfish.png", flat(2))
    save(tmp_path / "n15075141" / "tissue.png", flat(3))       # the last one
    save(tmp_path / "Great_White-Shark" / "s.png", flat(4))
    save(tmp_path / "crane" / "c.png", flat(5))
    with pytest.warns(UserWarning, match="'crane' is ambiguous"):
        ds = load_image_folder(tmp_path, class_names=names)
    assert labels_by_file(ds) == {"tench.png": 0, "goldfish.png": 1, "tissue.png": 999, "s.png": 5}


def test_without_class_names_folders_are_sorted_names_or_numbers(tmp_path):
    for name in ("b", "a", "c"):
        save(tmp_path / "named" / name / f"{name}.png", flat(1))
    ds = load_image_folder(tmp_path / "named")
    assert ds.classes == ["a", "b", "c"] and labels_by_file(ds) == {"a.png": 0, "b.png": 1, "c.png": 2}
    for name in ("10", "2", "0"):
        save(tmp_path / "numbered" / name / f"{name}.png", flat(1))
    ds = load_image_folder(tmp_path / "numbered")
    assert labels_by_file(ds) == {"0.png": 0, "2.png": 2, "10.png": 10}  # not string order
    assert len(ds.classes) == 11


def test_no_class_matches_is_one_clear_error(tmp_path):
    save(tmp_path / "dogs" / "1.png", flat(1))
    save(tmp_path / "cats" / "2.png", flat(1))
    with pytest.raises(ConfigError, match="none of the labels .* is a class of the model.*"
                                          "--image-labels none"):
        load_image_folder(tmp_path, class_names=CIFAR)
    loose = tmp_path / "loose"
    save(loose / "x.png", flat(1))
    with pytest.raises(ConfigError, match="no class sub-folders.*--image-labels none"):
        load_image_folder(loose)
    with pytest.raises(ResourceError, match="does not exist"):
        load_image_folder(tmp_path / "missing")


def test_csv_labels(tmp_path):
    for i in range(4):
        save(tmp_path / "imgs" / f"{i}.png", flat(10 * i))
    save(tmp_path / "imgs" / "unlisted.png", flat(99))
    (tmp_path / "labels.csv").write_text(
        "file,label\nimgs/0.png,cat\nimgs/1.png, 8 \nimgs/2.png,unicorn\nimgs/gone.png,dog\n"
        "\n# a comment\nimgs/3.png,Truck\n")
    with pytest.warns(UserWarning):
        ds = load_image_folder(tmp_path, image_labels=str(tmp_path / "labels.csv"),
                               class_names=CIFAR)
    assert labels_by_file(ds) == {"0.png": 3, "1.png": 8, "3.png": 9}
    assert len(ds.dropped["unknown_class"]) == 1 and "no such file" in ds.dropped["unreadable"][0]
    (tmp_path / "bad.csv").write_text("imgs/0.png\n")
    with pytest.raises(ConfigError, match="expected 'file,label'"):
        load_image_folder(tmp_path, image_labels=str(tmp_path / "bad.csv"))
    with pytest.raises(ConfigError, match="no such file"):
        load_image_folder(tmp_path, image_labels=str(tmp_path / "nope.csv"))


def test_unlabeled_folder_takes_the_models_prediction(tmp_path, tiny_model):
    rng = np.random.default_rng(0)
    for i in range(6):
        save(tmp_path / "sub" / f"{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    ds = load_image_folder(tmp_path, image_labels="none")
    assert not ds.labeled and (ds.labels == NO_LABEL).all() and len(ds) == 6
    with pytest.raises(ConfigError, match="no labels.*a model is needed"):
        select_images(ds, 2, seed=0)
    sel = select_images(ds, 6, seed=0, model=tiny_model)
    with torch.no_grad():
        assert torch.equal(sel.y, tiny_model(sel.x).argmax(1))
    assert (sel.targets != sel.y).all() and sel.targets.max() < 10
    assert sel.report["labels"] == "predictions" and sel.report["misclassified"] == 0
    assert "labels are the model's predictions" in selection_message(sel.report)


# --- sizes, channels, unreadable files --------------------------------------------------------

def test_mixed_sizes_need_size_and_resize_keeps_flat_colours(tmp_path):
    save(tmp_path / "a" / "small.png", flat((10, 200, 30), 8, 8))
    save(tmp_path / "a" / "wide.png", flat((50, 60, 70), 20, 40))
    save(tmp_path / "b" / "jpeg.jpg", flat((120, 120, 120), 64, 48))
    with pytest.raises(InputError, match=r"3 different sizes.*--size H,W"):
        load_image_folder(tmp_path)
    ds = load_image_folder(tmp_path, size=(12, 16))
    x, _ = ds.get()
    assert x.shape == (3, 3, 12, 16) and x.dtype == torch.float32
    by_name = dict(zip([p.name for p in ds.files], x))
    for name, rgb, tol in (("small.png", (10, 200, 30), 0), ("wide.png", (50, 60, 70), 0),
                           ("jpeg.jpg", (120, 120, 120), 2)):
        want = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255
        assert (by_name[name] - want).abs().max() <= tol / 255 + 1e-6, name


def test_channels_from_any_mode(tmp_path):
    save(tmp_path / "c" / "gray.png", flat(77, c=1), "L")
    save(tmp_path / "c" / "rgba.png", np.dstack([flat((200, 100, 50)), flat(10, c=1)]), "RGBA")
    pal = Image.new("P", (8, 8))
    pal.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
    pal.paste(1, (0, 0, 8, 8))
    pal.save(tmp_path / "c" / "palette.png")
    Image.fromarray(np.full((8, 8), 257 * 100, np.uint16)).save(tmp_path / "c" / "deep.png")
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(tmp_path / "c" / "cmyk.tif")  # magenta
    ds = load_image_folder(tmp_path)
    assert ds.channels == 3  # mixed modes -> RGB
    x = dict(zip([p.name for p in ds.files], ds.get()[0] * 255))
    assert torch.allclose(x["gray.png"], torch.full((3, 8, 8), 77.0))
    assert torch.allclose(x["rgba.png"][:, 0, 0], torch.tensor([200.0, 100, 50]))  # alpha dropped
    assert torch.allclose(x["palette.png"][:, 0, 0], torch.tensor([30.0, 60, 90]))
    assert torch.allclose(x["deep.png"], torch.full((3, 8, 8), 100.0))  # 16-bit scaled to 8
    assert torch.allclose(x["cmyk.tif"][:, 0, 0], torch.tensor([255.0, 0, 255]))
    gray = load_image_folder(tmp_path, channels=1)
    x1 = dict(zip([p.name for p in gray.files], gray.get()[0] * 255))
    assert x1["rgba.png"].shape == (1, 8, 8)
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert abs(float(x1["rgba.png"][0, 0, 0]) - luma) <= 1
    for f in ("rgba.png", "palette.png", "cmyk.tif"):
        (tmp_path / "c" / f).unlink()
    assert load_image_folder(tmp_path).channels == 1  # every image grayscale -> 1 channel
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        load_image_folder(tmp_path, channels=4)


def test_unreadable_files_are_reported_not_fatal(tmp_path, tiny_model):
    for i in range(3):
        save(tmp_path / "cat" / f"{i}.png", flat(40 * i, 32, 32))
    (tmp_path / "cat" / "junk.png").write_bytes(b"not an image")
    good = (tmp_path / "cat" / "0.png").read_bytes()
    (tmp_path / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])  # header is fine
    with pytest.warns(UserWarning, match="1 unreadable files left out.*junk.png"):
        ds = load_image_folder(tmp_path, class_names=CIFAR)
    assert len(ds) == 4  # the truncated one passes the header scan
    i_trunc = [p.name for p in ds.files].index("truncated.png")
    with pytest.raises(InputError, match="truncated.png"):
        ds.get([i_trunc])
    sel = select_images(ds, 3, seed=0, model=tiny_model, correct_only=False)
    assert sel.report["unreadable"] == 2 and len(sel.indices) == 3
    assert i_trunc not in sel.indices.tolist()
    assert "2 unreadable" in selection_message(sel.report)
    with pytest.raises(ConfigError, match=r"only 3 of 5 images .*\(2 unreadable\).*junk.png"):
        select_images(ds, 4, seed=0, model=tiny_model, correct_only=False)


def test_decompression_bombs_and_huge_images_are_refused(tmp_path, monkeypatch):
    save(tmp_path / "a" / "big.png", flat(5, 40, 40))
    save(tmp_path / "a" / "ok.png", flat(5, 20, 20))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 = 1600 px is a "bomb" now
    with pytest.warns(UserWarning, match="big.png.*decompression bomb"):
        ds = load_image_folder(tmp_path)
    assert [p.name for p in ds.files] == ["ok.png"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**8)
    monkeypatch.setattr(folder_mod, "MAX_SIDE", 30)
    with pytest.raises(InputError, match="over 30 px a side; pass size"):
        load_image_folder(tmp_path)
    assert load_image_folder(tmp_path, size=(16, 16)).get()[0].shape == (2, 3, 16, 16)


def test_pixels_are_decoded_only_for_examined_images(tmp_path, monkeypatch, tiny_model):
    for i in range(30):
        save(tmp_path / "cat" / f"{i:02d}.png", flat(i, 32, 32))
    ds = load_image_folder(tmp_path, class_names=CIFAR)
    calls = []
    real = folder_mod._decode
    monkeypatch.setattr(folder_mod, "_decode", lambda *a: calls.append(a[0]) or real(*a))
    sel = select_images(ds, 4, seed=1, model=tiny_model, correct_only=False)
    assert len(calls) == 4 and {p.name for p in calls} == {ds.files[i].name for i in sel.indices}


# --- selection report, --all-images, a grayscale folder through a 3-channel model -----------

def _folder_with_known_accuracy(tmp_path, model, n_right, n_wrong, n_unknown):
    """Random images saved into the folder of the model's prediction (right) or the next class
    (wrong), plus images in a folder that is not a class; PNG is lossless so the model sees the
    same pixels when the folder is loaded."""
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 256, (n_right + n_wrong, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        pred = model(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255).argmax(1)
    for i, p in enumerate(pred.tolist()):
        save(tmp_path / CIFAR[p if i < n_right else (p + 1) % 10] / f"{i}.png", imgs[i])
    for i in range(n_unknown):
        save(tmp_path / "dragon" / f"u{i}.png", imgs[0])


def test_report_counts_and_all_images(tmp_path, tiny_model):
    _folder_with_known_accuracy(tmp_path, tiny_model, n_right=5, n_wrong=30, n_unknown=2)
    with pytest.warns(UserWarning):
        ds = load_dataset(f"folder:{tmp_path}", class_names=CIFAR)
    sel = select_images(ds, 4, seed=0, model=tiny_model)  # correct_only by default with a model
    with torch.no_grad():
        assert torch.equal(tiny_model(sel.x).argmax(1), sel.y)
    r = sel.report
    assert (r["candidates"], r["selected"], r["qualified"]) == (37, 4, 5)
    assert (r["misclassified"], r["unknown_class"], r["unreadable"]) == (30, 2, 0)
    assert selection_message(r) == ("5 of 37 images qualified, 4 selected: 30 misclassified, "
                                    "2 with labels outside the model's classes")
    with pytest.raises(ConfigError, match=r"only 5 of 37 images .* qualify, 8 asked \(30 "
                                          r"misclassified.*--all-images"):
        select_images(ds, 8, seed=0, model=tiny_model)
    with pytest.warns(UserWarning, match="proceeding with fewer"):
        assert len(select_images(ds, 8, seed=0, model=tiny_model, allow_fewer=True).y) == 5
    every = select_images(ds, 35, seed=0, model=tiny_model, correct_only=False)  # --all-images
    assert len(every.y) == 35 and every.report["kept_misclassified"] == 30
    assert "30 of the 35 selected are misclassified" in selection_message(every.report)
    assert (every.targets != every.y).all() and every.targets.max() < 10


def test_labels_beyond_the_models_classes_are_dropped(tmp_path, tiny_model):
    for i in (3, 12):  # numbered folders without class names: 12 is not among 10 logits
        save(tmp_path / str(i) / "a.png", flat(i, 32, 32))
    ds = load_image_folder(tmp_path)
    sel = select_images(ds, 1, seed=0, model=tiny_model, correct_only=False)
    assert sel.y.tolist() == [3] and sel.report["unknown_class"] == 1


def test_grayscale_folder_through_a_three_channel_model(tmp_path, tiny_model):
    from idlsec.interpreters import CAM

    rng = np.random.default_rng(0)
    for i in range(3):
        save(tmp_path / "bird" / f"{i}.png", rng.integers(0, 256, (32, 32), dtype=np.uint8), "L")
    ds = load_image_folder(tmp_path, class_names=CIFAR)
    assert ds.channels == 1
    sel = select_images(ds, 3, seed=0, model=tiny_model, correct_only=False)
    assert sel.x.shape == (3, 3, 32, 32)
    assert torch.equal(sel.x[:, 0], sel.x[:, 1]) and torch.equal(sel.x[:, 0], sel.x[:, 2])
    x1, _ = ds.get(sel.indices)
    assert torch.equal(sel.x[:, :1], x1)
    maps = CAM(tiny_model)(sel.x, sel.targets)
    assert maps.shape == (3, 1, 8, 8) and torch.isfinite(maps).all()


def test_grayscale_model_on_an_rgb_folder(tmp_path, tiny_fmnist_model):
    save(tmp_path / "shirt" / "a.png", flat((200, 100, 50), 28, 28))
    ds = load_image_folder(tmp_path)
    sel = select_images(ds, 1, seed=0, model=tiny_fmnist_model, correct_only=False)
    luma = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    assert sel.x.shape == (1, 1, 28, 28) and abs(float(sel.x.mean()) - luma) < 1e-5


def test_builtin_datasets_refuse_folder_options(cifar_test):
    with pytest.raises(ConfigError, match="folder:DIR"):
        load_dataset("cifar10", image_labels="none")
    with pytest.raises(ConfigError, match="resizes folder:DIR datasets only"):
        load_dataset("cifar10", size=(64, 64))
    assert load_dataset("cifar10", size=(32, 32)).images.shape[1:] == (3, 32, 32)
    gray = load_dataset("cifar10", channels=1)
    assert gray.images.shape == (10_000, 1, 32, 32) and gray.images.dtype == torch.uint8
    want = (cifar_test.images[:5].float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))
    assert (gray.images[:5].float() - want.sum(1, keepdim=True)).abs().max() <= 0.5 + 1e-4
