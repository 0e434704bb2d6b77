"""What a trial costs, for ``grid.py --dry-run``: training image-views and evaluation rows
counted from the config, turned into seconds by throughputs that ``benchmarks/bench.py``
measured (``benchmarks/results/throughput.json``, written by its full run) or, where it
measured nothing for that architecture and device, by assumed constants, and the output
says which.

Counting (per model): a training epoch is ``steps x B x 2 views`` forward+backward passes; an
evaluation forwards the kNN bank (once more when BN statistics are recalibrated on it) and the
test queries, at about a third of a training view's cost (forward only)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from clnscl.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
MEASURED_FILE = ROOT / "benchmarks" / "results" / "throughput.json"

# assumed training views/s per model at 32 px, used where nothing was measured
ASSUMED_VIEWS_PER_S = {
    ("smallcnn", "cpu"): 140.0,
    ("smallcnn", "gpu"): 40000.0,
    ("resnet18", "cpu"): 45.0,
    ("resnet18", "gpu"): 7000.0,
    ("resnet50", "cpu"): 20.0,
    ("resnet50", "gpu"): 3000.0,
}
FORWARD_SHARE = 1 / 3  # an evaluation row (forward) against a training view (fwd + bwd)
TRIAL_OVERHEAD_S = 8.0  # per trial: worker start (actors are reused), data, MLflow connection
SWEEP_OVERHEAD_S = 30.0  # per sweep: Ray start-up, MLflow store creation
TEST_IMAGES_PER_CLASS = {"cifar10": 1000, "cifar100": 100, "tinyimagenet": 50}


def measured_throughputs(path: Path | None = None) -> dict:
    """{"arch/kind": entry} from the benchmark's file ($CLNSCL_THROUGHPUT_FILE, else
    benchmarks/results/throughput.json); {} when there is none or it is unreadable."""
    path = Path(os.environ.get("CLNSCL_THROUGHPUT_FILE") or path or MEASURED_FILE)
    try:
        data = json.loads(path.read_text())
        return {k: v for k, v in data.items() if isinstance(v, dict)
                and v.get("train_views_per_s", 0) > 0}
    except (OSError, ValueError):
        return {}


def _size_factor(cfg: TrainConfig, size: int, width: int | None) -> float:
    """Cost of one image of ``cfg`` against the measured one: pixels, and for the small CNN
    its width squared (conv cost)."""
    f = (cfg.image_size / size) ** 2
    if cfg.arch == "smallcnn" and width:
        f *= (cfg.cnn_width / width) ** 2
    return f


def evaluations(cfg: TrainConfig) -> int:
    """Evaluations a trial makes: epoch 0, every eval_every epochs, and the last."""
    return 1 + len({e for e in range(1, cfg.epochs + 1)
                    if e % cfg.eval_every == 0 or e == cfg.epochs})


def eval_rows(cfg: TrainConfig) -> int | None:
    """Rows one evaluation forwards per model (bank, its BN recalibration, test queries)."""
    n_train = cfg.expected_train_images
    if n_train is None:
        return None
    n_test = (cfg.synthetic_test_per_class * cfg.n_classes if cfg.dataset == "synthetic"
              else TEST_IMAGES_PER_CLASS.get(cfg.dataset, 0) * cfg.n_classes)
    bank = min(cfg.knn_bank_max, n_train)
    return bank * (2 if cfg.eval_bn == "recalibrate" else 1) + min(cfg.knn_bank_max, n_test)


def estimate_trial(cfg: TrainConfig, gpu: float, measured: dict | None = None) -> dict:
    """Images processed and the time of one trial: {"train_images", "steps", "images" (views
    through all models), "train_s", "eval_s", "seconds", "kind", "source"}."""
    n = cfg.expected_train_images
    models = len(cfg.objectives)
    kind = "gpu" if gpu > 0 or cfg.device.startswith("cuda") else "cpu"
    out = {"train_images": n, "steps": None, "images": None, "train_s": None, "eval_s": None,
           "seconds": None, "kind": kind, "source": None}
    if n is None:
        return out
    steps = n // cfg.batch_size
    views = steps * cfg.batch_size * cfg.epochs * 2 * models
    measured = measured_throughputs() if measured is None else measured
    m = measured.get(f"{cfg.arch}/{kind}")
    if m:
        rate = m["train_views_per_s"] / _size_factor(cfg, m["image_size"], m.get("cnn_width"))
        eval_rate = m.get("eval_rows_per_s", rate / FORWARD_SHARE) \
            / _size_factor(cfg, m["image_size"], m.get("cnn_width"))
        out["source"] = (f"measured by benchmarks/bench.py on {m.get('date', '?')}, "
                         f"{m.get('machine', '?')}, commit {m.get('commit', '?')}")
    else:
        rate = ASSUMED_VIEWS_PER_S.get((cfg.arch, kind), ASSUMED_VIEWS_PER_S[(cfg.arch, "cpu")])
        rate /= max((cfg.image_size / 32) ** 2, 1e-6)
        eval_rate = rate / FORWARD_SHARE
        out["source"] = f"assumed for {cfg.arch} on {kind.upper()} (nothing measured there)"
    if kind == "gpu" and 0 < gpu < 1:
        rate, eval_rate = rate * gpu, eval_rate * gpu  # a GPU share
    out["train_s"] = views / rate
    out["eval_s"] = evaluations(cfg) * models * eval_rows(cfg) / eval_rate
    out.update(steps=steps, images=views,
               seconds=out["train_s"] + out["eval_s"] + TRIAL_OVERHEAD_S)
    return out


def format_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.1f}h"
