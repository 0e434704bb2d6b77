"""The sweep against a real PostgreSQL 15 server (MLflow's SQL store, `--tracking-uri
postgresql://...`): concurrent trials, exactly one run per trial; and a sweep resumed
with another tracking URI (its old store gone) back-fills the new one from checkpoints."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sweeps import grid
from sweeps import tracking as T

PG_BIN = Path("/usr/lib/postgresql/15/bin")
TINY = ["--epochs", "3", "--batch-size", "16", "--classes", "2", "--objectives", "cl,nscl",
        "--set", "synthetic_train_per_class=16", "--set", "synthetic_test_per_class=8",
        "--set", "image_size=16", "--set", "eval_size=16", "--set", "knn_k=5",
        "--set", "warmup_epochs=1", "--set", "eval_every=1", "--cpus-per-trial", "1",
        "--no-analysis", "--report-every", "60"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server run as the `postgres` user (it refuses root) in a temporary data
    folder, on a loopback port; ended through its own process group."""
    pytest.importorskip("psycopg2")
    if not (PG_BIN / "postgres").exists() or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL 15 binaries and root (to run the server as postgres)")
    import psycopg2

    data = Path(tempfile.mkdtemp(prefix="clnscl-pg-", dir="/tmp"))
    shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run([str(PG_BIN / "initdb"), "-D", str(data / "db"), "-U", "postgres", "-A",
                    "trust", "-E", "UTF8", "--no-sync"], user="postgres", group="postgres",
                   check=True, capture_output=True, cwd=data)
    log = open(data / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(PG_BIN / "postgres"), "-D", str(data / "db"), "-k", str(data),
                             "-h", "127.0.0.1", "-p", str(port), "-c", "fsync=off",
                             "-c", "max_connections=100"], user="postgres", group="postgres",
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=data)
    try:
        deadline = time.time() + 60
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres",
                                        dbname="postgres", connect_timeout=2)
                break
            except psycopg2.OperationalError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError((data / "server.log").read_text()[-2000:]) from None
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
            cur.execute("CREATE DATABASE mlflow_b")
        conn.close()
        yield {"port": port, "uri": f"postgresql://postgres@127.0.0.1:{port}/mlflow",
               "uri_b": f"postgresql://postgres@127.0.0.1:{port}/mlflow_b"}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # fast shutdown of the server's own group
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def test_postgresql_uri_is_checked_by_connecting(postgres):
    checked = T.check_tracking_uri(postgres["uri"])
    assert checked == T.postgresql_driver(postgres["uri"])
    assert checked.startswith("postgresql") and checked.endswith(f":{postgres['port']}/mlflow")
    bad = f"postgresql://postgres:secret@127.0.0.1:{_free_port()}/mlflow"
    with pytest.raises(T.TrackingError) as e:
        T.check_tracking_uri(bad, timeout=2)
    assert "does not accept a connection" in str(e.value)
    assert "secret" not in str(e.value) and "postgres:***@127.0.0.1" in str(e.value)
    with pytest.raises(T.TrackingError, match="postgresql://user:password@host"):
        T.check_tracking_uri("postgres://u@127.0.0.1/x")


@pytest.mark.slow
def test_sweep_on_postgresql_one_run_per_concurrent_trial(postgres, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = str(tmp_path / "ray_results")
    rc = grid.main(["--name", "pg", "--tau", "0.2", "0.5", "1.0", *TINY, "--storage", storage,
                    "--tracking-uri", postgres["uri"], "--max-concurrent", "2"])
    assert rc == 0
    client = MlflowClient(T.postgresql_driver(postgres["uri"]))
    exp = client.get_experiment_by_name("pg")
    assert exp.artifact_location.startswith((tmp_path / "mlartifacts").as_uri())
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "trial_id" in r.data.tags]
    assert len(runs) == 4 and len(children) == 3, "one parent, exactly one run per trial"
    assert len({r.data.tags["trial_id"] for r in children}) == 3
    assert sorted(r.data.params["tau"] for r in children) == ["0.2", "0.5", "1.0"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    for r in children:
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "nscl/cka"))
        assert steps == [0, 1, 2, 3]
    # trials overlapped in time (concurrent writers on one database)
    spans = sorted((r.info.start_time, r.info.end_time) for r in children)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), "no two trials ran at once"

    # resume under another tracking URI (the first store is gone, e.g. a new head): accepted,
    # finished trials are not rerun, and the new store gets their runs from the checkpoints
    rc = grid.main(["--name", "pg", "--tau", "0.2", "0.5", "1.0", *TINY, "--storage", storage,
                    "--tracking-uri", postgres["uri_b"], "--max-concurrent", "2"])
    assert rc == 0
    client_b = MlflowClient(T.postgresql_driver(postgres["uri_b"]))
    exp_b = client_b.get_experiment_by_name("pg")
    runs_b = client_b.search_runs([exp_b.experiment_id])
    children_b = [r for r in runs_b if "trial_id" in r.data.tags]
    assert sorted(r.data.tags["trial_id"] for r in children_b) == \
        sorted(r.data.tags["trial_id"] for r in children)
    assert {r.info.status for r in runs_b} == {"FINISHED"}
    for r in children_b:
        steps = sorted(m.step for m in client_b.get_metric_history(r.info.run_id, "nscl/cka"))
        assert steps == [0, 1, 2, 3]
        assert r.data.tags.get("backfilled") == "true"
    stored = (Path(storage) / "pg" / grid.SWEEP_FILE).read_text()
    assert f'{postgres["port"]}/mlflow_b"' in stored and f'{postgres["port"]}/mlflow"' not in stored
