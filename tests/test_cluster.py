"""cluster.yaml against Ray's own schema, and a two-node sweep on this machine with real Ray
processes (ray.cluster_utils.Cluster) that loses its second node mid-sweep."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster_config():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_rays_validation(cluster_config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(cluster_config)  # the file as written (jsonschema + Ray's own checks)
    validate_config(prepare_config(cluster_config))  # what `ray up` validates after defaults


def test_cluster_yaml_validation_catches_mistakes(cluster_config):
    import jsonschema
    from ray.autoscaler._private.util import validate_config

    bad = dict(cluster_config, not_a_field=1)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(bad)


def test_cluster_layout(cluster_config):
    c = cluster_config
    assert c["provider"]["type"] == "aws"
    types = c["available_node_types"]
    head = types[c["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != c["head_node_type"]}
    assert not re.match(r"^(g|p)\d", head["node_config"]["InstanceType"]), "head is a CPU node"
    assert len(workers) == 1
    (worker,) = workers.values()
    assert worker["min_workers"] == 0
    assert re.match(r"^(g|p)\d", worker["node_config"]["InstanceType"]), "workers have GPUs"


def test_cluster_pins_this_ray_and_installs_the_project(cluster_config):
    import ray

    setup = "\n".join(cluster_config["setup_commands"])
    pinned = re.search(r"ray\[[^\]]*\]==([0-9][^\"' ]*)", setup)
    assert pinned, "Ray is pinned in setup_commands"
    assert pinned.group(1) == ray.__version__, "the cluster must run the driver's Ray version"
    assert "pip install -q -e ~/clnscl" in setup
    assert cluster_config["file_mounts"]["~/clnscl"] == "."


def test_cluster_keeps_token_auth_on(cluster_config):
    text = CLUSTER_YAML.read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [cmd for cmd in cluster_config[key] if "ray start" in cmd]
        assert starts and all("RAY_AUTH_MODE=token" in cmd for cmd in starts)
    assert cluster_config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("RAY_AUTH_MODE=token" in cmd for cmd in cluster_config["setup_commands"])


def test_cluster_mlflow_server_on_loopback_with_s3_artifacts(cluster_config):
    head = "\n".join(cluster_config["head_start_ray_commands"])
    assert "mlflow server" in head
    assert "--host 127.0.0.1" in head and "0.0.0.0" not in head
    assert re.search(r"--default-artifact-root s3://", head)
    assert "--dashboard-host=127.0.0.1" in head
    assert "sqlite:///$HOME/" in head  # absolute SQLite path on the head


# --- file_mounts: the repository as `ray up` rsyncs it ------------------------------------
def _rsync_as_ray_does(config: dict, src: Path, dst: Path) -> None:
    """rsync ``src`` to ``dst`` with the arguments Ray's SSH command runner builds from the
    config's ``rsync_exclude``/``rsync_filter`` (``-avz`` + filters + ``src/ dst/``)."""
    import shutil
    import subprocess

    from ray.autoscaler._private.command_runner import SSHCommandRunner

    if shutil.which("rsync") is None:
        pytest.fail("rsync is not installed (apt-get install rsync): `ray up` needs it too")
    opts = {"rsync_exclude": config.get("rsync_exclude"),
            "rsync_filter": config.get("rsync_filter")}
    args = SSHCommandRunner._create_rsync_filter_args(None, opts)
    subprocess.run(["rsync", "-az", *args, f"{src}/", f"{dst}/"], check=True, cwd=src,
                   capture_output=True, text=True)


def _git_files(root: Path) -> list[str]:
    import subprocess

    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return [f for f in out.split("\0") if f and (root / f).is_file()]


def test_rsync_excludes_keep_every_project_file(cluster_config, tmp_path):
    """The YAML's own exclude list, applied with real rsync to this repository: every
    tracked file arrives (clnscl/data/ included), the venv, .git and results do not."""
    assert cluster_config["file_mounts"]["~/clnscl"] == "."
    dst = tmp_path / "node"
    _rsync_as_ray_does(cluster_config, ROOT, dst)
    tracked = _git_files(ROOT)
    assert any(f.startswith("clnscl/data/") for f in tracked)
    missing = [f for f in tracked if not (dst / f).is_file()]
    assert not missing, f"files that would not reach the nodes: {missing}"
    # and every package file on disk (tracked or not yet), not only what git knows
    for pkg in ("clnscl", "sweeps", "analysis"):
        for f in (ROOT / pkg).rglob("*.py"):
            if "__pycache__" not in f.parts:
                assert (dst / f.relative_to(ROOT)).is_file(), f
    assert not (dst / ".venv").exists() and not (dst / ".git").exists()


