import pickle

import numpy as np
import pytest
import torch

from clnscl.config import ConfigError, TrainConfig
from clnscl.data import ImageData, choose_classes, load_data
from clnscl.data import synthetic as syn
from clnscl.data.torchvision_sets import CIFAR_STATS, IMAGENET_MEAN


# --- tiny CIFAR files in CIFAR's own pickle format -------------------------------------------
def _dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _write_cifar10(root, per_batch=20, n_test=30, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    xs, ys = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        _dump(folder / f"data_batch_{b}", {"batch_label": f"batch {b}", "labels": y, "data": x,
                                           "filenames": [f"{i}.png" for i in range(per_batch)]})
        xs.append(x)
        ys += y
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 10, n_test)]
    _dump(folder / "test_batch", {"batch_label": "test", "labels": yt, "data": xt})
    names = [f"c10_{i}" for i in range(10)]
    _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch,
                                    "num_vis": 3072})
    return np.concatenate(xs), np.array(ys), xt, np.array(yt), names


def _write_cifar100(root, n_train=300, n_test=100, seed=1):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    x = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, 100, n_train)]
    _dump(folder / "train", {"data": x, "fine_labels": y, "coarse_labels": [v // 5 for v in y]})
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 100, n_test)]
    _dump(folder / "test", {"data": xt, "fine_labels": yt, "coarse_labels": [v // 5 for v in yt]})
    names = [f"c100_{i}" for i in range(100)]
    _dump(folder / "meta", {"fine_label_names": names,
                            "coarse_label_names": [f"s{i}" for i in range(20)]})
    return x, np.array(y), xt, np.array(yt), names


def _expected(x, y, class_ids):
    keep = np.isin(y, class_ids)
    imgs = torch.from_numpy(x[keep].reshape(-1, 3, 32, 32))
    labels = torch.tensor([class_ids.index(int(v)) for v in y[keep]])
    return imgs, labels


@pytest.mark.parametrize("name,writer,C", [("cifar10", _write_cifar10, 4),
                                           ("cifar100", _write_cifar100, 30)])
def test_cifar_subset_through_torchvision(tmp_path, name, writer, C):
    x, y, xt, yt, names = writer(tmp_path)
    cfg = TrainConfig(dataset=name, data_root=str(tmp_path), n_classes=C, batch_size=C, seed=3)
    d = load_data(cfg, verify_checksums=False)
    assert isinstance(d, ImageData) and d.name == name and d.num_classes == C
    assert d.class_ids == choose_classes(len(names), C, 3)
    assert d.class_names == [names[c] for c in d.class_ids]
    ex, ey = _expected(x, y, d.class_ids)  # every image of the chosen classes, in order
    assert torch.equal(d.train_x, ex) and torch.equal(d.train_y, ey)
    ex, ey = _expected(xt, yt, d.class_ids)
    assert torch.equal(d.test_x, ex) and torch.equal(d.test_y, ey)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.train_y.min() >= 0 and d.train_y.max() == C - 1
    assert (d.mean, d.std) == CIFAR_STATS[name]
    # the class seed picks the classes
    d2 = load_data(cfg.replace(class_seed=4), verify_checksums=False)
    assert d2.class_ids == choose_classes(len(names), C, 4) != d.class_ids


def test_cifar_checksums_verified_by_default(tmp_path):
    _write_cifar10(tmp_path)
    cfg = TrainConfig(dataset="cifar10", data_root=str(tmp_path), n_classes=2, batch_size=2)
    with pytest.raises(RuntimeError, match="integrity"):
        load_data(cfg)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_files_message(tmp_path, name):
    root = tmp_path / "nothing_here"
    cfg = TrainConfig(dataset=name, data_root=str(root), n_classes=2, batch_size=2)
    with pytest.raises(FileNotFoundError) as e:
        load_data(cfg, verify_checksums=False)
    msg = str(e.value)
    assert str(root) in msg and "--download" in msg and "download: true" in msg
    assert not root.exists()  # nothing was created or fetched


def test_batch_size_larger_than_subset(tmp_path):
    _write_cifar10(tmp_path, per_batch=4, n_test=4)
    cfg = TrainConfig(dataset="cifar10", data_root=str(tmp_path), n_classes=2, batch_size=64)
    with pytest.raises(ValueError, match="batch_size=64"):
        load_data(cfg, verify_checksums=False)


def test_choose_classes():
    a = choose_classes(100, 10, 0)
    assert a == choose_classes(100, 10, 0) and a == sorted(a) and len(set(a)) == 10
    assert all(0 <= c < 100 for c in a)
    assert set(choose_classes(100, 4, 0)) <= set(choose_classes(100, 8, 0))  # nested
    assert len({tuple(choose_classes(100, 10, s)) for s in range(5)}) == 5
    assert choose_classes(10, 10, 7) == list(range(10))
    with pytest.raises(ValueError, match="n_classes"):
        choose_classes(10, 11, 0)


# --- image folders -----------------------------------------------------------------------
def _png(path, rgb, size=12):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), tuple(int(v) for v in rgb)).save(path)


COLOURS = {"apple": (200, 10, 10), "bird": (10, 200, 10), "cat": (10, 10, 200),
           "dog": (120, 120, 0)}


def _colour_label_check(x, y, names):
    for img, lab in zip(x, y):
        assert tuple(img[:, 0, 0].tolist()) == COLOURS[names[int(lab)]]


def test_image_folder_train_val(tmp_path):
    for cls, rgb in COLOURS.items():
        for i in range(3):
            _png(tmp_path / "train" / cls / f"{i}.png", rgb)
        _png(tmp_path / "val" / cls / "sub" / "v.png", rgb)  # nested files are found
    cfg = TrainConfig(dataset="imagefolder", data_root=str(tmp_path), n_classes=3, batch_size=3,
                      image_size=8, seed=1)
    d = load_data(cfg)
    assert d.class_ids == choose_classes(4, 3, 1)
    assert d.class_names == [sorted(COLOURS)[c] for c in d.class_ids]
    assert d.train_x.shape == (9, 3, 8, 8) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (3, 3, 8, 8)
    assert sorted(d.train_y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    _colour_label_check(d.train_x, d.train_y, d.class_names)
    _colour_label_check(d.test_x, d.test_y, d.class_names)
    assert d.mean == IMAGENET_MEAN
    with pytest.raises(ValueError, match=r"n_classes=5: allowed 2\.\.4"):
        load_data(cfg.replace(n_classes=5, batch_size=5))


def test_tiny_imagenet_layout(tmp_path):
    root = tmp_path / "tiny"
    wnids = ["n01", "n02", "n03"]
    lines = []
    for j, (w, rgb) in enumerate(zip(wnids, COLOURS.values())):
        for i in range(2):
            _png(root / "train" / w / "images" / f"{w}_{i}.png", rgb)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        _png(root / "val" / "images" / f"val_{j}.png", rgb)
        lines.append(f"val_{j}.png\t{w}\t0\t0\t5\t5")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _png(root / "test" / "images" / "test_0.png", (0, 0, 0))  # unlabelled, ignored
    cfg = TrainConfig(dataset="tinyimagenet", data_root=str(root), n_classes=3, batch_size=3,
                      image_size=8)
    d = load_data(cfg)
    assert d.class_names == wnids and len(d.train_x) == 6 and len(d.test_x) == 3
    colour = dict(zip(wnids, COLOURS.values()))
    for img, lab in zip(torch.cat([d.train_x, d.test_x]), torch.cat([d.train_y, d.test_y])):
        assert tuple(img[:, 0, 0].tolist()) == colour[d.class_names[int(lab)]]


def test_flat_folder_holds_out_a_seeded_test_split(tmp_path):
    for cls, rgb in list(COLOURS.items())[:2]:
        for i in range(12):
            _png(tmp_path / cls / f"{i}.png", rgb)
    cfg = TrainConfig(dataset="imagefolder", data_root=str(tmp_path), n_classes=2, batch_size=2,
                      image_size=8)
    d = load_data(cfg)
    assert len(d.train_x) == 20 and len(d.test_x) == 4
    assert sorted(d.test_y.tolist()) == [0, 0, 1, 1]
    _colour_label_check(d.test_x, d.test_y, d.class_names)


def test_folder_errors(tmp_path):
    cfg = TrainConfig(dataset="imagefolder", data_root=str(tmp_path / "missing"), n_classes=2,
                      batch_size=2, image_size=8)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_data(cfg)
    for cls, rgb in list(COLOURS.items())[:2]:  # few-shot style: val has other classes
        _png(tmp_path / "fs" / "train" / cls / "0.png", rgb)
    _png(tmp_path / "fs" / "val" / "apple" / "0.png", COLOURS["apple"])
    with pytest.raises(ValueError, match="bird"):
        load_data(cfg.replace(data_root=str(tmp_path / "fs")))


# --- synthetic data ------------------------------------------------------------------------
def test_synthetic_deterministic_and_seeded():
    x1, y1 = syn.make_synthetic(6, n_classes=12, image_size=16, seed=0)
    x2, y2 = syn.make_synthetic(6, n_classes=12, image_size=16, seed=0)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = syn.make_synthetic(6, n_classes=12, image_size=16, seed=1)
    xt, _ = syn.make_synthetic(6, n_classes=12, image_size=16, seed=0, split="test")
    assert not torch.equal(x1, x3) and not torch.equal(x1, xt)
    # a class's images do not depend on which other classes are generated
    xs, ys = syn.make_synthetic(6, image_size=16, seed=0, classes=[11, 3])
    assert torch.equal(xs[:6], x1[66:72]) and torch.equal(xs[6:], x1[18:24])
    assert ys.tolist() == [11] * 6 + [3] * 6
    # and not on the number of CPU threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert torch.equal(syn.make_synthetic(6, n_classes=12, image_size=16, seed=0)[0], x1)
    finally:
        torch.set_num_threads(threads)


def test_synthetic_shape_dtype_balance_and_range():
    x, y = syn.make_synthetic(3, image_size=32)
    assert x.shape == (300, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(torch.bincount(y), torch.full((100,), 3))
    xf = x.float() / 255
    assert 0.4 < xf.mean() < 0.6 and xf.std() > 0.08
    assert (xf.flatten(1).std(1) > 0.02).all()  # no blank images
    assert len({x[i].numpy().tobytes() for i in range(len(x))}) == len(x)
    assert syn.class_name(7) == "tex07" and syn.class_spec(7)["family"] == "sine"
    assert syn.make_synthetic(2, n_classes=3, image_size=64)[0].shape == (6, 3, 64, 64)


def test_synthetic_class_is_structure_not_pixels():
    """Raw pixels' nearest class centre is near chance; a translation-invariant amplitude
    spectrum finds the class: the label lives in texture, not in pixel positions."""
    classes = [5, 16, 20, 36, 52, 72, 82, 90, 93, 94]
    xtr, ytr = syn.make_synthetic(60, classes=classes)
    xte, yte = syn.make_synthetic(30, classes=classes, split="test")

    def ncc(f_tr, f_te):
        cent = torch.stack([f_tr[ytr == c].mean(0) for c in classes])
        pred = torch.tensor(classes)[torch.cdist(f_te, cent).argmin(1)]
        return (pred == yte).float().mean().item()

    def spectrum(x):
        g = (x.float() / 255).mean(1)
        g = g - g.mean((1, 2), keepdim=True)
        return torch.log1p(torch.fft.fft2(g).abs()).flatten(1)

    raw = ncc(xtr.float().flatten(1), xte.float().flatten(1))
    spec = ncc(spectrum(xtr), spectrum(xte))
    assert raw < 0.25 and spec > 0.5, (raw, spec)


def test_load_synthetic_subset():
    cfg = TrainConfig(n_classes=5, batch_size=8, synthetic_train_per_class=10,
                      synthetic_test_per_class=4, image_size=16, seed=2)
    d = load_data(cfg)
    assert d.name == "synthetic" and d.class_ids == choose_classes(100, 5, 2)
    assert d.class_names == [f"tex{c:02d}" for c in d.class_ids]
    assert d.train_x.shape == (50, 3, 16, 16) and d.test_x.shape == (20, 3, 16, 16)
    assert torch.equal(torch.bincount(d.train_y), torch.full((5,), 10))
    x, _ = syn.make_synthetic(10, image_size=16, classes=d.class_ids)
    assert torch.equal(d.train_x, x)  # the trial seed chooses classes, not the images
    assert d.mean == syn.SYNTHETIC_MEAN and d.std == syn.SYNTHETIC_STD
    with pytest.raises(ConfigError, match="batch_size"):
        load_data(cfg.replace(batch_size=51))
