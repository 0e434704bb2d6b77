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


def test_cluster_pins_image_and_versions_of_the_driver(cluster_config):
    """Ray's own image of the driver's Ray and Python on every node, a current DL AMI
    resolved by EC2, and the pinned versions = the ones installed here."""
    import sys
    from importlib import metadata

    import ray

    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    d = cluster_config["docker"]
    assert d["head_image"] == f"rayproject/ray:{ray.__version__}-{py}-cpu"
    assert d["worker_image"] == d["image"] == f"rayproject/ray:{ray.__version__}-{py}-gpu"
    for name, nt in cluster_config["available_node_types"].items():
        ami = nt["node_config"]["ImageId"]
        assert ami.startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/"), name
        assert "nvidia-driver" in ami
    pins = dict(line.split("==") for line in
                (ROOT / "scripts" / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert {"ray", "mlflow", "torch"} <= set(pins)
    for pkg, version in pins.items():
        assert metadata.version(pkg).split("+")[0] == version, pkg
    assert cluster_config["setup_commands"] == ["bash ~/clnscl/scripts/node_setup.sh"]
    assert cluster_config["file_mounts"]["~/clnscl"] == "."


def test_cluster_keeps_token_auth_on(cluster_config):
    text = CLUSTER_YAML.read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [cmd for cmd in cluster_config[key] if "ray start" in cmd]
        assert starts and all("RAY_AUTH_MODE=token" in cmd for cmd in starts)
    assert cluster_config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert 'export RAY_AUTH_MODE=token' in (ROOT / "scripts" / "node_setup.sh").read_text()


def test_cluster_mlflow_server_supervised_postgres_s3_loopback(cluster_config):
    head = "\n".join(cluster_config["head_start_ray_commands"])
    assert "scripts/mlflow_server.sh start" in head and "nohup" not in head
    assert 'MLFLOW_BACKEND_URI="$(cat ~/.clnscl/mlflow_db_uri)"' in head
    assert "MLFLOW_ARTIFACTS=s3://" in head
    assert 'MLFLOW_HOSTS="127.0.0.1 $(hostname' in head and "0.0.0.0" not in head
    assert "sqlite" not in head  # the store outlives the head
    assert "--dashboard-host=127.0.0.1" in head
    env = "\n".join(cluster_config["head_setup_commands"])
    assert "MLFLOW_TRACKING_URI=http://${HEAD_IP}:5000" in env
    assert "CLNSCL_ARTIFACT_ROOT=s3://" in env


def _policy(name: str) -> list[dict]:
    import json

    return json.loads((ROOT / "scripts" / "aws" / name).read_text())["Statement"]


def test_least_privilege_instance_profiles_and_no_world_ssh(cluster_config):
    import subprocess

    text = CLUSTER_YAML.read_text()
    assert "0.0.0.0/0" not in text and "::/0" not in text
    types = cluster_config["available_node_types"]
    head = types[cluster_config["head_node_type"]]["node_config"]
    (worker,) = [v["node_config"] for k, v in types.items()
                 if k != cluster_config["head_node_type"]]
    assert head["IamInstanceProfile"] == {"Name": "clnscl-head"}
    assert worker["IamInstanceProfile"] == {"Name": "clnscl-worker"}
    # own security groups on every node type: Ray then creates none (its default group
    # opens SSH to 0.0.0.0/0)
    assert all(nt["node_config"].get("SecurityGroupIds") for nt in types.values())
    for name in ("worker-policy.json", "head-policy.json"):
        for st in _policy(name):
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), st
            if any(a.startswith("s3:") for a in actions):
                assert st["Resource"] in ("arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/*"), st
    worker_actions = {a for st in _policy("worker-policy.json")
                      for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])}
    assert {a.split(":")[0] for a in worker_actions} == {"s3"}
    (pass_role,) = [st for st in _policy("head-policy.json") if st["Action"] == "iam:PassRole"]
    assert pass_role["Resource"].endswith(":role/clnscl-worker")
    terminate = [st for st in _policy("head-policy.json")
                 if "ec2:TerminateInstances" in st["Action"]]
    assert terminate and all("Condition" in st for st in terminate)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "aws_setup.sh"), "b", "0.0.0.0/0"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 2 and "refusing SSH" in r.stderr


def _scratch_venv(tmp_path: Path) -> Path:
    """A fresh venv that sees this venv's packages (through a .pth): the node's image has
    Ray, and pip finds the pinned packages installed, so nothing is downloaded."""
    import subprocess
    import sys
    import sysconfig

    venv = tmp_path / "venv"
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True, capture_output=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "dev_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin" / "python"


