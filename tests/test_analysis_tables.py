"""Loading sweeps: a real SQLite MLflow store and a Ray Tune results directory, no mocks."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from analysis import SweepNotFoundError, load_curves, load_sweep, load_trials, parse_param

EPOCHS = 3


def _config(C, seed, **kw):
    d = {"dataset": "synthetic", "data_root": None, "n_classes": C, "class_seed": None,
         "objectives": ["cl", "nscl"], "tau": 0.5, "include_positive": True, "arch": "smallcnn",
         "batch_size": 128, "epochs": EPOCHS, "lr": 0.3, "lr_rule": "sqrt", "eval_every": 1,
         "linear_probe": True, "seed": seed, "device": "cpu"}
    d.update(kw)
    return d


def _records(C, seed, nan_loss_at=None, inf_at=None):
    """Trainer-like records (one dict per epoch), as clnscl.records names them."""
    out = []
    for ep in range(EPOCHS + 1):
        rho = 0.2 / C + 0.01 * ep + 0.001 * seed
        r = {"epoch": ep, "step": 5 * ep, "step_lr": 0.1, "cum_lr": 0.5 * ep,
             "cl/loss": 4.0 - 0.1 * ep, "nscl/loss": 3.9 - 0.1 * ep,
             "cl/knn_acc": 0.2 + 0.1 * ep, "nscl/knn_acc": 0.25 + 0.1 * ep,
             "nscl/param_dist": 0.0 if ep == 0 else 0.01 * math.exp(ep),
             "nscl/param_dist_layer": 0.0 if ep == 0 else 0.02 * math.exp(ep)}
        for split in ("train", "test"):
            for feat in ("backbone", "proj"):
                vals = {"cka": 1 - rho, "cka_debiased": 1 - 1.1 * rho, "rsa": 1 - 1.2 * rho,
                        "rho": rho, "cka_cos": 1 - rho ** 2 / 2,
                        "bound_sqrt": math.sqrt(1 - rho ** 2), "bound_ratio": (1 - rho) / (1 + rho)}
                if feat == "proj":
                    vals = {k: v * 0.99 for k, v in vals.items()}
                for k, v in vals.items():
                    r[f"nscl/{split}/{feat}/{k}"] = v
                    if (split, feat) == ("test", "backbone"):
                        r[f"nscl/{k}"] = v
        if ep == EPOCHS:
            r["cl/probe_acc"], r["nscl/probe_acc"] = 0.55, 0.6
            r["nscl/bound_sqrt"] = float("nan")  # legitimately NaN: never a reason to exclude
        if nan_loss_at is not None and ep >= nan_loss_at:
            r["nscl/loss"] = float("nan")
        if inf_at is not None and ep >= inf_at:
            r["cl/loss"] = float("inf")
        out.append(r)
    return out


# ---------------------------------------------------------------------------------------
# MLflow


def _log_trial(client, eid, parent_id, name, cfg, records, status="FINISHED", tags=None,
               objectives_as=None):
    from mlflow.entities import Metric, Param

    t = {"mlflow.parentRunId": parent_id, "trial_id": name.replace(" ", "_")}
    t.update(tags or {})
    run = client.create_run(eid, run_name=name, tags=t)
    params = {k: str(v) for k, v in cfg.items()}
    if objectives_as is not None:
        params["objectives"] = objectives_as
    metrics = [Metric(k, float(v), 1000 + r["epoch"], r["epoch"]) for r in records
               for k, v in r.items()]
    client.log_batch(run.info.run_id, metrics=metrics,
                     params=[Param(k, v) for k, v in params.items()])
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(fresh_mlflow_store):
    root, uri, client = fresh_mlflow_store("mlstore")
    eid = client.create_experiment("sweep_a", artifact_location=str(root / "art_a"))
    client.create_experiment("other", artifact_location=str(root / "art_o"))
    old = client.create_run(eid, run_name="sweep_a (older attempt)", start_time=1000)
    _log_trial(client, eid, old.info.run_id, "tau=0.5 B=128 C=2 seed=9", _config(2, 9),
               _records(2, 9))
    parent = client.create_run(eid, run_name="sweep_a", start_time=2000)
    pid = parent.info.run_id
    for C in (2, 4):
        for seed in (0, 1):
            _log_trial(client, eid, pid, f"tau=0.5 B=128 C={C} seed={seed}", _config(C, seed),
                       _records(C, seed), objectives_as="cl,nscl" if seed else None)
    _log_trial(client, eid, pid, "tau=0.5 B=128 C=8 seed=0", _config(8, 0), _records(8, 0)[:1],
               status="FAILED", tags={"error": "RuntimeError: boom"})
    _log_trial(client, eid, pid, "tau=0.5 B=128 C=8 seed=1", _config(8, 1), _records(8, 1)[:2],
               status="KILLED")
    _log_trial(client, eid, pid, "tau=0.5 B=128 C=8 seed=2", _config(8, 2), _records(8, 2)[:2],
               status="RUNNING")
    _log_trial(client, eid, pid, "tau=0.5 B=128 C=16 seed=0", _config(16, 0),
               _records(16, 0, nan_loss_at=2))
    _log_trial(client, eid, pid, "tau=0.5 B=128 C=16 seed=1", _config(16, 1),
               _records(16, 1, inf_at=3))
    return {"uri": uri, "root": root, "client": client, "parent": pid, "old": old.info.run_id}


EXCLUDED = {"tau=0.5 B=128 C=8 seed=0": "failed (status FAILED): RuntimeError: boom",
            "tau=0.5 B=128 C=8 seed=1": "killed (status KILLED)",
            "tau=0.5 B=128 C=8 seed=2": "still running (status RUNNING)",
            "tau=0.5 B=128 C=16 seed=0": "diverged: non-finite nscl/loss",
            "tau=0.5 B=128 C=16 seed=1": "diverged: non-finite cl/loss"}


def test_load_trials_mlflow(store):
    df = load_trials("sweep_a", tracking_uri=store["uri"])
    assert len(df) == 4 and set(df["objective"]) == {"nscl"}
    assert dict(df.attrs["excluded"]) == EXCLUDED
    assert df["tau"].dtype == float and df["batch_size"].dtype.kind == "i"
    assert df["n_classes"].dtype.kind == "i" and df["seed"].dtype.kind == "i"
    assert df["epochs"].dtype.kind == "i" and df["include_positive"].dtype == bool
    assert df["include_positive"].all() and (df["lr_rule"] == "sqrt").all()
    assert (df["objectives"] == "cl,nscl").all()  # "['cl', 'nscl']" and "cl,nscl" alike
    assert df["data_root"].isna().all() and df["class_seed"].isna().all()
    assert sorted(df["trial"]) == sorted(f"tau=0.5 B=128 C={C} seed={s}"
                                         for C in (2, 4) for s in (0, 1))
    assert df["run_id"].notna().all() and df["trial_id"].notna().all()
    r = df[(df["n_classes"] == 4) & (df["seed"] == 0)].iloc[0]
    rho = 0.2 / 4 + 0.01 * EPOCHS  # the last logged value
    assert r["rho"] == pytest.approx(rho) and r["cka"] == pytest.approx(1 - rho)
    assert r["test/proj/rho"] == pytest.approx(0.99 * rho)
    assert r["train/backbone/rsa"] == pytest.approx(1 - 1.2 * rho)
    assert r["param_dist"] == pytest.approx(0.01 * math.exp(EPOCHS))
    assert r["knn_acc"] == pytest.approx(0.25 + 0.1 * EPOCHS)
    assert r["cl_knn_acc"] == pytest.approx(0.2 + 0.1 * EPOCHS)
    assert r["probe_acc"] == 0.6 and r["cl_probe_acc"] == 0.55
    assert math.isnan(r["bound_sqrt"]) and r["cum_lr"] == pytest.approx(0.5 * EPOCHS)
    assert r["last_epoch"] == EPOCHS
    assert df.attrs["source"]["parent_run_id"] == store["parent"]
    assert any("2 sweeps" in n for n in df.attrs["source"]["notes"])  # older parent ignored


def test_load_curves_mlflow(store):
    c = load_curves("sweep_a", tracking_uri=store["uri"])
    assert list(c.columns[:5]) == ["trial", "objective", "epoch", "metric", "value"]
    assert c["trial"].nunique() == 4 and set(c["objective"]) == {"cl", "nscl"}
    assert dict(c.attrs["excluded"]) == EXCLUDED
    one = c[(c["trial"] == "tau=0.5 B=128 C=2 seed=0") & (c["metric"] == "test/proj/rho")]
    assert list(one["epoch"]) == list(range(EPOCHS + 1))
    assert np.allclose(one["value"], [0.99 * (0.1 + 0.01 * e) for e in range(EPOCHS + 1)])
    assert np.allclose(one["cum_lr"], [0.5 * e for e in range(EPOCHS + 1)])
    assert set(c[c["objective"] == "cl"]["metric"]) == {"loss", "knn_acc", "probe_acc"}
    assert "cum_lr" not in set(c["metric"]) and (c["n_classes"].isin([2, 4])).all()
    assert c["tau"].dtype == float


def test_unknown_experiment_lists_existing(store):
    with pytest.raises(SweepNotFoundError, match=r"'other'.*'sweep_a'|'sweep_a'.*'other'"):
        load_trials("nope", tracking_uri=store["uri"])


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(SweepNotFoundError, match="does not exist"):
        load_trials("x", tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()  # not created as a side effect


def test_default_tracking_uri_is_cwd_db(store, monkeypatch):
    monkeypatch.chdir(store["root"])
    assert len(load_trials("sweep_a")) == 4


def test_parse_param():
    assert parse_param("tau", "0.5") == 0.5 and parse_param("batch_size", "256") == 256
    assert parse_param("include_positive", "False") is False
    assert parse_param("include_positive", True) is True
    assert parse_param("objectives", "['cl', 'nscl', 'ce']") == ["cl", "nscl", "ce"]
    assert parse_param("objectives", "cl,nscl") == ["cl", "nscl"]
    assert parse_param("objectives", ("cl", "supcon")) == ["cl", "supcon"]
    assert parse_param("class_seed", "None") is None and parse_param("seed", 3.0) == 3
    assert parse_param("unknown_field", "1e-06") == 1e-6
    assert parse_param("unknown_field", "[1, 2]") == [1, 2]
    assert parse_param("dataset", "cifar10") == "cifar10"
    assert parse_param("n_classes", "ten") == "ten"  # kept, not guessed


# ---------------------------------------------------------------------------------------
# Ray Tune results directory


def _write_ray(root, with_state=True):
    """storage_path/<name>/<trial dir>/{params.json,result.json[,error.txt]} as Tune writes."""
    exp = root / "ray_sweep"
    exp.mkdir(parents=True)
    trials = []
    for i, (C, seed) in enumerate([(2, 0), (2, 1), (4, 0), (4, 1), (8, 0), (8, 1)]):
        tid = f"abc12_{i:05d}"
        d = exp / f"train_trial_{tid}_{i}_n_classes={C},seed={seed}_2026-01-01_00-00-0{i}"
        d.mkdir()
        cfg = _config(C, seed, include_positive=False, lr_rule="linear")
        (d / "params.json").write_text(json.dumps(cfg))
        recs = _records(C, seed)
        status = "TERMINATED"
        if (C, seed) == (8, 0):
            recs = recs[:2]
            (d / "error.txt").write_text("Failure # 1\nTraceback ...\nValueError: bad batch\n")
            status = "ERROR"
        if (C, seed) == (8, 1):
            recs = recs[:1]
            status = "RUNNING"
        with open(d / "result.json", "w") as fh:
            for it, r in enumerate(recs):
                row = dict(r, training_iteration=it + 1, trial_id=tid, done=False,
                           time_this_iter_s=0.1, config=cfg, date="2026-01-01_00-00-00",
                           hostname="h", node_ip="127.0.0.1", pid=1)
                fh.write(json.dumps(row) + "\n")
        trials.append((json.dumps({"trial_id": tid, "status": status,
                                   "relative_logdir": d.name}), "{}"))
    if with_state:
        (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(
            json.dumps({"trial_data": trials, "runner_data": {}, "stats": {}}))
    return exp


def test_load_ray_directory(tmp_path):
    exp = _write_ray(tmp_path)
    df = load_trials(str(exp))  # an existing path is read as a Ray Tune results directory
    assert len(df) == 4 and (df["include_positive"] == False).all()
    assert df["n_classes"].dtype.kind == "i" and (df["objectives"] == "cl,nscl").all()
    ex = dict(df.attrs["excluded"])
    assert ex == {"tau=0.5 B=128 C=8 seed=0": "failed (status FAILED): ValueError: bad batch",
                  "tau=0.5 B=128 C=8 seed=1": "still running (status RUNNING)"}
    r = df[(df["n_classes"] == 4) & (df["seed"] == 1)].iloc[0]
    rho = 0.2 / 4 + 0.01 * EPOCHS + 0.001
    assert r["rho"] == pytest.approx(rho) and r["test/proj/cka"] == pytest.approx(0.99 * (1 - rho))
    assert r["probe_acc"] == 0.6 and r["trial_id"].startswith("abc12_")
    assert "training_iteration" not in df.columns and "done" not in df.columns
    c = load_curves(None, results_dir=exp)
    assert c["trial"].nunique() == 4
    one = c[(c["trial"] == "tau=0.5 B=128 C=2 seed=0") & (c["metric"] == "param_dist")]
    assert list(one["epoch"]) == list(range(EPOCHS + 1)) and one["cum_lr"].iloc[-1] == 1.5


def test_ray_without_state_file(tmp_path):
    exp = _write_ray(tmp_path, with_state=False)
    s = load_sweep(exp)
    assert any("no experiment_state" in n for n in s.notes)
    ex = dict(s.excluded)
    assert list(ex) == ["tau=0.5 B=128 C=8 seed=0"] and "bad batch" in ex["tau=0.5 B=128 C=8 seed=0"]
    assert len(s.included) == 5


def test_ray_missing_directory_error(tmp_path):
    with pytest.raises(SweepNotFoundError, match="does not exist"):
        load_trials(None, results_dir=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepNotFoundError, match="no trial folders"):
        load_trials(str(tmp_path / "empty"))


def test_metric_columns_are_float(store):
    df = load_trials("sweep_a", tracking_uri=store["uri"])
    for col in ("cka", "rho", "test/proj/rho", "param_dist", "knn_acc", "cl_knn_acc",
                "probe_acc", "bound_sqrt", "cum_lr"):
        assert df[col].dtype == np.float64, col


def test_analysis_is_torch_free(tmp_path):
    """The analysis package (and a load) never imports torch or clnscl's training code."""
    import subprocess
    import sys

    exp = _write_ray(tmp_path)
    code = ("import sys, analysis, analysis.report, analysis.figures, analysis.fits\n"
            f"analysis.load_curves({str(exp)!r})\n"
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')"
            " or m.startswith('clnscl'))\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-2000:]


def test_metric_names_mirror_clnscl_records():
    """analysis mirrors clnscl.records' names without importing clnscl: keep them equal."""
    import ast
    from pathlib import Path

    from analysis import tables

    src = Path(__file__).resolve().parents[1] / "clnscl" / "records.py"
    names = {}
    for node in ast.parse(src.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    assert tables.BOOKKEEPING == names["BOOKKEEPING"]
    assert tables.DRIFT_METRICS == names["DRIFT_METRICS"]
    assert tables.ALIGNMENT_METRICS == names["ALIGNMENT_METRICS"]
    assert tables.CONTROL_OBJECTIVE == names["CONTROL"]
    assert set(names["DRIFT_METRICS"]) <= set(tables.MODEL_METRICS)
