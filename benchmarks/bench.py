"""One speed table of ratios, both sides of each ratio measured in this run, interleaved.

    .venv/bin/python benchmarks/bench.py              # ~5 min on 2 CPU cores, appends to RESULTS.md
    .venv/bin/python benchmarks/bench.py --quick      # tiny sizes (seconds), nothing appended
    .venv/bin/python benchmarks/bench.py --align-n 10000 --align-d 512 --rsa-n 5000 --no-ray

Rows (library only; the Ray + MLflow row runs only when both import and --no-ray is not set):
  a  batched augmentation (clnscl.augment.SimCLRAugment, 32 px, B=256) views/s against a
     torchvision v2 per-sample pipeline in a DataLoader with one worker per core, same uint8
     images, same parameter ranges;
  b  coupled pair epoch (CoupledTrainer, objectives cl,nscl) / one model's epoch (the same
     trainer's per-step work for cl alone: augmentation, audit, forward/backward/step);
  c  one evaluation / one training epoch at the quick preset's sizes (5 models);
  d  linear CKA (biased + debiased), rho (+ cosine CKA), RSA (Pearson; Spearman) in
     clnscl.alignment against the n x n Gram form written out below;
  e  peak RSS of one quick-preset trial (child process), Ray + MLflow overhead per trial.
Timings are medians of interleaved repeats; the machine may be shared, say so when it is.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clnscl import alignment
from clnscl.augment import SimCLRAugment

AUG_TARGET, PAIR_CPU_TARGET, EVAL_TARGET, ALIGN_TARGET = 15.0, 1.9, 0.10, 100.0


# ------------------------------------------------------------------------------ timing

def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds per call of each fn, calls interleaved (a, b, a, b, ...) so that a
    load change on a shared machine hits both sides of a ratio alike."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# ------------------------------------------------------------------------------ (a) augmentation

def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


class _TVDataset(torch.utils.data.Dataset):
    """Per-sample torchvision v2 SimCLR pipeline over uint8 (3, H, W) tensors."""

    def __init__(self, x: torch.Tensor, size: int, mean, std):
        from torchvision.transforms import v2
        self.x = x
        self.t = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.08, 1.0)),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.t(self.x[i])


def bench_augment(n_images: int = 2048, batch: int = 256, size: int = 32, repeats: int = 3,
                  workers: int | None = None) -> dict:
    """Views/s of SimCLRAugment (sample_params + apply, batches of ``batch``) and of a
    torchvision v2 DataLoader (``workers`` processes, default one per core) on the same
    images; each side processes all ``n_images`` once per repeat."""
    workers = os.cpu_count() if workers is None else workers
    x = _images(n_images, size)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    aug = SimCLRAugment(size, mean=mean, std=std)  # crop (0.08, 1), jitter (.4,.4,.4,.1), p .8/.2
    gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(
        _TVDataset(x, size, mean, std), batch_size=batch, num_workers=workers,
        persistent_workers=workers > 0, shuffle=False,
        worker_init_fn=lambda i: torch.manual_seed(1000 + i))
    torch.manual_seed(0)

    threads = torch.get_num_threads()

    def ours():
        for s in range(0, n_images, batch):
            aug.apply(x[s:s + batch], aug.sample_params(len(x[s:s + batch]), gen))

    def ours_1thread():  # on a shared machine intra-op threads can wait on a busy core
        torch.set_num_threads(1)
        try:
            ours()
        finally:
            torch.set_num_threads(threads)

    def tv():
        for _ in loader:
            pass
    tv()  # start the workers outside the timing
    ours()
    t = interleaved({"ours": ours, "ours_1thread": ours_1thread, "torchvision": tv}, repeats)
    out = {"ours_views_s": n_images / t["ours"], "tv_views_s": n_images / t["torchvision"],
           "ours_1thread_views_s": n_images / t["ours_1thread"], "workers": workers,
           "threads": threads}
    out["ratio"] = out["ours_views_s"] / out["tv_views_s"]
    return out


# ------------------------------------------------------------------------------ (b, c) trainer

def quick_config(**over):
    """TrainConfig of one quick-preset grid point (tau 0.2, B 64, C 8, seed 0)."""
    import yaml

    from clnscl.config import TrainConfig
    preset = yaml.safe_load((ROOT / "sweeps" / "presets" / "quick.yaml").read_text())
    cfg = dict(preset["config"])
    cfg.update(tau=0.2, batch_size=64, n_classes=8, seed=0)
    cfg.update(over)
    if "objectives" in cfg:
        cfg["objectives"] = tuple(cfg["objectives"])
    return TrainConfig(**cfg)


def bench_pair(repeats: int = 3, **over) -> dict:
    """Pair epoch (train_epoch with cl,nscl) / one model's epoch: the same trainer's
    per-step work for cl alone (_views: both views from the shared generator; _train_step:
    audit, forward, loss, backward, optimiser step), same batches, same lr."""
    from clnscl.trainer import CoupledTrainer
    tr = CoupledTrainer(quick_config(objectives=("cl", "nscl"), **over))
    B = tr.cfg.batch_size

    def single_epoch():
        n = len(tr.data.train_y)
        perm = torch.randperm(n, generator=tr.batch_gen)
        for s in range(tr.steps_per_epoch):
            idx = perm[s * B:(s + 1) * B]
            x, y = tr.data.train_x[idx], tr.data.train_y[idx]
            tr._train_step("cl", tr._views(x, tr.aug_gen), y)

    tr.train_epoch()  # warm-up
    single_epoch()
    t = interleaved({"pair": tr.train_epoch, "single": single_epoch}, repeats)
    return {"pair_s": t["pair"], "single_s": t["single"], "ratio": t["pair"] / t["single"],
            "steps": tr.steps_per_epoch, "batch": B}


def bench_eval(repeats: int = 2, **over) -> dict:
    """One evaluate() / one train_epoch() of the quick preset's trial (all its objectives)."""
    from clnscl.trainer import CoupledTrainer
    tr = CoupledTrainer(quick_config(**over))
    tr.train_epoch()
    tr.evaluate()  # builds the initial model's reference once, outside the timing
    t = interleaved({"train": tr.train_epoch, "eval": tr.evaluate}, repeats)
    return {"train_s": t["train"], "eval_s": t["eval"], "ratio": t["eval"] / t["train"],
            "models": len(tr.models)}


