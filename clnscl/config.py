"""The one configuration type of a coupled trial, validated at construction.

Every check that can fail does so here, before any data is loaded or compute spent, with
a message naming the field and the allowed values. The same rules serve the single-trial
CLI and the sweep grid (``sweeps`` builds one ``TrainConfig`` per grid point).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

# Class counts of the built-in and torchvision data sets (image folders are counted on load).
DATASET_CLASSES = {
    "synthetic": 100,
    "cifar10": 10,
    "cifar100": 100,
    "tinyimagenet": 200,
    "miniimagenet": 100,
    "imagefolder": None,
}
# Training images per class of the stock releases (synthetic: synthetic_train_per_class;
# image folders: only known once loaded). Lets batch size and image budgets be checked
# before any data is loaded.
TRAIN_IMAGES_PER_CLASS = {"cifar10": 5000, "cifar100": 500, "tinyimagenet": 500, "miniimagenet": 600}
ARCHS = ("smallcnn", "resnet18", "resnet50")
OBJECTIVES = ("cl", "nscl", "supcon", "ce", "cl_indep")
OPTIMIZERS = ("lars", "sgd")
LR_RULES = ("linear", "sqrt", "constant")
DEVICES = ("cpu", "cuda", "auto")
EVAL_BN = ("recalibrate", "running")


class ConfigError(ValueError):
    """Invalid configuration: the message names the field and the allowed values."""


def _fail(name: str, value, allowed: str):
    raise ConfigError(f"invalid {name}={value!r}: allowed {allowed}")


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset: str = "synthetic"
    data_root: str | None = None
    download: bool = False
    n_classes: int = 10
    class_seed: int | None = None  # seed of the class subset; None = seed
    image_size: int = 32
    synthetic_train_per_class: int = 500
    synthetic_test_per_class: int = 100
    # objectives
    objectives: tuple[str, ...] = ("cl", "nscl")
    tau: float = 0.5
    include_positive: bool = False  # False: the paper's decoupled CL; True: NT-Xent
    # augmentation: SimCLR's colour strength s (jitter 0.8s, 0.8s, 0.8s, 0.2s; CIFAR s = 0.5)
    # and grayscale probability (CIFAR 0.2)
    aug_color_strength: float = 0.5
    aug_gray_prob: float = 0.2
    aug_crop_min: float = 0.08  # smallest crop area fraction of random resized crop
    # model
    arch: str = "smallcnn"
    cnn_width: int = 32  # smallcnn only: channels of the first stage (4x this at the end)
    proj_dim: int = 64
    proj_hidden: int | None = None  # None = the backbone width, as SCIENCE.md
    # optimisation
    batch_size: int = 256
    epochs: int = 20
    optimizer: str = "lars"
    lr: float = 0.3
    lr_rule: str = "linear"
    momentum: float = 0.9
    weight_decay: float = 1e-6
    lars_eta: float = 1e-3  # LARS trust coefficient: a matrix moves ~ lr x eta (relative) per step
    warmup_epochs: int = 2
    # evaluation
    eval_every: int = 1  # epochs between evaluations (epoch 0 and the last always run)
    eval_size: int = 1000  # seeded rows of each split for alignment metrics
    knn_k: int = 20
    # kNN/NCC/probe bank: the whole train subset (queries: the whole test subset), each
    # capped at this many seeded rows; features held = rows x backbone width x 4 bytes
    # per model (20000 x 2048 x 4 B = 164 MB for ResNet-50).
    knn_bank_max: int = 20000
    # BN statistics of every evaluated model (the initial one included): "recalibrate"
    # re-estimates them on the bank's un-augmented training images (a copy; training state
    # untouched), "running" uses the training EMA (what the reference code did).
    eval_bn: str = "recalibrate"
    linear_probe: bool = True
    # run
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        objs = self.objectives
        if isinstance(objs, str):
            objs = tuple(o.strip() for o in objs.split(",") if o.strip())
        objs = tuple(objs)
        object.__setattr__(self, "objectives", objs)
        allowed_obj = ", ".join(OBJECTIVES)
        for o in objs:
            if o not in OBJECTIVES:
                _fail("objectives", o, f"a subset of {allowed_obj} containing cl "
                      "(cl_indep: the uncoupled CL control)")
        if "cl" not in objs or len(set(objs)) != len(objs):
            _fail("objectives", ",".join(objs), f"distinct values of {allowed_obj}, cl included")
        if len(objs) < 2:
            _fail("objectives", ",".join(objs), "cl plus at least one of nscl, supcon, ce, cl_indep")
        # keep a canonical order so that equal configs compare equal
        object.__setattr__(self, "objectives", tuple(o for o in OBJECTIVES if o in objs))

        if self.dataset not in DATASET_CLASSES:
            _fail("dataset", self.dataset, ", ".join(DATASET_CLASSES))
        if self.dataset == "imagefolder" and not self.data_root:
            _fail("data_root", self.data_root, "a folder with train/ and val/ (or test/) class folders")
        total = DATASET_CLASSES[self.dataset]
        if not isinstance(self.n_classes, int) or self.n_classes < 2:
            _fail("n_classes", self.n_classes, f"an integer from 2 to {total or 'the classes found'}")
        if total is not None and self.n_classes > total:
            _fail("n_classes", self.n_classes, f"2..{total} for dataset {self.dataset}")
        if not (isinstance(self.tau, (int, float)) and math.isfinite(self.tau) and self.tau > 0):
            _fail("tau", self.tau, "a finite number > 0 (e.g. 0.1, 0.5, 1.0)")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            _fail("batch_size", self.batch_size, "an integer >= 2")
        if self.batch_size < self.n_classes:
            _fail("batch_size", self.batch_size,
                  f">= n_classes={self.n_classes}, so that a batch can hold every class")
        n_train = self.expected_train_images
        if n_train is not None and self.batch_size > n_train:
            _fail("batch_size", self.batch_size,
                  f"2..{n_train} (the {n_train} training images of the {self.n_classes}-class "
                  f"subset of {self.dataset})")
        if self.arch not in ARCHS:
            _fail("arch", self.arch, ", ".join(ARCHS))
        if self.optimizer not in OPTIMIZERS:
            _fail("optimizer", self.optimizer, ", ".join(OPTIMIZERS))
        if not (isinstance(self.aug_color_strength, (int, float))
                and 0 <= self.aug_color_strength <= 2.5):
            _fail("aug_color_strength", self.aug_color_strength,
                  "a number in [0, 2.5] (SimCLR's s; hue jitter 0.2s must stay <= 0.5)")
        if not (isinstance(self.aug_crop_min, (int, float)) and 0 < self.aug_crop_min <= 1):
            _fail("aug_crop_min", self.aug_crop_min, "a number in (0, 1] (SimCLR: 0.08)")
        if not (isinstance(self.aug_gray_prob, (int, float)) and 0 <= self.aug_gray_prob <= 1):
            _fail("aug_gray_prob", self.aug_gray_prob, "a probability in [0, 1]")
        if self.eval_bn not in EVAL_BN:
            _fail("eval_bn", self.eval_bn, ", ".join(EVAL_BN))
        if self.lr_rule not in LR_RULES:
            _fail("lr_rule", self.lr_rule, ", ".join(LR_RULES))
        dev = self.device
        if not (dev in DEVICES or dev.startswith("cuda:")):
            _fail("device", dev, "cpu, cuda, cuda:N, auto")
        for name, lo in [("epochs", 1), ("proj_dim", 1), ("image_size", 8), ("eval_every", 1),
                         ("eval_size", 10), ("knn_k", 1), ("knn_bank_max", 10), ("cnn_width", 1),
                         ("synthetic_train_per_class", 1),
                         ("synthetic_test_per_class", 1), ("warmup_epochs", 0), ("seed", 0)]:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                _fail(name, v, f"an integer >= {lo}")
        if self.proj_hidden is not None and (not isinstance(self.proj_hidden, int) or self.proj_hidden < 1):
            _fail("proj_hidden", self.proj_hidden, "None or an integer >= 1")
        for name in ("lr", "momentum", "weight_decay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                _fail(name, v, "a finite number >= 0")
        if self.lr <= 0:
            _fail("lr", self.lr, "a finite number > 0")
        if not (isinstance(self.lars_eta, (int, float)) and math.isfinite(self.lars_eta)
                and self.lars_eta > 0):
            _fail("lars_eta", self.lars_eta, "a finite number > 0 (the paper's LARS: 1e-3)")
        if self.eval_size > self.knn_bank_max:
            _fail("eval_size", self.eval_size,
                  f"<= knn_bank_max={self.knn_bank_max} (alignment rows are drawn from the bank)")
        if self.class_seed is not None and (not isinstance(self.class_seed, int) or self.class_seed < 0):
            _fail("class_seed", self.class_seed, "None or an integer >= 0")

    # --- derived values -------------------------------------------------------------
    @property
    def effective_class_seed(self) -> int:
        return self.seed if self.class_seed is None else self.class_seed

    @property
    def expected_train_images(self) -> int | None:
        """Training images of the class subset (all images of the chosen classes), or None
        when only loading can tell (image folders)."""
        if self.dataset == "synthetic":
            return self.synthetic_train_per_class * self.n_classes
        per = TRAIN_IMAGES_PER_CLASS.get(self.dataset)
        return per * self.n_classes if per else None

    @property
    def scaled_lr(self) -> float:
        """Peak learning rate after the batch-size rule (base lr at B = 256)."""
        ratio = self.batch_size / 256
        return {"linear": self.lr * ratio, "sqrt": self.lr * math.sqrt(ratio),
                "constant": self.lr}[self.lr_rule]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a plain dict (e.g. a Tune config), refusing unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}: allowed {', '.join(sorted(known))}")
        d = dict(d)
        if "objectives" in d and isinstance(d["objectives"], list):
            d["objectives"] = tuple(d["objectives"])
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def run_name(self) -> str:
        """How a trial is named in MLflow and tables: its grid point."""
        return f"tau={self.tau:g} B={self.batch_size} C={self.n_classes} seed={self.seed}"


def parse_field(name: str, text: str):
    """Typed value of config field ``name`` from a string (CLI ``--set``, YAML strings)."""
    by_name = {f.name: f for f in fields(TrainConfig)}
    if name not in by_name:
        raise ConfigError(f"unknown config field {name!r}: allowed {', '.join(by_name)}")
    kind = str(by_name[name].type)
    if text.lower() in ("none", "null") and "None" in kind:
        return None
    if kind.startswith("bool"):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"invalid {name}={text!r}: allowed true, false")
        return text.lower() in ("true", "1")
    for prefix, cast, allowed in (("int", int, "an integer"), ("float", float, "a number")):
        if kind.startswith(prefix):
            try:
                return cast(text)
            except ValueError:
                raise ConfigError(f"invalid {name}={text!r}: allowed {allowed}") from None
    if kind.startswith("tuple"):
        return tuple(t.strip() for t in text.split(",") if t.strip())
    return text


def parse_assignment(item: str) -> tuple[str, object]:
    """``"FIELD=VALUE"`` -> (field, typed value), naming the allowed fields on error."""
    name, sep, text = item.partition("=")
    allowed = ", ".join(f.name for f in fields(TrainConfig))
    if not sep or name not in {f.name for f in fields(TrainConfig)}:
        raise ConfigError(f"invalid --set {item!r}: use FIELD=VALUE with FIELD one of {allowed}")
    return name, parse_field(name, text)


__all__ = ["ARCHS", "DATASET_CLASSES", "OBJECTIVES", "ConfigError", "TrainConfig", "parse_assignment", "parse_field"]
