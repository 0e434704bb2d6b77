"""Figures of a sweep (matplotlib, Agg backend), each saved as PNG and SVG.

- ``misalignment_vs_C`` / ``_tau`` / ``_B``: every trial a point (seeds as points, coloured
  by the other grid axes in numeric order), the geometric mean per x with its 95%
  t-interval in log space, the pooled fit of :func:`analysis.pooled.pooled_slope` (the
  same fit as ``claims.csv``) with its 95% band, both anchored at the geometric mean of
  the data, and a dotted guide with the theory's slope (rho: -1 in log C, +2 in 1/tau,
  -1/2 in log B; 1 - CKA_cos twice that; none for the direction-only measures). Trials
  whose CL did not train are drawn as grey crosses and left out of the fit, as in
  ``claims.csv``;
- ``alignment_over_epochs``: CKA, RSA, rho to CL against the cumulative learning rate
  S_T (``cum_lr``), one line per trial, one row per objective, coloured by C;
- ``param_distance``: parameter distance (log) against S_T, one line per trial, coloured
  by C (by B or tau when C is fixed and they vary);
- ``bound_check``: measured cosine-kernel CKA against both lower bounds, with y = x.

Colour scales follow the numeric order of the grid values; legends and colour bars sit
outside the axes. ``*_figure`` functions return the Figure (for tests);
``plot_*`` save it. A figure without data is skipped and the reason returned, never an
exception.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .fits import X_COLUMN, bound_table, metric_column, misalignment, slice_columns
from .pooled import pooled_slope, predicted_slope, transform

SCALING_MEASURES = ("rho", "1-cka_cos", "1-cka", "1-rsa")
MEASURE_LABEL = {"1-cka": "1 - linear CKA", "1-rsa": "1 - RSA (Spearman)",
                 "rho": "rho (similarity-matrix distance)", "1-cka_cos": "1 - cosine-kernel CKA"}
X_AXIS_LABEL = {"C": "number of classes C [log scale]",
                "tau": "inverse temperature 1/tau (tau = softmax temperature)",
                "B": "batch size B (samples) [log scale]"}
CURVE_LABEL = {"cka": "linear CKA to CL", "rsa": "RSA (Spearman) to CL",
               "rho": "rho to CL (similarity-matrix distance)",
               "param_dist": "relative distance ||θ_CL − θ_X|| / ||θ_CL|| [log]",
               "param_dist_layer": "per-layer mean relative distance [log]"}
KEY_LABEL = {"n_classes": "number of classes C", "batch_size": "batch size B",
             "tau": "temperature tau"}
SHORT = {"n_classes": "C", "batch_size": "B", "include_positive": "include_positive"}
COLOR_KEYS = ("n_classes", "batch_size", "tau")  # colour curves by C, else by what varies
OBJ_ORDER = ("nscl", "supcon", "ce", "cl_indep")
FEATURE_LABEL = {"backbone": "backbone features", "proj": "normalised projector outputs"}
S_T_LABEL = "cumulative learning rate S_T = Σ per-step lr (cum_lr)"
LEGEND_W_IN = 2.5  # room right of the axes for the legend / colour bar, inches
CI_LEVEL = 0.95


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _layout(fig, top_in=0.8, bottom_in=0.65, left_in=0.9, right_in=0.25, wspace=0.3,
            hspace=0.6):
    """Fixed margins in inches (tight_layout costs a full extra draw per figure)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left_in / w, right=1 - right_in / w, bottom=bottom_in / h,
                        top=1 - top_in / h, wspace=wspace, hspace=hspace)


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        fig.savefig(p, dpi=110 if ext == "png" else None)
        paths.append(p)
    _plt().close(fig)
    return paths