def throughput_entry(trial: dict, m: dict, threads: int) -> dict:
    """What ``grid.py --dry-run`` reads (sweeps/costs.py), from row e's whole quick-preset
    trial: training views/s per model (every model's views / training time) and evaluation
    rows/s per model (every evaluation's rows / evaluation time, so the initial model's
    reference and the final linear probes are in it), with where and when."""
    cfg = quick_config()
    return {"train_views_per_s": trial["train_views"] / trial["train_s"],
            "eval_rows_per_s": trial["eval_rows"] / trial["eval_s"],
            "image_size": cfg.image_size, "cnn_width": cfg.cnn_width,
            "threads": threads, "date": m["date"], "commit": m["commit"],
            "machine": f"{m['nproc']} x {m['cpu']}, load {m['load']:.1f}"}


# ------------------------------------------------------------------------------ (d) alignment

def _centre_gram(K: torch.Tensor) -> torch.Tensor:
    """H K H in place (row and column means removed), O(n^2)."""
    m = K.mean(0, keepdim=True)
    K.sub_(m).sub_(m.T).add_(m.mean())
    return K


def gram_cka(X: torch.Tensor, Y: torch.Tensor) -> tuple[float, float]:
    """Reference: biased and debiased linear CKA from the n x n Gram matrices (float64)."""
    n = X.shape[0]
    out = []
    K, L = X @ X.T, Y @ Y.T
    Kc, Lc = _centre_gram(K.clone()), _centre_gram(L.clone())
    out.append(float((Kc * Lc).sum() / (Kc.norm() * Lc.norm())))
    del Kc, Lc

    def hsic_u(A, B):  # zero-diagonal Grams, Song et al. (2012)
        one_a, one_b = A.sum(1), B.sum(1)
        return ((A * B).sum() + one_a.sum() * one_b.sum() / ((n - 1) * (n - 2))
                - 2 / (n - 2) * (one_a @ one_b))
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    out.append(float(hsic_u(K, L) / (hsic_u(K, K) * hsic_u(L, L)).sqrt()))
    return out[0], out[1]


def _cos_gram(X: torch.Tensor) -> torch.Tensor:
    U = X / X.norm(dim=1, keepdim=True)
    return U @ U.T


