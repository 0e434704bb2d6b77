"""Figures of a sweep (matplotlib, Agg backend), each saved as PNG and SVG.

- ``misalignment_vs_C``: 1-CKA, 1-RSA, rho against C (log-log), one line per other grid
  point (tau, B...), error bars over seeds, fitted power law dashed;
- ``misalignment_vs_tau``: log misalignment against 1/tau, fitted exponential dashed;
- ``misalignment_vs_B``: log-log against B, fitted power law dashed, lr rule in the title;
- ``alignment_over_epochs``: CKA, RSA, rho to CL over epochs, one colour per objective;
- ``param_distance``: parameter distance (log) against cumulative learning rate;
- ``bound_check``: measured cosine-kernel CKA against both lower bounds, with y = x.

A figure without data is skipped and the reason returned, never an exception.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .fits import (
    MEASURES,
    X_COLUMN,
    _groupby,
    _slice_label,
    bound_table,
    misalignment,
    slice_columns,
)

MEASURE_LABEL = {"1-cka": "1 - CKA", "1-rsa": "1 - RSA", "rho": "rho (similarity-matrix distance)"}
OBJ_COLOR = {"nscl": "tab:blue", "supcon": "tab:orange", "ce": "tab:green", "cl": "tab:gray"}
FEATURE_LABEL = {"backbone": "backbone features", "proj": "normalised projector outputs"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _layout(fig, top_in=0.75, bottom_in=0.6, left_in=0.85, right_in=0.25, wspace=0.28,
            hspace=0.45):
    """Fixed margins in inches (tight_layout costs a full extra draw per figure)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left_in / w, right=1 - right_in / w, bottom=bottom_in / h,
                        top=1 - top_in / h, wspace=wspace, hspace=hspace)


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        fig.savefig(p, dpi=110 if ext == "png" else None)
        paths.append(p)
    _plt().close(fig)
    return paths


def _plain_log_ticks(ax, x=True, y=True, xticks=None):
    """Readable log axes: ticks at 1-2-5 (or at ``xticks``), plain-number labels (mathtext
    labels are slow and no clearer)."""
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


def _fit_row(scal: pd.DataFrame | None, kind, measure, features, label):
    if scal is None or scal.empty:
        return None
    r = scal[(scal["kind"] == kind) & (scal["measure"] == measure)
             & (scal["features"] == features) & (scal["slice"] == label)]
    r = r[np.isfinite(pd.to_numeric(r["slope"], errors="coerce"))]
    return None if r.empty else r.iloc[0]


