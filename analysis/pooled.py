"""One pooled, correctly specified test per scaling claim (SCIENCE.md section 5).

:func:`pooled_slope` regresses a misalignment measure on the transformed grid axis over all
trials at once: the trial is the unit, the other grid axes enter as free slice effects
(one intercept per slice), and one common slope is estimated. Why pooled: per-slice fits
on 2-3 points have df = 1 and intervals that say nothing; pooling the same trials gives
an interval that can exclude 0 or the predicted number.

The interval is chosen by the design and named in ``method``:

- >= 3 seeds: the same model is fitted within each seed and the slope's interval is a
  t-interval over the per-seed slopes (df = seeds - 1): seed-to-seed variation is what
  a replication would see;
- 1-2 seeds (too few clusters for cluster-robust errors): OLS with HC3
  heteroskedasticity-robust errors and a t reference on the residual df (the trial is
  the unit; the interval covers scatter across grid points, not seeds);
- zeros (or values below ``floor``) in the measure: a log-link quasi-Poisson GLM
  ("PPML", Pearson-scaled errors, t reference) that keeps every row; the number of rows
  at or below the floor is always reported, nothing is dropped.

A heterogeneity F-test (slope x slice interactions against the common slope) says
whether pooling was allowed. The bound's own local slope (:func:`bound_local_slope`)
refits the same design to the log of the bound computed from each trial's logged S_T
(cum_lr), tau, C and B, so the fitted slope is compared with what the bound says on
this very grid, not only with the asymptotic number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

CI_LEVEL = 0.95
# grid axis -> (table column, regressor transform, expected sign of d log(misalignment)/d regressor)
AXES = {"C": ("n_classes", "log", -1), "tau": ("tau", "inverse", +1), "B": ("batch_size", "log", -1)}
# asymptotic prediction for rho; 1 - CKA_cos ~ rho^2/2 has twice rho's slopes
PREDICTED_RHO = {"C": -1.0, "tau": 2.0, "B": -0.5}
SLOPE_FACTOR = {"rho": 1.0, "1-cka_cos": 2.0}  # measures with an exact link to the bound
DIRECTION_ONLY = ("1-cka", "1-rsa", "1-cka_debiased")  # no exact link: only the direction
MEASURES = ("rho", "1-cka_cos", "1-cka", "1-cka_debiased", "1-rsa")
MIN_SEEDS_FOR_T = 3
HETEROGENEITY_ALPHA = 0.05
S_T_TOLERANCE = 0.05  # relative spread of mean S_T across x values that earns a warning
HIGH_LEVERAGE = 0.999  # HC3 divides by (1 - h): with h ~ 1 it fails, use classical errors


@dataclass
class PooledSlope:
    """A pooled fit: ``slope`` and its ``ci`` (95%), how it was obtained, and what it spans."""

    measure: str
    x: str
    slope: float
    ci: tuple
    n: int
    method: str
    se: float = float("nan")
    df: float = float("nan")
    p_value: float = float("nan")  # two-sided, slope = 0
    n_groups: int = 0
    n_slices: int = 0
    within: tuple = ()
    link: str = "log"
    x_values: tuple = ()
    heterogeneity_p: float = float("nan")
    pooling: str = "not testable"
    floor: float = 0.0
    n_at_floor: int = 0
    cum_lr_min: float = float("nan")
    cum_lr_max: float = float("nan")
    cum_lr_by_x: dict = field(default_factory=dict)
    s_t_warning: str = ""
    predicted: float = float("nan")
    bound_local: float = float("nan")
    r2: float = float("nan")
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key):
        return getattr(self, key)


# ---------------------------------------------------------------------------------------
# table helpers


def measure_values(df: pd.DataFrame, measure: str, features: str = "backbone",
                   split: str = "test") -> pd.Series | None:
    """``rho``, ``1-cka``, ``1-cka_cos``, ... from the table; any other name is a column."""
    from .fits import metric_column

    if measure in df.columns and not measure.startswith("1-"):
        base = measure
    else:
        base = measure.removeprefix("1-")
    col = metric_column(df, base, features, split)
    if col is None and (features, split) == ("backbone", "test"):
        # the bare column is the headline (test split, backbone): never stand in for another
        col = base if base in df.columns else None
    if col is None:
        return None
    v = pd.to_numeric(df[col], errors="coerce")
    return 1.0 - v if measure.startswith("1-") else v


def axis_column(x: str) -> tuple[str, str, int]:
    """(column, transform, expected sign) of a grid axis; a plain column is log, sign 0."""
    if x in AXES:
        return AXES[x]
    for (col, tr, s) in AXES.values():
        if x == col:
            return col, tr, s
    return x, "log", 0


def transform(values, how: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if how == "log":
        return np.log(v)
    if how == "inverse":
        return 1.0 / v
    return v


def predicted_slope(measure: str, x: str) -> float:
    """The asymptotic prediction (NaN for direction-only measures or other axes)."""
    if x not in PREDICTED_RHO or measure not in SLOPE_FACTOR:
        return float("nan")
    return PREDICTED_RHO[x] * SLOPE_FACTOR[measure]


def default_within(df: pd.DataFrame, xcol: str) -> list[str]:
    from .fits import slice_columns

    return slice_columns(df, exclude=[xcol])


def _slice_codes(df: pd.DataFrame, within) -> np.ndarray:
    if not within:
        return np.zeros(len(df), dtype=int)
    key = df[list(within)].astype(str).agg("|".join, axis=1)
    return pd.factorize(key, sort=True)[0]


def _design(xr: np.ndarray, codes: np.ndarray, interact: bool = False):
    """Columns: one intercept per slice, the common slope (first), optional x-by-slice."""
    levels = np.unique(codes)
    dummies = (codes[:, None] == levels[None, :]).astype(float)
    cols = [xr[:, None], dummies]
    if interact and levels.size > 1:
        varying = [lv for lv in levels[1:] if np.unique(xr[codes == lv]).size > 1]
        if varying:
            cols.append(np.column_stack([xr * (codes == lv) for lv in varying]))
    return np.column_stack(cols)


# ---------------------------------------------------------------------------------------
# one fit


def _fit(y, X, link):
    import statsmodels.api as sm

    if link == "ppml":
        m = sm.GLM(y, X, family=sm.families.Poisson())
        return m.fit(scale="X2", use_t=True)
    return sm.OLS(y, X).fit()


def _slope_stats(y, X, link):
    """(slope, se, df, p, method, result) with the design's robust or model-based errors."""
    res = _fit(y, X, link)
    df = float(res.df_resid)
    if df <= 0:
        return float(res.params[0]), float("nan"), df, float("nan"), "exact fit, no residual df", res
    if link == "ppml":
        se = float(res.bse[0])
        method = f"quasi-Poisson GLM (PPML, log link, Pearson scale), t(df {df:g})"
    else:
        h = np.einsum("ij,ji->i", X, np.linalg.pinv(X))
        if np.nanmax(h) < HIGH_LEVERAGE:
            se = float(res.get_robustcov_results(cov_type="HC3").bse[0])
            method = f"OLS on log scale, HC3 robust errors, t(df {df:g})"
        else:
            se = float(res.bse[0])
            method = (f"OLS on log scale, classical errors (a row with leverage 1 rules out "
                      f"HC3), t(df {df:g})")
    from scipy import stats

    b = float(res.params[0])
    p = float(2 * stats.t.sf(abs(b / se), df)) if se > 0 else float("nan")
    return b, se, df, p, method, res


