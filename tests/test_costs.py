"""The dry run's cost estimate (sweeps/costs.py): counts from the config, seconds from the
benchmark's measured throughputs when there are some, and it says which it used."""
import json

import pytest

from clnscl.config import TrainConfig
from sweeps import costs, grid


def _cfg(**over):
    base = {"dataset": "synthetic", "image_size": 16, "cnn_width": 16,
            "synthetic_train_per_class": 128, "synthetic_test_per_class": 64,
            "knn_bank_max": 2048, "n_classes": 8, "batch_size": 64, "epochs": 8,
            "eval_every": 3, "objectives": ("cl", "nscl")}
    base.update(over)
    return TrainConfig(**base)


def test_evaluations_and_rows_are_counted_from_the_config():
    assert costs.evaluations(_cfg()) == 4  # epochs 0, 3, 6 and the last (8)
    assert costs.evaluations(_cfg(epochs=9)) == 4  # 0, 3, 6, 9
    # bank = 1024 train images, forwarded twice (BN recalibration), + 512 test queries
    assert costs.eval_rows(_cfg()) == 2 * 1024 + 512
    assert costs.eval_rows(_cfg(eval_bn="running")) == 1024 + 512
    assert costs.eval_rows(_cfg(knn_bank_max=256, eval_size=64)) == 2 * 256 + 256


def test_measured_throughput_sets_the_seconds_and_is_named():
    entry = {"train_views_per_s": 1000.0, "eval_rows_per_s": 5000.0, "image_size": 16,
             "cnn_width": 16, "date": "2026-11-29 04:00", "machine": "2 x test cpu",
             "commit": "abc"}
    cfg = _cfg()
    e = costs.estimate_trial(cfg, 0, measured={"smallcnn/cpu": entry})
    views = 16 * 64 * 8 * 2 * 2  # steps x B x epochs x 2 views x 2 models
    assert e["images"] == views
    assert e["train_s"] == pytest.approx(views / 1000.0)
    assert e["eval_s"] == pytest.approx(4 * 2 * 2560 / 5000.0)
    assert e["seconds"] == pytest.approx(e["train_s"] + e["eval_s"] + costs.TRIAL_OVERHEAD_S)
    assert "measured by benchmarks/bench.py on 2026-11-29 04:00" in e["source"]
    # twice the pixels and twice the width: 16x the cost per image
    big = costs.estimate_trial(_cfg(image_size=32, cnn_width=32), 0,
                               measured={"smallcnn/cpu": entry})
    assert big["train_s"] == pytest.approx(16 * e["train_s"])
    # nothing measured for this architecture: the assumed constant, and it says so
    r18 = costs.estimate_trial(_cfg(arch="resnet18"), 0, measured={"smallcnn/cpu": entry})
    assert "assumed for resnet18 on CPU" in r18["source"]


def test_dry_run_reads_the_benchmark_file(tmp_path, monkeypatch, capsys):
    f = tmp_path / "throughput.json"
    f.write_text(json.dumps({"smallcnn/cpu": {
        "train_views_per_s": 2000.0, "eval_rows_per_s": 6000.0, "image_size": 16,
        "cnn_width": 16, "date": "2026-11-29 04:00", "machine": "2 x test cpu",
        "commit": "abc"}}))
    monkeypatch.setenv("CLNSCL_THROUGHPUT_FILE", str(f))
    argv = ["--dry-run", "--tau", "0.2", "--classes", "8", "--batch-size", "64",
            "--storage", str(tmp_path)]
    assert grid.main(argv) == 0
    fast = capsys.readouterr().out
    assert "throughput measured by benchmarks/bench.py on 2026-11-29 04:00" in fast
    f.write_text(f.read_text().replace("2000.0", "1000.0"))
    assert grid.main(argv) == 0
    slow = capsys.readouterr().out

    def train_col(out):  # the per-trial "train" column of the one trial
        row = next(ln for ln in out.splitlines() if "tau=0.2 B=64 C=8 seed=0" in ln)
        return row.split()[-3]

    assert train_col(fast) != train_col(slow)
    monkeypatch.setenv("CLNSCL_THROUGHPUT_FILE", str(tmp_path / "missing.json"))
    assert grid.main(argv) == 0
    assert "throughput assumed for smallcnn on CPU" in capsys.readouterr().out