def gram_rho(X: torch.Tensor, Y: torch.Tensor) -> tuple[float, float]:
    """Reference: rho = ||H(S1 - S2)H|| / ||H S1 H|| and cosine CKA from the n x n S."""
    S1, S2 = _centre_gram(_cos_gram(X)), _centre_gram(_cos_gram(Y))
    cka_cos = float((S1 * S2).sum() / (S1.norm() * S2.norm()))
    n1 = S1.norm()
    return float(S1.sub_(S2).norm() / n1), cka_cos


def gram_rsa(X: torch.Tensor, Y: torch.Tensor, method: str) -> float:
    """Reference: correlate the strict upper triangles of the n x n RDMs (scipy ranks)."""
    import scipy.stats
    n = X.shape[0]
    iu = np.triu_indices(n, 1)
    a = 1 - _cos_gram(X).numpy()[iu]
    b = 1 - _cos_gram(Y).numpy()[iu]
    if method == "spearman":
        a, b = scipy.stats.rankdata(a), scipy.stats.rankdata(b)
    return float(np.corrcoef(a, b)[0, 1])


def bench_alignment(n: int = 10000, d: int = 512, rsa_n: int = 5000, repeats: int = 3,
                    gram_repeats: int = 1, seed: int = 0) -> dict:
    import scipy.stats  # noqa: F401  (imported before any timing)
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = torch.relu(X @ torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
                   + torch.randn(n, d, generator=g, dtype=torch.float64))
    rows, vals = {}, {}

    def pair(name, fast, ref, fast_reps=repeats):
        tf = interleaved({"f": lambda: vals.__setitem__(name + "_fast", fast())}, fast_reps)["f"]
        tr = interleaved({"r": lambda: vals.__setitem__(name + "_ref", ref())}, gram_repeats)["r"]
        f, r = np.atleast_1d(vals[name + "_fast"]), np.atleast_1d(vals[name + "_ref"])
        rows[name] = {"fast_s": tf, "gram_s": tr, "ratio": tr / tf,
                      "max_abs_diff": float(np.max(np.abs(f - r)))}

    pair("cka", lambda: (alignment.linear_cka(X, Y), alignment.linear_cka(X, Y, debiased=True)),
         lambda: gram_cka(X - X.mean(0), Y - Y.mean(0)))
    pair("rho", lambda: (alignment.similarity_distance(X, Y), alignment.cosine_cka(X, Y)),
         lambda: gram_rho(X, Y))
    pair("rsa_pearson", lambda: alignment.rsa(X, Y, method="pearson"),
         lambda: gram_rsa(X, Y, "pearson"))
    Xs, Ys = X[:rsa_n], Y[:rsa_n]
    pair("rsa_spearman", lambda: alignment.rsa(Xs, Ys, max_rows=rsa_n),
         lambda: gram_rsa(Xs, Ys, "spearman"), fast_reps=1)
    return {"n": n, "d": d, "rsa_n": rsa_n, "rows": rows}


# ------------------------------------------------------------------------------ (e) memory, Ray

_TRIAL_CODE = """
import sys, time, json, resource
sys.path.insert(0, {root!r})
sys.argv = ['bench']
def peak_mb():
    # VmHWM: this process's own peak. ru_maxrss is NOT: Linux keeps it across execve, so a
    # child started by a big parent reports the parent's size (4.8 GB after row d's Grams)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import torch
torch.set_num_threads({threads})
from benchmarks.bench import quick_config
from clnscl.trainer import CoupledTrainer
t0 = time.perf_counter()
tr = CoupledTrainer(quick_config(**{over!r}))
setup = time.perf_counter() - t0
spent = {{"eval": 0.0, "n": 0}}
evaluate = tr.evaluate
def timed(*a, **k):
    t = time.perf_counter()
    try:
        return evaluate(*a, **k)
    finally:
        spent["eval"] += time.perf_counter() - t
        spent["n"] += 1
tr.evaluate = timed
for _ in tr.run():
    pass
wall = time.perf_counter() - t0
from sweeps.costs import eval_rows
print(json.dumps({{"wall_s": wall, "setup_s": setup, "eval_s": spent["eval"],
                  "train_views": tr.step * tr.cfg.batch_size * 2 * len(tr.models),
                  "eval_rows": spent["n"] * len(tr.models) * eval_rows(tr.cfg),
                  "train_s": wall - setup - spent["eval"], "evals": spent["n"],
                  "epochs": tr.cfg.epochs,
                  "maxrss_mb": peak_mb()}}))
"""