def _plain_log_ticks(ax, x=True, y=True, xticks=None):
    """Readable log axes: ticks at 1-2-5 (or at ``xticks``), plain-number labels."""
    from matplotlib.ticker import (
        FixedLocator,
        FuncFormatter,
        LogLocator,
        NullFormatter,
        NullLocator,
    )

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for on, axis, fixed in ((x, ax.xaxis, xticks), (y, ax.yaxis, None)):
        if on and axis.get_scale() == "log":
            if fixed is not None and len(fixed):
                axis.set_major_locator(FixedLocator(sorted(fixed)))
            else:
                axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(fmt)
            axis.set_minor_locator(NullLocator())
            axis.set_minor_formatter(NullFormatter())


def _ylim_from_points(ax, values) -> None:
    """A log y-range set by the points (x4 either side, at least one decade), not by the
    error bars: a t-interval from 2 seeds spans many decades and would squash the points
    and leave the axis without labelled ticks. Bars that leave the panel are cut."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return
    lo, hi = float(v.min()) / 4, float(v.max()) * 4
    if hi / lo < 10:
        mid = math.sqrt(lo * hi)
        lo, hi = mid / math.sqrt(10), mid * math.sqrt(10)
    ax.set_ylim(lo, hi)


def _num_key(v):
    """Sort key: numbers in numeric order (before any non-numbers), then text."""
    try:
        f = float(v)
        return (0, f if math.isfinite(f) else math.inf, "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def numeric_order(values) -> list:
    """Distinct values in numeric order (2 < 4 < 10, not '10' < '2')."""
    seen = {}
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        seen.setdefault(str(v), v)
    return sorted(seen.values(), key=_num_key)


def scale_colors(n: int) -> list:
    """``n`` colours along a sequential scale (viridis, light end trimmed), low to high."""
    cmap = _plt().get_cmap("viridis")
    if n <= 1:
        return [cmap(0.35)]
    return [cmap(0.9 * i / (n - 1)) for i in range(n)]


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.integer, np.floating)) else str(v)


def _geo_interval(y: np.ndarray, level: float = CI_LEVEL):
    """Geometric mean and the t-interval of the mean of log y, back-transformed."""
    ly = np.log(y[np.isfinite(y) & (y > 0)])
    if ly.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(ly.mean())
    if ly.size < 2:
        return math.exp(m), float("nan"), float("nan")
    from scipy import stats

    h = float(stats.t.ppf(0.5 + level / 2, ly.size - 1) * ly.std(ddof=1) / math.sqrt(ly.size))
    return math.exp(m), math.exp(m - h), math.exp(m + h)


def _legend_outside(fig, handles, title=None):
    """A figure legend in the right margin, clear of every axes."""
    if not handles:
        return None
    right = max(ax.get_position().x1 for ax in fig.axes)
    top = max(ax.get_position().y1 for ax in fig.axes)
    return fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(right + 0.01, top),
                      bbox_transform=fig.transFigure, fontsize=7, title=title,
                      title_fontsize=8, frameon=False, borderaxespad=0.0)


def _training_split(df: pd.DataFrame):
    """(trials whose CL trained or was not measured, trials whose CL did not train)."""
    from .claims import training_status

    status = training_status(df)
    bad = set(status.loc[status["trained"].eq(False), "trial"])
    if not bad:
        return df, df.iloc[0:0]
    m = df["trial"].isin(bad)
    return df[~m], df[m]


# ---------------------------------------------------------------------------------------
# misalignment against a grid axis


def scaling_figure(trials: pd.DataFrame, kind: str, objective: str = "nscl"):
    """The misalignment-vs-``kind`` figure (``kind``: C, tau, B). Returns (Figure | None, why).

    Panels: rows = features (backbone, projector), columns = measures. Artists carry gids:
    ``trials`` (one scatter point per trial), ``untrained`` (left out of the fit),
    ``geomean``, ``fit``, ``fit_band``, ``theory``."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    xcol = X_COLUMN[kind]
    if trials is None or trials.empty or xcol not in trials.columns:
        return None, f"no {xcol} column"
    df = trials[trials["objective"] == objective] if "objective" in trials.columns else trials
    if df.empty:
        return None, f"no {objective} rows"
    used, dropped = _training_split(df)
    xs_all = pd.to_numeric(used[xcol], errors="coerce")
    if xs_all.nunique() < 2:
        have = ", ".join(_fmt(v) for v in numeric_order(xs_all.dropna().unique()))
        return None, f"needs >= 2 distinct {xcol} among trained trials (have {have or 'none'})"
    panels = [(f, m) for f in ("backbone", "proj") for m in SCALING_MEASURES
              if metric_column(used, m.removeprefix("1-"), f) is not None]
    if not panels:
        return None, "no alignment metrics logged"
    feats = [f for f in ("backbone", "proj") if any(p[0] == f for p in panels)]
    meas = [m for m in SCALING_MEASURES if any(p[1] == m for p in panels)]
    plt = _plt()
    w = 4.3 * len(meas) + LEGEND_W_IN
    fig, axes = plt.subplots(len(feats), len(meas), figsize=(w, 3.9 * len(feats)), squeeze=False)
    _layout(fig, right_in=LEGEND_W_IN + 0.1, top_in=0.95)

    within = slice_columns(used, exclude=[xcol])
    key = (used[within].astype(str).agg("|".join, axis=1) if within
           else pd.Series("all", index=used.index))
    firsts = used.groupby(key, sort=False).first()
    order = sorted(firsts.index, key=lambda k: tuple(_num_key(firsts.loc[k, c]) for c in within))
    slice_idx = key.map({k: i for i, k in enumerate(order)}).to_numpy()
    slice_col = scale_colors(len(order)) if len(order) > 1 else ["tab:blue"]
    labels = [" ".join(f"{SHORT.get(c, c)}={_fmt(firsts.loc[k, c])}" for c in within) or "trial"
              for k in order]
    seeds = used["seed"] if "seed" in used.columns else pd.Series(0, index=used.index)
    seed_rank = seeds.map({s: i for i, s in enumerate(numeric_order(seeds.unique()))}) \
        .fillna(0).to_numpy(int)
    n_seed = int(seed_rank.max()) + 1 if seed_rank.size else 1
    slot = slice_idx * n_seed + seed_rank
    m_slots = len(order) * n_seed
    jit = (slot - (m_slots - 1) / 2) / max(1.0, (m_slots - 1) / 2) if m_slots > 1 \
        else np.zeros(len(used))
    x_raw = xs_all.to_numpy(float)
    x_plot = 1.0 / x_raw if kind == "tau" else x_raw
    span = np.nanmax(x_plot) - np.nanmin(x_plot)
    x_jit = x_plot + 0.02 * span * jit if kind == "tau" else x_plot * np.exp(0.05 * jit)
    how = "inverse" if kind == "tau" else "log"
    x_dropped = pd.to_numeric(dropped[xcol], errors="coerce").to_numpy(float)
    x_dropped = 1.0 / x_dropped if kind == "tau" else x_dropped

    for i, feat in enumerate(feats):
        for j, mname in enumerate(meas):
            ax = axes[i][j]
            ax.set_yscale("log")
            if kind != "tau":
                ax.set_xscale("log")
            ax.set_xlabel(X_AXIS_LABEL[kind], fontsize=8)
            ax.set_ylabel(f"{MEASURE_LABEL[mname]} [log scale]", fontsize=8)
            ax.grid(True, which="major", alpha=0.3)
            if (feat, mname) not in panels:
                ax.set_title(f"{MEASURE_LABEL[mname]}, {FEATURE_LABEL[feat]}: not logged",
                             fontsize=8)
                ax.set_axis_off()
                continue
            y = misalignment(used, mname, feat).to_numpy(float)
            ok = np.isfinite(y) & np.isfinite(x_raw)
            pos = ok & (y > 0)
            zero = ok & (y <= 0)
            floor = float(np.nanmin(y[pos]) / 3) if pos.any() else 1e-6
            for s in range(len(order)):
                m = ok & (slice_idx == s)
                if m.any():
                    yy = np.where(y[m] > 0, y[m], floor)
                    ax.scatter(x_jit[m], yy, s=16, color=slice_col[s], alpha=0.75,
                               edgecolor="none", zorder=3, gid="trials")
            if zero.any():
                ax.scatter(x_jit[zero], np.full(zero.sum(), floor), s=30, marker="v",
                           facecolor="none", edgecolor="k", zorder=4, gid="at_zero")
            if len(dropped):
                yd = misalignment(dropped, mname, feat)
                if yd is not None:
                    yd = yd.to_numpy(float)
                    okd = np.isfinite(yd) & (yd > 0) & np.isfinite(x_dropped)
                    if okd.any():
                        ax.scatter(x_dropped[okd], yd[okd], s=22, marker="x", color="0.55",
                                   zorder=2, gid="untrained")
            # geometric mean per x, 95% t-interval in log space
            gx, gm, lo, hi = [], [], [], []
            for xv in np.unique(x_plot[pos]):
                g, a, b = _geo_interval(y[pos & (x_plot == xv)])
                gx.append(xv)
                gm.append(g)
                lo.append(g - a if math.isfinite(a) else 0.0)
                hi.append(b - g if math.isfinite(b) else 0.0)
            if gx:
                ax.errorbar(gx, gm, yerr=[lo, hi], fmt="s", ms=6, color="k", mfc="white",
                            mew=1.3, capsize=4, elinewidth=1.3, zorder=5, gid="geomean")
            # pooled fit and theory guide, anchored at the geometric mean of the data
            title = f"{MEASURE_LABEL[mname].split(' (')[0]}, {FEATURE_LABEL[feat]}"
            if pos.sum() >= 2:
                r_pos = transform(x_raw[pos], how)
                r0, ly0 = float(r_pos.mean()), float(np.log(y[pos]).mean())
                lo_x, hi_x = np.nanmin(x_raw[pos]), np.nanmax(x_raw[pos])
                gridx = np.geomspace(lo_x, hi_x, 60)
                r = transform(gridx, how) - r0
                gplot = 1.0 / gridx if kind == "tau" else gridx
                fit = pooled_slope(used, mname, kind, objective=None, features=feat)
                if math.isfinite(fit.slope):
                    ax.plot(gplot, np.exp(ly0 + fit.slope * r), "-", color="tab:red", lw=1.6,
                            zorder=4, gid="fit")
                    c_lo, c_hi = fit.ci
                    if math.isfinite(c_lo) and math.isfinite(c_hi):
                        a, b = np.exp(ly0 + c_lo * r), np.exp(ly0 + c_hi * r)
                        ax.fill_between(gplot, np.minimum(a, b), np.maximum(a, b),
                                        color="tab:red", alpha=0.18, lw=0, zorder=1,
                                        gid="fit_band")
                        title += f"\npooled slope {fit.slope:.2f} [{c_lo:.2f}, {c_hi:.2f}]"
                    else:
                        title += f"\npooled slope {fit.slope:.2f} (no interval)"
                else:
                    title += f"\nno pooled fit ({(fit.note or fit.method)[:40]})"
                pred = predicted_slope(mname, kind)
                if math.isfinite(pred):
                    ax.plot(gplot, np.exp(ly0 + pred * r), ":", color="k", lw=1.4, zorder=4,
                            gid="theory")
                    title += f"; theory {pred:g}"
                else:
                    title += "; theory: direction only"
            ax.set_title(title, fontsize=8)
            _ylim_from_points(ax, np.concatenate([y[pos], [floor] if zero.any() else [],
                                                  gm]))
            if kind != "tau":
                _plain_log_ticks(ax, xticks=numeric_order(np.unique(x_raw[ok])))
            else:
                ax.set_xticks(sorted(np.unique(x_plot[ok])))
                _plain_log_ticks(ax, x=False)
    handles = [Line2D([], [], ls="", marker="o", color=c, label=lab)
               for c, lab in zip(slice_col, labels)]
    handles += [Line2D([], [], ls="", marker="s", mfc="white", color="k",
                       label="geometric mean, 95% t-interval (log)"),
                Line2D([], [], color="tab:red", lw=1.6, label="pooled fit (claims.csv)"),
                Patch(color="tab:red", alpha=0.18, label="95% interval of the slope"),
                Line2D([], [], color="k", ls=":", lw=1.4, label="theory slope (guide)")]
    if len(dropped):
        handles.append(Line2D([], [], ls="", marker="x", color="0.55",
                              label="CL did not train (not fitted)"))
    _legend_outside(fig, handles, title="points: one trial each")
    rule = ""
    if kind == "B" and "lr_rule" in df.columns:
        rule = f"; lr rule: {', '.join(sorted(df['lr_rule'].astype(str).unique()))}"
    pred = {"C": "rho ~ C^-1", "tau": "log rho ~ +2/tau", "B": "rho ~ B^-1/2 at fixed S_T"}[kind]
    fig.suptitle(f"CL vs {objective.upper()} misalignment against {kind} (test split, final "
                 f"evaluation). Theory: {pred}; 1 - CKA_cos twice the slope. Lines anchored at "
                 f"the geometric mean of the data{rule}", fontsize=9)
    return fig, ""


