"""Data sets as uint8 tensors on the training device, with a seeded class subset.

``load_data(cfg, device)`` returns an :class:`ImageData`: every image of ``cfg.n_classes``
classes chosen by :func:`choose_classes` (seeded by ``cfg.effective_class_seed``), labels
remapped to 0..C-1 in the order of ``class_ids``, uint8 (N, 3, S, S) tensors moved to the
device once (augmentation then runs batched on the device, see ``clnscl.augment``).

Data sets (``cfg.dataset``): ``synthetic`` (built in, the default; see
``clnscl.data.synthetic``), ``cifar10``/``cifar100`` (torchvision's CIFAR classes, root
``cfg.data_root`` or ``./data``), ``tinyimagenet``/``miniimagenet``/``imagefolder``
(class folders decoded once at load, see ``clnscl.data.torchvision_sets``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clnscl.config import ConfigError, TrainConfig

from . import synthetic as _synthetic


@dataclass
class ImageData:
    name: str
    train_x: torch.Tensor  # uint8 (N, 3, H, W) on the device
    train_y: torch.Tensor  # int64 (N,), labels 0..C-1
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_ids: list[int]  # original class ids, in the order of the remapped labels
    class_names: list[str]
    mean: tuple[float, float, float]  # per-channel normalisation constants, [0, 1] units
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def __repr__(self) -> str:
        return (f"ImageData({self.name!r}, C={self.num_classes}, train={tuple(self.train_x.shape)}, "
                f"test={tuple(self.test_x.shape)}, device={self.train_x.device})")


def choose_classes(total: int, n_classes: int, seed: int) -> list[int]:
    """``n_classes`` of ``range(total)`` drawn uniformly without replacement, sorted.

    The draw is the first ``n_classes`` entries of one seeded permutation of all classes
    (numpy ``default_rng(seed)``), so for a fixed seed the subsets are nested: the classes
    chosen for C = 4 are among those chosen for C = 8.
    """
    if not isinstance(total, (int, np.integer)) or total < 1:
        raise ValueError(f"invalid total={total!r}: allowed an integer >= 1")
    if not isinstance(n_classes, (int, np.integer)) or not 1 <= n_classes <= total:
        raise ValueError(f"invalid n_classes={n_classes!r}: allowed 1..{total}")
    perm = np.random.default_rng(int(seed)).permutation(int(total))
    return sorted(int(c) for c in perm[:n_classes])


def _subset(x: torch.Tensor, y: torch.Tensor, class_ids: list[int]):
    """All rows of the chosen classes (original order kept), labels remapped to 0..C-1."""
    lut = torch.full((int(max(int(y.max()), max(class_ids))) + 1,), -1, dtype=torch.int64)
    lut[torch.tensor(class_ids, dtype=torch.int64)] = torch.arange(len(class_ids))
    new = lut[y]
    keep = new >= 0
    return x[keep], new[keep]


def _resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    out = []
    for i in range(0, len(x), 4096):  # bounded memory; once at load, not in the hot path
        xf = F.interpolate(x[i:i + 4096].float(), size=(size, size), mode="bilinear",
                           align_corners=False, antialias=True)
        out.append(xf.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out) if out else x.new_zeros((0, 3, size, size))


def load_data(cfg: TrainConfig, device="cpu", *, verify_checksums: bool = True) -> ImageData:
    """Load ``cfg.dataset``, keep all images of the chosen classes, move to ``device``.

    ``verify_checksums=False`` skips torchvision's md5 checks of the CIFAR files (tests
    write tiny CIFAR-format files); torchvision's loading code is used either way.
    """
    name = cfg.dataset
    C = cfg.n_classes
    seed = cfg.effective_class_seed
    if name == "synthetic":
        class_ids = choose_classes(_synthetic.N_CLASSES, C, seed)
        tr_x, tr_y = _synthetic.make_synthetic(cfg.synthetic_train_per_class,
                                               image_size=cfg.image_size, split="train",
                                               classes=class_ids)
        te_x, te_y = _synthetic.make_synthetic(cfg.synthetic_test_per_class,
                                               image_size=cfg.image_size, split="test",
                                               classes=class_ids)
        names = [_synthetic.class_name(c) for c in class_ids]
        mean, std = _synthetic.SYNTHETIC_MEAN, _synthetic.SYNTHETIC_STD
    elif name in ("cifar10", "cifar100"):
        from .torchvision_sets import CIFAR_STATS, load_cifar

        root = cfg.data_root or "./data"
        tr_x, tr_y, te_x, te_y, all_names = load_cifar(name, root, download=cfg.download,
                                                       verify_checksums=verify_checksums)
        class_ids = choose_classes(len(all_names), C, seed)
        names = [all_names[c] for c in class_ids]
        mean, std = CIFAR_STATS[name]
    elif name in ("tinyimagenet", "miniimagenet", "imagefolder"):
        from .torchvision_sets import DEFAULT_ROOTS, IMAGENET_MEAN, IMAGENET_STD, load_image_folder

        root = cfg.data_root or DEFAULT_ROOTS.get(name)
        folder = load_image_folder(root, image_size=cfg.image_size, n_classes=C, class_seed=seed,
                                   chooser=choose_classes)
        tr_x, tr_y, te_x, te_y, class_ids, names = folder
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise ConfigError(f"invalid dataset={name!r}: allowed synthetic, cifar10, cifar100, "
                          "tinyimagenet, miniimagenet, imagefolder")

    if name in ("synthetic", "cifar10", "cifar100"):  # folders are subset while loading
        tr_x, tr_y = _subset(tr_x, tr_y, class_ids)
        te_x, te_y = _subset(te_x, te_y, class_ids)
        tr_x = _resize_uint8(tr_x, cfg.image_size)
        te_x = _resize_uint8(te_x, cfg.image_size)
    if cfg.batch_size > len(tr_x):
        raise ConfigError(f"invalid batch_size={cfg.batch_size}: allowed 2..{len(tr_x)}, the "
                          f"number of training images of the {C} chosen classes of {name}")
    dev = torch.device(device)
    return ImageData(name=name,
                     train_x=tr_x.contiguous().to(dev), train_y=tr_y.to(dev),
                     test_x=te_x.contiguous().to(dev), test_y=te_y.to(dev),
                     class_ids=list(class_ids), class_names=list(names),
                     mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


__all__ = ["ImageData", "choose_classes", "load_data"]