def bench_trial_memory(threads: int = 1, **over) -> dict:
    """Peak RSS (MB), wall time and the time spent in evaluation of one whole quick-preset
    trial (its own epochs and evaluation schedule) in a child process."""
    import json
    if "epochs" not in over:  # the epochs and evaluations the image budget gives this point
        from sweeps.presets import apply_budget, load_preset
        preset = load_preset("quick")
        cfg = apply_budget(quick_config(), preset.budget_images, preset.evals)
        over = {"epochs": cfg.epochs, "eval_every": cfg.eval_every, **over}
    code = _TRIAL_CODE.format(root=str(ROOT), over=over, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_ray_overhead(direct_s: float, timeout: int = 600) -> dict | str:
    """Wall time of one quick-preset trial through sweeps/grid.py (local Ray, MLflow file
    store) against ``direct_s``, the same trial run by the trainer directly."""
    try:
        import mlflow  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        return f"skipped (ray/mlflow do not import: {e.name})"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "sweeps" / "grid.py"), "--tau", "0.2",
               "--batch-size", "64", "--classes", "8", "--seeds", "1", "--name", "bench",
               "--storage", str(Path(tmp) / "ray"), "--tracking-uri",
               f"sqlite:///{Path(tmp) / 'mlflow.db'}", "--no-analysis"]
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"skipped (sweep did not finish in {timeout} s)"
        wall = time.perf_counter() - t0
    if r.returncode != 0:
        return f"skipped (grid.py exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]})"
    return {"sweep_s": wall, "direct_s": direct_s, "ratio": wall / direct_s}


# ------------------------------------------------------------------------------ table

