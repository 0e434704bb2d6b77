"""The claim-level answers: controls, pooled tests, parameter growth, paired objectives.

- :func:`training_status` - which trials' CL trained (drift from init); the others are
  "did not train" and are left out of every claim test (alignment by inertia);
- :func:`control_ratio` - CL-vs-NSCL misalignment as a fraction of CL-vs-``cl_indep``
  (the uncoupled control), per C, with a t-interval of the log ratio;
- :func:`matched_cum_lr` - each trial's curve interpolated at a common S_T (cum_lr), a
  trials-like table for fits at equal S_T;
- :func:`pooled_table` - :func:`analysis.pooled.pooled_slope` for every axis x measure x
  features, with verdicts; :func:`slice_table` - the same per slice (descriptive, Holm);
- :func:`growth_forms` / :func:`batch_damping` - claim 2: exponential vs power-law vs
  saturating growth per trial (AIC), fold change, and a test of B damping of the rate;
- :func:`paired_objectives` - claim 3: paired NSCL - SupCon / NSCL - CE differences
  within each trial, per grid point and overall (sign test, Wilcoxon);
- :func:`claims_table` - one row per claim: ``claims.csv`` and the top of the report.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .pooled import (
    AXES,
    PooledSlope,
    holm,
    judge,
    measure_values,
    pooled_slope,
)

CONTROL = "cl_indep"
CLAIM3_OBJECTIVES = ("nscl", "supcon", "ce")  # cl_indep is a control, not a competitor
# CL "did not train" when its test/backbone features are still > 90 % (linear CKA) those of
# the initial model, or when its kNN accuracy did not rise above the untrained model's.
INIT_CKA_MAX = 0.9
KNN_GAIN_MIN = 0.0
GRID_LABEL = (("tau", "tau"), ("batch_size", "B"), ("n_classes", "C"))
CLAIMS_COLUMNS = ["claim", "measure", "estimate", "ci_low", "ci_high", "predicted",
                  "bound_local", "verdict", "n_trials", "n_seeds", "note"]


def _num(v) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def grid_label(row, extra=()) -> str:
    """Every grid axis in the label (tau, B, C, and ``extra`` columns), present or not."""
    parts = []
    for col, short in (*GRID_LABEL, *((c, c) for c in extra)):
        v = row.get(col) if hasattr(row, "get") else None
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(f"{short}={v:g}" if isinstance(v, (int, float)) else f"{short}={v}")
    return " ".join(parts) or "all"


def t_interval(values, level=0.95):
    from .fits import t_interval as _t

    return _t(values, level)


# ---------------------------------------------------------------------------------------
# controls


def training_status(trials: pd.DataFrame, init_cka_max: float = INIT_CKA_MAX,
                    knn_gain_min: float = KNN_GAIN_MIN) -> pd.DataFrame:
    """Per trial: CL's final init_cka and knn_gain, ``trained`` (True/False, or None when the
    drift metrics were not logged) and the reason."""
    cols = ["trial", "cl_init_cka", "cl_knn_gain", "trained", "reason"]
    if trials is None or trials.empty or "trial" not in trials.columns:
        return pd.DataFrame(columns=cols)
    first = trials.drop_duplicates("trial")
    rows = []
    for _, r in first.iterrows():
        ic, kg = _num(r.get("cl_init_cka")), _num(r.get("cl_knn_gain"))
        why = []
        if math.isfinite(ic) and ic > init_cka_max:
            why.append(f"CL init_cka {ic:.3f} > {init_cka_max:g} (features still the initial ones)")
        if math.isfinite(kg) and kg <= knn_gain_min:
            why.append(f"CL knn_gain {kg:+.3f} <= {knn_gain_min:g} (no gain over the untrained "
                       f"model)")
        measured = math.isfinite(ic) or math.isfinite(kg)
        rows.append({"trial": r["trial"], "cl_init_cka": ic, "cl_knn_gain": kg,
                     "trained": (not why) if measured else None,
                     "reason": "; ".join(why) if why else ("" if measured else "drift not logged")})
    return pd.DataFrame(rows, columns=cols)


def trained_only(trials: pd.DataFrame, status: pd.DataFrame | None = None) -> pd.DataFrame:
    """``trials`` without the trials whose CL did not train (unmeasured trials are kept)."""
    if trials is None or trials.empty:
        return trials
    status = training_status(trials) if status is None else status
    bad = set(status.loc[status["trained"].eq(False), "trial"])
    return trials[~trials["trial"].isin(bad)]


def control_ratio(trials: pd.DataFrame, measure: str = "rho", objective: str = "nscl",
                  control: str = CONTROL, by: str = "n_classes", features: str = "backbone",
                  split: str = "test") -> pd.DataFrame:
    """CL-vs-``objective`` misalignment over CL-vs-``control`` misalignment, paired within
    each trial; per value of ``by`` and ``all``: geometric mean and 95% t-interval of the
    log ratio over trials. Below 1: the shared batches and views buy alignment beyond a
    shared start."""
    cols = [by, "n_trials", "ratio", "ci_low", "ci_high", "n_nonpositive", "method", "note"]
    if trials is None or trials.empty or "objective" not in trials.columns:
        return pd.DataFrame(columns=cols)
    a = trials[trials["objective"] == objective]
    c = trials[trials["objective"] == control]
    if a.empty or c.empty:
        return pd.DataFrame(columns=cols)
    ma, mc = measure_values(a, measure, features, split), measure_values(c, measure, features, split)
    if ma is None or mc is None:
        return pd.DataFrame(columns=cols)
    left = pd.DataFrame({"trial": a["trial"].to_numpy(), "m_obj": ma.to_numpy(float),
                         by: a[by].to_numpy() if by in a.columns else "all"})
    right = pd.DataFrame({"trial": c["trial"].to_numpy(), "m_ctrl": mc.to_numpy(float)})
    m = left.merge(right, on="trial")
    rows = []
    groups = [(v, g) for v, g in m.groupby(by, sort=True)] if by in a.columns else []
    for v, g in [*groups, ("all", m)]:
        pos = (g["m_obj"] > 0) & (g["m_ctrl"] > 0)
        lr = np.log(g.loc[pos, "m_obj"] / g.loc[pos, "m_ctrl"])
        mean, ci, n = t_interval(lr)
        note = "" if n >= 2 else "one trial: no interval"
        if (~pos).sum():
            note = "; ".join(x for x in (note, (f"{int((~pos).sum())} trial(s) with a zero "
                                               f"misalignment: ratio undefined, not used")) if x)
        rows.append({by: v, "n_trials": n, "ratio": math.exp(mean) if n else float("nan"),
                     "ci_low": math.exp(ci[0]) if math.isfinite(ci[0]) else float("nan"),
                     "ci_high": math.exp(ci[1]) if math.isfinite(ci[1]) else float("nan"),
                     "n_nonpositive": int((~pos).sum()),
                     "method": f"geometric mean, t-interval of log ratio over {n} trials",
                     "note": note})
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------
# equal S_T


def matched_cum_lr(curves: pd.DataFrame, at: float | None = None,
                   objectives=None) -> tuple[pd.DataFrame, float]:
    """A trials-like table (trial, objective, grid, one column per metric) with each trial's
    values linearly interpolated in cum_lr at ``at`` (default: the largest S_T every trial
    reached). Why: presets with fixed epochs give larger C a larger S_T; fits at one S_T
    separate the effect of C from the effect of more training."""
    if curves is None or curves.empty or "cum_lr" not in curves.columns:
        return pd.DataFrame(), float("nan")
    c = curves if objectives is None else curves[curves["objective"].isin(list(objectives))]
    c = c[pd.to_numeric(c["cum_lr"], errors="coerce").notna()]
    if c.empty:
        return pd.DataFrame(), float("nan")
    s_max = c.groupby("trial")["cum_lr"].max()
    if at is None:
        at = float(s_max.min())
    grid = [k for k in c.columns if k not in ("metric", "value", "epoch", "step", "step_lr",
                                              "cum_lr", "time_s", "eval_rows", "knn_bank_rows")]
    rows = {}
    for (trial, obj, met), g in c.groupby(["trial", "objective", "metric"], sort=False):
        s = g["cum_lr"].to_numpy(float)
        v = g["value"].to_numpy(float)
        ok = np.isfinite(s) & np.isfinite(v)
        if ok.sum() < 1 or at > s[ok].max() + 1e-12 or at < s[ok].min() - 1e-12:
            continue
        o = np.argsort(s[ok])
        rows.setdefault((trial, obj), {})[met] = float(np.interp(at, s[ok][o], v[ok][o]))
    if not rows:
        return pd.DataFrame(), at
    w = pd.DataFrame([{"trial": t, "objective": o, **vals} for (t, o), vals in rows.items()])
    w = w.merge(c[grid].drop_duplicates(["trial", "objective"]), on=["trial", "objective"],
                how="left")
    w["cum_lr"] = at
    return w, float(at)


# ---------------------------------------------------------------------------------------
# claim 1: pooled and per-slice fits


POOLED_COLUMNS = ["axis", "measure", "features", "objective", "at", "slope", "ci_low", "ci_high",
                  "p_value", "predicted", "bound_local", "verdict_code", "verdict", "n",
                  "n_seeds", "n_slices", "within", "method", "link", "n_at_floor",
                  "heterogeneity_p", "pooling", "x_values", "cum_lr_min", "cum_lr_max",
                  "s_t_warning", "r2", "note"]


def _pooled_row(f: PooledSlope, **extra) -> dict:
    code, text = judge(f)
    return {"axis": f.x, "measure": f.measure, "slope": f.slope, "ci_low": f.ci[0],
            "ci_high": f.ci[1], "p_value": f.p_value, "predicted": f.predicted,
            "bound_local": f.bound_local, "verdict_code": code, "verdict": text, "n": f.n,
            "n_seeds": f.n_groups, "n_slices": f.n_slices, "within": ",".join(f.within),
            "method": f.method, "link": f.link, "n_at_floor": f.n_at_floor,
            "heterogeneity_p": f.heterogeneity_p, "pooling": f.pooling,
            "x_values": " ".join(f"{v:g}" for v in f.x_values), "cum_lr_min": f.cum_lr_min,
            "cum_lr_max": f.cum_lr_max, "s_t_warning": f.s_t_warning, "r2": f.r2,
            "note": f.note, **extra}


def pooled_table(trials: pd.DataFrame, axes=("C", "tau", "B"), measures=None,
                 features=("backbone", "proj"), objective: str = "nscl",
                 at: str = "final") -> pd.DataFrame:
    """The primary test of claim 1: one pooled fit per (axis, measure, features)."""
    from .pooled import MEASURES

    measures = MEASURES if measures is None else measures
    rows = []
    if trials is None or trials.empty:
        return pd.DataFrame(columns=POOLED_COLUMNS)
    for ax in axes:
        for feat in features:
            for meas in measures:
                f = pooled_slope(trials, meas, ax, objective=objective, features=feat)
                if f.note.endswith("not logged") and f.n == 0:
                    continue
                rows.append(_pooled_row(f, features=feat, objective=objective, at=at))
    return pd.DataFrame(rows, columns=POOLED_COLUMNS)


def slice_table(trials: pd.DataFrame, axes=("C", "tau", "B"), measures=("rho", "1-cka_cos",
                "1-cka", "1-rsa"), features=("backbone",), objective: str = "nscl") -> pd.DataFrame:
    """Per-slice fits (descriptive): the same model within each slice of the other axes;
    p-values Holm-adjusted within each axis; R^2 n/a with 2 points."""
    from .fits import _groupby, _slice_label

    rows = []
    if trials is None or trials.empty or "objective" not in trials.columns:
        return pd.DataFrame(columns=[*POOLED_COLUMNS, "slice", "p_holm"])
    df = trials[trials["objective"] == objective]
    for ax in axes:
        xcol = AXES[ax][0]
        if xcol not in df.columns:
            continue
        from .pooled import default_within

        for vals, sub in _groupby(df, default_within(df, xcol)):
            for feat in features:
                for meas in measures:
                    f = pooled_slope(sub, meas, ax, within=[], objective=None, features=feat)
                    if f.n == 0:
                        continue
                    r = _pooled_row(f, features=feat, objective=objective, at="final",
                                    slice=_slice_label(vals))
                    if f.n <= 2:
                        r["r2"] = float("nan")
                    rows.append(r)
    out = pd.DataFrame(rows, columns=[*POOLED_COLUMNS, "slice"])
    out["p_holm"] = np.nan
    for ax in out["axis"].unique():
        m = out["axis"] == ax
        out.loc[m, "p_holm"] = holm(out.loc[m, "p_value"].to_numpy(float))
    return out


# ---------------------------------------------------------------------------------------
# claim 2: parameter distance growth


def _aic(rss: float, n: int, k: int) -> float:
    return n * math.log(max(rss, 1e-300) / n) + 2 * (k + 1)


def _fit_saturating(s, logd):
    """log d = log A + log(1 - exp(-s / k)); least squares over (log A, log k)."""
    from scipy.optimize import least_squares

    def resid(p):
        return p[0] + np.log1p(-np.exp(-s / math.exp(p[1]))) - logd

    best = None
    for k0 in np.geomspace(s.min() / 4, s.max() * 20, 6):
        r = least_squares(resid, [logd.max(), math.log(k0)])
        if best is None or r.cost < best.cost:
            best = r
    return float(2 * best.cost), best.x


def growth_forms(curves: pd.DataFrame, metric: str = "param_dist", objectives=("nscl",),
                 min_points: int = 3) -> pd.DataFrame:
    """Per trial: exponential (log d linear in S_T), power law (log d linear in log S_T) and
    saturating (d = A (1 - e^{-S_T/k})) fitted to log distance after epoch 0; AIC of each,
    the best form, its AIC lead, the exponential rate, and the fold change over the run."""
    cols = ["trial", "objective", "metric", "n_points", "rate", "aic_exponential",
            "aic_power", "aic_saturating", "best", "delta_aic", "fold_change", "s_first",
            "s_last", "note"]
    if curves is None or curves.empty or "cum_lr" not in curves.columns:
        return pd.DataFrame(columns=cols)
    sub = curves[(curves["metric"] == metric) & curves["objective"].isin(list(objectives))]
    grid = [c for c, _ in GRID_LABEL if c in curves.columns] + \
        [c for c in ("seed", "lr_rule") if c in curves.columns]
    rows = []
    for (trial, obj), g in sub.groupby(["trial", "objective"], sort=True):
        s = pd.to_numeric(g["cum_lr"], errors="coerce").to_numpy(float)
        d = pd.to_numeric(g["value"], errors="coerce").to_numpy(float)
        ep = pd.to_numeric(g["epoch"], errors="coerce").to_numpy(float)
        ok = np.isfinite(s) & np.isfinite(d) & (d > 0) & (ep > 0) & (s > 0)
        o = np.argsort(s[ok])
        s, d = s[ok][o], d[ok][o]
        r = {"trial": trial, "objective": obj, "metric": metric, "n_points": int(s.size),
             **{c: g[c].iloc[0] for c in grid}}
        for k in cols[4:]:
            r.setdefault(k, np.nan)
        r["note"] = ""
        if s.size >= 2:
            r["fold_change"], r["s_first"], r["s_last"] = d[-1] / d[0], s[0], s[-1]
            r["rate"] = float(np.polyfit(s, np.log(d), 1)[0]) if np.unique(s).size >= 2 else np.nan
        if np.unique(s).size < min_points:
            r["note"] = (f"{s.size} evaluation(s) after epoch 0: needs >= {min_points} to "
                         f"compare growth forms")
            r["best"] = "n/a"
            rows.append(r)
            continue
        y = np.log(d)
        n = s.size
        rss_e = float(np.sum((y - np.polyval(np.polyfit(s, y, 1), s)) ** 2))
        ls = np.log(s)
        rss_p = float(np.sum((y - np.polyval(np.polyfit(ls, y, 1), ls)) ** 2))
        rss_s, _ = _fit_saturating(s, y)
        aics = {"exponential": _aic(rss_e, n, 2), "power": _aic(rss_p, n, 2),
                "saturating": _aic(rss_s, n, 2)}
        best = min(aics, key=aics.get)
        r.update(aic_exponential=aics["exponential"], aic_power=aics["power"],
                 aic_saturating=aics["saturating"], best=best,
                 delta_aic=sorted(aics.values())[1] - aics[best])
        if n <= 4:
            r["note"] = f"only {n} points: AIC differences are weak evidence"
        rows.append(r)
    return pd.DataFrame(rows)


def batch_damping(growth: pd.DataFrame) -> PooledSlope | None:
    """Slope of the exponential rate against log B (other axes free): the theory predicts
    no damping (0); a negative interval says larger batches slow the drift."""
    if growth is None or growth.empty or "batch_size" not in growth.columns:
        return None
    g = growth[np.isfinite(pd.to_numeric(growth["rate"], errors="coerce"))]
    if g.empty:
        return None
    within = [c for c in ("tau", "n_classes") if c in g.columns and g[c].nunique() > 1]
    return pooled_slope(g, "rate", "batch_size", within=within, objective=None, link="identity")


# ---------------------------------------------------------------------------------------
# claim 3: paired objectives


def first_evaluation(curves: pd.DataFrame, metrics=("cka", "rsa")) -> pd.DataFrame:
    """A trials-like table at each trial's OWN first evaluation after epoch 0 (trials with
    budget-derived epochs evaluate at different epochs); column ``epoch`` says which."""
    if curves is None or curves.empty:
        return pd.DataFrame()
    c = curves[(curves["objective"] != "cl") & curves["metric"].isin(list(metrics))]
    ep = pd.to_numeric(c["epoch"], errors="coerce")
    c = c[ep > 0]
    if c.empty:
        return pd.DataFrame()
    first = c.groupby("trial")["epoch"].transform("min")
    c = c[c["epoch"] == first]
    w = c.pivot_table(index=["trial", "objective", "epoch"], columns="metric", values="value",
                      aggfunc="first").reset_index()
    w.columns.name = None
    grid = [k for k in c.columns if k not in ("metric", "value", "epoch", "step", "step_lr",
                                              "time_s", "eval_rows", "knn_bank_rows")]
    return w.merge(c[grid].drop_duplicates(["trial", "objective"]), on=["trial", "objective"],
                   how="left")


PAIRED_COLUMNS = ["at", "contrast", "metric", "grid_point", "n_trials", "mean_diff", "ci_low",
                  "ci_high", "n_positive", "sign_test_p", "wilcoxon_p", "verdict"]


def _paired_summary(d: np.ndarray) -> dict:
    from scipy import stats

    d = d[np.isfinite(d)]
    mean, ci, n = t_interval(d)
    nz = d[d != 0]
    sign_p = float(stats.binomtest(int((nz > 0).sum()), nz.size, 0.5).pvalue) if nz.size else np.nan
    wil = np.nan
    if nz.size >= 2:
        try:
            wil = float(stats.wilcoxon(nz).pvalue)
        except ValueError:
            wil = np.nan
    return {"n_trials": n, "mean_diff": mean, "ci_low": ci[0], "ci_high": ci[1],
            "n_positive": int((d > 0).sum()), "sign_test_p": sign_p, "wilcoxon_p": wil}


def paired_objectives(trials: pd.DataFrame, metrics=("cka", "rsa"), reference: str = "nscl",
                      others=("supcon", "ce"), at: str = "final") -> pd.DataFrame:
    """NSCL minus each other proxy, paired within each trial (higher = NSCL closer to CL):
    one row per grid point (all axes in the label, over seeds) and one ``all`` row (sign
    test and Wilcoxon over every trial)."""
    rows = []
    if trials is None or trials.empty or "objective" not in trials.columns:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    from .fits import metric_column

    for met in metrics:
        col = metric_column(trials, met)
        if col is None:
            continue
        wide = trials.pivot_table(index="trial", columns="objective", values=col, aggfunc="first")
        meta = trials.drop_duplicates("trial").set_index("trial")
        if reference not in wide.columns:
            continue
        for o in others:
            if o not in wide.columns:
                continue
            d = (wide[reference] - wide[o]).dropna()
            lab = meta.loc[d.index].apply(lambda r: grid_label(r), axis=1) if len(d) else []
            frame = pd.DataFrame({"d": d.to_numpy(float), "gp": list(lab)})
            for gp, g in [*frame.groupby("gp", sort=True), ("all", frame)]:
                s = _paired_summary(g["d"].to_numpy(float))
                if not math.isfinite(s["ci_low"]):
                    v = ("NSCL closer in the one trial" if s["mean_diff"] > 0 else
                         "NSCL not closer in the one trial") if s["n_trials"] == 1 else "no data"
                    if gp == "all" and math.isfinite(s["sign_test_p"]) and s["sign_test_p"] < .05:
                        v = "NSCL closer (sign test)" if s["mean_diff"] > 0 else "NSCL farther"
                elif s["ci_low"] > 0:
                    v = "NSCL closer (95% CI above 0)"
                elif s["ci_high"] < 0:
                    v = f"{o.upper()} closer (95% CI below 0)"
                else:
                    v = "no difference resolved (CI includes 0)"
                rows.append({"at": at, "contrast": f"{reference} - {o}", "metric": met,
                             "grid_point": gp, **s, "verdict": v})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


# ---------------------------------------------------------------------------------------
# the answer


def _claim_row(claim, measure, f: PooledSlope | None, **kw) -> dict:
    row = dict.fromkeys(CLAIMS_COLUMNS, np.nan)
    row.update(claim=claim, measure=measure, verdict="not testable", note="")
    if f is not None:
        _code, text = judge(f)
        row.update(estimate=f.slope, ci_low=f.ci[0], ci_high=f.ci[1], predicted=f.predicted,
                   bound_local=f.bound_local, verdict=text, n_trials=f.n, n_seeds=f.n_groups,
                   note="; ".join(x for x in (f.method if math.isfinite(f.slope) else "",
                                              f.pooling if f.n_slices > 1 and
                                              math.isfinite(f.slope) else "", f.note) if x))
        if not math.isfinite(f.slope):
            row["verdict"] = "not testable: " + (f.note or "no fit")
    row.update(kw)
    return row


def claims_table(trials: pd.DataFrame, curves: pd.DataFrame | None = None,
                 objective: str = "nscl") -> tuple[pd.DataFrame, dict]:
    """One row per claim (claim, measure, estimate, ci_low, ci_high, predicted, bound_local,
    verdict, n_trials, n_seeds, note) and a dict of the detail tables behind it. Trials
    whose CL did not train are left out of every test here."""
    status = training_status(trials)
    used = trained_only(trials, status)
    n_seeds = int(used["seed"].nunique()) if used is not None and "seed" in used.columns else 0
    rows = []
    axis_text = {"C": "misalignment falls with C", "tau": "misalignment falls with tau "
                 "(slope in 1/tau)", "B": "misalignment falls with B"}
    pooled = pooled_table(used, objective=objective)
    fits = {}
    for ax in ("C", "tau", "B"):
        for meas in ("rho", "1-cka_cos", "1-cka"):
            f = pooled_slope(used, meas, ax, objective=objective) if used is not None \
                and not used.empty else None
            fits[(ax, meas)] = f
            if f is not None and f.n == 0:
                continue
            rows.append(_claim_row(f"1: {axis_text[ax]}", f"{meas} ({objective}, backbone)", f))
    # matched S_T for C where S_T varies across C
    matched, s_at = matched_cum_lr(curves, objectives=[objective]) if curves is not None \
        else (pd.DataFrame(), float("nan"))
    f_c = fits.get(("C", "rho"))
    if f_c is not None and f_c.s_t_warning and not matched.empty:
        keep = matched[matched["trial"].isin(set(used["trial"]))]
        fm = pooled_slope(keep, "rho", "C", objective=objective)
        rows.append(_claim_row("1: misalignment falls with C (matched S_T)",
                               f"rho at S_T = {s_at:.3g}", fm))
    # control
    ctrl = control_ratio(used, "rho", objective=objective)
    if not ctrl.empty:
        a = ctrl[ctrl["n_classes"] == "all"].iloc[0] if "n_classes" in ctrl.columns else ctrl.iloc[-1]
        v = ("coupling buys alignment beyond the shared start (ratio < 1 at 95%)"
             if a["ci_high"] < 1 else "ratio > 1: NSCL farther from CL than the control"
             if a["ci_low"] > 1 else "not resolved: interval includes 1"
             if math.isfinite(a["ci_low"]) else "no interval")
        rows.append({**dict.fromkeys(CLAIMS_COLUMNS, np.nan), "claim": "control: CL-NSCL vs "
                     "CL-cl_indep", "measure": "rho ratio (geometric mean)",
                     "estimate": a["ratio"], "ci_low": a["ci_low"], "ci_high": a["ci_high"],
                     "predicted": "< 1", "verdict": v, "n_trials": a["n_trials"],
                     "n_seeds": n_seeds, "note": a["method"]})
    # claim 2
    growth = growth_forms(curves) if curves is not None else pd.DataFrame()
    if curves is not None and not growth.empty:
        growth = growth[growth["trial"].isin(set(used["trial"]))]
    if not growth.empty:
        compared = growth[growth["best"].isin(["exponential", "power", "saturating"])]
        fc = pd.to_numeric(growth["fold_change"], errors="coerce").dropna()
        if len(compared):
            counts = compared["best"].value_counts()
            n_exp = int(counts.get("exponential", 0))
            v = (f"exponential best in {n_exp} of {len(compared)} trials (AIC); "
                 + ", ".join(f"{k} {int(c)}" for k, c in counts.items()))
            rows.append({**dict.fromkeys(CLAIMS_COLUMNS, np.nan),
                         "claim": "2: parameter distance grows exponentially in S_T",
                         "measure": "param_dist growth form", "estimate": n_exp / len(compared),
                         "predicted": "exponential", "verdict": v, "n_trials": len(compared),
                         "n_seeds": n_seeds, "note": "share of trials where exponential has "
                         "the lowest AIC"})
        else:
            rows.append({**dict.fromkeys(CLAIMS_COLUMNS, np.nan),
                         "claim": "2: parameter distance grows exponentially in S_T",
                         "measure": "param_dist growth form", "predicted": "exponential",
                         "verdict": "not testable: " + str(growth["note"].iloc[0]),
                         "n_trials": 0, "n_seeds": n_seeds,
                         "note": (f"median fold change {float(fc.median()):.3g} over the run"
                                  if len(fc) else "")})
        if len(fc):
            lf = np.log(fc[fc > 0])
            m, ci, n = t_interval(lf)
            rows.append({**dict.fromkeys(CLAIMS_COLUMNS, np.nan),
                         "claim": "2: parameter distance grows", "measure":
                         "param_dist fold change, first to last evaluation after epoch 0",
                         "estimate": math.exp(m), "ci_low": math.exp(ci[0]) if n > 1 else np.nan,
                         "ci_high": math.exp(ci[1]) if n > 1 else np.nan, "predicted": "> 1",
                         "verdict": ("grows (CI above 1)" if n > 1 and ci[0] > 0 else
                                     "shrinks (CI below 1)" if n > 1 and ci[1] < 0 else
                                     "not resolved"), "n_trials": n, "n_seeds": n_seeds,
                         "note": "geometric mean, t-interval of log fold change over trials"})
        fb = batch_damping(growth)
        if fb is not None and math.isfinite(fb.slope):
            code, _ = judge(fb, expected_sign=0)
            row = _claim_row("2: no batch-size damping of the growth rate",
                             "exp. rate vs log B", fb, predicted=0.0)
            row["verdict"] = ("damped: rate falls with B (CI below 0)" if fb.ci[1] < 0 else
                              "rate rises with B (CI above 0)" if fb.ci[0] > 0 else
                              "no damping resolved (CI includes 0)" if code == "inconclusive"
                              else "no interval")
            rows.append(row)
    # claim 3
    paired = paired_objectives(used, metrics=("cka", "rsa"))
    early = first_evaluation(curves) if curves is not None else pd.DataFrame()
    if not early.empty:
        early = early[early["trial"].isin(set(used["trial"]))]
        paired = pd.concat([paired, paired_objectives(early, at="first eval after epoch 0")],
                           ignore_index=True)
    for _, r in paired[(paired["grid_point"] == "all") & (paired["metric"] == "cka")].iterrows():
        rows.append({**dict.fromkeys(CLAIMS_COLUMNS, np.nan),
                     "claim": f"3: NSCL closer to CL than {r['contrast'].split(' - ')[1]} "
                              f"({r['at']})",
                     "measure": f"paired CKA difference {r['contrast']}",
                     "estimate": r["mean_diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                     "predicted": "> 0", "verdict": r["verdict"], "n_trials": r["n_trials"],
                     "n_seeds": n_seeds,
                     "note": f"{r['n_positive']} of {r['n_trials']} trials positive, sign test "
                             f"p = {r['sign_test_p']:.2g}, Wilcoxon p = {r['wilcoxon_p']:.2g}"})
    claims = pd.DataFrame(rows, columns=CLAIMS_COLUMNS)
    details = {"pooled": pooled, "slices": slice_table(used, objective=objective),
               "status": status, "control": control_ratio(used, "rho", objective=objective),
               "growth": growth, "paired": paired, "matched": matched, "matched_at": s_at,
               "used": used, "n_seeds": n_seeds}
    return claims, details


def power_banner(claims: pd.DataFrame, details: dict) -> str:
    """One paragraph on seeds and power: what the intervals cover and how wide they are."""
    n_seeds = details.get("n_seeds", 0)
    st = details.get("status")
    dnt = int(st["trained"].eq(False).sum()) if st is not None and len(st) else 0
    parts = [f"**{n_seeds} seed(s)**, {len(details.get('used', [])) and details['used']['trial'].nunique()} "
             f"trial(s) in the claim tests"
             + (f", {dnt} excluded because CL did not train" if dnt else "") + "."]
    if n_seeds < 3:
        parts.append("With fewer than 3 seeds the intervals come from scatter across grid "
                     "points (OLS with HC3 errors, the trial as the unit), not from "
                     "seed-to-seed variation; run >= 3 seeds for a per-seed t-interval.")
    c = claims[claims["measure"].astype(str).str.startswith("rho (")]
    for _, r in c.iterrows():
        if math.isfinite(_num(r["ci_low"])):
            half = (r["ci_high"] - r["ci_low"]) / 2
            pred = _num(r["predicted"])
            can = (f"a true slope of {pred:g} would be told from 0" if math.isfinite(pred)
                   and half < abs(pred) else f"too wide to tell a slope of {pred:g} from 0")
            parts.append(f"{r['claim'].split(': ', 1)[-1]}: interval half-width {half:.2f} "
                         f"({can}).")
    return " ".join(parts)


__all__ = [
    "CLAIMS_COLUMNS",
    "INIT_CKA_MAX",
    "KNN_GAIN_MIN",
    "batch_damping",
    "claims_table",
    "control_ratio",
    "first_evaluation",
    "growth_forms",
    "matched_cum_lr",
    "paired_objectives",
    "pooled_table",
    "power_banner",
    "slice_table",
    "trained_only",
    "training_status",
]
