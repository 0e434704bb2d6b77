"""The sweep command end to end: presets, CLI checks before Ray starts, dry run, and real
sweeps (real Ray, real SQLite MLflow store, real trainer on tiny synthetic settings) with
retries from checkpoints and a resumed sweep."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clnscl.config import TrainConfig
from sweeps import grid
from sweeps.presets import PresetError, available_presets, load_preset

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# a trial of a few seconds: 2 classes x 16 images, 16x16, 3 epochs of 2 steps
TINY = ["--epochs", "3", "--batch-size", "16", "--classes", "2", "--objectives", "cl,nscl",
        "--set", "synthetic_train_per_class=16", "--set", "synthetic_test_per_class=8",
        "--set", "image_size=16", "--set", "eval_size=16", "--set", "knn_k=5",
        "--set", "warmup_epochs=1", "--cpus-per-trial", "1", "--no-analysis",
        "--report-every", "60"]


# --- presets -------------------------------------------------------------------------------
def test_presets_load_and_validate_every_point():
    assert {"quick", "cifar10", "cifar100", "tinyimagenet"} <= set(available_presets())
    for name in available_presets():
        p = load_preset(name)
        pts = p.points()
        assert len(pts) == p.n_trials > 0
        assert all(isinstance(c, TrainConfig) for c in pts)
        assert len({c.run_name() for c in pts}) == len(pts)


def test_quick_preset_shows_trends_on_a_laptop():
    p = load_preset("quick")
    assert len(p.tau) >= 2 and len(p.batch_size) >= 2 and len(p.n_classes) >= 3
    c = p.points()[0]
    assert c.dataset == "synthetic" and c.arch == "smallcnn" and c.device == "cpu"
    assert p.gpu == 0


@pytest.mark.parametrize("name, dataset, classes, batch_sizes, proj_dim, size", [
    ("cifar10", "cifar10", [2, 4, 6, 8, 10], [256, 512, 896, 1024], 64, 32),
    # C=2 of CIFAR-100 / Tiny-ImageNet is 1000 images: not one batch of 1024 (drop_last)
    ("cifar100", "cifar100", [4, 6, 8, 10, 50, 100], [1024], 128, 32),
    ("tinyimagenet", "tinyimagenet", [4, 6, 8, 10, 50, 100, 200], [1024], 128, 64),
])
def test_published_scale_presets(name, dataset, classes, batch_sizes, proj_dim, size):
    """SCIENCE.md section 6: ResNet-50, LARS, lr 0.3 x B/256, momentum 0.9, wd 1e-6,
    10 warm-up epochs, tau {0.1, 0.5, 1.0}, B {256, 512, 896, 1024}, one GPU per trial."""
    p = load_preset(name)
    c = p.points()[0]
    assert (c.dataset, c.arch, c.optimizer) == (dataset, "resnet50", "lars")
    assert (c.lr, c.lr_rule) == (0.3, "linear")
    assert (c.momentum, c.weight_decay, c.warmup_epochs) == (0.9, 1e-6, 10)
    assert (c.proj_dim, c.image_size) == (proj_dim, size)
    assert c.epochs >= 300 and c.eval_every == 10
    assert list(p.tau) == [0.1, 0.5, 1.0]
    assert list(p.batch_size) == batch_sizes
    assert list(p.n_classes) == classes
    assert p.gpu == 1 and p.seeds >= 1 and p.max_failures >= 1


def test_image_budget_sets_epochs_per_point(tmp_path):
    """Equal images per trial: epochs = ceil(budget / subset size), so S_T is equal across C."""
    from sweeps.presets import apply_budget

    p = load_preset("quick")
    assert p.budget_images
    for c in p.points():
        n = c.expected_train_images
        assert c.epochs == math.ceil(p.budget_images / n)
        assert c.eval_every == max(1, c.epochs // p.evals)
    base = TrainConfig(n_classes=10, synthetic_train_per_class=50, batch_size=64, epochs=20)
    assert apply_budget(base, None) == base
    assert apply_budget(base, 1000, evals=2).epochs == 2
    assert apply_budget(base.replace(dataset="cifar10"), 100_000).epochs == 2
    from clnscl.config import ConfigError

    with pytest.raises(ConfigError, match="budget_images"):
        apply_budget(base.replace(dataset="imagefolder", data_root="/x"), 1000)
    # --epochs replaces the budget, --budget-images replaces epochs
    args = grid.build_parser().parse_args(["--epochs", "3", "--storage", str(tmp_path)])
    assert grid.plan_sweep(args).preset.budget_images is None


@pytest.mark.parametrize("text, key", [
    ("grid: {tau: [0.5]}\nconfig: {}\nbogus: 1\n", "bogus"),
    ("grid: {tau: [0.5], temperature: [1]}\nconfig: {}\n", "grid.temperature"),
    ("grid: {tau: [0.5]}\nconfig: {epochz: 3}\n", "config.epochz"),
    ("grid: {tau: [0.5]}\nconfig: {tau: 0.5}\n", "config.tau"),
    ("grid: {tau: [0.5]}\nconfig: {}\nresources: {cpu: 1, tpu: 1}\n", "resources.tpu"),
    ("grid: {tau: [0.5]}\nconfig: {epochs: 3}\nbudget_images: 100\n", "budget_images"),
])
def test_unknown_preset_keys_are_named(tmp_path, text, key):
    f = tmp_path / "mine.yaml"
    f.write_text(text)
    with pytest.raises(PresetError, match=key.replace(".", r"\.")):
        load_preset(str(f))


# --- command-line errors: exit 2 before Ray starts -----------------------------------------
@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if the sweep starts (or joins) Ray: ``ray.is_initialized()`` before
    and after cannot tell, the sweep shuts down the Ray it started."""
    def ray_must_not_start(*a, **k):
        raise AssertionError("Ray was started for a refused invocation")

    monkeypatch.setattr(grid, "_start_ray", ray_must_not_start)


