"""Fits of the forms SCIENCE.md section 5 predicts, with free constants and bootstrap CIs.

Building blocks:

- :func:`fit_line` - least squares ``y = a + b x``, 95% CI of ``b`` by bootstrap;
- :func:`fit_power_law` - ``log y = a + b log x`` (``y = e^a x^b``), same CI;
- :func:`verdict` - is the predicted slope inside the CI, and if not, which way it misses.

Confidence intervals (95%): with ``groups`` (the seed of every row) the bootstrap resamples
whole groups with replacement (the CI covers seed-to-seed variation; rows of one seed stay
together); without groups, or with a single group, it resamples rows. Resamples with fewer
than 2 distinct x are dropped. By default (``ci="auto"``) the reported CI is the hull of that
bootstrap CI and the classical t-interval (over per-seed slopes, or from the OLS standard
error), because a percentile bootstrap over 2-4 seeds is far too narrow; ``ci="bootstrap"``
gives the bootstrap alone. A fit needs at least ``MIN_DISTINCT_X = 2`` distinct x values (two
points define a slope); with exactly 2 points there is no residual and the CI is NaN.

Claim-level analyses (all take the tables of :mod:`analysis.tables`):

- :func:`scaling_fits` - misalignment (1 - CKA, 1 - RSA, rho) against C (power law,
  predicted -1), tau (log misalignment linear in 1/tau, predicted slope about +2) and B
  (power law, predicted -1/2 at fixed S_T; the lr rule is stated with every fit);
- :func:`param_growth` - growth rate of log parameter distance in cumulative lr, per trial,
  then mean and t-interval over trials (seeds);
- :func:`bound_check` - how often cosine-kernel CKA >= sqrt(1 - rho^2) and >= (1-rho)/(1+rho);
- :func:`compare_objectives` - claim 3: CKA/RSA to CL of NSCL vs SupCon vs CE per grid point.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

MIN_DISTINCT_X = 2
FEW_GROUPS = 5
CI_LEVEL = 0.95
BOUND_TOL = 1e-9  # cka_cos >= bound - BOUND_TOL counts as holding (float rounding)

# what the theory predicts (SCIENCE.md section 5)
PREDICTED = {"C": -1.0, "tau": 2.0, "B": -0.5}
X_COLUMN = {"C": "n_classes", "tau": "tau", "B": "batch_size"}
X_LABEL = {"C": "C", "tau": "tau", "B": "B"}
MEASURES = ("1-cka", "1-rsa", "rho")
FEATURES = ("backbone", "proj")
SEED_COLUMNS = ("seed", "class_seed")
# constant within a sweep in practice, or bookkeeping that does not change training
NON_SLICE = ("objectives", "eval_every")
# under an image budget (tag budget_images) epochs are derived per grid point so that S_T
# is equal across C and B: they are not a grid axis then
BUDGET_DERIVED = ("epochs",)


# ---------------------------------------------------------------------------------------
# building blocks


@dataclass
class LineFit:
    slope: float
    intercept: float
    ci: tuple
    r2: float
    n: int
    n_x: int
    n_groups: int | None
    ci_method: str
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PowerLawFit:
    """``y = constant * x ** exponent``; ``ci`` is the 95% CI of the exponent."""

    exponent: float
    constant: float
    ci: tuple
    r2: float
    n: int
    n_x: int
    n_groups: int | None
    ci_method: str
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)

    def __getitem__(self, key):  # dict-style access as well
        return getattr(self, key)


def _fmt_values(v, k=8) -> str:
    v = list(v)
    s = ", ".join(f"{x:g}" for x in v[:k])
    return "[" + s + (f", ... ({len(v)} in all)" if len(v) > k else "") + "]"


def _as_arrays(x, y, groups):
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} vs {y.size}")
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise ValueError(f"non-finite data at {int(bad.sum())} row(s): x={_fmt_values(x[bad])}, "
                         f"y={_fmt_values(y[bad])}; drop them first")
    g = None
    if groups is not None:
        g = np.asarray(groups).ravel()
        if g.shape != x.shape:
            raise ValueError(f"groups differ in length from x: {g.size} vs {x.size}")
    return x, y, g


def _ols(x, y):
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    b = ((x - xm) * (y - ym)).sum() / sxx
    a = ym - b * xm
    sst = ((y - ym) ** 2).sum()
    ssr = ((y - a - b * x) ** 2).sum()
    r2 = 1.0 - ssr / sst if sst > 0 else float("nan")
    return a, b, r2


def _boot_slopes(x, y, idx, n_units, n_boot, rng):
    """Weighted-OLS slopes for ``n_boot`` multinomial resamples of the units ``idx``."""
    w_units = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot)
    w = w_units[:, idx].astype(float)  # (n_boot, n rows)
    sw = w.sum(1, keepdims=True)
    xm = (w * x).sum(1, keepdims=True) / sw
    ym = (w * y).sum(1, keepdims=True) / sw
    sxx = (w * (x - xm) ** 2).sum(1)
    sxy = (w * (x - xm) * (y - ym)).sum(1)
    scale = max(1.0, float(np.abs(x).max())) ** 2
    ok = sxx > 1e-12 * scale * sw[:, 0]  # fewer than 2 distinct x in the resample
    return sxy[ok] / sxx[ok]


def _t_ci_rows(x, y, a, b):
    """Classical OLS t-interval of the slope (df = n - 2)."""
    from scipy import stats

    n = x.size
    resid = y - a - b * x
    s2 = (resid ** 2).sum() / (n - 2)
    se = math.sqrt(s2 / ((x - x.mean()) ** 2).sum())
    h = float(stats.t.ppf(0.5 + CI_LEVEL / 2, n - 2)) * se
    return b - h, b + h


def _group_slopes(x, y, idx, n_groups):
    out = []
    for k in range(n_groups):
        m = idx == k
        if np.unique(x[m]).size < 2:
            return None
        out.append(_ols(x[m], y[m])[1])
    return np.asarray(out)


def fit_line(x, y, groups=None, n_boot: int = 2000, seed: int = 0, ci: str = "auto") -> LineFit:
    """Least-squares line ``y = intercept + slope x`` with a 95% CI of the slope.

    ``groups`` (e.g. the seed of every row): the bootstrap resamples whole groups; without
    groups (or with one) it resamples rows. ``ci``:

    - ``"bootstrap"``: the percentile bootstrap CI alone;
    - ``"auto"`` (default): the hull of the bootstrap CI and the classical t-interval (over
      the per-group slopes, df = groups - 1, when every group spans >= 2 distinct x; else
      the OLS standard error, df = n - 2). A percentile bootstrap over a handful of seeds is
      far too narrow (over 2 seeds it has 3 distinct resamples); the t-interval keeps the
      interval honest there and is the narrower of the two once seeds are plentiful;
    - ``"none"``: no CI.

    Raises ValueError on non-finite data or fewer than ``MIN_DISTINCT_X`` distinct x.
    """
    if ci not in ("auto", "bootstrap", "none"):
        raise ValueError(f"ci must be 'auto', 'bootstrap' or 'none', got {ci!r}")
    x, y, g = _as_arrays(x, y, groups)
    xs = np.unique(x)
    if xs.size < MIN_DISTINCT_X:
        raise ValueError(f"needs >= {MIN_DISTINCT_X} distinct x values to fit a slope, got "
                         f"{xs.size}: {_fmt_values(xs)}")
    a, b, r2 = _ols(x, y)
    notes = []
    n_groups = None
    idx = None
    if g is not None:
        labels, idx = np.unique(g, return_inverse=True)
        n_groups = int(labels.size)
        if n_groups < 2:
            notes.append("a single group (seed): CI over rows instead")
            g, idx = None, None
    nan_ci = (float("nan"), float("nan"))
    if ci == "none" or (n_boot <= 0 and ci == "bootstrap"):
        return LineFit(float(b), float(a), nan_ci, float(r2), int(x.size), int(xs.size),
                       n_groups, "none", "; ".join(notes))
    if x.size - 2 <= 0:
        notes.append("exactly 2 points: the line fits exactly, no CI")
        return LineFit(float(b), float(a), nan_ci, float(r2), int(x.size), int(xs.size),
                       n_groups, "none", "; ".join(notes))
    boot_ci, boot_name = nan_ci, ""
    if n_boot > 0:
        units_idx, n_units = (idx, n_groups) if g is not None else (np.arange(x.size), x.size)
        boot_name = (f"bootstrap over {n_groups} seeds" if g is not None
                     else f"bootstrap over {x.size} rows")
        slopes = _boot_slopes(x, y, units_idx, n_units, n_boot, np.random.default_rng(seed))
        if slopes.size < 0.5 * n_boot:
            notes.append(f"only {slopes.size} of {n_boot} resamples had >= 2 distinct x")
        else:
            alpha = (1 - CI_LEVEL) / 2
            lo, hi = np.quantile(slopes, [alpha, 1 - alpha])
            boot_ci = (float(lo), float(hi))
    if ci == "bootstrap":
        if g is not None and n_groups < FEW_GROUPS:
            notes.append(f"only {n_groups} seeds: a percentile bootstrap CI is too narrow")
        return LineFit(float(b), float(a), boot_ci, float(r2), int(x.size), int(xs.size),
                       n_groups, boot_name if math.isfinite(boot_ci[0]) else "none",
                       "; ".join(notes))
    # auto: hull with the classical t-interval
    t_ci, t_name = nan_ci, ""
    if g is not None:
        gs = _group_slopes(x, y, idx, n_groups)
        if gs is not None:
            _, t_ci, _ = t_interval(gs)
            t_name = f"t-interval over {n_groups} per-seed slopes"
    if t_name == "":
        t_ci = _t_ci_rows(x, y, a, b)
        t_name = f"OLS t-interval (df {x.size - 2})"
    parts = [(c, nm) for c, nm in ((boot_ci, boot_name), (t_ci, t_name))
             if nm and math.isfinite(c[0]) and math.isfinite(c[1])]
    if not parts:
        return LineFit(float(b), float(a), nan_ci, float(r2), int(x.size), int(xs.size),
                       n_groups, "none", "; ".join(notes))
    lo = min(c[0] for c, _ in parts)
    hi = max(c[1] for c, _ in parts)
    wider = max(parts, key=lambda p: p[0][1] - p[0][0])[1]
    method = " + ".join(nm for _, nm in parts)
    if len(parts) > 1:
        method = f"hull of {method} (wider: {wider.split(' over')[0].split(' (')[0]})"
    return LineFit(float(b), float(a), (float(lo), float(hi)), float(r2), int(x.size),
                   int(xs.size), n_groups, method, "; ".join(notes))


def fit_power_law(x, y, groups=None, n_boot: int = 2000, seed: int = 0,
                  ci: str = "auto") -> PowerLawFit:
    """Fit ``y = constant * x ** exponent`` as a line in log-log; 95% CI of the exponent
    as in :func:`fit_line` (bootstrap over ``groups`` = seeds, else rows).

    Refuses (ValueError naming the values) non-positive x or y, non-finite data and fewer
    than ``MIN_DISTINCT_X`` (2) distinct x values.
    """
    x, y, g = _as_arrays(x, y, groups)
    for name, v in (("x", x), ("y", y)):
        if (v <= 0).any():
            raise ValueError(f"a power law needs {name} > 0; non-positive {name} at "
                             f"{int((v <= 0).sum())} row(s): {_fmt_values(v[v <= 0])}")
    xs = np.unique(x)
    if xs.size < MIN_DISTINCT_X:
        raise ValueError(f"needs >= {MIN_DISTINCT_X} distinct x values to fit a power law, "
                         f"got {xs.size}: {_fmt_values(xs)}")
    f = fit_line(np.log(x), np.log(y), groups=g, n_boot=n_boot, seed=seed, ci=ci)
    return PowerLawFit(exponent=f.slope, constant=float(math.exp(f.intercept)), ci=f.ci,
                       r2=f.r2, n=f.n, n_x=f.n_x, n_groups=f.n_groups, ci_method=f.ci_method,
                       note=f.note)


def verdict(ci, predicted: float) -> str:
    """``"consistent"`` when the predicted slope lies in the CI, else which way it misses.
    A CI that also holds 0 (for a non-zero prediction) cannot tell the prediction from no
    effect: ``"consistent, uninformative (...)"``."""
    lo, hi = (float(c) for c in ci)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "undetermined (no confidence interval)"
    if lo <= predicted <= hi:
        if predicted != 0 and lo <= 0 <= hi:
            return "consistent, uninformative (the CI also includes 0: no effect fits as well)"
        return "consistent"
    above = lo > predicted
    side = "above" if above else "below"
    if predicted != 0 and ((predicted < 0 and lo > 0) or (predicted > 0 and hi < 0)):
        how = "opposite sign to the prediction"
    elif predicted == 0:
        how = "positive" if above else "negative"
    else:
        steeper = (above and predicted > 0) or (not above and predicted < 0)
        how = "steeper than predicted" if steeper else "shallower than predicted"
    return f"not consistent at 95%: slope {side} {predicted:g} ({how})"


def t_interval(values, level: float = CI_LEVEL):
    """Mean and t-interval of the mean; NaN interval for fewer than 2 finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), (float("nan"), float("nan")), 0
    m = float(v.mean())
    if v.size < 2:
        return m, (float("nan"), float("nan")), 1
    from scipy import stats

    h = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, (m - h, m + h), int(v.size)