def _heterogeneity(y, xr, codes, link, restricted):
    """F-test of slope-by-slice interactions; (p, text)."""
    from scipy import stats

    n_var = sum(np.unique(xr[codes == lv]).size > 1 for lv in np.unique(codes))
    if n_var < 2:
        return float("nan"), "not testable (fewer than 2 slices span >= 2 x values)"
    Xf = _design(xr, codes, interact=True)
    full = _fit(y, Xf, link)
    q = Xf.shape[1] - restricted.model.exog.shape[1]
    if full.df_resid <= 0 or q <= 0:
        return float("nan"), "not testable (no residual df once each slice has its own slope)"
    if link == "ppml":
        scale = float(full.pearson_chi2 / full.df_resid)
        f = (restricted.deviance - full.deviance) / q / scale if scale > 0 else float("nan")
    else:
        f = ((restricted.ssr - full.ssr) / q) / (full.ssr / full.df_resid) if full.ssr > 0 \
            else float("inf")
    p = float(stats.f.sf(f, q, full.df_resid)) if math.isfinite(f) else (0.0 if f > 0 else 1.0)
    if p < HETEROGENEITY_ALPHA:
        return p, f"REJECTED: slopes differ across slices (F-test p = {p:.3g}); read per-slice rows"
    return p, f"allowed (no evidence that slopes differ across slices: F-test p = {p:.3g})"