def plot_scaling(trials: pd.DataFrame, scal: pd.DataFrame | None, kind: str, out_dir: Path,
                 objective: str = "nscl"):
    """Misalignment against C / tau / B. Returns (paths, note)."""
    xcol = X_COLUMN[kind]
    if trials is None or trials.empty or xcol not in trials.columns:
        return [], f"no {xcol} column"
    df = trials[trials["objective"] == objective]
    if df.empty:
        return [], f"no {objective} rows"
    if df[xcol].nunique() < 2:
        return [], f"needs >= 2 distinct {xcol} (have {', '.join(map(str, sorted(df[xcol].unique())))})"
    feats = [f for f in ("backbone", "proj")
             if any(misalignment(df, m, f) is not None for m in MEASURES)]
    if not feats:
        return [], "no alignment metrics logged"
    plt = _plt()
    fig, axes = plt.subplots(len(feats), len(MEASURES), figsize=(4.6 * len(MEASURES), 3.8 * len(feats)),
                             squeeze=False)
    slices = list(_groupby(df, slice_columns(df, exclude=[xcol])))
    cmap = plt.get_cmap("viridis")
    for i, feat in enumerate(feats):
        for j, meas in enumerate(MEASURES):
            ax = axes[i][j]
            any_line = False
            for k, (vals, sub) in enumerate(slices):
                label = _slice_label(vals)
                m = misalignment(sub, meas, feat)
                if m is None:
                    continue
                d = pd.DataFrame({"x": pd.to_numeric(sub[xcol], errors="coerce"), "y": m})
                d = d[np.isfinite(d["x"]) & np.isfinite(d["y"]) & (d["y"] > 0) & (d["x"] > 0)]
                if d.empty:
                    continue
                agg = d.groupby("x")["y"].agg(["mean", "std", "count"]).reset_index()
                xs = 1.0 / agg["x"] if kind == "tau" else agg["x"]
                color = cmap(k / max(1, len(slices) - 1)) if len(slices) > 1 else "tab:blue"
                ax.errorbar(xs, agg["mean"], yerr=agg["std"].fillna(0), fmt="o-", color=color,
                            capsize=3, ms=4, lw=1.2, label=label if label != "all" else "data")
                any_line = True
                f = _fit_row(scal, kind, meas, feat, label)
                if f is not None:
                    grid = np.linspace(xs.min(), xs.max(), 50)
                    if kind == "tau":
                        yfit = f["constant"] * np.exp(f["slope"] * grid)
                    else:
                        grid = np.geomspace(xs.min(), xs.max(), 50)
                        yfit = f["constant"] * grid ** f["slope"]
                    ax.plot(grid, yfit, "--", color=color, lw=1,
                            label=f"fit: slope {f['slope']:.2f}")
            if not any_line:
                ax.text(0.5, 0.5, "no positive values", ha="center", va="center",
                        transform=ax.transAxes)
            ax.set_yscale("log")
            if kind != "tau":
                ax.set_xscale("log")
            xl = {"C": "number of classes C", "tau": "1 / temperature (1/tau)",
                  "B": "batch size B (samples)"}[kind]
            ax.set_xlabel(xl + (" [log]" if kind != "tau" else ""))
            ax.set_ylabel(f"{MEASURE_LABEL[meas]} [log]")
            ax.set_title(f"{MEASURE_LABEL[meas].split(' (')[0]} vs {kind}, {FEATURE_LABEL[feat]}",
                         fontsize=10)
            _plain_log_ticks(ax, xticks=None if kind == "tau" else
                             sorted(pd.to_numeric(df[xcol], errors="coerce").dropna().unique()))
            ax.grid(True, which="major", alpha=0.3)
            if any_line:
                ax.legend(fontsize=7)
    rule = ""
    if kind == "B" and "lr_rule" in df.columns:
        rule = f"; lr rule: {', '.join(sorted(df['lr_rule'].astype(str).unique()))}"
    pred = {"C": "theory: slope -1 (log-log)", "tau": "theory: log-misalignment slope about +2 in 1/tau",
            "B": "theory: slope -1/2 at fixed cumulative lr"}[kind]
    fig.suptitle(f"CL vs {objective.upper()} misalignment against {kind} (test split; mean ± s.d. "
                 f"over seeds; dashed: fit) - {pred}{rule}", fontsize=10)
    _layout(fig)
    return _save(fig, out_dir, f"misalignment_vs_{kind}"), ""


