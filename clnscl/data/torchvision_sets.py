"""CIFAR-10/100 through torchvision, and class-folder image sets decoded once at load.

CIFAR: torchvision's ``CIFAR10``/``CIFAR100`` read the python pickles (their ``.data`` uint8
NHWC array and ``.targets``); we convert to uint8 NCHW tensors. Missing files raise a
``FileNotFoundError`` naming the root and the ``--download`` flag before torchvision is
asked (torchvision would only say "Dataset not found or corrupted").

Image folders (``tinyimagenet``, ``miniimagenet``, ``imagefolder``): class discovery by
``torchvision.datasets.ImageFolder``; only the images of the chosen classes are decoded
(PIL, once, at load time, in a thread pool) and resized to ``image_size`` into one uint8
tensor. Supported layouts under ``root``:

* ``train/<class>/**/<image>`` with ``val/<class>/...`` or ``test/<class>/...`` (the first
  of val, test whose class folders match the training classes is the test split);
* Tiny-ImageNet: ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` labelled by
  ``val/val_annotations.txt`` (file name, wnid, box);
* ``train/<class>/...`` alone, or ``<class>/...`` directly under ``root``: a seeded 1/6 of
  every class (seed 0, independent of the trial seed) is held out as the test split.

If a test folder exists but lacks some chosen classes (e.g. the few-shot mini-ImageNet
split, whose train/val/test classes are disjoint), loading fails with the missing classes
named, rather than silently changing the split.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder

from clnscl.config import ConfigError

CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# ImageNet constants, used for the ImageNet-derived folder sets and generic folders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ROOTS = {
    "tinyimagenet": "./data/tiny-imagenet-200",
    "miniimagenet": "./data/mini-imagenet",
}
HOLDOUT_FRACTION = 1 / 6
HOLDOUT_SEED = 0


# --- CIFAR ------------------------------------------------------------------------------
def _unchecked(cls):
    """A subclass of a torchvision CIFAR class with its md5 checks switched off (files only
    have to exist); its loading code is torchvision's own."""
    return type(f"Unchecked{cls.__name__}", (cls,), {
        "train_list": [[f, None] for f, _ in cls.train_list],
        "test_list": [[f, None] for f, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


CIFAR_CLASSES = {"cifar10": CIFAR10, "cifar100": CIFAR100}
UNCHECKED_CIFAR_CLASSES = {k: _unchecked(v) for k, v in CIFAR_CLASSES.items()}


def cifar_files(name: str, root) -> list[Path]:
    """The files torchvision's CIFAR class of ``name`` reads under ``root``."""
    cls = CIFAR_CLASSES[name]
    folder = Path(root) / cls.base_folder
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [folder / f for f in names]


def load_cifar(name: str, root, download: bool = False, verify_checksums: bool = True):
    """(train_x, train_y, test_x, test_y, class_names): uint8 NCHW and int64 tensors (CPU)."""
    if name not in CIFAR_CLASSES:
        raise ValueError(f"invalid dataset={name!r}: allowed {', '.join(CIFAR_CLASSES)}")
    root = str(root)
    missing = [p for p in cifar_files(name, root) if not p.is_file()]
    if missing and not download:
        folder = Path(root) / CIFAR_CLASSES[name].base_folder
        raise FileNotFoundError(
            f"{name} files not found under data root {root!r} (missing "
            f"{', '.join(str(p) for p in missing[:3])}{' ...' if len(missing) > 3 else ''}; "
            f"expected the folder {str(folder)!r}). Pass --download (or set download: true "
            f"in the config) to fetch them, or point --data-root/data_root at the folder "
            f"that contains {CIFAR_CLASSES[name].base_folder}/.")
    cls = (CIFAR_CLASSES if verify_checksums else UNCHECKED_CIFAR_CLASSES)[name]
    try:
        tr = cls(root, train=True, download=download)
        te = cls(root, train=False, download=False)
    except RuntimeError as e:
        raise RuntimeError(
            f"{name} files under {root!r} failed torchvision's integrity check ({e}); delete "
            f"{os.path.join(root, cls.base_folder)!r} and load again with --download") from e

    def conv(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    tr_x, tr_y = conv(tr)
    te_x, te_y = conv(te)
    return tr_x, tr_y, te_x, te_y, list(tr.classes)


# --- image folders ------------------------------------------------------------------------
def _decode(path: str, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)  # antialiased when shrinking
        return np.array(im, dtype=np.uint8)  # a writable copy


def decode_images(paths: list[str], size: int, workers: int | None = None) -> torch.Tensor:
    """Decode and resize images once: uint8 (N, 3, size, size)."""
    out = torch.empty(len(paths), size, size, 3, dtype=torch.uint8)
    if not paths:
        return out.permute(0, 3, 1, 2).contiguous()
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
        for i, arr in enumerate(pool.map(lambda p: _decode(p, size), paths, chunksize=64)):
            out[i] = torch.from_numpy(arr)
    return out.permute(0, 3, 1, 2).contiguous()


def _has_class_dirs(d: Path) -> bool:
    return d.is_dir() and any(p.is_dir() for p in d.iterdir())


def _eval_samples(root: Path, class_to_idx: dict[str, int]):
    """[(path, train class index)] of the test split and where it came from, or None."""
    ann = root / "val" / "val_annotations.txt"
    if ann.is_file():  # Tiny-ImageNet
        out = []
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in class_to_idx:
                p = root / "val" / "images" / parts[0]
                if p.is_file():
                    out.append((str(p), class_to_idx[parts[1]]))
        return out, str(ann)
    for sub in ("val", "test"):
        d = root / sub
        if not _has_class_dirs(d):
            continue
        try:
            ds = ImageFolder(str(d))
        except (FileNotFoundError, RuntimeError):
            continue
        if not set(ds.classes) & set(class_to_idx):
            continue  # e.g. Tiny-ImageNet's unlabelled test/images
        out = [(p, class_to_idx[ds.classes[i]]) for p, i in ds.samples
               if ds.classes[i] in class_to_idx]
        return out, str(d)
    return None, None


def load_image_folder(root, image_size: int, n_classes: int, class_seed: int, chooser):
    """(train_x, train_y, test_x, test_y, class_ids, class_names) of ``n_classes`` classes
    chosen by ``chooser(total, n_classes, class_seed)``; labels remapped to 0..C-1."""
    if root is None:
        raise ConfigError("invalid data_root=None: allowed a folder with train/ and val/ "
                          "(or test/) class folders")
    root = Path(root)
    train_dir = root / "train" if (root / "train").is_dir() else root
    if not _has_class_dirs(train_dir):
        raise FileNotFoundError(
            f"no class folders found under data root {str(root)!r}: expected "
            f"{root / 'train'!s}/<class>/<images> with val/<class>/ or test/<class>/ (or "
            f"Tiny-ImageNet's val/images + val_annotations.txt), or <class>/<images> directly "
            f"under the root. These sets are not downloaded automatically; set --data-root.")
    try:
        ds = ImageFolder(str(train_dir))
    except (FileNotFoundError, RuntimeError) as e:
        raise FileNotFoundError(f"no images found in the class folders of {str(train_dir)!r}: "
                                f"{e}") from e
    total = len(ds.classes)
    if n_classes > total:
        raise ConfigError(f"invalid n_classes={n_classes}: allowed 2..{total} (the classes "
                          f"found in {str(train_dir)!r})")
    class_ids = chooser(total, n_classes, class_seed)
    names = [ds.classes[c] for c in class_ids]
    remap = {c: i for i, c in enumerate(class_ids)}
    train = [(p, remap[c]) for p, c in ds.samples if c in remap]

    held = None if train_dir == root else _eval_samples(root, ds.class_to_idx)[0]
    if held is None:  # seeded per-class hold-out
        by_class: dict[int, list[str]] = {}
        for p, y in train:
            by_class.setdefault(y, []).append(p)
        train, test = [], []
        for y in range(len(class_ids)):
            paths = by_class.get(y, [])
            if len(paths) < 2:
                raise ValueError(f"class {names[y]!r} under {str(train_dir)!r} has "
                                 f"{len(paths)} image(s): a hold-out test split needs >= 2")
            rng = np.random.default_rng(np.random.SeedSequence([HOLDOUT_SEED, class_ids[y]]))
            order = rng.permutation(len(paths))
            k = max(1, round(len(paths) * HOLDOUT_FRACTION))
            test += [(paths[i], y) for i in sorted(order[:k])]
            train += [(paths[i], y) for i in sorted(order[k:])]
    else:
        test = [(p, remap[c]) for p, c in held if c in remap]
        present = {y for _, y in test}
        missing = [names[y] for y in range(len(class_ids)) if y not in present]
        if missing:
            raise ValueError(
                f"the test split under {str(root)!r} has no images of the chosen class(es) "
                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}: val/ or test/ "
                f"must hold the training classes (a few-shot split with disjoint classes does "
                f"not); remove val/ and test/ to hold out 1/6 of train instead")

    tr_x = decode_images([p for p, _ in train], image_size)
    te_x = decode_images([p for p, _ in test], image_size)
    tr_y = torch.tensor([y for _, y in train], dtype=torch.int64)
    te_y = torch.tensor([y for _, y in test], dtype=torch.int64)
    return tr_x, tr_y, te_x, te_y, list(class_ids), names


__all__ = [
    "CIFAR_STATS",
    "DEFAULT_ROOTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "UNCHECKED_CIFAR_CLASSES",
    "cifar_files",
    "decode_images",
    "load_cifar",
    "load_image_folder",
]