@pytest.mark.slow
def test_node_bootstrap_script_runs_here_in_a_scratch_folder(cluster_config, tmp_path):
    """scripts/node_setup.sh, as setup_commands runs it, in a scratch HOME with the
    repository rsynced there exactly as `ray up` does."""
    import os
    import subprocess

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    _rsync_as_ray_does(cluster_config, ROOT, home / "clnscl")
    py = _scratch_venv(tmp_path)
    env = {**os.environ, "HOME": str(home), "PYTHON": str(py), "PIP_NO_INPUT": "1"}
    env.pop("VIRTUAL_ENV", None)
    script = str(home / "clnscl" / "scripts" / "node_setup.sh")

    r = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 1 and "auth_token" in r.stderr  # no token: refused, said why
    (home / ".ray" / "auth_token").write_text("token")
    r = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f"clnscl from {home / 'clnscl'}" in r.stdout
    assert "ray 2.60.0" in r.stdout
    bashrc = (home / ".bashrc").read_text()
    assert "export RAY_AUTH_MODE=token" in bashrc
    r2 = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r2.returncode == 0 and (home / ".bashrc").read_text() == bashrc  # idempotent
    # the scratch node imports the scratch copy; this venv still imports this repository
    out = subprocess.run([str(py), "-c", "import clnscl; print(clnscl.__file__)"], cwd="/",
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(home / "clnscl" / "clnscl" / "__init__.py")
    import clnscl

    assert Path(clnscl.__file__).resolve().parents[1] == ROOT
    # a project copy without clnscl/data (the old rsync excludes) is refused, naming it
    import shutil

    shutil.rmtree(home / "clnscl" / "clnscl" / "data")
    r = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 1 and "clnscl/data/__init__.py is missing" in r.stderr


@pytest.mark.slow
def test_mlflow_server_supervisor_restarts_a_dead_server(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bindir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_DIR": str(tmp_path / "mlflow"), "MLFLOW_PORT": str(port),
           "MLFLOW_BACKEND_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "MLFLOW_ARTIFACTS": str(tmp_path / "art"), "MLFLOW_WORKERS": "1",
           "MLFLOW_BIN": str(bindir / "mlflow"), "PYTHON": sys.executable,
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    script = str(ROOT / "scripts" / "mlflow_server.sh")
    sup = tmp_path / "mlflow" / "supervisor.pid"

    def health() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        r = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True,
                           timeout=180, check=False)
        assert r.returncode == 0, r.stderr + (tmp_path / "mlflow" / "server.log").read_text()
        assert health()
        first = int((tmp_path / "mlflow" / "server.pid").read_text())
        os.kill(first, signal.SIGKILL)  # the server dies
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(1)
            pid = (tmp_path / "mlflow" / "server.pid").read_text().strip()
            if pid and int(pid) != first and health():
                break
        else:
            pytest.fail("the supervisor did not bring the server back: "
                        + (tmp_path / "mlflow" / "server.log").read_text()[-2000:])
        assert "restarting" in (tmp_path / "mlflow" / "server.log").read_text()
    finally:
        pg = int(sup.read_text()) if sup.exists() else None
        subprocess.run(["bash", script, "stop"], env=env, timeout=60, check=False)
    assert not health()
    if pg:
        with pytest.raises(ProcessLookupError):
            os.killpg(pg, 0)  # nothing of the supervisor's group is left


# --- sweeps started on the head find the cluster and its GPU node types ---------------------
@pytest.fixture
def head_home(cluster_config, tmp_path, monkeypatch):
    """HOME of a `ray up` head: the autoscaler config as Ray writes it from cluster.yaml."""
    from ray.autoscaler._private.util import prepare_config

    home = tmp_path / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text(
        yaml.safe_dump(prepare_config(dict(cluster_config))))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def _fake_cifar10(root: Path) -> None:
    from clnscl.data.torchvision_sets import cifar_files

    for f in cifar_files("cifar10", root):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")


def test_sweep_on_the_head_counts_the_gpus_the_autoscaler_can_add(head_home, tmp_path, capsys):
    """The README's `ray exec ... grid.py --preset cifar10` on the CPU head (no RAY_ADDRESS,
    no GPU here): the cluster is found and a GPU trial fits the GPU worker type."""
    import ray
    import torch

    from sweeps import grid

    assert torch.cuda.device_count() == 0 or pytest.skip("needs a machine without GPUs")
    args = grid.build_parser().parse_args(
        ["--preset", "cifar10", "--tau", "0.5", "--batch-size", "1024", "--classes", "2",
         "--data-root", str(tmp_path / "data"), "--storage", str(tmp_path / "rr"),
         "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    _fake_cifar10(tmp_path / "data")
    assert grid.cluster_address(args) == "auto"
    plan = grid.plan_sweep(args)  # no UsageError: the autoscaler adds GPU workers
    assert plan.preset.gpu == 1
    types = grid.cluster_node_types()
    assert types["worker_gpu"] == {"CPU": 8.0, "GPU": 1.0, "max_workers": 8}
    assert grid.check_cluster_resources(plan.preset, types) == {"worker_gpu": 8}  # 1 GPU each
    # a trial that fits no node type is refused before Ray starts, naming the types
    rc = grid.main(["--preset", "cifar10", "--tau", "0.5", "--batch-size", "1024",
                    "--classes", "2", "--data-root", str(tmp_path / "data"),
                    "--gpus-per-trial", "2", "--storage", str(tmp_path / "rr"),
                    "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err
    assert rc == 2 and "worker_gpu (8 CPU, 1 GPU, up to 8)" in err and "gpu=2" in err
    assert not ray.is_initialized()


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
