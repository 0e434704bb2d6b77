"""Science check on the built-in data: CL-vs-{NSCL,SupCon,CE} alignment over C x tau.

    python benchmarks/science_check.py [--classes 2 10 50] [--tau 0.1 0.5 1.0] [--seeds 0]
        [--steps 300] [--workers 2] [--out science_check.json]

Every run gets the same number of optimiser steps (epochs = ceil(steps / steps per epoch)),
so the class count is compared at equal cumulative learning rate S_T: the paper's bound
depends on S_T, and the subset (all images of the chosen classes) grows with C. Prints one
table of final test-split alignment (backbone features) and writes every record as JSON.
This is the library alone (no Ray, no MLflow).
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


def one_run(job):
    import torch
    torch.set_num_threads(1)
    from clnscl.config import TrainConfig
    from clnscl.trainer import CoupledTrainer
    base, steps = job
    per_epoch = (base["n_classes"] * base["synthetic_train_per_class"]) // base["batch_size"]
    epochs = max(1, math.ceil(steps / per_epoch))
    cfg = TrainConfig(**base, epochs=epochs, eval_every=max(1, epochs // 3))
    t0 = time.perf_counter()
    recs = list(CoupledTrainer(cfg).run())
    return {"config": cfg.to_dict(), "records": recs, "wall_s": time.perf_counter() - t0}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, nargs="+", default=[2, 10, 50])
    p.add_argument("--tau", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--objectives", default="cl,nscl,supcon,ce")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="science_check.json")
    a = p.parse_args()
    jobs = [(dict(n_classes=C, tau=t, seed=s, batch_size=a.batch_size, image_size=a.image_size,
                  synthetic_train_per_class=a.per_class, synthetic_test_per_class=50,
                  objectives=a.objectives, eval_size=500, warmup_epochs=0), a.steps)
            for C, t, s in itertools.product(a.classes, a.tau, a.seeds)]
    # biggest first, so the pool stays busy
    jobs.sort(key=lambda j: -j[0]["n_classes"])
    results = []
    with mp.get_context("spawn").Pool(a.workers) as pool:
        for res in pool.imap_unordered(one_run, jobs):
            c = res["config"]
            print(f"done C={c['n_classes']} tau={c['tau']} seed={c['seed']} "
                  f"epochs={c['epochs']} in {res['wall_s']:.0f}s", flush=True)
            results.append(res)
            Path(a.out).write_text(json.dumps(results))
    objs = [o for o in ("nscl", "supcon", "ce") if o in a.objectives]
    print(f"\nfinal CKA / RSA to CL, test split, backbone features ({a.steps} steps, B={a.batch_size})")
    head = f"{'C':>4} {'tau':>5} {'seed':>4} " + " ".join(f"{o + ' cka':>11} {o + ' rsa':>11}" for o in objs)
    print(head + f" {'cl knn':>7} {'nscl pd':>8}")
    for res in sorted(results, key=lambda r: (r["config"]["n_classes"], r["config"]["tau"], r["config"]["seed"])):
        c, last = res["config"], res["records"][-1]
        cells = " ".join(f"{last[o + '/cka']:11.3f} {last[o + '/rsa']:11.3f}" for o in objs)
        print(f"{c['n_classes']:>4} {c['tau']:>5} {c['seed']:>4} {cells} {last['cl/knn_acc']:7.3f} "
              f"{last['nscl/param_dist']:8.3f}")


if __name__ == "__main__":
    main()
