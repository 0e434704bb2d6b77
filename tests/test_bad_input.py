"""Bad input, all of it (README "Bad input"): every case is refused before Ray starts, with
exit status 2 and a message naming the field and what is allowed, and leaves nothing behind
in the working folder (no ray_results/, no mlflow.db)."""

from __future__ import annotations

import socket
import time

import pytest

from sweeps import grid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = _free_port()  # nothing listens there

# (id, argv, words in the message); {d} = the test's folder (holds blocker, empty/, *.yaml)
CASES = [
    # CLI flags
    ("preset-unknown", ["--preset", "nope"], ["unknown preset 'nope'", "quick", "cifar10"]),
    ("tau-zero", ["--tau", "0", "0.5"], ["tau=0.0", "allowed"]),
    ("tau-negative", ["--tau", "-1"], ["tau=-1.0"]),
    ("tau-nan", ["--tau", "nan"], ["tau=nan", "finite"]),
    ("classes-too-many", ["--classes", "2", "500"], ["n_classes=500", "synthetic"]),
    ("classes-one", ["--classes", "1"], ["n_classes=1", "from 2"]),
    ("classes-vs-dataset", ["--dataset", "cifar10", "--classes", "20"], ["n_classes=20",
                                                                          "cifar10"]),
    ("batch-under-classes", ["--batch-size", "8", "--classes", "10"], ["batch_size=8"]),
    ("batch-zero", ["--batch-size", "0"], ["batch_size=0", ">= 2"]),
    ("seeds-zero", ["--seeds", "0"], ["seeds=0"]),
    ("epochs-zero", ["--epochs", "0"], ["epochs=0", ">= 1"]),
    ("budget-negative", ["--budget-images", "-5"], ["budget_images=-5", ">= 1"]),
    ("objectives-without-cl", ["--objectives", "nscl"], ["objectives='nscl'", "cl included"]),
    ("arch-unknown", ["--arch", "vgg"], ["arch='vgg'", "smallcnn, resnet18, resnet50"]),
    ("device-unknown", ["--device", "tpu"], ["device='tpu'", "cpu, cuda"]),
    ("dataset-unknown", ["--dataset", "mnist"], ["dataset='mnist'", "cifar10", "synthetic"]),
    ("cpus-zero", ["--cpus-per-trial", "0"], ["resources.cpu=0", "allowed"]),
    ("cpus-too-many", ["--cpus-per-trial", "4096"], ["resources.cpu=4096", "CPUs"]),
    ("gpus-negative", ["--gpus-per-trial", "-1"], ["resources.gpu=-1", ">= 0"]),
    ("checkpoint-every-zero", ["--checkpoint-every", "0"], ["checkpoint_every=0", ">= 1"]),
    ("max-failures", ["--max-failures", "-2"], ["max_failures=-2", ">= -1"]),
    ("max-concurrent", ["--max-concurrent", "-1"], ["max_concurrent=-1", ">= 0"]),
    ("report-every-zero", ["--report-every", "0"], ["--report-every", "> 0"]),
    ("name-escape", ["--name", "../escape"], ["--name", "letters, digits"]),
    ("inject-fault-json", ["--inject-fault", "notjson"], ["--inject-fault", "JSON object"]),
    # --set values
    ("set-unknown-field", ["--set", "epochz=3"], ["epochz"]),
    ("set-grid-axis", ["--set", "tau=0.5"], ["--set 'tau=0.5'", "grid axis", "--tau"]),
    ("set-bad-int", ["--set", "image_size=abc"], ["image_size='abc'", "integer"]),
    ("set-no-equals", ["--set", "noequals"], ["--set 'noequals'", "FIELD=VALUE"]),
    # preset files
    ("preset-file-missing", ["--preset", "{d}/missing.yaml"], ["missing.yaml", "not found"]),
    ("preset-bad-yaml", ["--preset", "{d}/bad.yaml"], ["bad.yaml", "not valid YAML"]),
    ("preset-unknown-key", ["--preset", "{d}/bogus.yaml"], ["bogus"]),
    ("preset-unknown-axis", ["--preset", "{d}/axis.yaml"], ["grid.temperature"]),
    ("preset-config-typo", ["--preset", "{d}/typo.yaml"], ["config.epochz"]),
    ("preset-resource", ["--preset", "{d}/tpu.yaml"], ["resources.tpu"]),
    # dataset paths
    ("cifar10-missing", ["--dataset", "cifar10", "--classes", "4", "--data-root",
                         "{d}/nodata"], ["dataset cifar10 not found", "data_batch_1",
                                         "download=true"]),
    ("cifar100-missing", ["--dataset", "cifar100", "--classes", "4", "--batch-size", "64",
                          "--data-root", "{d}/nodata"], ["dataset cifar100 not found",
                                                         "cifar-100-python"]),
    ("tinyimagenet-missing", ["--dataset", "tinyimagenet", "--classes", "4", "--batch-size",
                              "64", "--data-root", "{d}/nodata"],
     ["dataset tinyimagenet not found", "train/<class>"]),
    ("imagefolder-empty", ["--dataset", "imagefolder", "--epochs", "2", "--classes", "2",
                           "--data-root", "{d}/empty"], ["dataset imagefolder not found",
                                                         "class folders"]),
    ("data-root-uri", ["--dataset", "cifar10", "--classes", "4", "--data-root", "s3://b/x"],
     ["--data-root 's3://b/x'", "local folder"]),
    # storage
    ("storage-relative", ["--storage", "relative/results"], ["--storage", "absolute"]),
    ("storage-under-a-file", ["--storage", "{d}/blocker/results"], ["--storage",
                                                                   "not writable"]),
    ("storage-scheme", ["--storage", "ftp://host/x"], ["--storage", "unsupported scheme 'ftp'",
                                                       "s3://"]),
    # tracking URIs
    ("tracking-unreachable", ["--tracking-uri", f"http://127.0.0.1:{PORT}"],
     [f"http://127.0.0.1:{PORT}", "not reachable"]),
    ("tracking-sqlite-relative", ["--tracking-uri", "sqlite:///rel/mlflow.db"],
     ["relative", "absolute"]),
    ("tracking-sqlite-under-a-file", ["--tracking-uri", "sqlite:///{d}/blocker/mlflow.db"],
     ["blocker", "not a folder"]),
    ("tracking-file-store", ["--tracking-uri", "file:///tmp/mlruns"], ["file store"]),
    ("tracking-scheme", ["--tracking-uri", "ftp://host/x"], ["unsupported scheme 'ftp'",
                                                              "postgresql://"]),
    ("tracking-postgres-scheme", ["--tracking-uri", "postgres://u@127.0.0.1/x"],
     ["unsupported scheme 'postgres'", "postgresql://"]),
    ("tracking-postgres-down", ["--tracking-uri", f"postgresql://u:pw@127.0.0.1:{PORT}/db"],
     ["does not accept a connection", "***"]),
]

