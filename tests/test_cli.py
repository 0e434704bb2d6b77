"""`python -m clnscl.train`: errors before compute, a tiny run, JSON and resume."""
import json
import subprocess
import sys

import pytest

TINY = ["--classes", "3", "--batch-size", "24", "--epochs", "2", "--image-size", "16",
        "--train-per-class", "16", "--eval-size", "40", "--set", "synthetic_test_per_class=8",
        "--set", "warmup_epochs=0"]


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "clnscl.train", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--tau", "0"], "invalid tau=0.0: allowed a finite number > 0"),
    (["--classes", "101"], "invalid n_classes=101: allowed 2..100 for dataset synthetic"),
    (["--classes", "1"], "invalid n_classes=1"),
    (["--classes", "11", "--dataset", "cifar10"], "invalid n_classes=11: allowed 2..10"),
    (["--classes", "50", "--batch-size", "32"], "invalid batch_size=32: allowed >= n_classes=50"),
    (["--objectives", "cl,simsiam"], "invalid objectives='simsiam'"),
    (["--dataset", "imagenet"], "invalid dataset='imagenet': allowed synthetic, cifar10"),
    (["--set", "warmup=3"], "invalid --set 'warmup=3'"),
])
def test_bad_flags_fail_at_once(args, message):
    r = run_cli(*args, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr
    assert "epoch" not in r.stdout  # no table: nothing was trained


def test_missing_cifar_names_root_and_download_flag(tmp_path):
    r = run_cli("--dataset", "cifar10", "--data-root", str(tmp_path), timeout=120)
    assert r.returncode == 2
    assert str(tmp_path) in r.stderr and "--download" in r.stderr


def test_tiny_run_prints_table_writes_json_and_resumes(tmp_path):
    out, ckpt = tmp_path / "r.json", tmp_path / "ckpt"
    r = run_cli(*TINY, "--json", str(out), "--checkpoint-dir", str(ckpt))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["epoch", "cl/loss", "nscl/loss"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["0", "1", "2"]
    assert "linear probe accuracy: cl=" in r.stdout
    data = json.loads(out.read_text())
    assert [rec["epoch"] for rec in data["records"]] == [0, 1, 2]
    assert len(data["class_ids"]) == 3 and data["config"]["n_classes"] == 3
    # a finished checkpoint resumes to nothing left to do
    again = run_cli(*TINY, "--checkpoint-dir", str(ckpt))
    assert again.returncode == 0 and "resumed from" in again.stderr
    assert len(again.stdout.splitlines()) == 1  # header only: no epoch re-run
