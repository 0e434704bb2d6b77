"""Fits: planted exponents and rates are recovered within their CIs; refusals; verdicts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.fits import (
    bound_check,
    compare_objectives,
    fit_line,
    fit_power_law,
    param_growth,
    scaling_fits,
    verdict,
)


def _power_data(rng, exponent=-1.0, n_seeds=8, xs=(2, 4, 8, 16, 32), seed_sd=0.05,
                row_sd=0.05, const=0.4):
    """Rows (x, y, seed): each seed has its own slope and level (a random effect)."""
    x, y, g = [], [], []
    for s in range(n_seeds):
        b = exponent + rng.normal(0, seed_sd)
        a = math.log(const) + rng.normal(0, 0.1)
        for xv in xs:
            x.append(xv)
            y.append(math.exp(a + b * math.log(xv) + rng.normal(0, row_sd)))
            g.append(s)
    return np.array(x, float), np.array(y), np.array(g)


@pytest.mark.parametrize("data_seed", [0, 1, 2, 3, 4])
def test_power_law_recovers_planted_exponent(data_seed):
    x, y, g = _power_data(np.random.default_rng(data_seed), exponent=-1.0)
    f = fit_power_law(x, y, groups=g, n_boot=1000, seed=data_seed)
    lo, hi = f.ci
    assert lo <= -1.0 <= hi, f
    assert 0.02 < hi - lo < 0.4  # informative, not degenerate
    assert abs(f.exponent + 1) < 0.1 and f.r2 > 0.9 and f.n == 40 and f.n_x == 5
    assert f.n_groups == 8 and f["exponent"] == f.exponent  # dict-style access too
    assert 0.2 < f.constant < 0.8
    # the bootstrap alone (resampling seeds) brackets the estimate and is the narrower
    b = fit_power_law(x, y, groups=g, n_boot=1000, seed=data_seed, ci="bootstrap")
    assert b.ci[0] < b.exponent < b.ci[1] and b.ci_method == "bootstrap over 8 seeds"
    assert lo <= b.ci[0] and b.ci[1] <= hi


def test_coverage_over_many_replicates():
    """Over 60 replicates the 95% intervals cover the planted exponent most of the time."""
    rng = np.random.default_rng(123)
    hits = {"auto": 0, "bootstrap": 0}
    n_rep = 60
    for r in range(n_rep):
        x, y, g = _power_data(rng, exponent=-0.5, n_seeds=6)
        for ci in hits:
            lo, hi = fit_power_law(x, y, groups=g, n_boot=400, seed=r, ci=ci).ci
            hits[ci] += lo <= -0.5 <= hi
    assert hits["auto"] / n_rep >= 0.88
    assert hits["bootstrap"] / n_rep >= 0.75  # percentile bootstrap over 6 seeds: optimistic
    assert hits["auto"] >= hits["bootstrap"]


def test_rows_bootstrap_without_groups():
    rng = np.random.default_rng(7)
    x = np.repeat([2.0, 4, 6, 8, 10], 6)
    y = 3.0 * x ** -1.0 * np.exp(rng.normal(0, 0.05, x.size))
    f = fit_power_law(x, y, n_boot=1000)
    assert f.ci[0] <= -1 <= f.ci[1] and f.n_groups is None
    assert "rows" in f.ci_method
    fb = fit_power_law(x, y, n_boot=1000, ci="bootstrap")
    assert fb.ci_method == "bootstrap over 30 rows" and fb.ci[0] <= -1 <= fb.ci[1]


def test_few_seeds_auto_is_wider_than_bootstrap():
    x, y, g = _power_data(np.random.default_rng(5), n_seeds=2)
    auto = fit_power_law(x, y, groups=g, n_boot=500, ci="auto")
    boot = fit_power_law(x, y, groups=g, n_boot=500, ci="bootstrap")
    assert auto.ci[1] - auto.ci[0] > 2 * (boot.ci[1] - boot.ci[0])
    assert "too narrow" in boot.note and "per-seed slopes" in auto.ci_method


def test_single_seed_falls_back_to_rows():
    x = np.array([2.0, 4, 8, 16])
    y = 0.5 / x * np.array([1.02, 0.97, 1.01, 0.99])
    f = fit_power_law(x, y, groups=[0, 0, 0, 0], n_boot=500)
    assert "single group" in f.note and math.isfinite(f.ci[0]) and f.ci[0] < -1 < f.ci[1]


def test_line_fit_recovers_slope_in_inverse_tau():
    rng = np.random.default_rng(11)
    taus = np.repeat([0.1, 0.2, 0.5, 1.0], 5)
    seeds = np.tile(np.arange(5), 4)
    logm = -3 + 2.0 / taus + rng.normal(0, 0.05, taus.size)
    f = fit_line(1 / taus, logm, groups=seeds, n_boot=1000)
    assert f.ci[0] <= 2.0 <= f.ci[1] and abs(f.slope - 2) < 0.05 and abs(f.intercept + 3) < 0.2


def test_exactly_two_points_has_no_ci():
    f = fit_power_law([2, 4], [0.5, 0.25])
    assert f.exponent == pytest.approx(-1) and all(math.isnan(c) for c in f.ci)
    assert "exactly 2 points" in f.note and verdict(f.ci, -1).startswith("undetermined")


@pytest.mark.parametrize("x, y, match", [
    ([4, 4, 4], [0.1, 0.2, 0.3], r"needs >= 2 distinct x values.*\[4\]"),
    ([2, 0, 8], [0.1, 0.2, 0.3], r"x > 0.*\[0\]"),
    ([2, 4, 8], [0.1, -0.2, 0.0], r"y > 0.*\[-0.2, 0\]"),
    ([2, 4, 8], [0.1, float("nan"), 0.3], r"non-finite"),
    ([2, 4], [0.1, 0.2, 0.3], r"differ in length"),
])
def test_refusals_name_the_problem(x, y, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, y)


def test_line_refuses_one_distinct_x():
    with pytest.raises(ValueError, match="distinct"):
        fit_line([1.0, 1.0], [1.0, 2.0])


def test_verdicts():
    assert verdict((-1.2, -0.8), -1) == "consistent"
    # an interval that holds the prediction and 0 alike tells nothing
    assert verdict((-8.6, 8.2), -1).startswith("consistent, uninformative")
    assert verdict((-0.5, 0.5), 0) == "consistent"
    v = verdict((-0.7, -0.3), -1)
    assert v.startswith("not consistent at 95%") and "above -1" in v and "shallower" in v
    v = verdict((-2.5, -1.5), -1)
    assert "below -1" in v and "steeper" in v
    assert "opposite sign" in verdict((0.2, 0.6), -1)
    assert "steeper" in verdict((2.5, 3.0), 2) and "shallower" in verdict((0.5, 1.0), 2)
    assert "opposite sign" in verdict((-1.0, -0.2), 2)
    assert verdict((float("nan"), float("nan")), -1).startswith("undetermined")


# ---------------------------------------------------------------------------------------
# claim-level analyses on generated tables


def _trials(rng, taus=(0.5, 1.0), Cs=(2, 4, 8, 16), Bs=(256,), seeds=range(5), c_exp=-1.0,
            tau_slope=1.5, b_exp=-0.5, lr_rule="linear", objs=("nscl",)):
    rows = []
    for tau in taus:
        for C in Cs:
            for B in Bs:
                for s in seeds:
                    for obj, k in zip(objs, (1.0, 2.5, 4.0)):
                        m = (0.02 * math.exp(tau_slope / tau) * C ** c_exp * (B / 256) ** b_exp
                             * k * math.exp(rng.normal(0, 0.05)))
                        rows.append({"trial": f"tau={tau} B={B} C={C} seed={s}",
                                     "objective": obj, "tau": tau, "n_classes": C,
                                     "batch_size": B, "seed": s, "lr_rule": lr_rule,
                                     "dataset": "synthetic", "cka": 1 - m, "rsa": 1 - 1.2 * m,
                                     "rho": m, "test/proj/rho": 0.5 * m,
                                     "test/proj/cka": 1 - 0.5 * m, "test/proj/rsa": 1 - 0.6 * m})
    return pd.DataFrame(rows)


def test_scaling_fits_recover_c_tau_b():
    t = _trials(np.random.default_rng(0), Bs=(128, 256, 512))
    f = scaling_fits(t, n_boot=500)
    c = f[(f["kind"] == "C") & (f["measure"] == "rho")]
    assert len(c) == 2 * 3 * 2  # taus x Bs x features
    assert ((c["ci_low"] <= -1) & (c["ci_high"] >= -1)).mean() >= 0.9
    assert (c["verdict"] == "consistent").mean() >= 0.9
    tau = f[(f["kind"] == "tau") & (f["measure"] == "rho")]
    assert np.allclose(tau["slope"], 1.5, atol=0.1)
    assert tau["verdict"].str.contains("sign positive").all()
    b = f[(f["kind"] == "B") & (f["measure"] == "rho") & (f["features"] == "backbone")]
    assert np.allclose(b["slope"], -0.5, atol=0.1) and (b["lr_rule"] == "linear").all()
    assert set(b["slice"]) == {f"C={C} tau={tau:g}" for C in (2, 4, 8, 16) for tau in (0.5, 1.0)}


def test_scaling_fits_decline_with_reasons():
    rng = np.random.default_rng(1)
    t = _trials(rng, taus=(0.5,), Cs=(2, 4, 8), seeds=[0], lr_rule="sqrt", Bs=(256, 1024))
    t.loc[0, "rho"] = 0.0  # perfectly aligned row: cannot take the log
    t = t.drop(columns=["rsa"])  # not logged
    f = scaling_fits(t, n_boot=200)
    tau = f[f["kind"] == "tau"]
    assert (tau["verdict"] == "not fitted").all()
    logged = tau[tau["measure"] != "1-rsa"]
    assert logged["note"].str.contains("needs >= 2 distinct tau").all()
    assert logged["note"].str.contains(r"\(have 0.5\)").sum() == len(logged) - 1
    assert f[(f["measure"] == "1-rsa") & (f["features"] == "backbone")]["note"] \
        .str.contains("not logged").all()
    c = f[(f["kind"] == "C") & (f["measure"] == "rho") & (f["features"] == "backbone")
          & (f["slice"] == "B=256")]
    assert c["note"].iloc[0].startswith("dropped 1 row(s) with rho <= 0")
    b = f[(f["kind"] == "B") & (f["measure"] == "rho")]
    assert (b["lr_rule"] == "sqrt").all()
    fitted = b[b["verdict"] != "not fitted"]
    assert len(fitted) == 5 and fitted["note"].str.contains("lr rule sqrt").all()
    assert fitted["note"].str.contains("exactly 2 points").all()  # one seed, two B: no CI
    # one seed: CIs still come (over rows), nothing raises
    assert np.isfinite(f[(f["kind"] == "C") & (f["measure"] == "1-cka")]["ci_low"]).all()


def _curves_growth(rng, rate=1.3, seeds=range(4), Bs=(256, 512)):
    rows = []
    for B in Bs:
        for s in seeds:
            r = rate + rng.normal(0, 0.03)
            for ep in range(7):
                cum = 0.4 * ep * (B / 256)  # linear lr rule: more lr per step at larger B
                d = 0.0 if ep == 0 else 0.002 * math.exp(r * cum + rng.normal(0, 0.02))
                for met, k in (("param_dist", 1.0), ("param_dist_layer", 3.0)):
                    rows.append({"trial": f"B={B} seed={s}", "objective": "nscl",
                                 "epoch": ep, "metric": met, "value": k * d, "cum_lr": cum,
                                 "batch_size": B, "seed": s, "lr_rule": "linear"})
    return pd.DataFrame(rows)


def test_param_growth_recovers_rate_per_b():
    per_trial, summ = param_growth(_curves_growth(np.random.default_rng(2)))
    assert len(per_trial) == 2 * 4 * 2 and (per_trial["n_points"] == 6).all()  # epoch 0 skipped
    assert len(summ) == 2 * 2  # B x metric
    for _, r in summ.iterrows():
        assert r["ci_low"] <= 1.3 <= r["ci_high"] and r["ci_high"] - r["ci_low"] < 0.2
        assert r["verdict"].startswith("grows") and r["x"] == "cum_lr" and r["n_groups"] == 4


def test_param_growth_single_trial_and_no_cum_lr():
    c = _curves_growth(np.random.default_rng(3), seeds=[0], Bs=(256,)).drop(columns="cum_lr")
    _, summ = param_growth(c)
    assert (summ["x"] == "epoch").all() and summ["note"].str.contains("cum_lr not logged").all()
    assert summ["note"].str.contains("needs >= 2 seeds").all()
    assert summ["verdict"].str.contains("no CI").all()


def test_bound_check_fractions():
    rho = np.array([0.1, 0.3, 0.5, 0.8, 1.2, 0.2])
    sq, ra = np.sqrt(1 - np.minimum(rho, 0.999) ** 2), (1 - rho) / (1 + rho)
    # measured: holds, holds, violates sqrt only, violates both, rho >= 1, exactly at bound
    cka = np.array([sq[0] + 0.01, sq[1] + 0.001, (sq[2] + ra[2]) / 2, ra[3] - 0.05, 0.1, sq[5]])
    rows = []
    for i in range(rho.size):
        for feat in ("backbone", "proj"):
            vals = {"rho": rho[i], "cka_cos": cka[i]}
            if rho[i] < 1:
                vals.update(bound_sqrt=sq[i], bound_ratio=ra[i])
            else:
                vals.update(bound_sqrt=np.nan, bound_ratio=np.nan)
            for k, v in vals.items():
                rows.append({"trial": "t", "objective": "nscl", "epoch": i + 1,
                             "metric": f"test/{feat}/{k}", "value": v})
                if feat == "backbone":  # the headline alias must not be counted twice
                    rows.append({"trial": "t", "objective": "nscl", "epoch": i + 1, "metric": k,
                                 "value": v})
    # epoch 0 (identical models) holds by construction and must not be counted, even
    # where it would change every count
    for feat in ("backbone", "proj"):
        for k, v in {"rho": 0.5, "cka_cos": 0.0, "bound_sqrt": 0.8, "bound_ratio": 0.3}.items():
            rows.append({"trial": "t", "objective": "nscl", "epoch": 0,
                         "metric": f"test/{feat}/{k}", "value": v})
    b = bound_check(pd.DataFrame(rows)).set_index("features")
    for feat in ("backbone", "proj"):
        r = b.loc[feat]
        assert r["n_evals"] == 5 and r["n_rho_ge_1"] == 1
        assert r["n_sqrt_holds"] == 3 and r["frac_sqrt_holds"] == pytest.approx(3 / 5)
        assert r["n_ratio_holds"] == 4 and r["frac_ratio_holds"] == pytest.approx(4 / 5)
        assert r["min_margin_ratio"] == pytest.approx(-0.05)


def test_bound_check_recomputes_missing_bounds():
    rows = [{"trial": "t", "objective": "nscl", "epoch": 1, "metric": f"train/proj/{k}",
             "value": v} for k, v in (("rho", 0.6), ("cka_cos", 0.79))]
    b = bound_check(pd.DataFrame(rows))
    assert b.loc[0, "n_sqrt_holds"] == 0 and b.loc[0, "n_ratio_holds"] == 1  # sqrt(1-.36)=.8


def test_compare_objectives_claim3():
    t = _trials(np.random.default_rng(4), taus=(0.5,), Cs=(4, 8), objs=("nscl", "supcon", "ce"))
    c = compare_objectives(t)
    assert set(c["objective"]) == {"nscl", "supcon", "ce"}
    top = c[c["rank"] == 1]
    assert (top["objective"] == "nscl").all() and c["nscl_highest"].all()
    assert c["separated"].all() and (c["n_seeds"] == 5).all()
    assert (c["ci_low"] <= c["mean"]).all() and (c["mean"] <= c["ci_high"]).all()
    # CE best at one grid point: reported, not hidden
    t2 = t.copy()
    t2.loc[(t2["objective"] == "ce") & (t2["n_classes"] == 8), "cka"] = 0.9999
    c2 = compare_objectives(t2)
    row = c2[(c2["slice"] == "C=8") & (c2["metric"] == "cka")]
    assert not row["nscl_highest"].iloc[0]
    only = compare_objectives(t[t["objective"] == "nscl"])
    assert only["note"].str.contains("needs supcon or ce").all()


def test_budget_derived_epochs_are_not_a_slice():
    """Under an image budget epochs differ per C by design: fits over C must pool them."""
    import pandas as pd

    from analysis.fits import slice_columns

    df = pd.DataFrame({"n_classes": [2, 8, 32, 2, 8, 32], "tau": [0.2] * 3 + [1.0] * 3,
                       "epochs": [64, 16, 4] * 2, "eval_every": [16, 4, 1] * 2})
    assert slice_columns(df, exclude=("n_classes",)) == ["tau", "epochs"]
    df["budget_images"] = "4096"
    assert slice_columns(df, exclude=("n_classes",)) == ["tau"]