@pytest.mark.parametrize("argv, words", [
    (["--preset", "nope"], ["unknown preset 'nope'", "quick", "cifar10"]),
    (["--tau", "0", "0.5"], ["tau=0.0"]),
    (["--tau", "-1"], ["tau=-1.0"]),
    (["--classes", "2", "500"], ["n_classes=500", "synthetic"]),
    (["--dataset", "cifar10", "--classes", "20"], ["n_classes=20", "cifar10"]),
    (["--batch-size", "8", "--classes", "10"], ["batch_size=8"]),
    (["--storage", "relative/results"], ["--storage", "absolute"]),
    (["--set", "epochz=3"], ["epochz"]),
    (["--seeds", "0"], ["seeds=0"]),
])
def test_cli_errors_exit_2_before_ray_starts(argv, words, capsys, tmp_path, no_ray):
    t0 = time.time()
    rc = grid.main(argv + ([] if "--storage" in argv else ["--storage", str(tmp_path)]))
    err = capsys.readouterr().err
    assert rc == 2
    assert time.time() - t0 < 10
    for w in words:
        assert w in err


def test_unreachable_tracking_uri_exits_2_naming_it(capsys, tmp_path, no_ray):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    rc = grid.main(["--tracking-uri", uri, "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and uri in err and "not reachable" in err


def test_unwritable_storage_and_bad_name_exit_2(capsys, tmp_path, no_ray):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert grid.main(["--storage", str(blocker / "results")]) == 2
    err = capsys.readouterr().err
    assert "--storage" in err and "not writable" in err
    assert grid.main(["--storage", str(tmp_path), "--name", "../escape"]) == 2
    assert "--name" in capsys.readouterr().err


def test_trial_bigger_than_this_machine_exits_2(capsys, tmp_path, no_ray):
    """A local sweep (no cluster) whose trial cannot fit here would wait forever in Tune."""
    import os

    import ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        pytest.skip("a running Ray may offer more resources")
    big = str((os.cpu_count() or 1) + 1)
    assert grid.main(["--cpus-per-trial", big, "--storage", str(tmp_path)]) == 2
    assert "resources.cpu" in capsys.readouterr().err
    assert grid.main(["--gpus-per-trial", "64", "--device", "cuda",
                      "--storage", str(tmp_path)]) == 2
    assert "resources.gpu" in capsys.readouterr().err


# --- data found before compute; a local Ray on loopback ----------------------------------
@pytest.mark.parametrize("argv, words", [
    (["--dataset", "cifar10", "--classes", "4", "--data-root", "/nonexistent/dir"],
     ["dataset cifar10 not found", "'/nonexistent/dir'", "cifar-10-batches-py",
      "data_batch_1", "download=true"]),
    (["--dataset", "cifar100", "--classes", "4", "--batch-size", "64", "--data-root",
      "/nonexistent/c100"], ["dataset cifar100 not found", "cifar-100-python"]),
    (["--dataset", "tinyimagenet", "--classes", "4", "--batch-size", "64", "--data-root",
      "/nonexistent/tiny"], ["dataset tinyimagenet not found", "'/nonexistent/tiny'",
                             "/nonexistent/tiny/train/<class>"]),
])
def test_missing_dataset_exits_2_before_ray_starts(argv, words, capsys, tmp_path, no_ray):
    t0 = time.time()
    rc = grid.main(argv + ["--storage", str(tmp_path), "--tracking-uri",
                           f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert time.time() - t0 < 10
    for w in words:
        assert w in err


def _fake_cifar10(root: Path) -> None:
    from clnscl.data.torchvision_sets import cifar_files

    for f in cifar_files("cifar10", root):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"")


def test_data_root_made_absolute_on_the_driver(tmp_path, monkeypatch):
    """A relative --data-root (or none: the loader's ./data) names the driver's folder,
    not each trial's working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _fake_cifar10(tmp_path / "mydata")
    common = ["--dataset", "cifar10", "--classes", "4", "--batch-size", "16",
              "--storage", str(tmp_path / "rr")]
    plan = grid.plan_sweep(grid.build_parser().parse_args(common + ["--data-root", "mydata"]))
    assert {c.data_root for c in plan.points} == {str(tmp_path / "mydata")}
    assert plan.preset.base_config()["data_root"] == str(tmp_path / "mydata")  # what trials get
    _fake_cifar10(tmp_path / "data")
    plan = grid.plan_sweep(grid.build_parser().parse_args(common))
    assert {c.data_root for c in plan.points} == {str(tmp_path / "data")}
    # the synthetic set needs no root and gets none
    plan = grid.plan_sweep(grid.build_parser().parse_args(["--storage", str(tmp_path / "rr")]))
    assert plan.points[0].data_root is None


LOOPBACK_PROBE = """
import json, os, subprocess, sys
sys.path.insert(0, {root!r})
from sweeps import grid
import ray
grid._start_ray(None)
node = ray.nodes()[0]["NodeManagerAddress"]
pids = [str(p.process.pid) for procs in ray._private.worker._global_node.all_processes.values()
        for p in procs]
ss = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
mine = [l.split()[3] for l in ss if any(f"pid={{p}}," in l for p in pids)]
ray.shutdown()
print(json.dumps({{"node": node, "listen": mine}}))
"""


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only(tmp_path):
    """grid.py's own Ray binds 127.0.0.1, even without the test suite's loopback setting."""
    import os
    import shutil

    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["HOME"] = str(tmp_path)  # no ~/ray_bootstrap_config.yaml: a local Ray
    (tmp_path / ".ray").mkdir()
    r = subprocess.run([PY, "-c", LOOPBACK_PROBE.format(root=str(ROOT))], env=env,
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["node"] == "127.0.0.1"
    assert out["listen"], "found no listening socket of the Ray processes"
    outward = [a for a in out["listen"] if "127.0.0.1" not in a]
    assert not outward, f"Ray listens beyond loopback: {outward}"


def test_script_and_module_entry_points(tmp_path):
    """`python sweeps/grid.py` works from any folder (repo root put on sys.path) and so
    does `python -m sweeps.grid`; a usage error is exit status 2."""
    r = subprocess.run([PY, str(ROOT / "sweeps" / "grid.py"), "--preset", "nope"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "unknown preset 'nope'" in r.stderr
    r = subprocess.run([PY, "-m", "sweeps.grid", "--dry-run", "--storage", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "tau=0.2 B=64 C=4 seed=0" in r.stdout


def test_dry_run_lists_trials_resources_and_estimate(capsys, tmp_path):
    rc = grid.main(["--dry-run", "--tau", "0.1", "0.5", "--classes", "2", "10", "--seeds", "2",
                    "--storage", str(tmp_path), "--epochs", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    for tau in ("0.1", "0.5"):
        for c in (2, 10):
            for seed in (0, 1):
                for b in load_preset("quick").batch_size:
                    assert f"tau={tau} B={b} C={c} seed={seed}" in out
    assert "16 trials" in out
    assert "Resources per trial: 1 CPU" in out
    assert "ESTIMATE" in out and "training views" in out and "evaluation" in out
    assert not (tmp_path / "quick").exists()  # a dry run starts nothing


def test_dry_run_of_published_preset_counts_gpu_hours(capsys, tmp_path):
    rc = grid.main(["--preset", "cifar10", "--dry-run", "--storage", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "180 trials" in out and "GPU-hours" in out and "1 GPU" in out


# --- real sweeps ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweeps")
    return {"dir": d, "uri": f"sqlite:///{d}/mlflow.db", "storage": str(d / "ray_results")}


def _sweep(workdir, name, *argv):
    return grid.main(["--name", name, "--tracking-uri", workdir["uri"], "--storage",
                      workdir["storage"], *TINY, *argv])


def _client(workdir):
    from mlflow import MlflowClient

    return MlflowClient(workdir["uri"])


def _runs(workdir, name):
    c = _client(workdir)
    exp = c.get_experiment_by_name(name)
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return parents, children


def _records(workdir, run_id, tmp):
    path = _client(workdir).download_artifacts(run_id, "records.json", str(tmp))
    return json.loads(Path(path).read_text())["records"]


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _assert_identical(recs_a, recs_b):
    assert [r["epoch"] for r in recs_a] == [r["epoch"] for r in recs_b]
    for ra, rb in zip(recs_a, recs_b):
        keys = set(ra) - {"time_s"}
        assert keys == set(rb) - {"time_s"}
        diff = [k for k in keys if not _same(ra[k], rb[k])]
        assert not diff, f"epoch {ra['epoch']}: {[(k, ra[k], rb[k]) for k in diff[:5]]}"


@pytest.fixture(scope="module")
def sweep_a(ray_session, workdir, tmp_path_factory):
    """Two trials; tau=1 fails once after epoch 2 (logged, not checkpointed: checkpoints
    every 2 records) and is retried from its epoch-1 checkpoint."""
    marker = tmp_path_factory.mktemp("fault") / "failed-once"
    fault = {"trial": "tau=1 B=16 C=2 seed=0", "epoch": 2, "marker": str(marker)}
    t0 = time.time()
    # epochs through the image budget: 96 images / (2 classes x 16) = 3 epochs, as --epochs 3
    rc = _sweep(workdir, "sweep-a", "--tau", "0.5", "1.0", "--checkpoint-every", "2",
                "--max-failures", "2", "--inject-fault", json.dumps(fault),
                "--budget-images", "96")
    return {"rc": rc, "marker": marker, "seconds": time.time() - t0}


@pytest.fixture(scope="module")
def sweep_b(ray_session, workdir):
    """Two trials; tau=0.5 fails for good after epoch 1 with max_failures=0. Then the same
    command without the fault resumes the sweep."""
    fault = {"trial": "tau=0.5 B=16 C=2 seed=0", "epoch": 1, "marker": None}
    rc1 = _sweep(workdir, "sweep-b", "--tau", "0.5", "1.0", "--max-failures", "0",
                 "--inject-fault", json.dumps(fault))
    parents, children = _runs(workdir, "sweep-b")
    before = {
        "parents": [(p.info.run_id, p.info.status) for p in parents],
        "children": {k: (r.info.run_id, r.info.status, dict(r.data.tags))
                     for k, r in children.items()},
        "progress": _progress_rows(workdir, "sweep-b"),
    }
    return {"rc1": rc1, "before": before}


def _progress_rows(workdir, name) -> dict:
    """Result rows Tune wrote per trial folder (a rerun trial would add rows)."""
    out = {}
    for d in (Path(workdir["storage"]) / name).glob("train_trial_*"):
        f = d / "result.json"
        key = "tau=" + d.name.split("tau=")[1].split("_")[0]
        out[key] = len(f.read_text().splitlines()) if f.exists() else 0
    return out


@pytest.mark.slow
def test_sweep_runs_nested_with_params_metrics_artifacts(sweep_a, workdir, tmp_path):
    assert sweep_a["rc"] == 0
    parents, children = _runs(workdir, "sweep-a")
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["preset"] == "quick"
    assert parent.data.params["grid.tau"] == "0.5,1.0"
    assert parent.data.params["budget_images"] == "96"
    assert len(parent.data.tags["git_commit"]) == 40
    for pkg in ("torch", "ray", "mlflow", "clnscl"):
        assert parent.data.tags[f"version.{pkg}"]
    c = _client(workdir)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in ("tau=0.5 B=16 C=2 seed=0", "tau=1 B=16 C=2 seed=0"):
        run = children[name]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["trial_id"]
        assert fields <= set(run.data.params)
        assert run.data.params["batch_size"] == "16" and run.data.params["epochs"] == "3"
        assert run.data.tags["budget_images"] == "96"
        assert len(run.data.params["class_ids"].split(",")) == 2
        for key in ("cl/loss", "nscl/cka", "nscl/rsa", "nscl/rho", "nscl/param_dist",
                    "nscl/test/proj/rho", "cum_lr", "epoch"):
            steps = [m.step for m in c.get_metric_history(run.info.run_id, key)]
            want = [1, 2, 3] if key == "cl/loss" else [0, 1, 2, 3]  # no loss before training
            assert sorted(steps) == want, (name, key, steps)
        assert "cl/probe_acc" in run.data.metrics
        assert "fingerprint" in run.data.tags and "fingerprint" not in run.data.metrics
        arts = {a.path for a in c.list_artifacts(run.info.run_id)}
        assert {"config.json", "records.json", "alignment_curves.png"} <= arts
    assert (Path(workdir["storage"]) / "sweep-a" / "summary_trials.csv").is_file()


@pytest.mark.slow
def test_failed_trial_retried_from_checkpoint_one_run_same_results(sweep_a, sweep_b, workdir,
                                                                   tmp_path):
    assert sweep_a["rc"] == 0 and sweep_a["marker"].exists(), "the fault fired once"
    _, children = _runs(workdir, "sweep-a")
    run = children["tau=1 B=16 C=2 seed=0"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["attempts"] == "2"
    assert "injected fault" in run.data.tags["previous_error"]
    assert "error" not in run.data.tags
    c = _client(workdir)
    # epoch 2 was logged before the failure and recomputed after it: still one point each
    for key in ("nscl/cka", "epoch", "cl/knn_acc"):
        assert sorted(m.step for m in c.get_metric_history(run.info.run_id, key)) == [0, 1, 2, 3]
    # bit-identical to the undisturbed trial of the same config (sweep B's tau=1)
    _, other = _runs(workdir, "sweep-b")
    undisturbed = other["tau=1 B=16 C=2 seed=0"]
    _assert_identical(_records(workdir, run.info.run_id, tmp_path / "a"),
                      _records(workdir, undisturbed.info.run_id, tmp_path / "b"))
    assert run.data.tags["fingerprint"] == undisturbed.data.tags["fingerprint"]


@pytest.mark.slow
def test_failed_trial_resumed_by_rerun_without_rerunning_finished_trials(sweep_a, sweep_b,
                                                                        workdir, tmp_path,
                                                                        capsys):
    """A trial that failed for good is retried from its checkpoint by rerunning the same
    command; the finished one is not rerun. (An interrupted DRIVER: tests/test_faults.py
    test_driver_signal_then_rerun_one_finished_run_per_trial.)"""
    before = sweep_b["before"]
    assert sweep_b["rc1"] == 1, "a failed trial makes the exit status non-zero"
    (pid, pstatus), = before["parents"]
    assert pstatus == "FAILED"
    failed = before["children"]["tau=0.5 B=16 C=2 seed=0"]
    done = before["children"]["tau=1 B=16 C=2 seed=0"]
    assert failed[1] == "FAILED" and "injected fault" in failed[2]["error"]
    assert done[1] == "FINISHED"

    # a different grid under the same name is refused before anything starts
    rc = _sweep(workdir, "sweep-b", "--tau", "0.5", "2.0")
    assert rc == 2 and "different grid" in capsys.readouterr().err

    capsys.readouterr()
    rc = _sweep(workdir, "sweep-b", "--tau", "0.5", "1.0", "--max-failures", "0")
    out = capsys.readouterr().out
    assert rc == 0 and "RESUMING" in out
    parents, children = _runs(workdir, "sweep-b")
    assert [(p.info.run_id, p.info.status) for p in parents] == [(pid, "FINISHED")]
    assert set(children) == {"tau=0.5 B=16 C=2 seed=0", "tau=1 B=16 C=2 seed=0"}
    # the finished trial was not rerun: same run, one attempt, no new Tune results
    fin = children["tau=1 B=16 C=2 seed=0"]
    assert fin.info.run_id == done[0] and fin.data.tags["attempts"] == "1"
    after = _progress_rows(workdir, "sweep-b")
    assert after["tau=1"] == before["progress"]["tau=1"]
    # the failed trial continued its own run from its checkpoint (epoch 1)
    res = children["tau=0.5 B=16 C=2 seed=0"]
    assert res.info.run_id == failed[0] and res.info.status == "FINISHED"
    assert res.data.tags["attempts"] == "2" and "error" not in res.data.tags
    assert res.data.tags["resumed_from_epoch"] == "1"
    c = _client(workdir)
    assert sorted(m.step for m in c.get_metric_history(res.info.run_id, "nscl/cka")) == [0, 1, 2, 3]
    # and ends bit-identical to sweep A's undisturbed tau=0.5 trial
    _, a_children = _runs(workdir, "sweep-a")
    _assert_identical(_records(workdir, res.info.run_id, tmp_path / "r"),
                      _records(workdir, a_children["tau=0.5 B=16 C=2 seed=0"].info.run_id,
                               tmp_path / "u"))


@pytest.mark.slow
def test_diverged_trial_is_failed_not_retried(ray_session, workdir, capsys):
    fault = {"trial": "*", "epoch": 1, "error": "diverged"}
    rc = _sweep(workdir, "sweep-c", "--tau", "0.5", "--max-failures", "2",
                "--inject-fault", json.dumps(fault))
    out = capsys.readouterr().out
    assert rc == 1 and "1 diverged" in out
    parents, children = _runs(workdir, "sweep-c")
    (run,) = children.values()
    assert run.info.status == "FAILED" and run.data.tags["attempts"] == "1"
    assert run.data.tags["error"].startswith("DivergedError: injected divergence")
    assert parents[0].info.status == "FAILED"
    # a rerun does not reopen a diverged trial (it would replay the same steps)
    capsys.readouterr()
    assert _sweep(workdir, "sweep-c", "--tau", "0.5", "--max-failures", "2",
                  "--inject-fault", json.dumps(fault)) == 1
    assert "tried again" not in capsys.readouterr().err
    _, children = _runs(workdir, "sweep-c")
    (again,) = children.values()
    assert again.info.run_id == run.info.run_id and again.data.tags["attempts"] == "1"


def test_preset_file_roundtrip_is_yaml_data():
    """Presets are data: every file parses to the documented top-level keys only."""
    from sweeps.presets import TOP_KEYS

    for f in (ROOT / "sweeps" / "presets").glob("*.yaml"):
        data = yaml.safe_load(f.read_text())
        assert set(data) <= set(TOP_KEYS), f.name


def test_gpu_trials_get_a_fresh_worker_cpu_trials_reuse_one():
    """reuse_actors would carry a trial's CUDA cache into the next trial of the worker:
    off for presets that ask for a GPU, on for CPU presets (no torch import per trial)."""
    assert grid.reuse_actors(load_preset("cifar100")) is False
    assert grid.reuse_actors(load_preset("quick")) is True