def _t_ci(b, se, df, level=CI_LEVEL):
    from scipy import stats

    if not (math.isfinite(se) and df > 0):
        return (float("nan"), float("nan"))
    h = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return (b - h, b + h)


def pooled_slope(table: pd.DataFrame, measure: str, x: str, within=None, groups="seed", *,
                 objective: str | None = "nscl", features: str = "backbone", split: str = "test",
                 link: str = "auto", floor: float = 0.0) -> PooledSlope:
    """The common slope of ``measure`` against grid axis ``x`` over all trials of ``table``.

    ``measure``: ``rho``, ``1-cka_cos``, ``1-cka``, ``1-cka_debiased``, ``1-rsa`` (read for
    ``features``/``split``), or any numeric column. ``x``: ``"C"``, ``"tau"``, ``"B"``
    (regressor log C, 1/tau, log B) or a column (regressor log of it). ``within``: the
    columns whose every combination gets its own free intercept (default: the other
    scientific grid columns that vary). ``groups``: the seed column. ``link``: ``"log"``
    (OLS of log y), ``"ppml"`` (quasi-Poisson GLM with log link, accepts zeros),
    ``"identity"`` (OLS of y), or ``"auto"`` (log unless some y <= ``floor``, then ppml).
    ``objective`` filters the table's ``objective`` column when it has one.
    """
    df = table
    if objective is not None and "objective" in df.columns:
        df = df[df["objective"] == objective]
    xcol, how, _sign = axis_column(x)
    xname = x if x in AXES else xcol
    pred = predicted_slope(measure, xname)
    nan2 = (float("nan"), float("nan"))
    out = PooledSlope(measure=measure, x=xname, slope=float("nan"), ci=nan2, n=0,
                      method="none", predicted=pred)
    if df is None or df.empty or xcol not in df.columns:
        out.note = f"no {xcol} column" if df is not None and not df.empty else "no rows"
        return out
    y_all = measure_values(df, measure, features, split)
    if y_all is None:
        out.note = f"{measure} ({split}/{features}) not logged"
        return out
    within = default_within(df, xcol) if within is None else [c for c in within if c in df.columns]
    xv = pd.to_numeric(df[xcol], errors="coerce")
    ok = xv.notna() & y_all.notna() & np.isfinite(y_all)
    notes = []
    if (~ok).sum():
        notes.append(f"{int((~ok).sum())} row(s) without a value of {measure} or {xcol}")
    d = df[ok]
    y = y_all[ok].to_numpy(float)
    xr = transform(xv[ok].to_numpy(float), how)
    out.within = tuple(within)
    out.n = int(y.size)
    out.x_values = tuple(float(v) for v in np.unique(xv[ok]))
    out.floor = float(floor)
    out.n_at_floor = int((y <= floor).sum())
    if link == "auto":
        link = "ppml" if out.n_at_floor else "log"
    if link == "ppml" and (y < 0).any():
        notes.append(f"{int((y < 0).sum())} negative value(s) set to 0 for the Poisson GLM")
        y = np.clip(y, 0, None)
    out.link = link
    if out.n_at_floor:
        notes.append(f"{out.n_at_floor} row(s) at or below {floor:g} kept (log-link GLM)"
                     if link == "ppml" else f"{out.n_at_floor} row(s) at or below {floor:g}")
    if link == "log" and (y <= 0).any():
        raise ValueError(f"link='log' needs {measure} > 0; use link='ppml' or 'auto'")
    yy = np.log(y) if link == "log" else y
    lnk = "ppml" if link == "ppml" else "ols"
    codes = _slice_codes(d, within)
    out.n_slices = int(np.unique(codes).size)
    g = d[groups].to_numpy() if groups and groups in d.columns and d[groups].notna().all() else None
    out.n_groups = int(np.unique(g).size) if g is not None else 1
    # equal S_T across x, or a warning
    if "cum_lr" in d.columns:
        s = pd.to_numeric(d["cum_lr"], errors="coerce")
        if s.notna().any():
            out.cum_lr_min, out.cum_lr_max = float(s.min()), float(s.max())
            by = s.groupby(xv[ok].to_numpy()).mean()
            out.cum_lr_by_x = {float(k): float(v) for k, v in by.items()}
            if by.min() > 0 and by.max() / by.min() - 1 > S_T_TOLERANCE:
                out.s_t_warning = (f"S_T (cum_lr) differs across {xname}: "
                                   + ", ".join(f"{v:.3g} at {xname}={k:g}" for k, v in by.items())
                                   + "; see the matched-S_T row")
    if np.unique(xr).size < 2:
        out.note = "; ".join([(f"needs >= 2 distinct {xname} (have "
                              f"{', '.join(f'{v:g}' for v in out.x_values) or 'none'})")] + notes)
        return out
    X = _design(xr, codes)
    if np.linalg.matrix_rank(X) < X.shape[1]:
        out.note = "; ".join([f"{xname} does not vary within any slice"] + notes)
        return out
    try:
        b, se, dfr, p, method, res = _slope_stats(yy, X, lnk)
    except Exception as e:  # noqa: BLE001 - a degenerate design: say so, do not crash a report
        out.note = "; ".join([f"fit failed: {type(e).__name__}: {e}"] + notes)
        return out
    if lnk == "ols" and getattr(res, "rsquared", None) is not None and dfr > 0:
        out.r2 = float(res.rsquared)
    out.heterogeneity_p, out.pooling = _heterogeneity(yy, xr, codes, lnk, res)
    if g is not None and out.n_groups >= MIN_SEEDS_FOR_T:
        per = []
        for lv in np.unique(g):
            m = g == lv
            Xs = _design(xr[m], codes[m])
            if np.unique(xr[m]).size < 2 or np.linalg.matrix_rank(Xs) < Xs.shape[1]:
                per = []
                break
            per.append(float(_fit(yy[m], Xs, lnk).params[0]))
        if per:
            from scipy import stats

            per = np.asarray(per)
            b = float(per.mean())
            se = float(per.std(ddof=1) / math.sqrt(per.size))
            dfr = float(per.size - 1)
            p = float(2 * stats.t.sf(abs(b / se), dfr)) if se > 0 else float("nan")
            method = (f"t-interval over {per.size} per-seed slopes (df {per.size - 1}), "
                      f"{'PPML' if lnk == 'ppml' else 'OLS on log scale' if link == 'log' else 'OLS'}"
                      f" within each seed")
        else:
            notes.append("a seed does not span >= 2 x values: errors at the trial level")
    if link == "identity":
        method = method.replace("OLS on log scale", "OLS")
    out.slope, out.se, out.df, out.p_value, out.method = b, se, dfr, p, method
    out.ci = _t_ci(b, se, dfr)
    if out.n_groups < MIN_SEEDS_FOR_T and out.n_groups > 0 and "per-seed" not in method:
        notes.append(f"{out.n_groups} seed(s): the interval covers scatter across grid points, "
                     f"not seed-to-seed variation")
    if out.s_t_warning:
        notes.append(out.s_t_warning)
    out.bound_local = bound_local_slope(d, measure, xname, within, objective=None)
    out.note = "; ".join(notes)
    return out


