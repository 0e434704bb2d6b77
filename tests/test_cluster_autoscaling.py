"""A sweep driven from the head of an autoscaling cluster made by Ray itself on this
machine (`RAY_FAKE_CLUSTER=1`, provider `fake_multinode`), built from cluster.yaml's own node
types: a CPU-only head, the GPU worker type at 0 workers with fake GPU resources. Trials ask
for a GPU share; the autoscaler launches workers; the trials run there; the sweep finishes.

The head is started here (`ray start --head --block` in its own process group, on
127.0.0.1, its own port and temp folder) and only that group is ended: Ray's
AutoscalingCluster helper runs `ray stop --force`, which would end every Ray on the machine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
TINY = ["--epochs", "2", "--batch-size", "16", "--classes", "2", "--objectives", "cl,nscl",
        "--set", "synthetic_train_per_class=16", "--set", "synthetic_test_per_class=8",
        "--set", "image_size=16", "--set", "eval_size=16", "--set", "knn_k=5",
        "--set", "warmup_epochs=1", "--no-analysis", "--report-every", "60",
        "--device", "cpu", "--cpus-per-trial", "1", "--gpus-per-trial", "1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_cluster_config(cluster: dict, port: int) -> dict:
    """cluster.yaml's node types on the fake provider: the head keeps no GPU, the GPU worker
    type keeps its GPU count (fake) and starts at 0 workers; CPUs shrunk to this machine."""
    head = cluster["available_node_types"][cluster["head_node_type"]]
    workers = {k: v for k, v in cluster["available_node_types"].items()
               if k != cluster["head_node_type"]}
    types = {"ray.head.default": {"resources": {"CPU": 1, "GPU": head["resources"].get("GPU", 0)},
                                  "node_config": {}, "max_workers": 0}}
    for name, nt in workers.items():
        types[name] = {"resources": {"CPU": 1, "GPU": nt["resources"]["GPU"]},
                       "node_config": {}, "min_workers": nt["min_workers"], "max_workers": 2}
    return {
        "cluster_name": "clnscl-fake", "max_workers": 2, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5, "docker": {}, "auth": {"ssh_user": "nobody"},
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{port}",
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "available_node_types": types, "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


@pytest.mark.slow
def test_head_sweep_on_fake_autoscaling_cluster_launches_gpu_workers(tmp_path):
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert cluster["available_node_types"]["worker_gpu"]["min_workers"] == 0
    port = _free_port()
    conf = fake_cluster_config(cluster, port)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    token = Path.home() / ".ray" / "auth_token"
    # token authentication: the head, `ray status` and the driver share one token
    (home / ".ray" / "auth_token").write_text(
        token.read_text() if token.exists() else os.urandom(16).hex())
    (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(conf))  # as on a `ray up` head
    temp_dir = tempfile.mkdtemp(prefix="rf", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "HOME": str(home), "RAY_FAKE_CLUSTER": "1",
           "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=1", "--num-gpus=0",
         "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--include-dashboard=false",
         f"--autoscaling-config={home / 'ray_bootstrap_config.yaml'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while subprocess.run([RAY, "status", f"--address={address}"], env=env,
                             capture_output=True, timeout=60, check=False).returncode != 0:
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.time() < deadline, "the fake head did not come up"
            time.sleep(2)
        # the driver as `ray exec` runs it on the head: its own process, the head's HOME
        # (autoscaler config there) and token auth; the address is not passed
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        drv_env = {k: v for k, v in env.items() if k not in ("RAY_FAKE_CLUSTER",
                                                             "AUTOSCALER_UPDATE_INTERVAL_S")}
        drv_env["RAY_ADDRESS"] = address  # several Rays on this machine: name ours
        drv_env.pop("MLFLOW_TRACKING_URI", None)
        t0 = time.time()
        r = subprocess.run([sys.executable, str(ROOT / "sweeps" / "grid.py"), "--name",
                            "fake-autoscale", "--tau", "0.5", "1.0", *TINY, "--storage",
                            str(tmp_path / "ray_results"), "--tracking-uri", uri],
                           env=drv_env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=400, check=False)
        print(f"sweep on the fake cluster: {time.time() - t0:.0f}s")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        status = subprocess.run([RAY, "status", f"--address={address}"], env=env,
                                capture_output=True, text=True, timeout=60, check=False).stdout
        active = status.split("Active:")[1].split("Pending:")[0]
        assert "worker_gpu" in active, status  # launched by the autoscaler, still idle

        from mlflow import MlflowClient
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("fake-autoscale")
        runs = client.search_runs([exp.experiment_id], "tags.trial_id != ''")
        assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
        used = {n for r in runs for n in r.data.tags["node_ids"].split(",")}
        assert FAKE_HEAD_NODE_ID not in used, "no trial ran on the CPU head"
        assert all(n.rstrip("0123456789") == n[:len(FAKE_HEAD_NODE_ID) - 5] for n in used)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head's own group: its workers too
        try:
            head.wait(timeout=15)  # (Ray drains nodes for up to 30 s; no need here)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        time.sleep(2)
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of the group still there
        except ProcessLookupError:
            pass
        log.close()
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)
        print(json.dumps({"head_log_tail": (tmp_path / "head.log").read_text()[-500:]}))
