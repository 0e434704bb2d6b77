"""The sweep report: tables, fits, figures and ``report.md``, logged to the parent run.

``write_report(experiment)`` loads the sweep once (MLflow or a Ray Tune results directory),
writes ``trials.csv``, ``curves.csv``, ``fits.csv`` (+ ``param_growth_trials.csv``,
``bounds.csv``, ``objectives.csv``), ``figures/*.png|svg`` and ``report.md`` into the output
folder, then logs them as artifacts (under ``analysis/``) of the sweep's parent MLflow run.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import claims as _claims
from . import figures as _figures
from . import fits as _fits
from .tables import Sweep, curves_table, load_sweep, trials_table

CLAIMS = {
    "1": "Representations stay aligned: CKA and RSA between CL and NSCL stay high, and the gap "
         "shrinks with more classes (C up), higher temperature (tau up) and larger batches (B up).",
    "2": "Parameters do not: the distance between the two models' weights grows fast "
         "(exponentially in cumulative step size) even while representations stay aligned.",
    "3": "NSCL is the closest supervised proxy: under the same shared randomness NSCL tracks CL "
         "more closely (higher CKA/RSA to CL) than SupCon and CE do.",
    "bound": "Cosine-kernel CKA >= sqrt(1 - rho^2) >= (1 - rho)/(1 + rho) whenever rho < 1 "
             "(rho = ||H(S_CL - S_X)H||_F / ||H S_CL H||_F).",
}
REFERENCE_NUMBERS = [
    ("CL vs NSCL after 300 epochs, ResNet-50: CIFAR-10 RSA 0.84 / CKA 0.81; CIFAR-100 RSA 0.91 / "
    "CKA 0.91; mini-ImageNet RSA 0.88 / CKA 0.87 (read from plots, +-0.02)."),
    "Temperature, CIFAR-100, epoch 300: CKA about 0.85 at tau 0.1, 0.95 at 0.5, 0.97 at 1.0.",
    "Classes, CIFAR-10, epochs 500-1000: RSA about 0.44 at C = 2 rising to about 0.68 at C = 10.",
    ("Weight-space distance (per-layer form) rises roughly linearly in log(epoch) and saturates "
    "(about 0.9 by epoch 1000), while representation alignment stays high."),
    ("Early in training NSCL is far closer to CL (CKA about 0.9 at epoch 10) than CE (about 0.4) "
    "or SupCon (about 0.3)."),
]


# ---------------------------------------------------------------------------------------
# formatting


def _num(x, d=3) -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return "n/a" if x is None else str(x)
    if not math.isfinite(f):
        return "n/a"
    if f != 0 and (abs(f) < 10 ** -d or abs(f) >= 1e5):
        return f"{f:.{d}g}" if abs(f) >= 1e5 else f"{f:.2e}"
    return f"{f:.{d}f}"


def _ci(lo, hi, d=2) -> str:
    if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float))
            and math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"[{_num(lo, d)}, {_num(hi, d)}]"


def _md_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _values(df: pd.DataFrame, col: str) -> str:
    if df is None or df.empty or col not in df.columns:
        return "n/a"
    vals = df[col].dropna().unique().tolist()
    try:
        vals = sorted(vals)
    except TypeError:
        vals = sorted(vals, key=str)
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals) or "n/a"


def _cl_variant(df: pd.DataFrame) -> str:
    if df is None or df.empty or "include_positive" not in df.columns:
        return "not recorded (include_positive missing)"
    vals = set(df["include_positive"].dropna().map(lambda v: str(v).lower() in ("true", "1")))
    names = {False: "decoupled CL (the paper's form: the positive is not in the denominator; "
                    "include_positive=False)",
             True: "NT-Xent (SimCLR / reference code: the positive is in the denominator; "
                   "include_positive=True)"}
    if not vals:
        return "not recorded"
    if len(vals) > 1:
        return "MIXED within this sweep: " + " and ".join(names[v] for v in sorted(vals))
    return names[vals.pop()]


# ---------------------------------------------------------------------------------------
# sections


def _section_setup(sweep: Sweep, trials, curves) -> list[str]:
    out = ["## Set-up", ""]
    if sweep.kind == "mlflow":
        out.append(f"- Source: MLflow experiment `{sweep.name}` (id {sweep.experiment_id}) in "
                   f"`{sweep.tracking_uri}`; parent run `{sweep.parent_run_id or 'none'}`.")
    else:
        out.append(f"- Source: Ray Tune results directory `{sweep.path}`.")
    n_all = len(sweep.records)
    n_inc = len(sweep.included)
    out.append(f"- Trials: {n_all} found, {n_inc} analysed, {n_all - n_inc} left out as failed "
               "or non-finite (listed below). Trials whose CL did not train stay in the tables "
               "and figures but are left out of the claim tests (see Controls).")
    if trials is not None and not trials.empty:
        out += [(f"- Dataset: {_values(trials, 'dataset')}; architecture: {_values(trials, 'arch')}; "
                f"epochs: {_values(trials, 'epochs')}."),
                f"- Compared with CL: {_values(trials, 'objective')}.",
                f"- CL variant: {_cl_variant(trials)}.",
                (f"- Learning-rate rule: {_values(trials, 'lr_rule')} (base lr "
                f"{_values(trials, 'lr')} at B = 256); optimiser {_values(trials, 'optimizer')}."),
                (f"- Grid: tau in {{{_values(trials, 'tau')}}}, B in "
                f"{{{_values(trials, 'batch_size')}}}, C in {{{_values(trials, 'n_classes')}}}, "
                f"seeds {{{_values(trials, 'seed')}}}."),
                ("- Headline metrics are on the test split with backbone features (the reference's "
                "choice); `proj` rows use the normalised projector outputs (the theory's object).")]
    for n in sweep.notes:
        out.append(f"- Note: {n}.")
    out.append("")
    out += ["## Excluded trials (failed or non-finite)", ""]
    if sweep.excluded:
        out.append(f"{len(sweep.excluded)} trial(s) left out of every table and fit:")
        out.append("")
        out.append(_md_table(["trial", "reason"], [[n, r] for n, r in sweep.excluded]))
    else:
        out.append("None: every trial finished with finite metrics.")
    out.append("")
    return out


def _scaling_rows(scal: pd.DataFrame, kind: str) -> list[list]:
    rows = []
    sub = scal[scal["kind"] == kind] if not scal.empty else scal
    for _, r in sub.iterrows():
        fitted = isinstance(r["slope"], float) and math.isfinite(r["slope"])
        rows.append([r["measure"], r["features"], r["slice"], int(r["n"]) if r["n"] else 0,
                     r.get("x_values", "") if isinstance(r.get("x_values", ""), str) else "",
                     _num(r["slope"], 2) if fitted else "n/a",
                     _ci(r["ci_low"], r["ci_high"]), _num(r["r2"], 2) if fitted else "n/a",
                     r["verdict"], r.get("note", "") or ""])
    return rows


def _section_claim1(trials, scal) -> list[str]:
    out = ["## Claim 1: representations stay aligned (per-slice fits, descriptive)", "",
           f"> {CLAIMS['1']}", "",
           ("The fits below are per slice and DESCRIPTIVE: 2-3 points each, many of them, no "
           "multiple-comparison control; the primary test of each axis is the pooled fit above. "
           "`slice_fits.csv` has the same fits with Holm-adjusted p-values."), ""]
    if trials is None or trials.empty:
        return out + ["No analysable trials.", ""]
    nscl = trials[trials["objective"] == "nscl"] if "objective" in trials else trials.iloc[0:0]
    if nscl.empty:
        return out + ["NSCL was not trained in this sweep: claim 1 cannot be checked.", ""]
    # final alignment per grid point
    cols = _fits.slice_columns(nscl)  # the grid columns that vary (seeds pooled)
    mets = [(m, _fits.metric_column(nscl, m)) for m in ("cka", "cka_debiased", "rsa", "rho")]
    mets = [(m, c) for m, c in mets if c is not None]
    if mets:
        out.append("Final CL-NSCL alignment (test split, backbone features; mean over seeds, "
                   "95% t-interval in brackets):")
        out.append("")
        rows = []
        for _, g in nscl.groupby(cols, sort=True, dropna=False) if cols else [(None, nscl)]:
            r = [(f"{g[c].iloc[0]:g}" if isinstance(g[c].iloc[0], float) else g[c].iloc[0])
                 for c in cols]
            r.append(len(g))
            for _, c in mets:
                m, ci, n = _fits.t_interval(pd.to_numeric(g[c], errors="coerce"))
                r.append(f"{_num(m)} {_ci(*ci, d=3)}" if n > 1 else _num(m))
            rows.append(r)
        head = [{"batch_size": "B", "n_classes": "C"}.get(c, c) for c in cols]
        out.append(_md_table(head + ["seeds"] + [m for m, _ in mets], rows))
        out.append("")
    titles = {"C": "Against the number of classes C (theory: misalignment ~ 1/C, slope -1 "
                   "on log-log)",
              "tau": "Against temperature (theory: log misalignment linear in 1/tau with "
                     "positive slope, about 2)",
              "B": "Against batch size (theory: misalignment ~ B^-1/2 at fixed cumulative "
                   "learning rate)"}
    head = ["measure", "features", "slice", "n", "grid values", "slope", "95% CI", "R^2", "verdict",
            "note"]
    for kind in ("C", "tau", "B"):
        out += [f"### {titles[kind]}", ""]
        rows = _scaling_rows(scal, kind) if scal is not None else []
        if kind == "B" and "lr_rule" in nscl.columns:
            out.append(f"Learning-rate rule of these runs: **{_values(nscl, 'lr_rule')}** "
                       "(linear scaling keeps the cumulative lr per epoch fixed across B; "
                       "other rules change it, and then the B^-1/2 form does not apply as is).")
            out.append("")
        if kind == "tau":
            out.append("Slope = d log(misalignment) / d(1/tau); constant and slope are free.")
            out.append("")
        xcol = _fits.X_COLUMN[kind]
        distinct = nscl[xcol].nunique() if xcol in nscl.columns else 0
        if distinct < _fits.MIN_DISTINCT_X:
            have = _values(nscl, xcol)
            out.append(f"Not fitted: needs >= {_fits.MIN_DISTINCT_X} distinct {kind} "
                       f"(this sweep has {have}).")
            out.append("")
            continue
        sub = scal[scal["kind"] == kind] if scal is not None and not scal.empty else None
        if sub is not None and len(sub):
            v = sub["verdict"].astype(str)
            fitted = sub[v != "not fitted"]
            counts = [(int((v == "consistent").sum()), "consistent"),
                      (int(v.str.startswith("consistent, uninformative").sum()),
                       "consistent but uninformative (CI also includes 0)"),
                      (int(v.str.startswith("not consistent").sum()), "not consistent"),
                      (int(v.str.startswith("undetermined").sum()), "with a slope but no CI"),
                      (int((v == "not fitted").sum()), "not fitted")]
            out.append(f"Summary over {len(sub)} fits (predicted slope "
                       f"{_fits.PREDICTED[kind]:g}): "
                       + ", ".join(f"{n} {what}" for n, what in counts if n) + ".")
            if kind == "tau" and len(fitted):
                lo = pd.to_numeric(fitted["ci_low"], errors="coerce")
                with_ci = int(lo.notna().sum())
                pos = int((lo > 0).sum())
                out.append(f"Sign: {pos} of {with_ci} slopes with an interval positive at 95% "
                           f"({len(fitted) - with_ci} fits have no interval; "
                           f"{int((pd.to_numeric(fitted['slope'], errors='coerce') > 0).sum())} "
                           f"of {len(fitted)} point slopes positive).")
            out.append("")
        out.append(_md_table(head, rows) if rows else "No fit rows.")
        out.append("")
    out.append("Reading notes: misalignment measures are 1 - CKA, 1 - RSA and rho, each at the "
               "last evaluated epoch. CIs (95%) are the hull of a bootstrap over seeds (over rows "
               "with a single seed) and the classical t-interval (over per-seed slopes), since a "
               "bootstrap over a few seeds alone is far too narrow; `fits.csv` names the method "
               "of each row (`ci_method`). For the cosine-kernel CKA, 1 - CKA is about rho^2 / 2 for small "
               "rho, so if rho ~ 1/C then 1 - CKA of that kernel falls like 1/C^2; linear CKA of "
               "raw backbone features has no such exact link.")
    out.append("")
    return out


def _section_claim2(trials, growth, per_trial) -> list[str]:
    out = ["## Claim 2: parameters drift apart", "", f"> {CLAIMS['2']}", ""]
    if growth is None or growth.empty:
        why = ("no parameter distance logged" if per_trial is None or per_trial.empty else
               "no trial had >= 2 evaluations with distance > 0 after epoch 0")
        return out + [f"Not fitted: {why}.", ""]
    out.append("Growth rate L in distance ~ exp(L S_T): slope of log(distance) against the "
               "cumulative learning rate S_T, fitted per trial (epoch 0 skipped, distance 0 by "
               "construction), then mean and 95% t-interval over trials (seeds) of a grid point. "
               "The theory predicts a positive rate with no batch-size damping in the exponent "
               "(compare the rows of different B).")
    out.append("")
    shown = growth[growth["objective"] == "nscl"] if (growth["objective"] == "nscl").any() \
        else growth
    if len(shown) < len(growth):
        out.append("CL vs NSCL below; the other objectives' rates are in `fits.csv` "
                   "(kind `param_growth`).")
        out.append("")
    rows = []
    for _, r in shown.iterrows():
        rows.append([r["objective"], r["measure"], r["slice"], r["n_groups"],
                     _num(r["slope"], 3), _ci(r["ci_low"], r["ci_high"], 3), _num(r["r2"], 2),
                     r["verdict"], r.get("note", "") or ""])
    out.append(_md_table(["objective", "distance", "slice", "trials", (f"rate per unit "
                          f"{growth['x'].iloc[0]}"), "95% CI", "mean R^2", "verdict", "note"], rows))
    out.append("")
    if trials is not None and not trials.empty:
        pd_col = "param_dist" if "param_dist" in trials.columns else None
        cka = _fits.metric_column(trials, "cka")
        if pd_col and cka:
            rows = []
            for obj, g in trials.groupby("objective", sort=False):
                rows.append([obj, len(g), _num(pd.to_numeric(g[pd_col]).mean()),
                             _num(pd.to_numeric(g.get("param_dist_layer", pd.Series(dtype=float)),
                                                errors="coerce").mean()),
                             _num(pd.to_numeric(g[cka]).mean())])
            out.append("At the last epoch, side by side (mean over all analysed trials):")
            out.append("")
            out.append(_md_table(["objective", "trials", "param_dist", "param_dist_layer",
                                  "CKA to CL"], rows))
            out.append("")
    low_r2 = per_trial["r2"].dropna() if per_trial is not None and "r2" in per_trial else []
    if len(low_r2) and float(np.median(low_r2)) < 0.8:
        out.append(f"Note: median per-trial R^2 is {_num(float(np.median(low_r2)), 2)}: the "
                   "distance is not a clean exponential in S_T here (the reference sees growth "
                   "that saturates).")
        out.append("")
    return out


def _section_bound(bounds) -> list[str]:
    out = ["## The bound: cosine-kernel CKA against rho", "", f"> {CLAIMS['bound']}", ""]
    if bounds is None or bounds.empty:
        return out + ["Not checked: rho / cka_cos were not logged.", ""]
    rows = [[r["objective"], r["split"], r["features"], r["n_evals"], r["n_rho_ge_1"],
             f"{r['n_sqrt_holds']} ({_num(r['frac_sqrt_holds'], 3)})",
             f"{r['n_ratio_holds']} ({_num(r['frac_ratio_holds'], 3)})",
             _num(r["min_margin_sqrt"], 3), _num(r["min_margin_ratio"], 3)]
            for _, r in bounds.iterrows()]
    out.append("Over every evaluation (all epochs) with rho < 1; a bound holds when cka_cos >= "
               f"bound - {_fits.BOUND_TOL:g}. Margin = cka_cos - bound (negative = violated).")
    out.append("")
    out.append(_md_table(["objective", "split", "features", "evals (rho<1)", "evals rho>=1",
                          "sqrt bound holds", "ratio bound holds", "min margin sqrt",
                          "min margin ratio"], rows))
    out.append("")
    total = int(bounds["n_evals"].sum())
    bad = int((bounds["n_evals"] - bounds["n_sqrt_holds"]).sum())
    if total:
        out.append("sqrt(1 - rho^2) is a geometric identity for these kernels (cosine of the angle "
                   "between two vectors at relative distance rho), so "
                   + (f"its {bad} violation(s) point to a metric bug, not to the theory."
                      if bad else "it holding everywhere is the expected sanity check; the "
                      "ratio bound is weaker still."))
        out.append("")
    return out


def _section_claim3(comp) -> list[str]:
    out = ["## Claim 3: NSCL is the closest supervised proxy", "", f"> {CLAIMS['3']}", ""]
    if comp is None or comp.empty:
        return out + ["Not checked: no CKA/RSA values.", ""]
    objs = sorted(set(comp["objective"]))
    if set(objs) <= {"nscl"}:
        return out + [("Not checked: only NSCL was compared with CL; claim 3 needs `supcon` "
                      "and/or `ce` in the objectives."), ""]
    rows = []
    for (at, sl, met), g in comp.groupby(["at", "slice", "metric"], sort=False):
        cells = "; ".join(f"{r['objective']} {_num(r['mean'])} {_ci(r['ci_low'], r['ci_high'], 3)}"
                          for _, r in g.sort_values("rank").iterrows())
        h = g["nscl_highest"].iloc[0]
        s = g["separated"].iloc[0]
        if h is None or (isinstance(h, float) and math.isnan(h)):
            v = g["note"].iloc[0] or "n/a"
        elif h:
            has_ci = g["ci_low"].notna().all()
            v = "NSCL highest" + ((" (CI above all others)" if s else " (CIs overlap)")
                                  if has_ci else " (point means only: no interval)")
        else:
            v = f"NSCL NOT highest (highest: {g.sort_values('rank')['objective'].iloc[0]})"
        rows.append([at, sl, met.upper(), cells, v])
    out.append("Mean over seeds with 95% t-interval, ranked; `final` is the last epoch, "
               "`epoch k` the first evaluation after initialisation:")
    out.append("")
    out.append(_md_table(["when", "grid point", "metric", "objectives (mean [CI])", "verdict"],
                         rows))
    out.append("")
    fin = comp[(comp["at"] == "final") & comp["nscl_highest"].notna()]
    if not fin.empty:
        keys = fin.drop_duplicates(["slice", "metric"])
        k = int(keys["nscl_highest"].astype(bool).sum())
        out.append(f"At the final epoch NSCL has the highest mean in {k} of {len(keys)} "
                   "(grid point, metric) cases.")
        out.append("")
    return out


def _section_answer(claims: pd.DataFrame, details: dict) -> list[str]:
    """The report opens with its answer: one row per claim, and what the data can carry."""
    out = ["## Answer: one row per claim", "", _claims.power_banner(claims, details), ""]
    if claims is None or claims.empty:
        return out + ["No claim could be tested on this sweep.", ""]
    rows = []
    for _, r in claims.iterrows():
        pred = r["predicted"]
        rows.append([r["claim"], r["measure"], _num(r["estimate"], 3),
                     _ci(_claims._num(r["ci_low"]), _claims._num(r["ci_high"]), 3),
                     pred if isinstance(pred, str) else _num(pred, 2), _num(r["bound_local"], 2),
                     r["verdict"], _num(r["n_trials"], 0), _num(r["n_seeds"], 0),
                     r["note"] if isinstance(r["note"], str) else ""])
    out.append(_md_table(["claim", "measure", "estimate", "95% CI", "predicted",
                          "bound's local", "verdict", "trials", "seeds", "note"], rows))
    out += ["", ("Claim-1 rows are one pooled regression over all trials (the trial as the unit, "
            "the other grid axes as free slice effects, `pooled_fits.csv`); the direction is the "
            "firm prediction, the magnitude is read against the asymptotic slope and against the "
            "bound's own local slope on this grid (from each trial's logged S_T, tau, C, B). "
            "The same rows are in `claims.csv`."), ""]
    return out


def _section_pooled(details: dict) -> list[str]:
    out = ["## Claim 1, primary tests: pooled fits", ""]
    p = details.get("pooled")
    if p is None or p.empty:
        return out + ["No pooled fit: no alignment metrics or fewer than 2 values of any axis.", ""]
    rows = [[r["axis"], r["measure"], r["features"], _num(r["slope"], 3),
             _ci(r["ci_low"], r["ci_high"]), _num(r["predicted"], 2), _num(r["bound_local"], 2),
             r["verdict"], int(r["n"]), r["n_at_floor"], r["pooling"], r["method"],
             (f"{_num(r['cum_lr_min'], 3)}-{_num(r['cum_lr_max'], 3)}"
              + (" (differs across x)" if r["s_t_warning"] else ""))]
            for _, r in p.iterrows()]
    out.append(_md_table(["axis", "measure", "features", "slope", "95% CI", "predicted",
                          "bound's local", "verdict", "n", "rows <= 0", "pooling", "interval",
                          "S_T range"], rows))
    out += ["", ("Rows at or below 0 are kept: such fits switch to a log-link quasi-Poisson GLM "
            "(PPML). `pooling` is an F-test of slope-by-slice interactions: where it is rejected "
            "the common slope is an average over different slopes."), ""]
    warn = p[p["s_t_warning"].astype(str) != ""]
    if len(warn):
        out += [f"S_T warning: {warn['s_t_warning'].iloc[0]}.", ""]
    return out


def _section_controls(trials, details: dict) -> list[str]:
    out = ["## Controls: learned alignment versus inertia", ""]
    st = details.get("status")
    if st is None or st.empty or st["trained"].isna().all():
        out += [("Drift from init (init_cka, knn_gain) was not logged: no trial could be checked "
                "for training; all are used."), ""]
    else:
        bad = st[st["trained"].eq(False)]
        out.append(f"A trial's CL \"did not train\" when its final init_cka > "
                   f"{_claims.INIT_CKA_MAX:g} or knn_gain <= {_claims.KNN_GAIN_MIN:g}; such "
                   f"trials are left out of every claim test. {len(bad)} of {len(st)} did not "
                   "train" + (":" if len(bad) else "."))
        out.append("")
        if len(bad):
            out.append(_md_table(["trial (did not train)", "CL init_cka", "CL knn_gain", "reason"],
                                 [[r["trial"], _num(r["cl_init_cka"]), _num(r["cl_knn_gain"]),
                                   r["reason"]] for _, r in bad.iterrows()]))
            out.append("")
    c = details.get("control")
    if c is not None and not c.empty:
        out.append("CL-vs-NSCL rho as a fraction of CL-vs-cl_indep rho (the uncoupled control), "
                   "paired within each trial; below 1 means the shared batches and views buy "
                   "alignment beyond a shared start:")
        out.append("")
        out.append(_md_table(["C", "trials", "ratio (geometric mean)", "95% CI", "note"],
                             [[r["n_classes"], r["n_trials"], _num(r["ratio"]),
                               _ci(r["ci_low"], r["ci_high"], 3), r["note"]]
                              for _, r in c.iterrows()]))
        out.append("")
    else:
        out += [("No `cl_indep` control in this sweep: CL-vs-NSCL alignment cannot be read "
                "against what a shared start alone buys."), ""]
    used = details.get("used")
    if used is not None and "eval_rows" in used.columns:
        ev = pd.to_numeric(used["eval_rows"], errors="coerce").dropna()
        kb = pd.to_numeric(used.get("knn_bank_rows", pd.Series(dtype=float)),
                           errors="coerce").dropna()
        out += [f"Evaluation sample per trial: {_num(ev.min(), 0)}-{_num(ev.max(), 0)} rows per "
                "split behind the alignment metrics"
                + (f"; kNN bank {_num(kb.min(), 0)}-{_num(kb.max(), 0)} rows" if len(kb) else "")
                + ". Biased CKA is inflated at small n: compare `1-cka_debiased` rows.", ""]
    return out


def _section_growth_forms(details: dict) -> list[str]:
    out = ["### Claim 2: growth form per trial", ""]
    g = details.get("growth")
    if g is None or g.empty:
        return out + ["No parameter-distance curves with cum_lr.", ""]
    rows = [[r["trial"], r["n_points"], _num(r["rate"]), r.get("best", "n/a"),
             _num(r["delta_aic"], 2), _num(r["fold_change"]), r["note"]]
            for _, r in g.iterrows()]
    out.append("Exponential (log d linear in S_T), power law (log d linear in log S_T) and "
               "saturating (d = A(1 - exp(-S_T/k))) fitted to each trial's NSCL distance after "
               "epoch 0; best by AIC, with its lead over the runner-up:")
    out.append("")
    out.append(_md_table(["trial", "points", "exp. rate", "best", "AIC lead", "fold change",
                          "note"], rows))
    out.append("")
    return out


def _section_paired(details: dict) -> list[str]:
    out = ["### Claim 3: paired differences within each trial", ""]
    p = details.get("paired")
    if p is None or p.empty:
        return out + ["Not tested: needs NSCL and SupCon or CE in the objectives.", ""]
    rows = [[r["at"], r["contrast"], r["metric"].upper(), r["grid_point"], r["n_trials"],
             _num(r["mean_diff"]), _ci(r["ci_low"], r["ci_high"], 3),
             f"{r['n_positive']}/{r['n_trials']}", _num(r["sign_test_p"], 3), r["verdict"]]
            for _, r in p.iterrows()]
    out.append("NSCL minus the other proxy (positive = NSCL closer to CL), paired within each "
               "trial (the objectives share its init, batches and views); `all` pools every "
               "trial (sign test). Early rows use each trial's own first evaluation after epoch 0.")
    out.append("")
    out.append(_md_table(["when", "contrast", "metric", "grid point", "trials", "mean diff",
                          "95% CI", "positive", "sign-test p", "verdict"], rows))
    out.append("")
    return out


def _section_reference(trials) -> list[str]:
    out = ["## Published anchors (SCIENCE.md section 7)", ""]
    out += [f"- {s}" for s in REFERENCE_NUMBERS]
    out.append("")
    if trials is not None and not trials.empty and "objective" in trials.columns:
        n = trials[trials["objective"] == "nscl"]
        cka, rsa = _fits.metric_column(n, "cka"), _fits.metric_column(n, "rsa")
        if not n.empty and cka and rsa:
            out.append(f"This sweep (dataset {_values(n, 'dataset')}, {_values(n, 'epochs')} "
                       f"epochs, arch {_values(n, 'arch')}): final CL-NSCL CKA "
                       f"{_num(pd.to_numeric(n[cka]).min())}-{_num(pd.to_numeric(n[cka]).max())}, "
                       f"RSA {_num(pd.to_numeric(n[rsa]).min())}-"
                       f"{_num(pd.to_numeric(n[rsa]).max())} over its grid. The anchors come from "
                       "full-scale runs (ResNet-50, hundreds of epochs); a smaller sweep is "
                       "compared with them only in trend, not in value.")
            out.append("")
    return out


def _section_figures(made: dict, skipped: dict, out_dir: Path) -> list[str]:
    out = ["## Figures", ""]
    for name, paths in made.items():
        png = Path(paths[0]).relative_to(out_dir).as_posix()
        svg = Path(paths[1]).relative_to(out_dir).as_posix() if len(paths) > 1 else ""
        out.append(f"![{name}]({png})")
        out.append("")
        out.append(f"`{png}`" + (f", `{svg}`" if svg else ""))
        out.append("")
    for name, why in skipped.items():
        out.append(f"- {name}: not drawn ({why}).")
    out.append("")
    return out


# ---------------------------------------------------------------------------------------
# artifacts


def _parent_for_logging(sweep: Sweep, experiment: str | None, tracking_uri: str | None):
    """(tracking uri, parent run id) to log to, or (None, reason)."""
    if sweep.kind == "mlflow":
        if sweep.parent_run_id:
            return sweep.tracking_uri, sweep.parent_run_id
        return None, "the experiment has no parent run"
    # a Ray directory: log only where an MLflow experiment of that name already exists
    from .tables import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        return None, "results read from a Ray directory; no MLflow store to log to"
    name = experiment if experiment and not os.path.isdir(str(experiment)) else sweep.name
    try:
        from .tables import _all_runs, _mlflow_client

        client = _mlflow_client(uri)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            return None, f"no MLflow experiment {name!r} to log to"
        runs = [r for r in _all_runs(client, exp.experiment_id)
                if not r.data.tags.get("mlflow.parentRunId")]
        if not runs:
            return None, f"MLflow experiment {name!r} has no parent run"
        return uri, max(runs, key=lambda r: r.info.start_time or 0).info.run_id
    except Exception as e:  # noqa: BLE001 - logging is a courtesy for Ray-only sweeps
        return None, f"could not reach MLflow ({type(e).__name__}: {e})"


def _log_artifacts(uri: str, run_id: str, out_dir: Path, files: list[Path]) -> None:
    from .tables import _mlflow_client

    client = _mlflow_client(uri)
    for f in files:
        rel = f.parent.relative_to(out_dir).as_posix()
        client.log_artifact(run_id, str(f), "analysis" if rel == "." else f"analysis/{rel}")


# ---------------------------------------------------------------------------------------


def write_report(experiment=None, tracking_uri: str | None = None, out_dir=None,
                 results_dir=None, n_boot: int = 2000, log_artifacts: bool = True,
                 figures: bool = True) -> Path:
    """Analyse a sweep and write its report; returns the path of ``report.md``.

    ``experiment``: MLflow experiment name (or a Ray Tune results directory path);
    ``results_dir``: read this Ray Tune results directory instead of MLflow;
    ``out_dir``: default ``./analysis_out/<experiment>``; ``n_boot``: bootstrap resamples;
    ``figures=False`` skips the figures. The report and figures are logged
    as artifacts (``analysis/``) of the sweep's parent MLflow run when there is one.
    """
    sweep = load_sweep(experiment, tracking_uri, results_dir, history=True)
    name = sweep.name if experiment is None or os.path.isdir(str(experiment)) else str(experiment)
    out = Path(out_dir) if out_dir is not None else Path.cwd() / "analysis_out" / name
    out.mkdir(parents=True, exist_ok=True)
    trials, curves = trials_table(sweep), curves_table(sweep)
    results = _fits.run_all(trials, curves, n_boot=n_boot)
    bare_trials, bare_curves = trials.copy(deep=False), curves.copy(deep=False)
    bare_trials.attrs, bare_curves.attrs = {}, {}
    claims, details = _claims.claims_table(bare_trials, bare_curves)
    written = []
    for fname, df in (("claims.csv", claims), ("pooled_fits.csv", details["pooled"]),
                      ("slice_fits.csv", details["slices"]),
                      ("training_status.csv", details["status"]),
                      ("control_ratio.csv", details["control"]),
                      ("growth_forms.csv", details["growth"]),
                      ("paired_objectives.csv", details["paired"]),
                      ("trials.csv", trials), ("curves.csv", curves), ("fits.csv", results["fits"]),
                      ("param_growth_trials.csv", results["param_growth_trials"]),
                      ("bounds.csv", results["bounds"]), ("objectives.csv", results["objectives"])):
        p = out / fname
        df.to_csv(p, index=False)
        written.append(p)
    ex = pd.DataFrame(sweep.excluded, columns=["trial", "reason"])
    ex.to_csv(out / "excluded.csv", index=False)
    written.append(out / "excluded.csv")
    if figures:
        made, skipped = _figures.make_figures(trials, curves, results, out / "figures")
    else:
        made, skipped = {}, {"all figures": "switched off (--no-figures)"}
    fig_files = [Path(p) for ps in made.values() for p in ps]

    uri, parent = (_parent_for_logging(sweep, experiment, tracking_uri) if log_artifacts
                   else (None, "artifact logging switched off"))
    lines = [f"# Sweep analysis: {name}", ""]
    lines += _section_answer(claims, details)
    lines += [(f"Generated {_dt.datetime.now().isoformat(timespec='seconds')} by "
               "`analysis.write_report`. Each claim of SCIENCE.md section 1 (and the bound of "
               "section 4) is set beside what this sweep measured; fits use the forms of "
               "section 5 with free constants."), ""]
    lines += _section_setup(sweep, trials, curves)
    lines += _section_controls(trials, details)
    lines += _section_pooled(details)
    lines += _section_claim1(trials, results["scaling"])
    lines += _section_claim2(trials, results["param_growth"], results["param_growth_trials"])
    lines += _section_growth_forms(details)
    lines += _section_bound(results["bounds"])
    lines += _section_claim3(results["objectives"])
    lines += _section_paired(details)
    lines += _section_reference(trials)
    lines += _section_figures(made, skipped, out)
    lines += ["## Files", ""]
    lines += [f"- `{p.name}`" for p in written]
    lines.append("- `figures/`: " + (", ".join(sorted(made)) if made else "none"))
    if uri:
        lines.append(f"- Logged as artifacts of MLflow parent run `{parent}` under `analysis/`.")
    else:
        lines.append(f"- Not logged to MLflow: {parent}.")
    lines.append("")
    report = out / "report.md"
    report.write_text("\n".join(lines))
    if uri:
        try:
            _log_artifacts(uri, parent, out, written + [report] + fig_files)
        except Exception as e:  # noqa: BLE001 - the report on disk stands; say what failed
            msg = f"\n**Artifact logging failed**: {type(e).__name__}: {e}\n"
            with open(report, "a") as fh:
                fh.write(msg)
            print(f"warning: could not log artifacts to run {parent}: {e}")
    return report


__all__ = ["write_report"]
