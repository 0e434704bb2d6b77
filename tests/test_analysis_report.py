"""End to end: a realistic fake sweep in a real SQLite MLflow store -> write_report."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PLANTED_C = -1.0  # misalignment ~ C^-1
PLANTED_TAU = 1.0  # log misalignment = a + 1.0 / tau
PLANTED_GROWTH = 0.8  # param_dist ~ exp(0.8 cum_lr)
TAUS, CS, SEEDS, EPOCHS = (0.5, 1.0), (2, 4, 8), (0, 1), 4
OBJS = ("nscl", "supcon")


def _params(tau, C, seed):
    return {"dataset": "synthetic", "data_root": "None", "download": "False", "n_classes": str(C),
            "class_seed": "None", "image_size": "32", "objectives": "['cl', 'nscl', 'supcon']",
            "tau": str(tau), "include_positive": "False", "arch": "smallcnn", "proj_dim": "64",
            "proj_hidden": "None", "batch_size": "256", "epochs": str(EPOCHS),
            "optimizer": "lars", "lr": "0.3", "lr_rule": "linear", "momentum": "0.9",
            "weight_decay": "1e-06", "warmup_epochs": "2", "eval_every": "1",
            "eval_size": "1000", "knn_k": "20", "linear_probe": "True", "seed": str(seed),
            "device": "cpu"}


def _metrics(tau, C, seed, rng):
    """Per-epoch metric dicts with planted trends (final misalignment ~ e^{1/tau} / C)."""
    from mlflow.entities import Metric

    out = []
    for ep in range(EPOCHS + 1):
        cum = 0.5 * ep
        rec = {"epoch": ep, "step": 10 * ep, "step_lr": 0.5, "cum_lr": cum, "cl/loss": 5 - 0.2 * ep,
               "cl/knn_acc": 0.3 + 0.05 * ep, "eval_rows": 1000, "knn_bank_rows": 2048,
               "cl/knn_gain": 0.05 * ep, "cl/weight_move": 0.1 * ep,
               # the C=2, tau=1 trials' CL never leaves its init: "did not train"
               "cl/init_cka": 1.0 if (C, tau) == (2, 1.0) else 1 - 0.15 * ep}
        if ep == EPOCHS:
            rec["cl/probe_acc"] = 0.6
        for obj, scale in (("nscl", 1.0), ("supcon", 3.0), ("cl_indep", 4.0)):
            frac = 0.3 + 0.7 * ep / EPOCHS  # misalignment builds up over training
            noise = math.exp(rng.normal(0, 0.05))
            for feat, f_scale in (("backbone", 1.0), ("proj", 0.7)):
                m = 0.04 * math.exp(PLANTED_TAU / tau) * C ** PLANTED_C * scale * frac * noise
                m *= f_scale
                rho = min(m, 0.99)
                for split in ("train", "test"):
                    vals = {"cka": 1 - m, "cka_debiased": 1 - 1.1 * m, "rsa": 1 - 1.3 * m,
                            "rho": rho, "cka_cos": 1 - rho ** 2 / 2,
                            "bound_sqrt": math.sqrt(1 - rho ** 2),
                            "bound_ratio": (1 - rho) / (1 + rho)}
                    for k, v in vals.items():
                        rec[f"{obj}/{split}/{feat}/{k}"] = v
                        if split == "test" and feat == "backbone":
                            rec[f"{obj}/{k}"] = v
            d = 0.0 if ep == 0 else 0.01 * math.exp(PLANTED_GROWTH * cum) * math.exp(
                rng.normal(0, 0.02))
            rec[f"{obj}/param_dist"] = d
            rec[f"{obj}/param_dist_layer"] = 2 * d
            rec[f"{obj}/loss"] = 4 - 0.1 * ep
            rec[f"{obj}/knn_acc"] = 0.35 + 0.05 * ep
            if ep == EPOCHS:
                rec[f"{obj}/probe_acc"] = 0.65
        out += [Metric(k, float(v), 1000 + ep, ep) for k, v in rec.items()]
    return out


def build_fake_sweep(root, uri, client):
    """Parent + 12 finished children (tau x C x seed, planted trends) + 1 FAILED child."""
    eid = client.create_experiment("toy_sweep", artifact_location=str(root / "artifacts"))
    parent = client.create_run(eid, run_name="toy_sweep", tags={"sweep": "toy_sweep"})
    client.log_param(parent.info.run_id, "grid", "tau x C x seed")
    rng = np.random.default_rng(0)
    tags = {"mlflow.parentRunId": parent.info.run_id}
    for tau in TAUS:
        for C in CS:
            for seed in SEEDS:
                name = f"tau={tau:g} B=256 C={C} seed={seed}"
                run = client.create_run(eid, run_name=name,
                                        tags={**tags, "trial_id": f"t{tau}{C}{seed}"})
                client.log_batch(run.info.run_id, metrics=_metrics(tau, C, seed, rng),
                                 params=[__import__("mlflow").entities.Param(k, v)
                                         for k, v in _params(tau, C, seed).items()])
                client.set_terminated(run.info.run_id, "FINISHED")
    bad = client.create_run(eid, run_name="tau=0.5 B=256 C=16 seed=0",
                            tags={**tags, "trial_id": "tbad", "error": "CUDA out of memory"})
    for k, v in _params(0.5, 16, 0).items():
        client.log_param(bad.info.run_id, k, v)
    client.log_metric(bad.info.run_id, "nscl/cka", 0.5, step=0)
    client.set_terminated(bad.info.run_id, "FAILED")
    client.set_terminated(parent.info.run_id, "FINISHED")
    return {"uri": uri, "root": root, "parent": parent.info.run_id, "client": client}


@pytest.fixture(scope="module")
def fake_sweep(fresh_mlflow_store):
    return build_fake_sweep(*fresh_mlflow_store("sweep"))


@pytest.fixture(scope="module")
def report(fake_sweep):
    from analysis import write_report

    out = fake_sweep["root"] / "out"
    path = write_report("toy_sweep", tracking_uri=fake_sweep["uri"], out_dir=out, n_boot=500)
    return path


def test_report_mentions_failed_trial_and_reason(report):
    text = report.read_text()
    assert report.name == "report.md" and report.exists()
    assert "tau=0.5 B=256 C=16 seed=0" in text
    assert "CUDA out of memory" in text and "FAILED" in text
    assert "decoupled CL" in text  # the CL variant is stated
    assert "linear" in text  # the lr rule is stated
    for claim in ("Claim 1", "Claim 2", "Claim 3", "bound"):
        assert claim in text
    # only one B value in this sweep: the B fit is declined with a reason, not a crash
    assert "needs >= 2 distinct B" in text


def test_report_recovers_planted_class_exponent(report):
    import pandas as pd

    fits = pd.read_csv(report.parent / "fits.csv")
    c = fits[(fits["kind"] == "C") & (fits["measure"] == "rho") & (fits["features"] == "backbone")]
    assert len(c) == len(TAUS)  # one fit per tau
    assert np.all(np.abs(c["slope"] - PLANTED_C) < 0.1)
    # descriptive per-slice rows: at worst a narrow miss of -1, never the wrong sign
    assert all(v == "consistent" or "steeper" in v or "shallower" in v for v in c["verdict"])
    t = fits[(fits["kind"] == "tau") & (fits["measure"] == "1-cka") & (fits["features"] == "proj")]
    assert len(t) == len(CS) and np.all(np.abs(t["slope"] - PLANTED_TAU) < 0.2)
    g = fits[(fits["kind"] == "param_growth") & (fits["measure"] == "param_dist")]
    assert len(g) and np.all(np.abs(g["slope"] - PLANTED_GROWTH) < 0.05)
    trials = pd.read_csv(report.parent / "trials.csv")
    assert len(trials) == len(TAUS) * len(CS) * len(SEEDS) * (len(OBJS) + 1)  # + cl_indep
    ob = pd.read_csv(report.parent / "objectives.csv")
    assert ob[ob["at"] == "final"]["nscl_highest"].astype(bool).all()
    b = pd.read_csv(report.parent / "bounds.csv")
    assert (b["frac_sqrt_holds"] == 1).all() and (b["frac_ratio_holds"] == 1).all()


def test_figures_written(report):
    figs = report.parent / "figures"
    for name in ("misalignment_vs_C", "misalignment_vs_tau", "alignment_over_epochs",
                 "param_distance", "bound_check"):
        for ext in ("png", "svg"):
            p = figs / f"{name}.{ext}"
            assert p.exists() and p.stat().st_size > 1000, p
    assert not (figs / "misalignment_vs_B.png").exists()  # a single B: skipped with a reason
    assert "misalignment_vs_B: not drawn" in report.read_text()


def test_artifacts_logged_on_parent(report, fake_sweep):
    client = fake_sweep["client"]
    top = {f.path for f in client.list_artifacts(fake_sweep["parent"], "analysis")}
    assert "analysis/report.md" in top and "analysis/fits.csv" in top
    figs = {f.path for f in client.list_artifacts(fake_sweep["parent"], "analysis/figures")}
    assert "analysis/figures/misalignment_vs_C.png" in figs
    assert "analysis/figures/bound_check.svg" in figs


def test_cli(fake_sweep, tmp_path, capsys):
    """The CLI on the same store; the report states the excluded trial on stdout."""
    from analysis.__main__ import main

    rc = main(["--experiment", "toy_sweep", "--tracking-uri", fake_sweep["uri"],
               "--out", str(tmp_path / "cli"), "--n-boot", "200", "--no-log", "--no-figures"])
    out = capsys.readouterr().out
    assert rc == 0 and "report.md" in out and "CUDA out of memory" in out
    assert (tmp_path / "cli" / "report.md").exists()
    rc = main(["--experiment", "nope", "--tracking-uri", fake_sweep["uri"]])
    err = capsys.readouterr().err
    assert rc == 2 and "toy_sweep" in err


def test_tiny_single_seed_sweep(fake_sweep):
    """One seed, one tau, two C, headline metrics only, a diverged trial: no crash, honest
    notes instead of fits."""
    from mlflow.entities import Metric, Param

    from analysis import write_report

    client, root = fake_sweep["client"], fake_sweep["root"]
    eid = client.create_experiment("tiny", artifact_location=str(root / "art_tiny"))
    pid = client.create_run(eid, run_name="tiny").info.run_id
    for C, status, err in ((2, "FINISHED", None), (4, "FINISHED", None),
                           (8, "FAILED", "DivergedError: loss is NaN at step 7\nTraceback ...")):
        run = client.create_run(eid, run_name=f"tau=0.5 B=64 C={C} seed=0",
                                tags={"mlflow.parentRunId": pid})
        ms = [Metric(k, v, 0, ep) for ep in range(3)
              for k, v in (("epoch", ep), ("cl/loss", 3.0), ("nscl/loss", 2.9),
                           ("nscl/cka", 1 - 0.1 / C), ("nscl/rsa", 1 - 0.12 / C))]
        ps = [Param(k, v) for k, v in (("tau", "0.5"), ("batch_size", "64"),
                                       ("n_classes", str(C)), ("seed", "0"),
                                       ("objectives", "cl,nscl"), ("lr_rule", "sqrt"))]
        client.log_batch(run.info.run_id, metrics=ms, params=ps)
        if err:
            client.set_tag(run.info.run_id, "error", err)
        client.set_terminated(run.info.run_id, status)
    path = write_report("tiny", tracking_uri=fake_sweep["uri"], out_dir=root / "tiny_out",
                        n_boot=200, figures=False)
    text = path.read_text()
    assert "diverged (status FAILED): DivergedError: loss is NaN at step 7" in text
    assert "Traceback" not in text  # the reason is the error's first line
    assert "needs >= 2 distinct tau" in text and "needs >= 2 distinct B" in text
    assert "exactly 2 points" in text  # C fit through two points: slope, no CI
    assert "not recorded" in text  # CL variant unknown: said, not guessed
    assert "Not fitted: no parameter distance logged" in text
    assert "claim 3 needs `supcon`" in text


def test_report_from_ray_directory(tmp_path):
    """A sweep run without MLflow: read the Tune results directory, log nothing."""
    import json

    from analysis import write_report

    exp = tmp_path / "ray_results" / "raysweep"
    for i, (C, seed) in enumerate([(2, 0), (4, 0), (8, 0), (2, 1), (4, 1), (8, 1)]):
        d = exp / f"train_trial_{i:05d}_C={C},seed={seed}"
        d.mkdir(parents=True)
        cfg = {"tau": 0.5, "batch_size": 64, "n_classes": C, "seed": seed, "epochs": 2,
               "objectives": ["cl", "nscl"], "include_positive": False, "lr_rule": "linear"}
        (d / "params.json").write_text(json.dumps(cfg))
        lines = []
        for ep in range(3):
            m = 0.2 / C * (1 + ep) * (1.03 if seed else 0.97)
            lines.append(json.dumps({"epoch": ep, "cum_lr": 0.1 * ep, "nscl/rho": m,
                                     "nscl/cka": 1 - m, "nscl/rsa": 1 - m, "cl/loss": 1.0,
                                     "nscl/loss": 1.0, "training_iteration": ep + 1,
                                     "trial_id": f"t{i}", "done": False, "config": cfg}))
        (d / "result.json").write_text("\n".join(lines) + "\n")
        if (C, seed) == (8, 1):
            (d / "error.txt").write_text("Traceback\nRuntimeError: worker died\n")
    path = write_report(None, results_dir=exp, out_dir=tmp_path / "out", n_boot=200,
                        figures=False)
    text = path.read_text()
    assert "Ray Tune results directory" in text and "RuntimeError: worker died" in text
    assert "Not logged to MLflow" in text
    import pandas as pd

    fits = pd.read_csv(tmp_path / "out" / "fits.csv")
    rho = fits[(fits["kind"] == "C") & (fits["measure"] == "rho") & (fits["features"] == "backbone")]
    assert abs(rho["slope"].iloc[0] + 1) < 0.05


def test_report_opens_with_claims_table(report):
    """claims.csv: a row per claim with finite intervals for C and tau; report.md opens with
    the same table; trials whose CL did not train are listed and left out."""
    import pandas as pd

    claims = pd.read_csv(report.parent / "claims.csv")
    text = report.read_text()
    first = text.split("\n## ")[1]
    assert first.startswith("Answer: one row per claim") and "| claim | measure |" in first
    assert "2 seed(s)" in first
    c = claims[claims["measure"] == "rho (nscl, backbone)"].set_index("claim")
    for ax in ("C", "tau (slope in 1/tau)"):
        r = c.loc[f"1: misalignment falls with {ax}"]
        assert np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]) and r["ci_low"] < r["ci_high"]
        assert r["n_trials"] == len(TAUS) * len(CS) * len(SEEDS) - 2  # C=2 tau=1: 2 seeds out
    rc = c.loc["1: misalignment falls with C"]
    assert rc["ci_low"] <= PLANTED_C <= rc["ci_high"] and "supported" in rc["verdict"]
    assert "not testable" in c.loc["1: misalignment falls with B", "verdict"]
    ctrl = claims[claims["claim"].str.startswith("control")].iloc[0]
    assert ctrl["estimate"] == pytest.approx(0.25, rel=0.05)  # nscl 1x vs cl_indep 4x
    assert ctrl["ci_high"] < 1
    assert not claims["claim"].str.contains("than cl_indep").any()  # a control, not a proxy
    assert "did not train" in text and "tau=1 B=256 C=2 seed=0" in text.split("## Controls")[1]
    assert "1000-1000 rows per split" in text  # evaluation sample size shown
    st = pd.read_csv(report.parent / "training_status.csv")
    assert (~st["trained"].astype(bool)).sum() == 2
