"""Speed table of the library's hot parts (run by hand or on a GPU; no Ray, no MLflow).

    python benchmarks/bench_core.py [--device cpu|cuda] [--batch-size 256] [--arch smallcnn]

Prints one table: augmentation of a batch, each loss forward+backward, one coupled step
(all objectives), feature-form CKA against the n x n Gram form, and a full evaluation.
Ratios in the table are measured in this one run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clnscl import alignment, losses  # noqa: E402
from clnscl.config import TrainConfig  # noqa: E402
from clnscl.trainer import CoupledTrainer  # noqa: E402


def timeit(fn, device, repeat=5, warmup=2):
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--arch", default="smallcnn")
    p.add_argument("--classes", type=int, default=10)
    a = p.parse_args()
    cfg = TrainConfig(device=a.device, batch_size=a.batch_size, arch=a.arch, n_classes=a.classes,
                      objectives=("cl", "nscl", "supcon", "ce"), eval_size=1000,
                      synthetic_train_per_class=max(100, a.batch_size // a.classes + 1))
    t0 = time.perf_counter()
    tr = CoupledTrainer(cfg)
    setup = time.perf_counter() - t0
    dev = tr.device
    B = cfg.batch_size
    x = tr.data.train_x[:B]
    y = tr.data.train_y[:B]
    g = torch.Generator().manual_seed(0)
    rows = []
    rows.append(("setup: data + 4 models", setup))
    rows.append((f"augment one view, B={B}", timeit(lambda: tr.augment(x, g), dev)))
    z1 = torch.randn(B, cfg.proj_dim, device=dev, requires_grad=True)
    z2 = torch.randn(B, cfg.proj_dim, device=dev, requires_grad=True)
    for name, fn in [("cl_loss", lambda: losses.cl_loss(z1, z2, 0.1)),
                     ("nscl_loss", lambda: losses.nscl_loss(z1, z2, y, 0.1)),
                     ("supcon_loss", lambda: losses.supcon_loss(z1, z2, y, 0.1))]:
        rows.append((f"{name} fwd+bwd, B={B}", timeit(lambda: fn().backward(), dev)))

    def one_step():
        tr.step = 0
        pa, pb = tr.augment.sample_params(B, g), tr.augment.sample_params(B, g)
        views = torch.cat([tr.augment.apply(x, pa), tr.augment.apply(x, pb)])
        d = tr._step_digest(torch.arange(B), pa, pb)
        for obj in tr.models:
            tr._train_step(obj, views, y, d)
    rows.append((f"coupled step, 4 models, {cfg.arch}", timeit(one_step, dev, repeat=3, warmup=1)))
    X = torch.randn(2000, 128, dtype=torch.float64)
    Y = X + torch.randn(2000, 128, dtype=torch.float64)

    def gram_cka():
        Xc, Yc = X - X.mean(0), Y - Y.mean(0)
        K, L = Xc @ Xc.T, Yc @ Yc.T
        return (K * L).sum() / (K.norm() * L.norm())
    t_feat = timeit(lambda: alignment.linear_cka(X, Y), torch.device("cpu"))
    t_gram = timeit(gram_cka, torch.device("cpu"))
    rows.append(("linear_cka feature form, n=2000 d=128", t_feat))
    rows.append(("linear_cka Gram form (reference), same", t_gram))
    rows.append(("evaluation (4 models, eval_size=1000)", timeit(lambda: tr.evaluate(), dev, repeat=1, warmup=0)))
    print(f"device={dev} torch={torch.__version__} arch={cfg.arch} B={B}")
    print(f"{'what':48} {'ms':>10}")
    for name, t in rows:
        print(f"{name:48} {1000 * t:10.2f}")
    print(f"Gram/feature CKA time ratio: {t_gram / t_feat:.1f}x")


if __name__ == "__main__":
    main()