# ---------------------------------------------------------------------------------------
# the bound's own prediction on this grid


def log_bound(df: pd.DataFrame) -> pd.Series | None:
    """log of e^{2/tau} / (tau C sqrt(B)) * S_T * exp(S_T / (2 tau^2 B)) per row (constants
    dropped), from the logged cum_lr; None when a column is missing."""
    need = ("tau", "n_classes", "batch_size", "cum_lr")
    if any(c not in df.columns for c in need):
        return None
    tau, C, B, S = (pd.to_numeric(df[c], errors="coerce") for c in need)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = 2 / tau - np.log(tau * C * np.sqrt(B)) + np.log(S) + S / (2 * tau ** 2 * B)
    return v.where(np.isfinite(v))


def bound_local_slope(table: pd.DataFrame, measure: str, x: str, within=None, *,
                      objective: str | None = "nscl") -> float:
    """The slope the bound itself has on this grid: the same pooled design fitted to the log
    bound of every trial (noise-free), times the measure's factor (2 for 1 - CKA_cos);
    NaN for direction-only measures or when S_T, tau, C or B are not logged."""
    if measure not in SLOPE_FACTOR:
        return float("nan")
    df = table
    if objective is not None and "objective" in df.columns:
        df = df[df["objective"] == objective]
    lb = log_bound(df) if df is not None and not df.empty else None
    if lb is None or lb.notna().sum() < 2:
        return float("nan")
    xcol, how, _ = axis_column(x)
    within = default_within(df, xcol) if within is None else [c for c in within if c in df.columns]
    ok = lb.notna()
    xr = transform(pd.to_numeric(df.loc[ok, xcol]), how)
    if np.unique(xr).size < 2:
        return float("nan")
    X = _design(xr, _slice_codes(df[ok], within))
    if np.linalg.matrix_rank(X) < X.shape[1]:
        return float("nan")
    beta = np.linalg.lstsq(X, lb[ok].to_numpy(float), rcond=None)[0]
    return float(beta[0] * SLOPE_FACTOR[measure])


