"""Trials never lose work to tracking: a real `mlflow server` on 127.0.0.1 is stopped in the
middle of a real sweep and started again. Every trial finishes, every epoch's metrics reach
MLflow (logged late, from the records the trial kept and checkpointed), no run is left
RUNNING, and one run per trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from sweeps import grid

MLFLOW = str(Path(sys.executable).parent / "mlflow")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 in its own process group (ended by that group only)."""

    def __init__(self, db: Path, artifacts: Path, port: int, log: Path):
        self.cmd = [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{db}",
                    "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
                    "--port", str(port), "--workers", "1"]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc = None

    def start(self, timeout: float = 90.0) -> float:
        t0 = time.time()
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(self.log, "a") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return time.time() - t0
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mlflow server did not answer in time")

    def kill(self) -> None:
        """An abrupt outage: the server's whole process group dies at once (a graceful
        SIGTERM can take many seconds, while the store keeps answering)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group is the server's own
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        try:  # its workers: gone with the group
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


EPOCHS = 60  # long enough (0.2-1 s epochs on a busy machine) to train through the outage
TINY = ["--epochs", str(EPOCHS), "--batch-size", "16", "--classes", "2", "--objectives", "cl,nscl",
        "--set", "synthetic_train_per_class=32", "--set", "synthetic_test_per_class=8",
        "--set", "image_size=16", "--set", "eval_size=16", "--set", "knn_k=5",
        "--set", "warmup_epochs=1", "--set", "eval_every=1", "--cpus-per-trial", "1",
        "--no-analysis", "--report-every", "60", "--checkpoint-every", "1"]


@pytest.mark.slow
def test_tracking_outage_mid_sweep_loses_nothing(tmp_path, fresh_mlflow_store, monkeypatch):
    from mlflow import MlflowClient

    root, sqlite_uri, _ = fresh_mlflow_store("outage")
    server = MlflowServer(root / "mlflow.db", root / "artifacts", _free_port(),
                          tmp_path / "server.log")
    monkeypatch.setenv("CLNSCL_TRACKING_WAIT_S", "90")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    server.start()
    outage = {}

    watcher = MlflowClient(sqlite_uri)  # reads the database file, server or not
    watcher.search_experiments()  # the store is opened now, not when the trials run

    def stop_then_restart():
        """Once a trial has logged epoch 1, stop the server for a while, then restart it."""
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.3)
            try:
                exp = watcher.get_experiment_by_name("outage")
                if exp is None:
                    continue
                runs = watcher.search_runs([exp.experiment_id], "tags.trial_id != ''")
                if any(r.data.metrics.get("epoch", -1) >= 1 for r in runs):
                    break
            except Exception as e:  # noqa: BLE001 - store busy: poll again
                print(f"polling: {e}")
        else:
            return
        outage["stopped"] = time.time()
        server.kill()
        # + the restart (~7-10 s here): longer than one MLflow request timeout (10 s, set for
        # trials), so a trial that is not blocked by the store reports epochs in between
        time.sleep(10)
        outage["restart_s"] = server.start()
        outage["back"] = time.time()

    th = threading.Thread(target=stop_then_restart, daemon=True)
    th.start()
    try:
        t0 = time.time()
        rc = grid.main(["--name", "outage", "--tau", "0.5", "1.0", *TINY,
                        "--storage", str(tmp_path / "ray_results"),
                        "--tracking-uri", server.url, "--max-failures", "0"])
        wall = time.time() - t0
        th.join(timeout=150)
        print(f"sweep {wall:.0f}s, outage {outage}")
        assert "stopped" in outage, "the server was never stopped mid-sweep"
        assert "back" in outage
        assert rc == 0, "a tracking outage must not fail a trial"

        client = MlflowClient(server.url)  # serves the artifacts too
        exp = client.get_experiment_by_name("outage")
        runs = client.search_runs([exp.experiment_id])
        children = [r for r in runs if "trial_id" in r.data.tags]
        parents = [r for r in runs if "trial_id" not in r.data.tags]
        assert len(children) == 2, "one run per trial"
        assert len({r.data.tags["trial_id"] for r in children}) == 2
        assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
        assert {r.info.status for r in children} == {"FINISHED"}
        assert parents[0].info.status == "FINISHED"
        for r in children:
            arts = {a.path for a in client.list_artifacts(r.info.run_id)}
            assert "records.json" in arts
            path = client.download_artifacts(r.info.run_id, "records.json", str(tmp_path))
            records = json.loads(Path(path).read_text())["records"]
            assert [x["epoch"] for x in records] == list(range(EPOCHS + 1))
            keys = sorted({k for x in records for k, v in x.items()
                           if isinstance(v, (int, float)) and not isinstance(v, bool)})
            assert {"epoch", "nscl/cka", "cl/loss"} <= set(keys)
            for key in keys:  # every record's every number, at step = epoch
                got = {m.step for m in client.get_metric_history(r.info.run_id, key)}
                want = {x["epoch"] for x in records if key in x}
                assert want <= got, (r.info.run_name, key, sorted(want - got))
        # trials kept training while the server was down: Tune got epochs in that window
        # (a trial that blocks on MLflow's own HTTP retries reports nothing until it is back)
        during = []
        for f in (tmp_path / "ray_results" / "outage").glob("train_trial_*/result.json"):
            for line in f.read_text().splitlines():
                row = json.loads(line)
                if outage["stopped"] < row["timestamp"] < outage["back"]:
                    during.append((f.parent.name[:20], row["epoch"]))
        assert during, f"no trial reported an epoch during the outage {outage}"
        # the outage hit the trials while they trained (not only between sweeps)
        hit = [r for r in children if int(r.data.tags.get("tracking_outages", "0")) >= 1
               or r.data.tags.get("backfilled_records")]
        assert hit, "no trial noticed the outage: it did not happen mid-training"
    finally:
        th.join(timeout=1)
        server.stop()
