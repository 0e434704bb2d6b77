"""Claim-level analyses on planted tables: controls, matched S_T, growth forms, B damping,
paired objectives, and the claims table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.claims import (
    batch_damping,
    claims_table,
    control_ratio,
    first_evaluation,
    growth_forms,
    matched_cum_lr,
    paired_objectives,
    slice_table,
    training_status,
)

CS, TAUS, BS = (4, 8, 32), (0.2, 1.0), (32, 64)


def trials(rng, seeds=2, ratio=0.5, gaps=(("supcon", 0.05), ("ce", 0.15)), untrained=()):
    """nscl / supcon / ce / cl_indep rows per trial; rho_nscl = ratio * rho_cl_indep."""
    rows = []
    for tau in TAUS:
        for B in BS:
            for C in CS:
                for s in range(seeds):
                    name = f"tau={tau:g} B={B} C={C} seed={s}"
                    ctrl = 0.3 * C ** -0.5 * math.exp(rng.normal(0, 0.1))
                    cka_n = 0.9 + rng.normal(0, 0.01)
                    grid = {"trial": name, "tau": tau, "batch_size": B, "n_classes": C,
                            "seed": s, "cum_lr": 2.0, "eval_rows": 128,
                            "cl_init_cka": 0.95 if name in untrained else 0.4,
                            "cl_knn_gain": 0.1}
                    rows.append({**grid, "objective": "nscl", "cka": cka_n,
                                 "rho": ratio * ctrl * math.exp(rng.normal(0, 0.1))})
                    rows.append({**grid, "objective": "cl_indep", "cka": 0.5, "rho": ctrl})
                    for o, gap in gaps:
                        rows.append({**grid, "objective": o, "cka": cka_n - gap
                                     + rng.normal(0, 0.01), "rho": 2 * ctrl})
    return pd.DataFrame(rows)


def test_training_status_thresholds():
    t = pd.DataFrame({"trial": ["a", "b", "c", "d"], "cl_init_cka": [0.5, 0.95, 0.5, np.nan],
                      "cl_knn_gain": [0.1, 0.1, 0.0, np.nan]})
    st = training_status(t).set_index("trial")
    assert st.loc["a", "trained"] is True or st.loc["a", "trained"] == True
    assert st.loc["b", "trained"] == False and "init_cka 0.950 > 0.9" in st.loc["b", "reason"]
    assert st.loc["c", "trained"] == False and "knn_gain" in st.loc["c", "reason"]
    assert st.loc["d", "trained"] is None and st.loc["d", "reason"] == "drift not logged"


def test_control_ratio_recovers_planted_fraction_per_c():
    rng = np.random.default_rng(0)
    hits, n = 0, 40
    for _ in range(n):
        r = control_ratio(trials(rng, ratio=0.5)).set_index("n_classes")
        assert list(r.index) == [4, 8, 32, "all"] and (r.loc[[4, 8, 32], "n_trials"] == 8).all()
        hits += r.loc["all", "ci_low"] <= 0.5 <= r.loc["all", "ci_high"]
        assert abs(r.loc["all", "ratio"] - 0.5) < 0.05
    assert hits / n >= 0.85
    r1 = control_ratio(trials(rng, ratio=1.0)).set_index("n_classes")
    assert r1.loc["all", "ci_low"] < 1 < r1.loc["all", "ci_high"]


def test_did_not_train_trials_are_excluded_from_claims_and_listed():
    rng = np.random.default_rng(1)
    bad = {"tau=0.2 B=32 C=4 seed=0", "tau=1 B=64 C=32 seed=1"}
    t = trials(rng, untrained=bad)
    claims, det = claims_table(t)
    assert set(det["status"].loc[det["status"]["trained"].eq(False), "trial"]) == bad
    assert not set(det["used"]["trial"]) & bad
    c = claims[claims["measure"] == "rho (nscl, backbone)"]
    assert (c["n_trials"] == 24 - 2).all()  # 24 nscl trials, 2 did not train
    # cl_indep is a control: never one of the claim-3 contrasts
    assert not claims["claim"].str.contains("cl_indep closer|than cl_indep").any()
    assert claims["claim"].str.startswith("control").sum() == 1


def test_claims_table_rows_and_verdicts():
    rng = np.random.default_rng(2)
    claims, _det = claims_table(trials(rng))
    assert list(claims.columns) == ["claim", "measure", "estimate", "ci_low", "ci_high",
                                    "predicted", "bound_local", "verdict", "n_trials",
                                    "n_seeds", "note"]
    c = claims[(claims["claim"] == "1: misalignment falls with C")
               & (claims["measure"] == "rho (nscl, backbone)")].iloc[0]
    assert c["ci_low"] <= -0.5 <= c["ci_high"] and c["verdict"].startswith("direction supported")
    assert "shallower than -1.00" in c["verdict"] and c["n_seeds"] == 2
    ctrl = claims[claims["claim"].str.startswith("control")].iloc[0]
    assert ctrl["ci_high"] < 1 and "beyond the shared start" in ctrl["verdict"]
    ce = claims[claims["claim"] == "3: NSCL closer to CL than ce (final)"].iloc[0]
    assert ce["ci_low"] > 0.1 and ce["verdict"].startswith("NSCL closer")
    assert "sign test p" in ce["note"]


def test_paired_test_sees_a_small_consistent_gap_one_seed():
    """One seed, 12 trials, NSCL above SupCon by 0.01 in every trial: the paired test
    resolves it even though per-objective intervals overlap."""
    rng = np.random.default_rng(3)
    t = trials(rng, seeds=1, gaps=(("supcon", 0.01),))
    t.loc[t["objective"] == "supcon", "cka"] = t.loc[t["objective"] == "nscl", "cka"].to_numpy() \
        - 0.01 - np.abs(rng.normal(0, 0.003, 12))
    p = paired_objectives(t, metrics=("cka",))
    allrow = p[p["grid_point"] == "all"].iloc[0]
    assert allrow["n_positive"] == 12 and allrow["sign_test_p"] < 0.001
    assert allrow["ci_low"] > 0
    per = p[p["grid_point"] != "all"]
    assert len(per) == 12 and per["grid_point"].str.contains(r"tau=.* B=.* C=").all()
    t2 = t.copy()
    t2.loc[t2["objective"] == "supcon", "cka"] += 0.02  # SupCon closer everywhere
    a2 = paired_objectives(t2, metrics=("cka",))
    assert a2[a2["grid_point"] == "all"]["verdict"].iloc[0].startswith("SUPCON closer")


def _curves(rng, form="exponential", Bs=(32, 64, 128), damping=0.0, seeds=2):
    rows = []
    for B in Bs:
        for s in range(seeds):
            rate = 1.0 * (B / 32) ** damping
            for ep in range(9):
                S = 0.5 * ep
                if ep == 0:
                    d = 0.0
                elif form == "exponential":
                    d = 0.01 * math.exp(rate * S)
                elif form == "power":
                    d = 0.05 * S ** 0.7
                else:
                    d = 0.8 * (1 - math.exp(-S / 0.8))
                d *= math.exp(rng.normal(0, 0.01))
                for obj, met, v in (("nscl", "param_dist", d), ("nscl", "cka", 0.9 - 0.01 * ep),
                                    ("supcon", "cka", 0.8 - 0.01 * ep)):
                    rows.append({"trial": f"B={B} seed={s}", "objective": obj, "epoch": ep,
                                 "metric": met, "value": v, "cum_lr": S * (1 + (B == 64)),
                                 "batch_size": B, "seed": s, "tau": 0.5, "n_classes": 8})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("form", ["exponential", "power", "saturating"])
def test_growth_forms_pick_the_planted_form(form):
    g = growth_forms(_curves(np.random.default_rng(4), form=form))
    assert (g["best"] == form).all() and (g["n_points"] == 8).all()
    assert (g["delta_aic"] > 2).all() and (g["fold_change"] > 1).all()


def test_batch_damping_detected_only_when_planted():
    """Rate ~ B^-0.5 (damped): the rate-vs-log B slope is negative; no damping: 0 inside."""
    rng = np.random.default_rng(5)

    def rates(**kw):
        c = _curves(rng, **kw)
        c["cum_lr"] = 0.5 * c["epoch"]  # the same S_T schedule at every B
        return growth_forms(c)

    none = batch_damping(rates())
    assert none.ci[0] <= 0 <= none.ci[1] and "OLS" in none.method
    damped = batch_damping(rates(damping=-0.5))
    # rates 1, 0.71, 0.5 at B = 32, 64, 128: least-squares slope in log B is -0.36
    assert damped.ci[1] < 0 and damped.ci[0] <= -0.5 / math.log(4) * 1.0 <= damped.ci[1] + 0.02


def test_first_evaluation_is_each_trials_own():
    c = _curves(np.random.default_rng(6))
    c = c[~((c["batch_size"] == 32) & (c["epoch"] == 1))]  # B=32 trials first evaluate at 2
    e = first_evaluation(c, metrics=("cka",))
    by = e.drop_duplicates("trial").set_index("trial")["epoch"]
    assert (by[by.index.str.startswith("B=32")] == 2).all()
    assert (by[~by.index.str.startswith("B=32")] == 1).all()


def test_matched_cum_lr_interpolates_at_common_s():
    c = _curves(np.random.default_rng(7))
    w, at = matched_cum_lr(c, objectives=["nscl"])
    assert at == pytest.approx(4.0)  # B=32/128 reach S=4; B=64 reaches 8
    row = w[(w["trial"] == "B=64 seed=0")].iloc[0]
    assert row["cka"] == pytest.approx(0.9 - 0.01 * 4)  # S=4 at epoch 4 for B=64 (S = ep)
    row = w[(w["trial"] == "B=32 seed=0")].iloc[0]
    assert row["cka"] == pytest.approx(0.9 - 0.01 * 8)


def test_slice_table_is_descriptive_with_holm():
    rng = np.random.default_rng(8)
    s = slice_table(trials(rng, seeds=1), axes=("C",), measures=("rho",))
    assert len(s) == 4 and s["slice"].str.contains("tau=").all()
    assert (s["p_holm"] >= s["p_value"] - 1e-12).all()
    assert s["p_holm"].max() <= 1
