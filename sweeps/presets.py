"""Sweep presets: YAML data files in ``sweeps/presets/`` and their expansion into trials.

A preset file has exactly these top-level keys (unknown keys are refused by name)::

    description: one line shown by --dry-run and logged with the sweep
    grid:                      # the axes; the trials are their cross product
      tau: [0.1, 0.5, 1.0]
      batch_size: [256, 1024]
      n_classes: [2, 10]
      seeds: 3                 # a count: seeds 0, 1, 2
    config:                    # fixed TrainConfig fields (clnscl/config.py), any of them
      dataset: cifar10
      epochs: 300
    resources: {cpu: 4, gpu: 1}   # per trial (gpu may be a fraction, e.g. 0.5)
    checkpoint_every: 1        # checkpoint every k evaluation records (and always the last)
    max_failures: 3            # Tune retries of a failed trial, from its last checkpoint
    max_concurrent: 0          # optional: at most this many trials at once (0 = no limit)
    budget_images: 4096        # optional, instead of config.epochs: see below
    evals: 4                   # optional, with budget_images: evaluations after epoch 0

``budget_images``: every grid point trains on about this many images (epochs = ceil(budget
/ subset size)). The subset is all images of the C chosen classes, so at a fixed epoch
count the cumulative learning rate S_T (the theory's time axis) grows with C; with an
image budget S_T is the same for every C, and with the linear lr rule for every B too, so
the last epoch compares grid points at equal S_T. ``eval_every`` becomes
max(1, epochs // evals). Needs a subset size known before loading (not imagefolder).

Values are checked by building one ``TrainConfig`` per grid point: the rules live there
only, so an out-of-range axis value fails with the same message as in ``clnscl.train``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clnscl.config import ConfigError, TrainConfig, parse_field

PRESET_DIR = Path(__file__).resolve().parent / "presets"

TOP_KEYS = ("description", "grid", "config", "resources", "checkpoint_every", "max_failures",
            "max_concurrent", "budget_images", "evals")
REQUIRED_KEYS = ("grid", "config")
GRID_KEYS = ("tau", "batch_size", "n_classes", "seeds")
RESOURCE_KEYS = ("cpu", "gpu")
# TrainConfig fields that the grid owns (a preset's config: may not set them)
AXIS_FIELDS = ("tau", "batch_size", "n_classes", "seed")


class PresetError(ValueError):
    """A preset file that cannot be used: the message names the file and the key."""


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_preset_path(name_or_path: str) -> Path:
    """A preset name (``quick``) or a path to a YAML file (``path/to/file.yaml``)."""
    p = Path(name_or_path).expanduser()
    looks_like_path = p.suffix in (".yaml", ".yml") or "/" in name_or_path or p.exists()
    if looks_like_path:
        if not p.is_file():
            raise PresetError(f"preset file {name_or_path!r} not found")
        return p.resolve()
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise PresetError(f"unknown preset {name_or_path!r}: available presets are "
                          f"{', '.join(available_presets())} (or give a path to a .yaml file)")
    return candidate


def _coerce(name: str, value):
    """YAML 1.1 reads ``1e-6`` as a string: parse strings of typed fields with the same
    parser as the CLIs' --set (clnscl.config.parse_field), so errors read the same."""
    by_name = {f.name: f for f in dataclasses.fields(TrainConfig)}
    f = by_name.get(name)
    if f is None or not isinstance(value, str) or str(f.type).startswith("str"):
        return value
    return parse_field(name, value)