def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False,
                                capture_output=True,
                                text=True, cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "clnscl"], check=False,
                               capture_output=True, text=True, cwd=ROOT).stdout.strip()
        commit += " (clnscl/ has uncommitted changes)" if dirty else ""
    except OSError:
        commit = "unknown"
    return {"date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "nproc": os.cpu_count(),
            "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "commit": commit, "load": os.getloadavg()[0]}


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(res: dict) -> str:
    rows = ["| row | measured | ratio | target |", "|---|---|---|---|"]
    a = res.get("augment")
    if a:
        rows.append(f"| a augmentation, 32 px, B=256 | ours {a['ours_views_s']:,.0f} views/s "
                    f"({a['threads']} threads; {a['ours_1thread_views_s']:,.0f} on 1 thread) vs torchvision v2 {a['tv_views_s']:,.0f} views/s "
                    f"({a['workers']} workers) | **{a['ratio']:.1f}x** | >= {AUG_TARGET:.0f}x: "
                    f"{_met(a['ratio'] >= AUG_TARGET)} |")
    b = res.get("pair")
    if b:
        rows.append(f"| b pair epoch / one model (quick preset, B={b['batch']}, {b['steps']} steps)"
                    f" | {b['pair_s']:.2f} s vs {b['single_s']:.2f} s | **{b['ratio']:.2f}x** | "
                    f"<= {PAIR_CPU_TARGET}x: {_met(b['ratio'] <= PAIR_CPU_TARGET)} |")
    c = res.get("eval")
    if c:
        rows.append(f"| c evaluation / training epoch (quick preset, {c['models']} models) | "
                    f"{c['eval_s']:.2f} s vs {c['train_s']:.2f} s | **{c['ratio']:.2f}** | "
                    f"<= {EVAL_TARGET:.2f}: {_met(c['ratio'] <= EVAL_TARGET)} |")
    al = res.get("alignment")
    if al:
        names = {"cka": "linear CKA + debiased", "rho": "rho + cosine CKA",
                 "rsa_pearson": "RSA Pearson", "rsa_spearman": "RSA Spearman"}
        for k, r in al["rows"].items():
            n = al["rsa_n"] if k == "rsa_spearman" else al["n"]
            rows.append(f"| d {names[k]}, n={n}, d={al['d']} | clnscl {r['fast_s']:.3f} s"
                        f" vs Gram form {r['gram_s']:.2f} s (max diff {r['max_abs_diff']:.1e}) | "
                        f"**{r['ratio']:.1f}x** | >= {ALIGN_TARGET:.0f}x: "
                        f"{_met(r['ratio'] >= ALIGN_TARGET)} |")
    m = res.get("memory")
    if m:
        share = m["eval_s"] / max(m["train_s"], 1e-9)
        rows.append(f"| c evaluation / training over one whole quick-preset trial ({m['epochs']}"
                    f" epochs, {m['evals']} evaluations, 5 models) | {m['eval_s']:.1f} s vs "
                    f"{m['train_s']:.1f} s | **{share:.2f}** | <= {EVAL_TARGET:.2f}: "
                    f"{_met(share <= EVAL_TARGET)} |")
        rows.append(f"| e peak RSS, one quick-preset trial (5 models, child process) | "
                    f"{m['maxrss_mb']:.0f} MB, {m['wall_s']:.1f} s | - | - |")
    r = res.get("ray")
    if isinstance(r, dict):
        rows.append(f"| e Ray + MLflow, one quick trial via grid.py vs trainer directly | "
                    f"{r['sweep_s']:.1f} s vs {r['direct_s']:.1f} s | **{r['ratio']:.2f}x** | - |")
    elif r:
        rows.append(f"| e Ray + MLflow overhead | {r} | - | - |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, nothing appended")
    p.add_argument("--align-n", type=int, default=10000)
    p.add_argument("--align-d", type=int, default=512)
    p.add_argument("--rsa-n", type=int, default=5000, help="rows of the Spearman RSA row")
    p.add_argument("--aug-images", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-ray", action="store_true", help="skip the Ray + MLflow row")
    p.add_argument("--train-threads", type=int, default=1,
                   help="torch threads for rows b and c (a quick-preset trial has 1 CPU)")
    p.add_argument("--only", default="abcde", help="rows to run, e.g. 'ad'")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument("--note", default="", help="a line recorded with the table (e.g. 'shared')")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    if a.quick:
        a.align_n, a.align_d, a.rsa_n, a.aug_images, a.repeats = 600, 32, 200, 512, 1
    res: dict = {}
    if "a" in a.only:
        res["augment"] = bench_augment(n_images=a.aug_images, repeats=a.repeats)
        print("a", res["augment"], flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(a.train_threads)  # as a trial runs (threads = its CPUs)
    if "b" in a.only:
        res["pair"] = bench_pair(repeats=a.repeats)
        print("b", res["pair"], flush=True)
    if "c" in a.only:
        res["eval"] = bench_eval(repeats=max(1, a.repeats - 1))
        print("c", res["eval"], flush=True)
    torch.set_num_threads(threads)
    if "d" in a.only:
        res["alignment"] = bench_alignment(a.align_n, a.align_d, a.rsa_n, repeats=a.repeats)
        print("d", res["alignment"], flush=True)
    if "e" in a.only:
        over = {"epochs": 1} if a.quick else {}
        res["memory"] = bench_trial_memory(threads=a.train_threads, **over)
        print("e", res["memory"], flush=True)
        if a.no_ray or a.quick:
            res["ray"] = "skipped (--no-ray)" if a.no_ray else "skipped (--quick)"
        else:
            res["ray"] = bench_ray_overhead(res["memory"]["wall_s"])
    m = machine()
    head = (f"{m['date']}, {m['nproc']} x {m['cpu']}, torch {m['torch']} ({m['threads']} "
            f"threads), commit {m['commit']}, load average at the end {m['load']:.2f}"
            + (f"; {a.note}" if a.note else ""))
    text = f"{head}\n\n{table(res)}\n"
    print("\n" + text)
    if not a.quick:
        with open(a.results, "a") as f:
            f.write(f"\n## {m['date']}\n\n{text}")
        if "memory" in res:  # the dry run's cost estimate reads these
            import json

            from sweeps.costs import MEASURED_FILE
            data = json.loads(MEASURED_FILE.read_text()) if MEASURED_FILE.exists() else {}
            data["smallcnn/cpu"] = throughput_entry(res["memory"], m, a.train_threads)
            MEASURED_FILE.write_text(json.dumps(data, indent=1) + "\n")
            print(f"wrote {MEASURED_FILE} (read by grid.py --dry-run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