def plot_scaling(trials: pd.DataFrame, kind: str, out_dir, objective: str = "nscl"):
    """Save ``misalignment_vs_<kind>``. Returns (paths, why not drawn)."""
    fig, why = scaling_figure(trials, kind, objective)
    if fig is None:
        return [], why
    return _save(fig, out_dir, f"misalignment_vs_{kind}"), ""


# ---------------------------------------------------------------------------------------
# curves against S_T


def _color_key(c: pd.DataFrame) -> str | None:
    for k in COLOR_KEYS:
        if k in c.columns and c[k].astype(str).nunique() > 1:
            return k
    return "n_classes" if "n_classes" in c.columns else None


def curves_figure(curves: pd.DataFrame, metrics, *, logy: bool, title: str,
                  positive_after_start: bool = False):
    """One panel per (objective, metric): one line per trial against S_T (``cum_lr``),
    coloured by C (by B or tau when C is fixed) in numeric order, colour bar outside.
    Each line's gid is ``trial=<name>``. Returns (Figure | None, why)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap

    if curves is None or curves.empty:
        return None, "no curves logged"
    mets = [m for m in metrics if m in set(curves["metric"])]
    if not mets:
        return None, f"none of {', '.join(metrics)} logged"
    c = curves[(curves["objective"] != "cl") & curves["metric"].isin(mets)].copy()
    has_cum = "cum_lr" in c.columns and pd.to_numeric(c["cum_lr"], errors="coerce").notna().any()
    xcol = "cum_lr" if has_cum else "epoch"
    c["_x"] = pd.to_numeric(c[xcol], errors="coerce")
    c["value"] = pd.to_numeric(c["value"], errors="coerce")
    c = c[c["_x"].notna() & c["value"].notna()]
    if positive_after_start:
        c = c[(pd.to_numeric(c["epoch"], errors="coerce") > 0) & (c["value"] > 0)]
    if c.empty:
        return None, "no values to draw" + (" (none > 0 after epoch 0)" if positive_after_start
                                            else "")
    objs = sorted(c["objective"].unique(), key=lambda o: (OBJ_ORDER.index(o) if o in OBJ_ORDER
                                                         else len(OBJ_ORDER), o))
    key = _color_key(c)
    values = numeric_order(c[key].unique()) if key else ["all"]
    colors = scale_colors(len(values))
    index = {str(v): i for i, v in enumerate(values)}
    plt = _plt()
    fig, axes = plt.subplots(len(objs), len(mets), figsize=(4.6 * len(mets) + 1.6,
                                                            3.3 * len(objs) + 0.6),
                             squeeze=False, sharey="col")  # one scale per metric: every
    # objective, the cl_indep control included, is read against the same axis
    _layout(fig, right_in=1.55, top_in=0.75, hspace=0.75)
    for i, obj in enumerate(objs):
        for j, met in enumerate(mets):
            ax = axes[i][j]
            sub = c[(c["objective"] == obj) & (c["metric"] == met)]
            trial_keys = sub.groupby("trial")[key].first() if key else None
            for trial in sorted(sub["trial"].unique(), key=str):
                g = sub[sub["trial"] == trial].sort_values("_x")
                k = index[str(trial_keys[trial])] if key else 0
                ax.plot(g["_x"].to_numpy(), g["value"].to_numpy(), "-", marker=".", ms=3,
                        color=colors[k], lw=1.0, alpha=0.85, gid=f"trial={trial}")
            if logy:
                ax.set_yscale("log")
                _plain_log_ticks(ax, x=False)
            ax.set_xlabel(S_T_LABEL if has_cum else "epoch (cum_lr not logged)", fontsize=8)
            ax.set_ylabel(CURVE_LABEL.get(met, met), fontsize=8)
            ax.set_title(f"{obj} vs CL: {met} ({sub['trial'].nunique()} trials)", fontsize=9)
            ax.grid(True, which="major", alpha=0.3)
            ax.yaxis.set_tick_params(labelleft=True)  # shared axes keep their labels
    # discrete colour bar in numeric order, in the right margin
    w = fig.get_size_inches()[0]
    top = max(ax.get_position().y1 for ax in fig.axes)
    bottom = min(ax.get_position().y0 for ax in fig.axes)
    right = max(ax.get_position().x1 for ax in fig.axes)
    cax = fig.add_axes([right + 0.35 / w, bottom, 0.18 / w, top - bottom], label="colorbar")
    n = len(values)
    sm = ScalarMappable(norm=BoundaryNorm(np.arange(n + 1) - 0.5, n), cmap=ListedColormap(colors))
    cb = fig.colorbar(sm, cax=cax, ticks=np.arange(n))
    cb.ax.set_yticklabels([_fmt(v) for v in values], fontsize=8)
    cb.set_label(KEY_LABEL.get(key, key or "trial") if key else "all trials", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return fig, ""


def plot_alignment_curves(curves: pd.DataFrame, out_dir):
    fig, why = curves_figure(
        curves, ("cka", "rsa", "rho"), logy=False,
        title="Alignment of each objective to CL against the cumulative learning rate S_T "
              "(test split, backbone); one line per trial, colour = grid value")
    if fig is None:
        return [], ("no headline alignment curves (cka/rsa/rho) logged"
                    if why.startswith(("none of", "no curves")) else why)
    return _save(fig, out_dir, "alignment_over_epochs"), ""


def plot_param_distance(curves: pd.DataFrame, out_dir):
    fig, why = curves_figure(
        curves, ("param_dist", "param_dist_layer"), logy=True, positive_after_start=True,
        title="Parameter distance to CL against S_T (theory: log distance linear in S_T, "
              "i.e. a straight line here); one line per trial")
    if fig is None:
        return [], ("no parameter distance logged"
                    if why.startswith(("none of", "no curves")) else why)
    return _save(fig, out_dir, "param_distance"), ""


# ---------------------------------------------------------------------------------------
# bound check


def bound_figure(curves: pd.DataFrame):
    w = bound_table(curves)
    if w.empty:
        return None, "rho / cka_cos not logged"
    w = w[np.isfinite(w["rho"]) & np.isfinite(w["cka_cos"]) & (w["rho"] < 1)]
    if w.empty:
        return None, "no evaluation with rho < 1 (the bounds say nothing for rho >= 1)"
    feats = [f for f in ("backbone", "proj") if f in set(w["features"])] or \
        sorted(set(w["features"]))
    plt = _plt()
    fig, axes = plt.subplots(1, len(feats), figsize=(4.4 * len(feats) + LEGEND_W_IN, 4.3),
                             squeeze=False)
    _layout(fig, right_in=LEGEND_W_IN + 0.1)
    for j, feat in enumerate(feats):
        ax = axes[0][j]
        g = w[w["features"] == feat]
        ax.scatter(g["bound_sqrt"], g["cka_cos"], s=12, alpha=0.7, color="tab:blue",
                   label="sqrt(1 - rho^2) (tight bound)")
        ax.scatter(g["bound_ratio"], g["cka_cos"], s=12, alpha=0.7, color="tab:red", marker="x",
                   label="(1 - rho)/(1 + rho) (paper's bound)")
        ax.plot([0, 1], [0, 1], "k-", lw=0.8, label="y = x (bound met with equality)")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(min(0.0, float(g["cka_cos"].min())), 1.02)
        ax.set_xlabel("lower bound computed from rho")
        ax.set_ylabel("measured cosine-kernel CKA")
        ax.set_title(f"{FEATURE_LABEL.get(feat, feat)} ({len(g)} evaluations)", fontsize=10)
        ax.grid(True, alpha=0.3)
    _legend_outside(fig, axes[0][0].get_legend_handles_labels()[0])
    fig.suptitle("Bound check: points on or above y = x satisfy the bound (all splits, objectives, "
                 "epochs)", fontsize=10)
    return fig, ""


def plot_bounds(curves: pd.DataFrame, out_dir):
    fig, why = bound_figure(curves)
    if fig is None:
        return [], why
    return _save(fig, out_dir, "bound_check"), ""


FIGURE_NAMES = ("misalignment_vs_C", "misalignment_vs_tau", "misalignment_vs_B",
                "alignment_over_epochs", "param_distance", "bound_check")


def make_figures(trials: pd.DataFrame, curves: pd.DataFrame, results: dict | None,
                 out_dir) -> tuple[dict, dict]:
    """All figures into ``out_dir``. Returns ({name: [png, svg]}, {name: why skipped}).

    ``results`` is accepted for compatibility; the scaling figures draw the pooled fits
    of :mod:`analysis.pooled` (the ones behind ``claims.csv``), not the per-slice fits."""
    out_dir = Path(out_dir)
    made, skipped = {}, {}
    if trials is None or trials.empty:
        return {}, {n: "no analysable trials" for n in FIGURE_NAMES}
    jobs = [("misalignment_vs_C", lambda: plot_scaling(trials, "C", out_dir)),
            ("misalignment_vs_tau", lambda: plot_scaling(trials, "tau", out_dir)),
            ("misalignment_vs_B", lambda: plot_scaling(trials, "B", out_dir)),
            ("alignment_over_epochs", lambda: plot_alignment_curves(curves, out_dir)),
            ("param_distance", lambda: plot_param_distance(curves, out_dir)),
            ("bound_check", lambda: plot_bounds(curves, out_dir))]
    for name, job in jobs:
        try:
            paths, why = job()
        except Exception as e:  # noqa: BLE001 - a figure must never sink the report
            paths, why = [], f"plotting failed: {type(e).__name__}: {e}"
            _plt().close("all")
        if paths:
            made[name] = paths
        else:
            skipped[name] = why
    return made, skipped


__all__ = [
    "bound_figure",
    "curves_figure",
    "make_figures",
    "numeric_order",
    "plot_alignment_curves",
    "plot_bounds",
    "plot_param_distance",
    "plot_scaling",
    "scaling_figure",
]