def test_rsync_excludes_drop_results_only_at_the_root(cluster_config, tmp_path):
    """Data, results and stores at the root stay behind; same-named folders deeper in the
    tree (a package called data) travel."""
    src = tmp_path / "repo"
    for rel in ("data/cifar-10-batches-py/data_batch_1", "ray_results/x/result.json",
                "mlartifacts/1/a.txt", "analysis_out/q/report.md", "mlflow.db",
                "runs/r.json", ".venv/bin/python", ".git/HEAD", "clnscl/__pycache__/a.pyc",
                # must arrive:
                "clnscl/data/__init__.py", "clnscl/data/synthetic.py", "sweeps/data/x.yaml",
                "analysis/runs/keep.py", "docs/mlflow.db.md", "scripts/setup_node.sh"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("x")
    dst = tmp_path / "node"
    _rsync_as_ray_does(cluster_config, src, dst)
    arrived = {str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()}
    assert arrived == {"clnscl/data/__init__.py", "clnscl/data/synthetic.py",
                       "sweeps/data/x.yaml", "analysis/runs/keep.py", "docs/mlflow.db.md",
                       "scripts/setup_node.sh"}


def test_unanchored_data_exclude_loses_the_data_package(cluster_config, tmp_path):
    """The check above catches the old list: unanchored "data" drops clnscl/data/."""
    old = dict(cluster_config, rsync_exclude=["**/.venv", "**/.git", "data"], rsync_filter=[])
    dst = tmp_path / "node"
    _rsync_as_ray_does(old, ROOT / "clnscl", dst)
    assert (dst / "config.py").is_file()
    assert not (dst / "data").exists()


# --- two nodes, one lost mid-sweep ---------------------------------------------------------
TINY = ["--epochs", "6", "--batch-size", "16", "--classes", "2",
        "--set", "synthetic_train_per_class=16", "--set", "synthetic_test_per_class=8",
        "--set", "image_size=16", "--set", "eval_size=16", "--set", "knn_k=5",
        "--set", "warmup_epochs=1", "--no-analysis", "--report-every", "60"]


@pytest.mark.slow
def test_two_node_sweep_survives_losing_a_node(tmp_path):
    import ray
    from mlflow import MlflowClient
    from ray.cluster_utils import Cluster

    from sweeps import grid

    if ray.is_initialized():
        ray.shutdown()
    fast_failure_detection = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                              "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 1, "_system_config": fast_failure_detection})
    try:
        second = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        head_id = cluster.head_node.node_id
        second_id = second.node_id
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        removed = {}

        def remove_second_node_mid_trial():
            """As soon as a trial on the second node has logged epoch 1 (so a checkpoint
            exists and five epochs remain), kill that node's processes."""
            client = None
            deadline = time.time() + 240
            while time.time() < deadline and not removed:
                time.sleep(0.5)
                try:
                    client = client or MlflowClient(uri)
                    exp = client.get_experiment_by_name("two-nodes")
                    if exp is None:
                        continue
                    for run in client.search_runs([exp.experiment_id], "tags.trial_id != ''"):
                        if run.data.tags.get("node_id") == second_id and \
                                run.data.metrics.get("epoch", 0) >= 1:
                            cluster.remove_node(second, allow_graceful=False)
                            removed.update(run=run.info.run_id, epoch=run.data.metrics["epoch"])
                            return
                except Exception as e:  # noqa: BLE001 - the store may be busy or not created yet
                    print(f"polling MLflow: {e}")

        killer = threading.Thread(target=remove_second_node_mid_trial, daemon=True)
        killer.start()
        rc = grid.main(["--name", "two-nodes", "--tau", "0.5", "1.0", *TINY,
                        "--storage", str(tmp_path / "ray_results"), "--tracking-uri", uri,
                        "--cpus-per-trial", "1", "--checkpoint-every", "1",
                        "--max-failures", "3"])
        killer.join(timeout=5)
        assert removed, "no trial ran on the second node before the sweep ended"
        assert rc == 0, "every trial must finish despite the lost node"

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("two-nodes")
        runs = client.search_runs([exp.experiment_id], "tags.trial_id != ''")
        assert len(runs) == 2, "one run per trial, no duplicate after the retry"
        assert all(r.info.status == "FINISHED" for r in runs)
        nodes_used = {n for r in runs for n in r.data.tags["node_ids"].split(",")}
        assert {head_id, second_id} <= nodes_used, "both nodes ran trials"
        moved = client.get_run(removed["run"])
        assert moved.data.tags["node_ids"].split(",")[0] == second_id
        assert moved.data.tags["node_ids"].split(",")[-1] == head_id, "retried on the head"
        assert int(moved.data.tags["attempts"]) >= 2
        steps = sorted(m.step for m in client.get_metric_history(removed["run"], "nscl/cka"))
        assert steps == list(range(7)), "each epoch logged once across the retry"
    finally:
        ray.shutdown()
        cluster.shutdown()