PRESET_FILES = {
    "bad.yaml": "grid: {tau: [0.5]\n",
    "bogus.yaml": "grid: {tau: [0.5]}\nconfig: {}\nbogus: 1\n",
    "axis.yaml": "grid: {tau: [0.5], temperature: [1]}\nconfig: {}\n",
    "typo.yaml": "grid: {tau: [0.5]}\nconfig: {epochz: 3}\n",
    "tpu.yaml": "grid: {tau: [0.5]}\nconfig: {}\nresources: {cpu: 1, tpu: 1}\n",
}


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_ray_leaving_nothing(argv, words, tmp_path, monkeypatch,
                                                         capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "blocker").write_text("a file, not a folder")
    (inputs / "empty").mkdir()
    for name, text in PRESET_FILES.items():
        (inputs / name).write_text(text)
    work = tmp_path / "work"  # the user's folder: must stay empty
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/ray_bootstrap_config.yaml here

    def ray_must_not_start(*a, **k):
        raise AssertionError("Ray was started for a refused invocation")

    monkeypatch.setattr(grid, "_start_ray", ray_must_not_start)
    argv = [a.replace("{d}", str(inputs)) for a in argv]
    t0 = time.time()
    rc = grid.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert time.time() - t0 < 15
    for w in words:
        assert w.replace("{d}", str(inputs)) in err, (w, err)
    assert sorted(p.name for p in work.iterdir()) == [], "left behind in the working folder"
    leftovers = sorted(p.name for p in inputs.iterdir())
    assert leftovers == sorted(["blocker", "empty", *PRESET_FILES]), leftovers
