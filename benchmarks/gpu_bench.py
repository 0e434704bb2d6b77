"""The GPU rows of issue 11, library only (the GPU image has torch, not Ray or MLflow).

    python benchmarks/gpu_bench.py --out "$OUT"     # on a lent GPU: ~6-8 min on an H200
    python benchmarks/gpu_bench.py --quick          # tiny sizes on the CPU: checks the script

It checks correctness first and stops on a failure, then prints one table:
  g0  two identical 2-step runs on the device give bit-identical losses and digests
      (cuDNN deterministic), every loss finite, the shared-randomness audit passes, and
      the device's step-1 losses are within 1e-3 (relative) of the CPU's;
  g1  pair epoch (cl, nscl) / one model's epoch (cl alone, the same per-step work), per
      architecture (ResNet-18 and ResNet-50, CIFAR stem, 32 px, N images, B = 512), with
      images/s, peak memory, and the model FLOPs as a fraction of the device's bf16 peak;
  g2  the same model's forward+backward under bf16 autocast + channels-last against fp32
      (speed ratio; the relative difference of the loss: what bf16 would cost in accuracy);
  g3  one evaluation (kNN bank 20k, 10k test queries) / one training epoch;
  g4  the published CIFAR-100 grid's GPU-hours from these throughputs (sweeps/costs.py).
Writes OUT/gpu_results.md (the table) and OUT/throughput.json ("resnet18/gpu",
"resnet50/gpu": what grid.py --dry-run reads; merge it into benchmarks/results/).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clnscl import losses
from clnscl.config import TrainConfig
from clnscl.trainer import CoupledTrainer

BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def config(arch: str, device: str, per_class: int, batch: int, image_size: int = 32,
           **over) -> TrainConfig:
    base = {"dataset": "synthetic", "image_size": image_size, "n_classes": 10,
            "synthetic_train_per_class": per_class,
            "synthetic_test_per_class": max(per_class // 5, 4), "arch": arch,
            "objectives": ("cl", "nscl"), "batch_size": batch, "epochs": 3,
            "optimizer": "lars", "lr": 0.3, "warmup_epochs": 1, "eval_every": 1,
            "eval_size": 1000, "knn_bank_max": 20000, "device": device, "seed": 0, "tau": 0.5}
    base.update(over)
    base["eval_size"] = min(base["eval_size"], base["knn_bank_max"],
                            base["synthetic_test_per_class"] * base["n_classes"])
    return TrainConfig(**base)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of fn() over repeats (device synchronised around each call)."""
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return sorted(out)[len(out) // 2]


# ---------------------------------------------------------------------------- g0 correctness
def check_correctness(device: str, arch: str) -> dict:
    cfg = config(arch, device, per_class=32, batch=64, epochs=1)

    def two_steps(dev):
        c = TrainConfig(**{**cfg.to_dict(), "device": dev,
                           "objectives": tuple(cfg.objectives)})
        tr = CoupledTrainer(c)
        tr.steps_per_epoch = 2
        losses_ = tr.train_epoch()
        return losses_, tr.check_shared_randomness()

    a, da = two_steps(device)
    b, db = two_steps(device)
    ok_repeat = a == b and da == db
    finite = all(math.isfinite(v) for v in a.values())
    cpu, _ = two_steps("cpu")
    rel = max(abs(a[k] - cpu[k]) / max(abs(cpu[k]), 1e-12) for k in a)
    return {"repeat_identical": ok_repeat, "finite": finite,
            "cpu_rel_diff": rel, "ok": ok_repeat and finite and rel < 1e-3}


# ---------------------------------------------------------------------------- g1 pair epoch
def pair_epoch(arch: str, device: str, per_class: int, batch: int, repeats: int) -> dict:
    tr = CoupledTrainer(config(arch, device, per_class, batch))
    B = tr.cfg.batch_size

    def single():
        n = len(tr.data.train_y)
        perm = torch.randperm(n, generator=tr.batch_gen).to(tr.device)
        for s in range(tr.steps_per_epoch):
            idx = perm[s * B:(s + 1) * B]
            x, y = tr.data.train_x[idx], tr.data.train_y[idx]
            tr._train_step("cl", tr._views(x, tr.aug_gen), y)

    tr.train_epoch()  # warm-up (cuDNN autotuning off: deterministic kernels)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t_pair = timed(tr.train_epoch, device, repeats)
    t_eval = timed(tr.evaluate, device, 1)  # before single(): it breaks the coupling audit
    t_single = timed(single, device, repeats)
    images = tr.steps_per_epoch * B
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    flops = model_flops(tr.models["cl"], tr.cfg.image_size, device)  # forward, one image
    from sweeps.costs import eval_rows
    return {"arch": arch, "pair_s": t_pair, "single_s": t_single, "ratio": t_pair / t_single,
            "images": images, "pair_images_s": images / t_pair, "mem_gib": mem,
            "train_views_per_s": images * 2 / t_single,  # one model
            "fwd_gflop": flops / 1e9, "eval_s": t_eval,
            "eval_rows_per_s": len(tr.models) * eval_rows(tr.cfg) / t_eval,
            "steps": tr.steps_per_epoch, "batch": B}


def model_flops(model, size: int, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.zeros(1, 3, size, size, device=device)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    model.train()
    return float(fc.get_total_flops())


# ---------------------------------------------------------------------------- g2 bf16
def bf16_step(arch: str, device: str, batch: int, repeats: int) -> dict:
    from clnscl.models import build_encoder

    torch.manual_seed(0)
    x = torch.randn(2 * batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def make(cl: bool):
        torch.manual_seed(0)
        m = build_encoder(arch, 128).to(device)
        if cl:
            m = m.to(memory_format=torch.channels_last)
        return m, torch.optim.SGD(m.parameters(), lr=0.0)  # lr 0: the same weights each call

    fp32, opt32 = make(False)
    bf, optbf = make(True)
    xcl = x.contiguous(memory_format=torch.channels_last)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    vals = {}

    def step(m, opt, xx, amp):
        with torch.autocast(device_type=kind, dtype=torch.bfloat16, enabled=amp):
            _, z = m(xx)
        z1, z2 = z.float().chunk(2)  # the loss in fp32 (log-sum-exp)
        loss = losses.nscl_loss(z1, z2, y, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        vals["bf16" if amp else "fp32"] = float(loss)

    step(fp32, opt32, x, False)
    step(bf, optbf, xcl, True)
    t32 = timed(lambda: step(fp32, opt32, x, False), device, repeats)
    tbf = timed(lambda: step(bf, optbf, xcl, True), device, repeats)
    return {"arch": arch, "fp32_s": t32, "bf16_s": tbf, "speedup": t32 / tbf,
            "loss_rel_diff": abs(vals["bf16"] - vals["fp32"]) / max(abs(vals["fp32"]), 1e-12)}


# ---------------------------------------------------------------------------- g4 projection
def projected_grid_hours(throughput: dict) -> dict | None:
    try:
        from sweeps.costs import estimate_trial
        from sweeps.presets import load_preset
    except ImportError as e:  # yaml missing on the device image
        return {"error": f"not projected: {e}"}
    out = {}
    for name in ("cifar100", "cifar10"):
        p = load_preset(name)
        est = [estimate_trial(cfg, p.gpu or 1, measured=throughput) for cfg in p.points()]
        out[name] = {"trials": len(est), "gpu_hours": sum(e["seconds"] for e in est) / 3600,
                     "source": est[0]["source"],
                     "eval_share": sum(e["eval_s"] for e in est)
                     / sum(e["train_s"] for e in est)}
    return out


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=50000, help="training images (10 classes)")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--archs", default="resnet18,resnet50")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU check of the script)")
    ap.add_argument("--out", default=None, help="folder for gpu_results.md, throughput.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.images, a.batch, a.repeats, a.archs = 160, 32, 1, "resnet18"
    dev = a.device
    name = device_name(dev)
    print(f"device {name}, torch {torch.__version__}", flush=True)
    rows = ["| row | measured | ratio / value | goal |", "|---|---|---|---|"]

    g0 = check_correctness(dev, a.archs.split(",")[0])
    print("g0", g0, flush=True)
    rows.append(f"| g0 correctness on {dev} | repeat bit-identical {g0['repeat_identical']}, "
                f"finite {g0['finite']}, audit ok (check_shared_randomness raises otherwise), step-1 loss vs CPU rel diff "
                f"{g0['cpu_rel_diff']:.1e} | {'ok' if g0['ok'] else 'FAILED'} | all ok |")
    if not g0["ok"]:
        print("\n".join(rows))
        return 1

    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    throughput = {}
    per_class = a.images // 10
    for arch in a.archs.split(","):
        g1 = pair_epoch(arch, dev, per_class, a.batch, a.repeats)
        print("g1", g1, flush=True)
        frac = ""
        if peak:
            achieved = g1["pair_images_s"] * 2 * 2 * 3 * g1["fwd_gflop"] / 1e3  # TFLOP/s
            frac = f"; {achieved:.0f} TFLOP/s = {100 * achieved / peak:.1f}% of bf16 peak"
        rows.append(f"| g1 pair epoch / one model, {arch}, {g1['images']} images, B={a.batch} "
                    f"| {g1['pair_s']:.2f} s vs {g1['single_s']:.2f} s; "
                    f"{g1['pair_images_s']:,.0f} images/s per pair"
                    + (f", peak {g1['mem_gib']:.1f} GiB" if g1["mem_gib"] else "") + frac
                    + f" | **{g1['ratio']:.2f}x** | <= 1.3x; ResNet-18 <= 3 s per pair epoch |")
        rows.append(f"| g3 evaluation / training epoch, {arch} | {g1['eval_s']:.2f} s vs "
                    f"{g1['pair_s']:.2f} s | **{g1['eval_s'] / g1['pair_s']:.2f}** | <= 0.10 |")
        g2 = bf16_step(arch, dev, a.batch, a.repeats)
        print("g2", g2, flush=True)
        rows.append(f"| g2 bf16 autocast + channels-last vs fp32 step, {arch}, B={a.batch} | "
                    f"{g2['bf16_s'] * 1e3:.1f} ms vs {g2['fp32_s'] * 1e3:.1f} ms, loss rel diff "
                    f"{g2['loss_rel_diff']:.1e} | **{g2['speedup']:.2f}x** | - |")
        throughput[f"{arch}/{'gpu' if dev.startswith('cuda') else 'cpu'}"] = {
            "train_views_per_s": g1["train_views_per_s"], "eval_rows_per_s": g1["eval_rows_per_s"],
            "image_size": 32, "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "machine": name, "commit": os.environ.get("GIT_COMMIT", "?")}
    proj = projected_grid_hours(throughput)
    print("g4", proj, flush=True)
    if proj and "error" not in proj:
        for k, v in proj.items():
            rows.append(f"| g4 published {k} grid ({v['trials']} trials) | throughput "
                        f"{v['source']}; evaluation {100 * v['eval_share']:.0f}% of training | "
                        f"**{v['gpu_hours']:.1f} GPU-hours** | CIFAR-100 <= 6 |")
    elif proj:
        rows.append(f"| g4 published grids | {proj['error']} | - | - |")
    text = f"{_dt.datetime.now():%Y-%m-%d %H:%M}, {name}, torch {torch.__version__}\n\n" \
        + "\n".join(rows) + "\n"
    print("\n" + text)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_results.md").write_text(text)
        (out / "throughput.json").write_text(json.dumps(throughput, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
