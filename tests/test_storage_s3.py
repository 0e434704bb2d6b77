"""Tune storage on an S3 API: a real S3-compatible server (moto's server mode) on 127.0.0.1.
A sweep with --storage s3://... writes its checkpoints there, and a trial that fails is
restored from its checkpoint in the bucket (one MLflow run, every epoch once)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sweeps import grid

BUCKET = "clnscl-test"
TINY = ["--epochs", "3", "--batch-size", "16", "--classes", "2", "--objectives", "cl,nscl",
        "--set", "synthetic_train_per_class=16", "--set", "synthetic_test_per_class=8",
        "--set", "image_size=16", "--set", "eval_size=16", "--set", "knn_k=5",
        "--set", "warmup_epochs=1", "--set", "eval_every=1", "--cpus-per-trial", "1",
        "--no-analysis", "--report-every", "60", "--checkpoint-every", "1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    exe = Path(sys.executable).parent / "moto_server"
    log = open(tmp_path / "moto.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, \
                    (tmp_path / "moto.log").read_text()[-2000:]
                time.sleep(0.3)
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": url, "AWS_ENDPOINT_URL_S3": url,
                     "AWS_EC2_METADATA_DISABLED": "true"}.items():
            monkeypatch.setenv(k, v)  # boto3, pyarrow (Tune's storage) and the trials
        s3 = boto3.client("s3", endpoint_url=url)
        s3.create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_tune_storage_on_s3_checkpoints_and_restores(s3_server, tmp_path, monkeypatch):
    import ray
    from mlflow import MlflowClient

    if ray.is_initialized():  # the trials must inherit the S3 settings above
        ray.shutdown()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    marker = tmp_path / "failed-once"
    fault = {"trial": "tau=0.5 B=16 C=2 seed=0", "epoch": 2, "marker": str(marker)}
    rc = grid.main(["--name", "s3sweep", "--tau", "0.5", "1.0", *TINY,
                    "--storage", f"s3://{BUCKET}/ray_results", "--tracking-uri", uri,
                    "--max-failures", "2", "--inject-fault", json.dumps(fault)])
    assert rc == 0
    assert marker.exists(), "the injected failure happened"

    keys = [o["Key"] for page in s3_server.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix="ray_results/s3sweep/") for o in page.get("Contents", [])]
    assert "ray_results/s3sweep/clnscl_sweep.json" in keys
    ckpts = [k for k in keys if "/checkpoint_" in k]
    assert any(k.endswith("/state.pt") for k in ckpts)
    assert any(k.endswith("/records.json") for k in ckpts)
    assert not (tmp_path / "ray_results").exists(), "nothing went to a local folder"

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("s3sweep")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id],
                                                             "tags.trial_id != ''")}
    assert len(runs) == 2 and {r.info.status for r in runs.values()} == {"FINISHED"}
    retried = runs["tau=0.5 B=16 C=2 seed=0"]
    assert retried.data.tags["attempts"] == "2"
    assert retried.data.tags["resumed_from_epoch"] == "2", "restored from the S3 checkpoint"
    steps = sorted(m.step for m in client.get_metric_history(retried.info.run_id, "nscl/cka"))
    assert steps == [0, 1, 2, 3]