# ---------------------------------------------------------------------------------------
# helpers on the tables


def slice_columns(df: pd.DataFrame, exclude=()) -> list[str]:
    """Scientific grid columns that vary in ``df`` (except ``exclude``, seeds, objective)."""
    from .tables import SCIENTIFIC_PARAMS

    skip = set(exclude) | set(SEED_COLUMNS) | {"objective"} | set(NON_SLICE)
    if "budget_images" in df.columns and df["budget_images"].astype(str).str.strip().ne("").all() \
            and not df["budget_images"].isna().any():
        skip |= set(BUDGET_DERIVED)
    out = []
    for c in SCIENTIFIC_PARAMS:
        if c in df.columns and c not in skip and df[c].astype(str).nunique() > 1:
            out.append(c)
    return out


def _groupby(df: pd.DataFrame, cols: list[str]):
    if not cols:
        yield {}, df
        return
    for key, sub in df.groupby([df[c].astype(str) for c in cols], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        yield {c: sub[c].iloc[0] for c in cols}, sub


def _slice_label(values: dict) -> str:
    short = {"n_classes": "C", "batch_size": "B", "include_positive": "include_positive"}
    return " ".join(f"{short.get(k, k)}={v:g}" if isinstance(v, float) else f"{short.get(k, k)}={v}"
                    for k, v in values.items()) or "all"


def metric_column(df: pd.DataFrame, base: str, features: str = "backbone",
                  split: str = "test") -> str | None:
    """The column of an alignment metric for a features/split; headline alias as fallback."""
    col = f"{split}/{features}/{base}"
    if col in df.columns:
        return col
    if features == "backbone" and split == "test" and base in df.columns:
        return base
    return None


def misalignment(df: pd.DataFrame, measure: str, features: str = "backbone",
                 split: str = "test"):
    """``1-cka``, ``1-rsa``, ``1-cka_cos`` or ``rho`` as a Series, or None if not logged."""
    base = measure.removeprefix("1-")
    col = metric_column(df, base, features, split)
    if col is None:
        return None
    v = pd.to_numeric(df[col], errors="coerce")
    return 1.0 - v if measure.startswith("1-") else v


def _groups_of(df):
    for c in ("seed",):
        if c in df.columns and df[c].notna().all():
            return df[c].to_numpy()
    return None


# ---------------------------------------------------------------------------------------
# claim 1: scaling of misalignment in C, tau, B


FIT_COLUMNS = ["claim", "kind", "objective", "measure", "features", "split", "slice", "x",
               "x_values", "n", "n_x", "n_groups", "slope", "ci_low", "ci_high", "constant",
               "r2", "predicted", "verdict", "ci_method", "lr_rule", "note"]


def _one_scaling_fit(sub, kind, measure, features, split, n_boot, seed):
    xcol = X_COLUMN[kind]
    row = {"claim": "1", "kind": kind, "measure": measure, "features": features, "split": split,
           "x": X_LABEL[kind] if kind != "tau" else "1/tau", "predicted": PREDICTED[kind],
           "slope": np.nan, "ci_low": np.nan, "ci_high": np.nan, "constant": np.nan,
           "r2": np.nan, "n": 0, "n_x": 0, "n_groups": np.nan, "ci_method": "",
           "verdict": "not fitted"}
    if "lr_rule" in sub.columns:
        row["lr_rule"] = ",".join(sorted(sub["lr_rule"].astype(str).unique()))
    notes = []
    if xcol not in sub.columns:
        row["note"] = f"no {xcol} column"
        return row
    m = misalignment(sub, measure, features, split)
    if m is None:
        row["note"] = f"{measure} ({split}/{features}) not logged"
        return row
    x = pd.to_numeric(sub[xcol], errors="coerce")
    ok = x.notna() & m.notna() & np.isfinite(m)
    if (~ok).sum():
        notes.append(f"dropped {int((~ok).sum())} row(s) with missing values")
    pos = ok & (m > 0) & (x > 0)
    if (ok & ~pos).sum():
        notes.append(f"dropped {int((ok & ~pos).sum())} row(s) with {measure} <= 0 "
                     f"(no misalignment to take the log of)")
    xs, ys = x[pos].to_numpy(float), m[pos].to_numpy(float)
    g = _groups_of(sub[pos])
    distinct = np.unique(xs)
    row["x_values"] = " ".join(f"{v:g}" for v in distinct)
    row["n"], row["n_x"] = int(xs.size), int(distinct.size)
    if distinct.size < MIN_DISTINCT_X:
        notes.insert(0, f"needs >= {MIN_DISTINCT_X} distinct {X_LABEL[kind]} "
                        f"(have {row['x_values'] or 'none'})")
        row["note"] = "; ".join(notes)
        return row
    try:
        if kind == "tau":
            f = fit_line(1.0 / xs, np.log(ys), groups=g, n_boot=n_boot, seed=seed)
            slope, const = f.slope, math.exp(f.intercept)
        else:
            f = fit_power_law(xs, ys, groups=g, n_boot=n_boot, seed=seed)
            slope, const = f.exponent, f.constant
    except ValueError as e:  # defensive: the filters above should prevent it
        notes.insert(0, f"fit refused: {e}")
        row["note"] = "; ".join(notes)
        return row
    row.update(slope=slope, ci_low=f.ci[0], ci_high=f.ci[1], constant=const, r2=f.r2,
               n_groups=f.n_groups if f.n_groups is not None else np.nan,
               ci_method=f.ci_method, verdict=verdict(f.ci, PREDICTED[kind]))
    if kind == "tau" and math.isfinite(f.ci[0]):
        sign = ("positive, as predicted" if f.ci[0] > 0 else
                "negative: misalignment grows with tau" if f.ci[1] < 0 else
                "sign not resolved at 95%")
        row["verdict"] = f"{row['verdict']}; sign {sign}"
    if f.note:
        notes.append(f.note)
    if kind == "B" and "lr_rule" in sub.columns:
        rules = set(sub["lr_rule"].astype(str))
        if rules != {"linear"}:
            notes.append(f"lr rule {','.join(sorted(rules))}: S_T per epoch changes with B, the "
                         f"B^-1/2 prediction is for fixed S_T (linear rule)")
    row["note"] = "; ".join(notes)
    return row


def scaling_fits(trials: pd.DataFrame, kinds=("C", "tau", "B"), objective: str = "nscl",
                 measures=MEASURES, features=FEATURES, split: str = "test",
                 n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Misalignment against C, tau and B: one row per (kind, measure, features, slice).

    The slices are the other varying grid columns (seed excluded: seeds are the bootstrap
    groups). A fit that is impossible still gets a row, with the reason in ``note``.
    """
    rows = []
    if trials is None or trials.empty or "objective" not in trials.columns:
        return pd.DataFrame(columns=FIT_COLUMNS)
    df = trials[trials["objective"] == objective]
    if df.empty:
        return pd.DataFrame(columns=FIT_COLUMNS)
    for kind in kinds:
        xcol = X_COLUMN[kind]
        for vals, sub in _groupby(df, slice_columns(df, exclude=[xcol])):
            for feat in features:
                for meas in measures:
                    r = _one_scaling_fit(sub, kind, meas, feat, split, n_boot, seed)
                    r.update(objective=objective, slice=_slice_label(vals))
                    rows.append(r)
    out = pd.DataFrame(rows)
    return out[[c for c in FIT_COLUMNS if c in out.columns]]


# ---------------------------------------------------------------------------------------
# claim 2: parameter distance grows exponentially in cumulative learning rate


def param_growth(curves: pd.DataFrame, metrics=("param_dist", "param_dist_layer")):
    """Per-trial growth rate of log(distance) in cum_lr; then mean and CI over trials.

    Returns ``(per_trial, summary)``. Epoch 0 (distance 0 by construction) and any
    non-positive distance are skipped. Without a ``cum_lr`` column the rate is per epoch
    (said in ``x``/``note``). The summary's CI is a t-interval over the trials (seeds) of a
    grid point.
    """
    cols_t = ["trial", "objective", "metric", "seed", "x", "n_points", "rate", "intercept",
              "r2", "note"]
    cols_s = ["claim", "kind", "objective", "measure", "slice", "x", "n", "n_groups", "slope",
              "ci_low", "ci_high", "r2", "predicted", "verdict", "ci_method", "lr_rule", "note"]
    if curves is None or curves.empty or "metric" not in curves.columns:
        return pd.DataFrame(columns=cols_t), pd.DataFrame(columns=cols_s)
    sub = curves[(curves["metric"].isin(list(metrics))) & (curves["objective"] != "cl")].copy()
    if sub.empty:
        return pd.DataFrame(columns=cols_t), pd.DataFrame(columns=cols_s)
    has_cum = "cum_lr" in sub.columns and pd.to_numeric(sub["cum_lr"], errors="coerce").notna().any()
    xname = "cum_lr" if has_cum else "epoch"
    slice_cols = slice_columns(sub)
    rows = []
    for (trial, obj, met), g in sub.groupby(["trial", "objective", "metric"], sort=True):
        x = pd.to_numeric(g[xname], errors="coerce").to_numpy(float)
        y = pd.to_numeric(g["value"], errors="coerce").to_numpy(float)
        ep = pd.to_numeric(g["epoch"], errors="coerce").to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y) & (y > 0) & (ep > 0)
        r = {"trial": trial, "objective": obj, "metric": met, "x": xname,
             "seed": g["seed"].iloc[0] if "seed" in g.columns else np.nan,
             "n_points": int(ok.sum()), "rate": np.nan, "intercept": np.nan, "r2": np.nan,
             "note": ""}
        for c in slice_cols + ["lr_rule"]:
            if c in g.columns:
                r[c] = g[c].iloc[0]
        if np.unique(x[ok]).size < MIN_DISTINCT_X:
            r["note"] = (f"needs >= {MIN_DISTINCT_X} evaluations after epoch 0 with distance "
                         f"> 0 (have {int(ok.sum())})")
        else:
            f = fit_line(x[ok], np.log(y[ok]), n_boot=0, ci="none")
            r.update(rate=f.slope, intercept=f.intercept, r2=f.r2)
        rows.append(r)
    per_trial = pd.DataFrame(rows)
    summ = []
    for vals, g in _groupby(per_trial, [c for c in slice_cols if c in per_trial.columns]):
        for (obj, met), h in g.groupby(["objective", "metric"], sort=True):
            mean, ci, n = t_interval(h["rate"])
            notes = []
            if n < 2:
                notes.append(f"{n} trial(s) with a fitted rate: needs >= 2 seeds for a CI")
            if not has_cum:
                notes.append("cum_lr not logged: rate per epoch")
            if ci[0] > 0:
                v = "grows (rate > 0 at 95%)"
            elif ci[1] < 0:
                v = "shrinks (rate < 0 at 95%)"
            elif math.isfinite(ci[0]):
                v = "no significant growth at 95%"
            elif n == 1 and mean > 0:
                v = "grows in the one trial (no CI)"
            else:
                v = "undetermined"
            summ.append({"claim": "2", "kind": "param_growth", "objective": obj, "measure": met,
                         "slice": _slice_label(vals), "x": xname, "n": int(h["n_points"].sum()),
                         "n_groups": n, "slope": mean, "ci_low": ci[0], "ci_high": ci[1],
                         "r2": float(np.nanmean(h["r2"])) if h["r2"].notna().any() else np.nan,
                         "predicted": np.nan, "verdict": v,
                         "ci_method": f"t-interval over {n} trials" if n >= 2 else "none",
                         "lr_rule": ",".join(sorted(h["lr_rule"].astype(str).unique()))
                         if "lr_rule" in h.columns else "",
                         "note": "; ".join(notes), **{c: vals[c] for c in vals}})
    summary = pd.DataFrame(summ) if summ else pd.DataFrame(columns=cols_s)
    return per_trial, summary


# ---------------------------------------------------------------------------------------
# the bound: cosine-kernel CKA >= sqrt(1 - rho^2) >= (1 - rho)/(1 + rho) for rho < 1


def bound_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Wide rows (trial, objective, epoch, split, features, rho, cka_cos, bound_sqrt,
    bound_ratio); bounds are recomputed from rho where not logged."""
    need = ("rho", "cka_cos", "bound_sqrt", "bound_ratio")
    cols = ["trial", "objective", "epoch", "split", "features", *need]
    if curves is None or curves.empty:
        return pd.DataFrame(columns=cols)
    c = curves[curves["objective"] != "cl"]
    leaf = c["metric"].str.rsplit("/", n=1).str[-1]
    c = c[leaf.isin(need)].copy()
    if c.empty:
        return pd.DataFrame(columns=cols)
    parts = c["metric"].str.split("/")
    explicit = parts.str.len() == 3
    c["split"] = np.where(explicit, parts.str[0], "test")
    c["features"] = np.where(explicit, parts.str[1], "backbone")
    c["leaf"] = parts.str[-1]
    c["explicit"] = explicit
    # headline aliases duplicate test/backbone: keep them only where no explicit value exists
    keys = ["trial", "objective", "epoch", "split", "features", "leaf"]
    c = c.sort_values("explicit", ascending=False).drop_duplicates(keys, keep="first")
    w = c.pivot_table(index=keys[:5], columns="leaf", values="value", aggfunc="first",
                      dropna=False).reset_index()
    w.columns.name = None
    for k in need:
        if k not in w.columns:
            w[k] = np.nan
    rho = w["rho"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        calc_sqrt = np.where(rho < 1, np.sqrt(np.clip(1 - rho ** 2, 0, None)), np.nan)
        calc_ratio = np.where(rho < 1, (1 - rho) / (1 + rho), np.nan)
    w["bound_sqrt"] = w["bound_sqrt"].where(w["bound_sqrt"].notna(), calc_sqrt)
    w["bound_ratio"] = w["bound_ratio"].where(w["bound_ratio"].notna(), calc_ratio)
    return w[cols]


def bound_check(curves: pd.DataFrame, tol: float = BOUND_TOL) -> pd.DataFrame:
    """Per (objective, split, features): over evaluations with finite rho < 1 and finite
    cka_cos, how many satisfy cka_cos >= sqrt(1-rho^2) and >= (1-rho)/(1+rho).

    Epoch 0 is left out: the models are identical there (rho = 0, CKA = 1), so the bound
    holds by construction and would only inflate the count."""
    cols = ["objective", "split", "features", "n_evals", "n_rho_ge_1", "n_sqrt_holds",
            "frac_sqrt_holds", "n_ratio_holds", "frac_ratio_holds", "min_margin_sqrt",
            "min_margin_ratio"]
    if "epoch" in curves.columns:
        curves = curves[pd.to_numeric(curves["epoch"], errors="coerce") > 0]
    w = bound_table(curves)
    if w.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (obj, split, feat), g in w.groupby(["objective", "split", "features"], sort=True):
        rho, cc = g["rho"].to_numpy(float), g["cka_cos"].to_numpy(float)
        if not np.isfinite(cc).any() or not np.isfinite(rho).any():
            continue  # not logged for these features/split
        valid = np.isfinite(rho) & np.isfinite(cc)
        use = valid & (rho < 1)
        bs, br = g["bound_sqrt"].to_numpy(float)[use], g["bound_ratio"].to_numpy(float)[use]
        c = cc[use]
        ms, mr = c - bs, c - br
        n = int(use.sum())
        hs, hr = int((ms >= -tol).sum()), int((mr >= -tol).sum())
        rows.append({"objective": obj, "split": split, "features": feat, "n_evals": n,
                     "n_rho_ge_1": int((valid & (rho >= 1)).sum()), "n_sqrt_holds": hs,
                     "frac_sqrt_holds": hs / n if n else np.nan, "n_ratio_holds": hr,
                     "frac_ratio_holds": hr / n if n else np.nan,
                     "min_margin_sqrt": float(np.nanmin(ms)) if n else np.nan,
                     "min_margin_ratio": float(np.nanmin(mr)) if n else np.nan})
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------
# claim 3: NSCL is the closest supervised proxy


def compare_objectives(trials: pd.DataFrame, metrics=("cka", "rsa"), at: str = "final",
                       reference: str = "nscl") -> pd.DataFrame:
    """Per grid point and metric: each objective's mean over seeds with a 95% t-interval,
    its rank, and whether ``reference`` (NSCL) has the highest mean (and whether its CI
    lies above every other objective's CI: ``separated``)."""
    cols = ["at", "slice", "metric", "objective", "n_seeds", "mean", "ci_low", "ci_high",
            "rank", "nscl_highest", "separated", "note"]
    if trials is None or trials.empty or "objective" not in trials.columns:
        return pd.DataFrame(columns=cols)
    rows = []
    for vals, sub in _groupby(trials, slice_columns(trials)):
        for met in metrics:
            col = metric_column(sub, met)
            if col is None:
                continue
            stats = {}
            for obj, g in sub.groupby("objective", sort=False):
                stats[obj] = t_interval(pd.to_numeric(g[col], errors="coerce"))
            stats = {o: s for o, s in stats.items() if s[2] > 0}
            if not stats:
                continue
            order = sorted(stats, key=lambda o: -stats[o][0])
            others = [o for o in stats if o != reference]
            note = ""
            if reference not in stats:
                highest, sep = None, None
                note = f"{reference} not in this sweep"
            elif not others:
                highest, sep = None, None
                note = f"only {reference} compared: needs supcon or ce in objectives"
            else:
                highest = order[0] == reference
                lo_ref = stats[reference][1][0]
                his = [stats[o][1][1] for o in others]
                sep = bool(highest and math.isfinite(lo_ref) and all(math.isfinite(h) for h in his)
                           and lo_ref > max(his))
                if any(stats[o][2] < 2 for o in stats):
                    note = "fewer than 2 seeds for some objective: no CI"
            for obj in order:
                m, ci, n = stats[obj]
                rows.append({"at": at, "slice": _slice_label(vals), "metric": met,
                             "objective": obj, "n_seeds": n, "mean": m, "ci_low": ci[0],
                             "ci_high": ci[1], "rank": order.index(obj) + 1,
                             "nscl_highest": highest, "separated": sep, "note": note,
                             **{c: vals[c] for c in vals}})
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


def early_trials(curves: pd.DataFrame, metrics=("cka", "rsa")) -> tuple[pd.DataFrame, int | None]:
    """A trials-like table of the headline metrics at the first evaluation after epoch 0."""
    if curves is None or curves.empty:
        return pd.DataFrame(), None
    c = curves[(curves["objective"] != "cl") & (curves["metric"].isin(list(metrics)))]
    ep = pd.to_numeric(c["epoch"], errors="coerce")
    later = ep[ep > 0]
    if later.empty:
        return pd.DataFrame(), None
    first = int(later.min())
    c = c[ep == first]
    w = c.pivot_table(index=["trial", "objective"], columns="metric", values="value",
                      aggfunc="first").reset_index()
    w.columns.name = None
    grid = [k for k in c.columns if k not in ("metric", "value", "epoch", "step", "step_lr", "cum_lr",
                                              "time_s")]
    w = w.merge(c[grid].drop_duplicates(["trial", "objective"]), on=["trial", "objective"],
                how="left")
    return w, first


# ---------------------------------------------------------------------------------------
# everything at once


def run_all(trials: pd.DataFrame, curves: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """All analyses: dict of DataFrames (fits, param_growth_trials, bounds, objectives)."""
    # pandas deep-copies .attrs on every operation: drop them for speed
    if trials is not None:
        trials = trials.copy(deep=False)
        trials.attrs = {}
    if curves is not None:
        curves = curves.copy(deep=False)
        curves.attrs = {}
    scal = scaling_fits(trials, n_boot=n_boot, seed=seed)
    per_trial, growth = param_growth(curves)
    fits = pd.concat([d for d in (scal, growth) if not d.empty], ignore_index=True) \
        if not (scal.empty and growth.empty) else pd.DataFrame(columns=FIT_COLUMNS)
    comp = compare_objectives(trials, at="final")
    early, first = early_trials(curves)
    if not early.empty:
        comp = pd.concat([comp, compare_objectives(early, at=f"epoch {first}")],
                         ignore_index=True)
    return {"fits": fits, "scaling": scal, "param_growth": growth,
            "param_growth_trials": per_trial, "bounds": bound_check(curves),
            "objectives": comp}


__all__ = [
    "MIN_DISTINCT_X",
    "PREDICTED",
    "LineFit",
    "PowerLawFit",
    "bound_check",
    "bound_table",
    "compare_objectives",
    "early_trials",
    "fit_line",
    "fit_power_law",
    "metric_column",
    "misalignment",
    "param_growth",
    "run_all",
    "scaling_fits",
    "slice_columns",
    "t_interval",
    "verdict",
]
