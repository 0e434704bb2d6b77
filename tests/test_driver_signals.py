"""Fault matrix, the driver's rows (README "What survives what"): the sweep driver gets
SIGINT, SIGTERM or SIGKILL while one trial is mid-run and another has finished; the same
command run again finishes the sweep. Nothing is lost: the finished trial is not rerun,
every trial ends with exactly one FINISHED MLflow run, none stays RUNNING, there is one
parent run, and every trial's records equal an undisturbed sweep's.

The driver is a real subprocess (`python sweeps/grid.py ...`, its own local Ray); the
test hook makes trial tau=2 sleep after epoch 1 (once: a marker file), so the signal
lands while that trial is known to be mid-run with a checkpoint of epoch 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import TINY, _children, _records, _same_records

from sweeps import grid

REPO = Path(grid.__file__).resolve().parents[1]
TAUS = ("1", "2")
STALLED = "tau=2 B=16 C=2 seed=0"
DONE = "tau=1 B=16 C=2 seed=0"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("driver_signals")
    return {"dir": d, "uri": f"sqlite:///{d}/mlflow.db", "storage": str(d / "ray_results")}


def _argv(work, name, marker=None):
    argv = ["--name", name, "--tracking-uri", work["uri"], "--storage", work["storage"], *TINY,
            "--tau", *TAUS, "--checkpoint-every", "1", "--max-failures", "1"]
    if marker is not None:
        argv += ["--inject-fault", json.dumps({"trial": STALLED, "epoch": 1, "error": "stall",
                                               "seconds": 600, "marker": str(marker)})]
    return argv


@pytest.fixture(scope="module")
def reference(ray_session, work):
    assert grid.main(_argv(work, "undisturbed")) == 0
    return _children(work, "undisturbed")


def _run_status(work, name, run_name):
    from mlflow import MlflowClient

    c = MlflowClient(work["uri"])
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return None
    for r in c.search_runs([exp.experiment_id]):
        if r.info.run_name == run_name:
            return r.info.status
    return None


def _interrupt(work, name, sig, tmp: Path) -> dict:
    """Start the driver, wait until the stalled trial sleeps after epoch 1 and the other one
    has FINISHED, send ``sig`` to the driver alone, wait for it to exit."""
    marker = tmp / f"{name}.stalled"
    argv = _argv(work, name, marker)
    log = (tmp / f"{name}.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen([sys.executable, str(REPO / "sweeps" / "grid.py"), *argv],
                            cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 400
        while not (marker.exists() and _run_status(work, name, DONE) == "FINISHED"):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"driver exited ({proc.returncode}) or timed out before the trial "
                            f"stalled:\n{(tmp / f'{name}.log').read_text()[-3000:]}")
            time.sleep(1)
        assert _run_status(work, name, STALLED) == "RUNNING"
        os.kill(proc.pid, sig)
        rc = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:  # whatever of the driver's own Ray outlived it (its process group only)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
    return {"rc": rc, "argv": argv, "log": (tmp / f"{name}.log").read_text(), "marker": marker}


def _statuses(work, name) -> dict:
    _, runs = _children(work, name)
    return {n: (r.info.status, r.data.tags.get("error", "")) for n, r in runs.items()}


def _parents(work, name):
    from mlflow import MlflowClient

    c = MlflowClient(work["uri"])
    exp = c.get_experiment_by_name(name)
    return [r for r in c.search_runs([exp.experiment_id])
            if "mlflow.parentRunId" not in r.data.tags]


def _assert_finished_as_undisturbed(work, name, reference, tmp: Path, done_not_rerun=True):
    c, runs = _children(work, name)  # asserts one run per trial
    assert sorted(runs) == sorted(reference[1]), sorted(runs)
    for run_name, run in runs.items():
        assert run.info.status == "FINISHED", (run_name, run.data.tags.get("error"))
        _same_records(_records(c, run.info.run_id, tmp / name / run_name),
                      _records(reference[0], reference[1][run_name].info.run_id,
                               tmp / "ref" / run_name))
        steps = [m.step for m in c.get_metric_history(run.info.run_id, "nscl/cka")]
        assert sorted(steps) == [0, 1, 2, 3], (run_name, steps)  # each epoch logged once
    if done_not_rerun:
        assert runs[DONE].data.tags["attempts"] == "1"  # the finished trial was not rerun
    (parent,) = _parents(work, name)
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_driver_sigint_sigterm_end_open_runs_killed_and_a_rerun_finishes(sig, reference, work,
                                                                         tmp_path, capsys):
    name = f"sig{sig.name.lower()}"
    out = _interrupt(work, name, sig, tmp_path)
    assert out["rc"] == 130, out["log"][-3000:]
    assert "resume with the same command" in out["log"]
    # Tune's console table names trials by grid point, as MLflow does
    rows = [ln for ln in out["log"].splitlines() if ln.startswith("| ") and "16 |" in ln]
    assert rows and all(ln.startswith(("| tau=1 B=16 C=2 seed=0 ", "| tau=2 B=16 C=2 seed=0 "))
                        for ln in rows), rows[:4]
    st = _statuses(work, name)
    assert st[DONE][0] == "FINISHED"
    assert st[STALLED][0] == "KILLED", st
    assert f"sweep interrupted ({sig.name} to the driver)" in st[STALLED][1], st
    (parent,) = _parents(work, name)
    assert parent.info.status == "KILLED"
    assert sig.name in parent.data.tags.get("error", ""), parent.data.tags.get("error")

    assert grid.main(out["argv"]) == 0  # the same command again (the stall fired once)
    _assert_finished_as_undisturbed(work, name, reference, tmp_path)


@pytest.mark.slow
def test_driver_sigkill_then_rerun_with_the_sweep_file_unreadable(reference, work, tmp_path,
                                                                  capsys):
    """SIGKILL leaves the runs RUNNING (nothing can end them); the rerun continues them.
    The sweep file is also damaged before the rerun: the parent is found again in MLflow
    by its tags, so no second parent and no second run per trial are created."""
    name = "sigkill"
    out = _interrupt(work, name, signal.SIGKILL, tmp_path)
    assert out["rc"] == -signal.SIGKILL
    st = _statuses(work, name)
    assert st[STALLED][0] == "RUNNING" and st[DONE][0] == "FINISHED", st
    sweep_file = Path(work["storage"]) / name / grid.SWEEP_FILE
    assert sweep_file.is_file()
    sweep_file.write_text("{ half-written")
    capsys.readouterr()

    assert grid.main(out["argv"]) == 0
    err = capsys.readouterr().err
    assert f"sweep file {sweep_file} is unreadable" in err and "found its parent run" in err, err
    # Tune snapshots its experiment state every few seconds, so a trial that finished just
    # before the SIGKILL may be continued from its last checkpoint Tune knew of (its last
    # epochs repeated: the same records, each epoch logged once, one run)
    _assert_finished_as_undisturbed(work, name, reference, tmp_path, done_not_rerun=False)
    assert json.loads(sweep_file.read_text())["name"] == name  # written again


@pytest.mark.slow
def test_sweep_file_gone_and_store_without_its_parent_is_refused(work, tmp_path, capsys):
    """Resuming a sweep whose file is unreadable against a store that never saw it refuses
    (exit 2) instead of starting a second parent."""
    exp_dir = Path(work["storage"]) / "orphan"
    exp_dir.mkdir(parents=True)
    (exp_dir / grid.SWEEP_FILE).write_text("\x00\x01 not json")
    (exp_dir / "tuner.pkl").write_bytes(b"")  # Tune's marker: an experiment lives here
    other = f"sqlite:///{tmp_path}/other.db"
    rc = grid.main(["--name", "orphan", "--tracking-uri", other, "--storage", work["storage"],
                    *TINY, "--tau", "1"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "holds no parent run of it" in err and "orphan" in err, err