# ---------------------------------------------------------------------------------------
# verdicts


def judge(fit: PooledSlope | dict, expected_sign: int | None = None) -> tuple[str, str]:
    """(code, text): the direction first (the firm prediction: the interval excludes 0 on
    the predicted side), then the magnitude against the asymptotic number and the bound's
    local slope. Codes: supported, contradicted, inconclusive, no interval."""
    f = fit if isinstance(fit, dict) else fit.as_dict()
    lo, hi = (float(c) for c in f["ci"])
    xname = f["x"]
    sign = expected_sign if expected_sign is not None else axis_column(xname)[2]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "no interval", "no interval: cannot judge (" + (f.get("note") or "no CI") + ")"
    if sign == 0:
        if lo > 0 or hi < 0:
            return "nonzero", f"slope {'positive' if lo > 0 else 'negative'} at 95%"
        return "inconclusive", "interval includes 0"
    what = {"C": "more classes", "tau": "higher temperature", "B": "larger batches"}.get(
        xname, f"larger {xname}")
    if sign * lo > 0 and sign * hi > 0:
        code, text = "supported", f"direction supported (misalignment falls with {what})"
    elif sign * lo < 0 and sign * hi < 0:
        return "contradicted", f"direction CONTRADICTED: misalignment grows with {what}"
    else:
        return "inconclusive", f"inconclusive: interval [{lo:.2f}, {hi:.2f}] includes 0"
    parts = []
    for name, target in (("asymptotic", f.get("predicted", float("nan"))),
                         ("bound's local", f.get("bound_local", float("nan")))):
        if target is None or not math.isfinite(target):
            continue
        if lo <= target <= hi:
            parts.append(f"consistent with {target:.2f} ({name})")
        elif sign * hi < sign * target:  # the whole interval short of the target's size
            parts.append(f"shallower than {target:.2f} ({name})")
        else:
            parts.append(f"steeper than {target:.2f} ({name})")
    if parts:
        text += "; magnitude " + ", ".join(parts)
        if any(p.startswith("shallower") for p in parts):
            text += " (an upper bound: shallower does not refute it)"
    elif f["measure"] in DIRECTION_ONLY:
        text += "; magnitude not predicted for this measure"
    return code, text


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (NaN stays NaN)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


__all__ = [
    "AXES",
    "MEASURES",
    "PREDICTED_RHO",
    "PooledSlope",
    "bound_local_slope",
    "holm",
    "judge",
    "log_bound",
    "measure_values",
    "pooled_slope",
    "predicted_slope",
]
