"""The fault matrix, with real Ray Tune and a real SQLite MLflow store (README "What
survives what"): errors a retry can fix are retried from the last checkpoint, errors it
cannot fix end the trial at once; a corrupt or truncated checkpoint falls back to the
previous good one. Tiny synthetic trials (a few seconds each)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sweeps import grid

TINY = ["--epochs", "3", "--batch-size", "16", "--classes", "2", "--objectives", "cl,nscl",
        "--set", "synthetic_train_per_class=16", "--set", "synthetic_test_per_class=8",
        "--set", "image_size=16", "--set", "eval_size=16", "--set", "knn_k=5",
        "--set", "warmup_epochs=1", "--cpus-per-trial", "1", "--no-analysis",
        "--report-every", "60"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    return {"dir": d, "uri": f"sqlite:///{d}/mlflow.db", "storage": str(d / "ray_results")}


def _sweep(work, name, *argv):
    return grid.main(["--name", name, "--tracking-uri", work["uri"], "--storage",
                      work["storage"], *TINY, *argv])


def _children(work, name):
    from mlflow import MlflowClient

    c = MlflowClient(work["uri"])
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id])
    kids = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    names = [r.info.run_name for r in kids]
    assert len(names) == len(set(names)), f"more than one run for a trial: {sorted(names)}"
    return c, {r.info.run_name: r for r in kids}


def _records(c, run_id, tmp):
    path = c.download_artifacts(run_id, "records.json", str(tmp))
    return json.loads(Path(path).read_text())["records"]


def _same_records(a, b):
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for ra, rb in zip(a, b):
        for k in set(ra) - {"time_s"}:
            va, vb = ra[k], rb[k]
            if isinstance(va, float) and math.isnan(va) and isinstance(vb, float) \
                    and math.isnan(vb):
                continue
            assert va == vb, (ra["epoch"], k, va, vb)


# --- (a) retry only what a retry can fix ---------------------------------------------------
DETERMINISTIC = {  # tau -> (fault kind, epoch, the error class named in the run's error tag)
    "0.25": ("config", 1, "ConfigError"),
    "0.5": ("import", 1, "ModuleNotFoundError"),
    "1": ("data", -1, "FileNotFoundError"),  # while the trial loads its data
    "1.5": ("shared", 1, "SharedRandomnessError"),
}
TRANSIENT = {"2": ("sigkill", 2), "3": ("oserror", 2)}  # once each, after epoch 2


@pytest.fixture(scope="module")
def classified(ray_session, work, tmp_path_factory):
    marks = tmp_path_factory.mktemp("marks")
    faults = [{"trial": f"tau={t} B=16 C=2 seed=0", "epoch": e, "error": k}
              for t, (k, e, _) in DETERMINISTIC.items()]
    faults += [{"trial": f"tau={t} B=16 C=2 seed=0", "epoch": e, "error": k,
                "marker": str(marks / f"{k}-once")} for t, (k, e) in TRANSIENT.items()]
    taus = [*DETERMINISTIC, *TRANSIENT]
    rc = _sweep(work, "classified", "--tau", *taus, "--max-failures", "3",
                "--checkpoint-every", "1", "--inject-fault", json.dumps(faults))
    return {"rc": rc, "marks": marks}


@pytest.mark.slow
def test_deterministic_errors_end_the_trial_at_once_transient_ones_are_retried(classified,
                                                                               work):
    assert classified["rc"] == 1  # some trials failed
    c, runs = _children(work, "classified")
    assert len(runs) == len(DETERMINISTIC) + len(TRANSIENT)
    for tau, (_, _, cls) in DETERMINISTIC.items():
        run = runs[f"tau={tau} B=16 C=2 seed=0"]
        assert run.info.status == "FAILED", (tau, run.info.status)
        assert run.data.tags["attempts"] == "1", f"{cls} was retried"
        assert run.data.tags["error"].startswith(cls), run.data.tags["error"]
        assert "[not retried:" in run.data.tags["error"]
    for tau, (kind, _) in TRANSIENT.items():
        assert (classified["marks"] / f"{kind}-once").exists(), f"{kind} never fired"
        run = runs[f"tau={tau} B=16 C=2 seed=0"]
        assert run.info.status == "FINISHED", (kind, run.data.tags.get("error"))
        assert run.data.tags["attempts"] == "2"
        assert run.data.tags["resumed_from_epoch"] == "2"  # from the last checkpoint
        steps = sorted(m.step for m in c.get_metric_history(run.info.run_id, "nscl/cka"))
        assert steps == [0, 1, 2, 3]
    assert "previous_error" in runs["tau=3 B=16 C=2 seed=0"].data.tags  # OSError, then fine
    assert "OSError" in runs["tau=3 B=16 C=2 seed=0"].data.tags["previous_error"]


# --- corrupt and truncated checkpoints -----------------------------------------------------
@pytest.fixture(scope="module")
def damaged(ray_session, work, classified):
    """Two trials fail for good after epoch 2 (checkpoints of epochs 1 and 2 kept); then
    tau=2's latest state file is overwritten with garbage and tau=3's is cut in half, and
    the same command (no fault) resumes the sweep."""
    faults = [{"trial": f"tau={t} B=16 C=2 seed=0", "epoch": 2} for t in ("2", "3")]
    rc1 = _sweep(work, "damaged", "--tau", "2", "3", "--max-failures", "0",
                 "--checkpoint-every", "1", "--inject-fault", json.dumps(faults))
    base = Path(work["storage"]) / "damaged"
    latest = {}
    for tau, how in (("2", "corrupt"), ("3", "truncated")):
        (trial,) = [d for d in base.glob("train_trial_*") if f"_tau={tau}_" in d.name]
        ckpts = sorted(trial.glob("checkpoint_*"))
        assert len(ckpts) == 2, ckpts
        state = ckpts[-1] / "state.pt"
        data = state.read_bytes()
        state.write_bytes(b"\x00garbage" * 64 if how == "corrupt" else data[: len(data) // 2])
        latest[tau] = (ckpts[-2].name, ckpts[-1].name)
    rc2 = _sweep(work, "damaged", "--tau", "2", "3", "--max-failures", "0",
                 "--checkpoint-every", "1")
    return {"rc1": rc1, "rc2": rc2, "latest": latest}


@pytest.mark.slow
def test_corrupt_and_truncated_checkpoints_fall_back_to_the_previous_good_one(damaged, work,
                                                                              tmp_path):
    assert damaged["rc1"] == 1 and damaged["rc2"] == 0
    c, runs = _children(work, "damaged")
    _, reference = _children(work, "classified")  # the same configs, retried from epoch 2
    for tau in ("2", "3"):
        run = runs[f"tau={tau} B=16 C=2 seed=0"]
        prev, last = damaged["latest"][tau]
        assert run.info.status == "FINISHED" and "error" not in run.data.tags
        note = run.data.tags["checkpoint_fallback"]
        assert f"{last} unreadable" in note and f"resumed from {prev}" in note, note
        assert run.data.tags["resumed_from_epoch"] == "1"
        steps = sorted(m.step for m in c.get_metric_history(run.info.run_id, "nscl/cka"))
        assert steps == [0, 1, 2, 3]
        _same_records(_records(c, run.info.run_id, tmp_path / tau),
                      _records(c, reference[f"tau={tau} B=16 C=2 seed=0"].info.run_id,
                               tmp_path / f"ref{tau}"))



# --- disk full in the storage folder -------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs as the sweep's storage folder (needs root: skipped otherwise)."""
    import subprocess

    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_disk_full_in_storage_ends_the_trial_clearly_keeps_checkpoints_and_a_rerun_finishes(
        ray_session, work, classified, small_disk, tmp_path, capsys):
    """After epoch 1 the trial fills the storage folder's disk; its epoch-2 checkpoint cannot
    be written. The trial ends FAILED at once naming the full disk (a retry cannot help),
    the sweep ends cleanly (exit 1), the earlier checkpoints stay readable; once space is
    freed the same command continues the trial from epoch 1 to the same records."""
    import torch

    trial = "tau=2 B=16 C=2 seed=0"
    fault = {"trial": trial, "epoch": 1, "error": "fill_disk", "path": str(small_disk),
             "marker": str(tmp_path / "filled-once")}
    argv = ["--name", "full", "--tracking-uri", work["uri"], "--storage", str(small_disk),
            *TINY, "--tau", "2", "--checkpoint-every", "1", "--max-failures", "2",
            "--inject-fault", json.dumps(fault)]
    assert grid.main(argv) == 1
    out = capsys.readouterr()
    assert "No space left on device" in out.out and "free space, then rerun" in out.out
    assert "could not write" in out.err and "summary_trials.csv" in out.err
    c, runs = _children(work, "full")
    run = runs[trial]
    assert run.info.status == "FAILED" and run.data.tags["attempts"] == "1"
    assert "No space left on device" in run.data.tags["error"]
    assert "[not retried: the storage folder's disk is full" in run.data.tags["error"]
    (trial_dir,) = (small_disk / "full").glob("train_trial_*")
    good = trial_dir / "checkpoint_000001"
    assert [r["epoch"] for r in json.loads((good / "records.json").read_text())] == [0, 1]
    assert torch.load(good / "state.pt", weights_only=False)["epoch"] == 1

    (small_disk / "clnscl-filler").unlink()  # space freed; the same command again
    assert grid.main(argv) == 0
    assert "tried again from their last checkpoint: " + trial in capsys.readouterr().err
    c, runs = _children(work, "full")
    run = runs[trial]
    assert run.info.status == "FINISHED" and run.data.tags["attempts"] == "2"
    assert run.data.tags["resumed_from_epoch"] == "1"
    steps = sorted(m.step for m in c.get_metric_history(run.info.run_id, "nscl/cka"))
    assert steps == [0, 1, 2, 3]
    _, reference = _children(work, "classified")
    _same_records(_records(c, run.info.run_id, tmp_path / "full"),
                  _records(c, reference[trial].info.run_id, tmp_path / "ref"))