def apply_budget(cfg: TrainConfig, budget_images: int | None, evals: int = 4) -> TrainConfig:
    """The grid point with epochs/eval_every set from an image budget (None: unchanged)."""
    if not budget_images:
        return cfg
    n = cfg.expected_train_images
    if n is None:
        raise ConfigError(f"invalid budget_images={budget_images}: the subset size of dataset "
                          f"{cfg.dataset} is only known once loaded; set epochs instead")
    epochs = max(1, math.ceil(budget_images / n))
    return cfg.replace(epochs=epochs, eval_every=max(1, epochs // max(1, evals)))


def _as_list(where: str, value) -> list:
    if isinstance(value, (list, tuple)):
        if not value:
            raise PresetError(f"{where}: empty list; give at least one value")
        return list(value)
    return [value]


@dataclass(frozen=True)
class Preset:
    name: str
    path: str
    description: str = ""
    tau: tuple = (0.5,)
    batch_size: tuple = (256,)
    n_classes: tuple = (10,)
    seeds: int = 1
    config: dict = field(default_factory=dict)
    cpu: float = 1.0
    gpu: float = 0.0
    checkpoint_every: int = 1
    max_failures: int = 2
    max_concurrent: int = 0
    budget_images: int | None = None
    evals: int = 4

    # --- construction ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data, name: str, path: str = "") -> Preset:
        where = f"preset {name!r}" + (f" ({path})" if path else "")
        if not isinstance(data, dict):
            raise PresetError(f"{where}: expected a mapping with keys {', '.join(TOP_KEYS)}")
        unknown = [k for k in data if k not in TOP_KEYS]
        if unknown:
            raise PresetError(f"{where}: unknown key {unknown[0]!r}: allowed keys are "
                              f"{', '.join(TOP_KEYS)}")
        for k in REQUIRED_KEYS:
            if k not in data:
                raise PresetError(f"{where}: missing key {k!r}")
        grid = data["grid"] or {}
        if not isinstance(grid, dict):
            raise PresetError(f"{where}: grid must be a mapping of {', '.join(GRID_KEYS)}")
        unknown = [k for k in grid if k not in GRID_KEYS]
        if unknown:
            raise PresetError(f"{where}: unknown key 'grid.{unknown[0]}': allowed grid axes are "
                              f"{', '.join(GRID_KEYS)}")
        config = data["config"] or {}
        if not isinstance(config, dict):
            raise PresetError(f"{where}: config must be a mapping of TrainConfig fields")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        for k in config:
            if k in AXIS_FIELDS:
                axis = "seeds (a count)" if k == "seed" else k
                raise PresetError(f"{where}: 'config.{k}' is a grid axis: set it under grid: "
                                  f"as {axis}")
            if k not in known:
                raise PresetError(f"{where}: unknown key 'config.{k}': not a TrainConfig field "
                                  f"(allowed: {', '.join(sorted(known - set(AXIS_FIELDS)))})")
        config = {k: _coerce(k, v) for k, v in config.items()}
        if data.get("budget_images") and "epochs" in config:
            raise PresetError(f"{where}: set either 'config.epochs' or 'budget_images', not both")
        if isinstance(config.get("objectives"), list):
            config["objectives"] = tuple(config["objectives"])
        res = data.get("resources") or {}
        if not isinstance(res, dict):
            raise PresetError(f"{where}: resources must be a mapping of {', '.join(RESOURCE_KEYS)}")
        unknown = [k for k in res if k not in RESOURCE_KEYS]
        if unknown:
            raise PresetError(f"{where}: unknown key 'resources.{unknown[0]}': allowed "
                              f"{', '.join(RESOURCE_KEYS)}")
        defaults = cls(name=name, path=path)
        preset = cls(
            name=name, path=path,
            description=str(data.get("description") or ""),
            tau=tuple(_coerce("tau", v) for v in _as_list(
                f"{where}: grid.tau", grid.get("tau", defaults.tau))),
            batch_size=tuple(_coerce("batch_size", v) for v in _as_list(
                f"{where}: grid.batch_size", grid.get("batch_size", defaults.batch_size))),
            n_classes=tuple(_coerce("n_classes", v) for v in _as_list(
                f"{where}: grid.n_classes", grid.get("n_classes", defaults.n_classes))),
            seeds=grid.get("seeds", defaults.seeds),
            config=config,
            cpu=res.get("cpu", defaults.cpu),
            gpu=res.get("gpu", defaults.gpu),
            checkpoint_every=data.get("checkpoint_every", defaults.checkpoint_every),
            max_failures=data.get("max_failures", defaults.max_failures),
            max_concurrent=data.get("max_concurrent", defaults.max_concurrent) or 0,
            budget_images=data.get("budget_images") or None,
            evals=data.get("evals", defaults.evals),
        )
        preset.check()
        return preset

    def check(self) -> None:
        """Sweep-level settings (the TrainConfig rules are checked per point by points())."""
        def bad(key, value, allowed):
            raise ConfigError(f"invalid {key}={value!r}: allowed {allowed}")

        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            bad("seeds", self.seeds, "an integer count >= 1 (seeds 0..N-1)")
        for key in ("cpu", "gpu"):
            v = getattr(self, key)
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not number or not math.isfinite(v) or v < 0:
                bad(f"resources.{key}", v, "a number >= 0")
        if self.cpu <= 0 and self.gpu <= 0:
            bad("resources.cpu", self.cpu, "> 0 (or a gpu share > 0)")
        if self.budget_images is not None and (
                not isinstance(self.budget_images, int) or isinstance(self.budget_images, bool)
                or self.budget_images < 1):
            bad("budget_images", self.budget_images, "an integer >= 1 (images per trial), or none")
        for key, lo in (("checkpoint_every", 1), ("max_failures", -1), ("max_concurrent", 0),
                        ("evals", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                bad(key, v, f"an integer >= {lo}" + (" (-1 = retry forever)" if lo == -1 else ""))
        for axis in ("tau", "batch_size", "n_classes"):
            values = getattr(self, axis)
            if len(set(values)) != len(values):
                bad(axis, list(values), "distinct values")

    def replace(self, **changes) -> Preset:
        """A copy with overrides; ``config`` entries merge into the fixed config."""
        config = dict(self.config)
        config.update(changes.pop("config", {}) or {})
        for axis in ("tau", "batch_size", "n_classes"):
            if axis in changes:
                changes[axis] = tuple(changes[axis])
        out = dataclasses.replace(self, config=config, **changes)
        out.check()
        return out

    # --- expansion ------------------------------------------------------------------
    @property
    def seed_values(self) -> list[int]:
        return list(range(self.seeds))

    @property
    def n_trials(self) -> int:
        return len(self.tau) * len(self.batch_size) * len(self.n_classes) * self.seeds

    def points(self) -> list[TrainConfig]:
        """One validated TrainConfig per grid point (tau, B, C, seed order).

        Raises ConfigError (naming the field and the allowed values) for the first point
        that TrainConfig refuses, before anything is started."""
        out = []
        for tau, b, c, seed in itertools.product(self.tau, self.batch_size, self.n_classes,
                                                 self.seed_values):
            base = TrainConfig.from_dict(
                {**self.config, "tau": tau, "batch_size": b, "n_classes": c, "seed": seed})
            out.append(self.resolve(base))
        return out

    def resolve(self, cfg: TrainConfig) -> TrainConfig:
        """A grid point as it trains: epochs/eval_every from the image budget, if any."""
        return apply_budget(cfg, self.budget_images, self.evals)

    def base_config(self) -> dict:
        """The non-axis fields of the Tune search space (before the image budget)."""
        self.points()  # validates every point
        d = TrainConfig.from_dict({**self.config, "tau": self.tau[0], "batch_size":
                                   self.batch_size[0], "n_classes": self.n_classes[0],
                                   "seed": 0}).to_dict()
        for k in AXIS_FIELDS:
            d.pop(k)
        return d

    def fixed_config(self) -> dict:
        """The non-axis fields every trial shares (TrainConfig defaults filled in; with an
        image budget, epochs and eval_every vary per point and are left out)."""
        d = self.base_config()
        if self.budget_images:
            d.pop("epochs")
            d.pop("eval_every")
        return d

    def grid_spec(self) -> dict:
        """A JSON-able description of the sweep (what makes two sweeps the same sweep)."""
        return {
            "preset": self.name,
            "grid": {"tau": list(self.tau), "batch_size": list(self.batch_size),
                     "n_classes": list(self.n_classes), "seeds": self.seeds},
            "config": self.fixed_config(),
            "resources": {"cpu": self.cpu, "gpu": self.gpu},
            "checkpoint_every": self.checkpoint_every,
            "max_failures": self.max_failures,
            "budget_images": self.budget_images,
            "evals": self.evals if self.budget_images else None,
        }


def load_preset(name_or_path: str) -> Preset:
    path = resolve_preset_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PresetError(f"preset {path}: not valid YAML: {e}") from None
    name = path.stem
    return Preset.from_dict(data, name=name, path=str(path))


__all__ = [
    "PRESET_DIR",
    "Preset",
    "PresetError",
    "apply_budget",
    "available_presets",
    "load_preset",
    "resolve_preset_path",
]