def plot_alignment_curves(curves: pd.DataFrame, out_dir: Path):
    metrics = [m for m in ("cka", "rsa", "rho") if curves is not None and not curves.empty
               and m in set(curves["metric"])]
    if not metrics:
        return [], "no headline alignment curves (cka/rsa/rho) logged"
    c = curves[(curves["objective"] != "cl") & curves["metric"].isin(metrics)]
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 3.8), squeeze=False)
    slice_cols = slice_columns(c)
    for j, met in enumerate(metrics):
        ax = axes[0][j]
        cm = c[c["metric"] == met]
        for obj, co in cm.groupby("objective", sort=False):
            color = OBJ_COLOR.get(obj, None)
            per_point = []
            for vals, sub in _groupby(co, slice_cols):
                mean = sub.groupby("epoch")["value"].mean()
                per_point.append(mean)
                if len(slice_cols):
                    ax.plot(mean.index, mean.values, "-", color=color, lw=0.7, alpha=0.35)
            allm = pd.concat(per_point, axis=1).mean(axis=1).sort_index()
            ax.plot(allm.index, allm.values, "o-", color=color, lw=2, ms=3,
                    label=f"{obj} vs cl" + (" (mean over grid)" if slice_cols else ""))
        ax.set_xlabel("epoch")
        ax.set_ylabel({"cka": "linear CKA to CL", "rsa": "RSA (Spearman) to CL",
                       "rho": "rho (similarity-matrix distance)"}[met])
        ax.set_title(f"{met if met == 'rho' else met.upper()} over training (test split, "
                     "backbone)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    note = " thin lines: one grid point each (mean over seeds)" if slice_cols else ""
    fig.suptitle("Alignment of each objective to CL over epochs." + note, fontsize=10)
    _layout(fig)
    return _save(fig, out_dir, "alignment_over_epochs"), ""


def plot_param_distance(curves: pd.DataFrame, out_dir: Path):
    mets = [m for m in ("param_dist", "param_dist_layer") if curves is not None
            and not curves.empty and m in set(curves["metric"])]
    if not mets:
        return [], "no parameter distance logged"
    c = curves[(curves["objective"] != "cl") & curves["metric"].isin(mets)].copy()
    has_cum = "cum_lr" in c.columns and pd.to_numeric(c["cum_lr"], errors="coerce").notna().any()
    xcol = "cum_lr" if has_cum else "epoch"
    c = c[(pd.to_numeric(c["epoch"], errors="coerce") > 0) & (c["value"] > 0)]
    if c.empty:
        return [], "parameter distance is never > 0 after epoch 0"
    plt = _plt()
    fig, axes = plt.subplots(1, len(mets), figsize=(5.2 * len(mets), 3.9), squeeze=False)
    by_b = "batch_size" in c.columns and c["batch_size"].nunique() > 1
    keys = sorted(c["batch_size"].unique()) if by_b else sorted(c["objective"].unique())
    cmap = plt.get_cmap("plasma")
    for j, met in enumerate(mets):
        ax = axes[0][j]
        seen = set()
        for (trial, obj), g in c[c["metric"] == met].groupby(["trial", "objective"]):
            k = g["batch_size"].iloc[0] if by_b else obj
            color = (cmap(keys.index(k) / max(1, len(keys) - 1) * 0.85) if by_b
                     else OBJ_COLOR.get(obj))
            lab = (f"B={k}" if by_b else f"{obj} vs cl") if k not in seen else None
            seen.add(k)
            g = g.sort_values("epoch")
            ax.plot(g[xcol], g["value"], "-", marker=".", color=color, lw=0.9, alpha=0.8,
                    label=lab)
        ax.set_yscale("log")
        _plain_log_ticks(ax)
        ax.set_xlabel("cumulative learning rate S_T (sum of per-step lr)" if has_cum else
                      "epoch (cum_lr not logged)")
        ax.set_ylabel({"param_dist": "relative distance ||θ_CL − θ_X|| / ||θ_CL|| [log]",
                       "param_dist_layer": "per-layer mean relative distance [log]"}[met],
                      fontsize=8)
        ax.set_title(f"{met}: one line per trial", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Parameter distance to CL over training (theory: straight line, log distance "
                 "linear in S_T)", fontsize=10)
    _layout(fig)
    return _save(fig, out_dir, "param_distance"), ""


def plot_bounds(curves: pd.DataFrame, out_dir: Path):
    w = bound_table(curves)
    if w.empty:
        return [], "rho / cka_cos not logged"
    w = w[np.isfinite(w["rho"]) & np.isfinite(w["cka_cos"]) & (w["rho"] < 1)]
    if w.empty:
        return [], "no evaluation with rho < 1 (the bounds say nothing for rho >= 1)"
    feats = [f for f in ("backbone", "proj") if f in set(w["features"])] or \
        sorted(set(w["features"]))
    plt = _plt()
    fig, axes = plt.subplots(1, len(feats), figsize=(4.6 * len(feats), 4.3), squeeze=False)
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
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Bound check: points on or above y = x satisfy the bound (all splits, objectives, "
                 "epochs)", fontsize=10)
    _layout(fig)
    return _save(fig, out_dir, "bound_check"), ""


def make_figures(trials: pd.DataFrame, curves: pd.DataFrame, results: dict | None,
                 out_dir) -> tuple[dict, dict]:
    """All figures into ``out_dir``. Returns ({name: [png, svg]}, {name: why skipped})."""
    out_dir = Path(out_dir)
    scal = (results or {}).get("scaling")
    made, skipped = {}, {}
    if trials is None or trials.empty:
        why = "no analysable trials"
        return {}, {n: why for n in ("misalignment_vs_C", "misalignment_vs_tau",
                                     "misalignment_vs_B", "alignment_over_epochs",
                                     "param_distance", "bound_check")}
    jobs = [("misalignment_vs_C", lambda: plot_scaling(trials, scal, "C", out_dir)),
            ("misalignment_vs_tau", lambda: plot_scaling(trials, scal, "tau", out_dir)),
            ("misalignment_vs_B", lambda: plot_scaling(trials, scal, "B", out_dir)),
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
    "make_figures",
    "plot_alignment_curves",
    "plot_bounds",
    "plot_param_distance",
    "plot_scaling",
]
