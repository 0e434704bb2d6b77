"""benchmarks/bench.py at tiny sizes: ratios come from real timings and values agree."""
import importlib.util
import math
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "bench", Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_interleaved_returns_medians_of_real_calls():
    calls = []
    t = bench.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3
    assert set(t) == {"a", "b"} and all(v > 0 for v in t.values())


def test_alignment_rows_agree_with_gram_form():
    torch.manual_seed(0)
    res = bench.bench_alignment(n=120, d=8, rsa_n=60, repeats=1)
    assert set(res["rows"]) == {"cka", "rho", "rsa_pearson", "rsa_spearman"}
    for r in res["rows"].values():
        assert r["fast_s"] > 0 and r["gram_s"] > 0
        assert math.isclose(r["ratio"], r["gram_s"] / r["fast_s"])
        assert r["max_abs_diff"] < 1e-9  # same values as the n x n reference


def test_augment_row_counts_views_of_both_sides():
    res = bench.bench_augment(n_images=64, batch=32, size=16, repeats=1, workers=0)
    assert res["ours_views_s"] > 0 and res["tv_views_s"] > 0
    assert math.isclose(res["ratio"], res["ours_views_s"] / res["tv_views_s"])
    table = bench.table({"augment": res})
    assert f"{res['ratio']:.1f}x" in table and ("met" in table)


def test_trial_row_measures_the_childs_own_peak_memory_and_its_evaluation_time():
    """Row e's child reports its own peak (VmHWM), not the parent's: ru_maxrss survives
    execve on Linux, which once made the row report the parent's 4.8 GB."""
    ballast = torch.ones(1024, 1024, 512)  # 2 GiB held by this (parent) process

    def rss_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    parent = rss_mb()
    res = bench.bench_trial_memory(epochs=1, eval_every=1, synthetic_train_per_class=16,
                                   synthetic_test_per_class=8)
    assert ballast.sum() > 0
    # a tiny trial needs well under 1.5 GiB; the parent's RSS (the ru_maxrss artefact) is
    # its own modules plus the 2 GiB ballast
    assert res["maxrss_mb"] < min(1536, parent - 1024), (res, parent)
    assert res["evals"] == 2 and 0 < res["eval_s"] < res["wall_s"]
    assert res["train_views"] == 2 * 64 * 2 * 5  # 128 images, B=64: 2 steps, 2 views, 5 models
    entry = bench.throughput_entry(res, {"date": "d", "commit": "c", "nproc": 2, "cpu": "x",
                                         "load": 0.0}, 1)
    assert entry["train_views_per_s"] == res["train_views"] / res["train_s"]
