"""Science check on the built-in data: does CL learn, and is CL-NSCL alignment more than a
shared start? C x tau x seeds, all four objectives plus the uncoupled control cl_indep.

    python benchmarks/science_check.py [--classes 2 8 32] [--tau 0.1 0.5 1.0] [--seeds 3]
        [--steps 128] [--batch-size 64] [--workers 2] [--out benchmarks/results/science_check]

Every run gets the same number of optimiser steps at the same batch size, so every grid
point is compared at equal cumulative learning rate S_T (the paper's bound depends on S_T;
the subset, all images of the chosen classes, grows with C). The regime is the quick
preset's (plain SGD with momentum, small CNN, 16x16 synthetic textures): see
sweeps/presets/quick.yaml for why not LARS at this scale.

Writes ``OUT.json`` (every record of every run) and ``OUT.md`` (the tables printed here):
per (C, tau), mean and 95 % t-interval over seeds of CL's drift from init (init_cka,
weight_move, knn_gain) and of CKA, RSA and rho of every model against CL, the control
cl_indep included. The library alone: no Ray, no MLflow.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OBJECTIVES = ("cl", "nscl", "supcon", "ce", "cl_indep")
REGIME = {  # the quick preset's learning regime (sweeps/presets/quick.yaml)
    "dataset": "synthetic", "arch": "smallcnn", "cnn_width": 16, "image_size": 16,
    "synthetic_train_per_class": 128, "synthetic_test_per_class": 64, "optimizer": "sgd",
    "lr": 0.1, "momentum": 0.9, "warmup_epochs": 0, "aug_crop_min": 0.5, "eval_size": 256,
    "knn_k": 10, "knn_bank_max": 2048, "linear_probe": False, "device": "cpu",
}


def one_run(job):
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    from clnscl.config import TrainConfig
    from clnscl.trainer import CoupledTrainer, DivergedError

    base, steps = job
    cfg = TrainConfig(**base)
    per_epoch = cfg.expected_train_images // cfg.batch_size
    epochs = max(1, math.ceil(steps / per_epoch))
    cfg = cfg.replace(epochs=epochs, eval_every=epochs)  # epoch 0 and the last
    t0 = time.perf_counter()
    try:
        recs, error = list(CoupledTrainer(cfg).run()), None
    except DivergedError as e:
        recs, error = [], str(e)
    return {"config": cfg.to_dict(), "records": recs, "error": error,
            "wall_s": time.perf_counter() - t0}


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over seeds (nan interval for one value)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def cell(values: list[float]) -> str:
    m, lo, hi = t_interval(values)
    return f"{m:.3f}" if math.isnan(lo) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


def tables(results: list[dict]) -> str:
    ok = [r for r in results if r["records"]]
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        c = r["config"]
        groups.setdefault((c["n_classes"], c["tau"]), []).append(r["records"][-1])
    keys = sorted(groups)
    n_seeds = {k: len(v) for k, v in groups.items()}
    out = []

    def table(title: str, cols: list[tuple[str, str]]) -> None:
        out.append(f"\n### {title}\n")
        out.append("| C | tau | seeds | " + " | ".join(h for h, _ in cols) + " |")
        out.append("|---|---|---|" + "---|" * len(cols))
        for k in keys:
            recs = groups[k]
            cells = [cell([r[key] for r in recs]) for _, key in cols]
            out.append(f"| {k[0]} | {k[1]:g} | {n_seeds[k]} | " + " | ".join(cells) + " |")

    table("Did CL learn? Drift of CL from the shared initial model (test split, backbone)",
          [("cl init_cka", "cl/init_cka"), ("cl weight_move", "cl/weight_move"),
           ("cl knn_gain", "cl/knn_gain"), ("cl knn_acc", "cl/knn_acc")])
    for metric, what in (("rho", "similarity-matrix distance rho (lower = closer)"),
                         ("cka", "linear CKA (higher = closer)"),
                         ("rsa", "RSA, Spearman (higher = closer)")):
        table(f"CL vs X: {what}; cl_indep = the uncoupled control",
              [(o, f"{o}/{metric}") for o in OBJECTIVES if o != "cl"])
    table("CL-vs-NSCL misalignment as a fraction of the control's (per seed, then averaged)",
          [("nscl rho / cl_indep rho", "ratio_rho"), ("(1-cka) nscl / cl_indep", "ratio_cka")])
    failed = [r for r in results if not r["records"]]
    if failed:
        out.append("\nDiverged (no records): " + "; ".join(
            f"C={r['config']['n_classes']} tau={r['config']['tau']} seed={r['config']['seed']}: "
            f"{r['error']}" for r in failed))
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", default=[2, 8, 32])
    p.add_argument("--tau", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/science_check")
    a = p.parse_args()
    jobs = [({**REGIME, "n_classes": C, "tau": t, "seed": s, "batch_size": a.batch_size,
              "objectives": OBJECTIVES}, a.steps)
            for C, t, s in itertools.product(a.classes, a.tau, range(a.seeds))]
    jobs.sort(key=lambda j: -j[0]["n_classes"])  # biggest first, so the pool stays busy
    results, t0 = [], time.perf_counter()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for res in pool.imap_unordered(one_run, jobs):
            c = res["config"]
            last = res["records"][-1] if res["records"] else {}
            print(f"done C={c['n_classes']} tau={c['tau']} seed={c['seed']} epochs={c['epochs']} "
                  f"in {res['wall_s']:.0f}s: cl knn_gain={last.get('cl/knn_gain', math.nan):+.3f} "
                  f"nscl rho={last.get('nscl/rho', math.nan):.3f} "
                  f"cl_indep rho={last.get('cl_indep/rho', math.nan):.3f}"
                  + (f" DIVERGED {res['error']}" if res["error"] else ""), flush=True)
            if last:
                last["ratio_rho"] = last["nscl/rho"] / last["cl_indep/rho"]
                last["ratio_cka"] = (1 - last["nscl/cka"]) / (1 - last["cl_indep/cka"])
            results.append(res)
            out.with_suffix(".json").write_text(json.dumps(results))
    head = (f"Science check: {a.steps} steps at B={a.batch_size} for every run (equal S_T), "
            f"seeds 0..{a.seeds - 1}, {time.perf_counter() - t0:.0f} s on {a.workers} workers.\n"
            f"Regime: {json.dumps(REGIME)}\n"
            "Cells: mean [95 % t-interval over seeds]; last evaluation; test split, backbone.")
    text = head + "\n" + tables(results)
    out.with_suffix(".md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
