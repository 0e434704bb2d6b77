"""Figures show the evidence (issue 8, item 8): asserted on the matplotlib objects."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import figures as F
from analysis.pooled import pooled_slope

CS, TAUS, SEEDS = (2, 10, 4, 20), (0.5, 1.0), (0, 1, 2)  # C deliberately not in sorted order


def _trials(untrained=(), zeros=False):
    rng = np.random.default_rng(1)
    rows = []
    for C in CS:
        for tau in TAUS:
            for seed in SEEDS:
                rho = 0.3 * C ** -1.0 * math.exp(0.4 / tau) * math.exp(rng.normal(0, 0.1))
                name = f"C{C}_t{tau}_s{seed}"
                r = {"trial": name, "objective": "nscl", "n_classes": C, "tau": tau,
                     "batch_size": 256, "seed": seed, "rho": rho, "cka": 1 - rho,
                     "cka_cos": 1 - rho ** 2 / 2, "rsa": 1 - 1.2 * rho,
                     "test/proj/rho": 0.7 * rho, "test/proj/cka": 1 - 0.7 * rho,
                     "cl_init_cka": 0.99 if name in untrained else 0.5, "cl_knn_gain": 0.2}
                if zeros and C == 20 and seed == 0:
                    r["rho"] = 0.0
                rows.append(r)
    return pd.DataFrame(rows)


def _curves(cum_scale=0.37):
    rows = []
    for C in CS:
        for seed in (0, 1):
            for obj in ("nscl", "supcon"):
                for ep in range(4):
                    cum = cum_scale * ep * (1 + C / 40)  # S_T differs across trials
                    for met, v in (("cka", 1 - 0.1 * ep / C), ("rho", 0.1 * ep / C),
                                   ("param_dist", 0.01 * math.exp(0.5 * cum) if ep else 0.0)):
                        rows.append({"trial": f"C{C}_s{seed}", "objective": obj, "epoch": ep,
                                     "metric": met, "value": v, "cum_lr": cum, "n_classes": C,
                                     "seed": seed, "batch_size": 256})
    return pd.DataFrame(rows)


def _by_gid(fig, gid, kind=None):
    out = []
    for ax in fig.axes:
        for a in ax.get_children():
            if a.get_gid() == gid and (kind is None or isinstance(a, kind)):
                out.append((ax, a))
    return out


def _main_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "colorbar"]


def _assert_labelled(fig):
    for ax in _main_axes(fig):
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), ax.get_title()


def _assert_legend_outside(fig):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    guides = list(fig.legends) + [ax for ax in fig.axes if ax.get_label() == "colorbar"]
    assert guides, "no legend or colour bar"
    fb = fig.bbox
    for g in guides:
        gb = g.get_window_extent(r)
        assert gb.x0 >= fb.x0 - 1 and gb.x1 <= fb.x1 + 1, "legend runs off the figure"
        for ax in _main_axes(fig):
            if ax is g:
                continue
            assert not gb.overlaps(ax.get_window_extent(r)), (ax.get_title(), gb)


@pytest.fixture(autouse=True)
def _close():
    yield
    F._plt().close("all")


def test_scaling_seeds_as_points_geomean_fit_band_theory():
    from matplotlib.collections import PathCollection

    t = _trials()
    fig, why = F.scaling_figure(t, "C")
    assert fig is not None, why
    pts = _by_gid(fig, "trials", PathCollection)
    per_ax = {}
    for ax, a in pts:
        per_ax[ax] = per_ax.get(ax, 0) + len(a.get_offsets())
    assert per_ax and set(per_ax.values()) == {len(t)}  # every trial a point in every panel
    # geometric mean per C with a 95% t-interval of log rho
    rho_ax = next(ax for ax in per_ax if ax.get_title().startswith("rho, backbone"))
    from matplotlib.lines import Line2D

    gm = [a for ax, a in _by_gid(fig, "geomean", Line2D) if ax is rho_ax and a.get_marker() == "s"]
    assert len(gm) == 1
    line = gm[0]
    xs, ys = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    assert sorted(xs) == sorted(CS)
    for x, y in zip(xs, ys):
        assert y == pytest.approx(math.exp(np.log(t.loc[t["n_classes"] == x, "rho"]).mean()))
    # the pooled fit through the geometric mean, slope = pooled_slope's, band from its CI
    f = pooled_slope(t, "rho", "C", objective="nscl")
    fit = next(a for ax, a in _by_gid(fig, "fit") if ax is rho_ax)
    fx, fy = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
    assert np.polyfit(np.log(fx), np.log(fy), 1)[0] == pytest.approx(f.slope, rel=1e-6)
    assert [a for ax, a in _by_gid(fig, "fit_band") if ax is rho_ax]
    assert f"[{f.ci[0]:.2f}, {f.ci[1]:.2f}]" in rho_ax.get_title()
    # dotted theory guide: slope -1 for rho, -2 for 1 - CKA_cos, none for 1 - CKA
    th = {ax.get_title().split(",")[0]: a for ax, a in _by_gid(fig, "theory")}
    for name, want in (("rho", -1.0), ("1 - cosine-kernel CKA", -2.0)):
        tx, ty = np.asarray(th[name].get_xdata()), np.asarray(th[name].get_ydata())
        assert th[name].get_linestyle() == ":"
        assert np.polyfit(np.log(tx), np.log(ty), 1)[0] == pytest.approx(want)
    assert "1 - linear CKA" not in th
    assert rho_ax.get_xscale() == "log" and rho_ax.get_yscale() == "log"
    _assert_labelled(fig)
    _assert_legend_outside(fig)


def test_scaling_tau_theory_slope_in_inverse_tau():
    t = _trials()
    fig, why = F.scaling_figure(t, "tau")
    assert fig is not None, why
    th = {ax.get_title().split(",")[0]: a for ax, a in _by_gid(fig, "theory")}
    x, y = np.asarray(th["rho"].get_xdata()), np.asarray(th["rho"].get_ydata())
    assert np.polyfit(x, np.log(y), 1)[0] == pytest.approx(2.0)  # x is 1/tau, linear axis
    assert sorted(set(np.round(x[[0, -1]], 9))) == [1.0, 2.0]
    _assert_labelled(fig)


def test_untrained_trials_drawn_apart_and_left_out_of_fit():
    from matplotlib.collections import PathCollection

    bad = {"C2_t0.5_s0", "C10_t1.0_s2"}
    t = _trials(untrained=bad)
    fig, _ = F.scaling_figure(t, "C")
    ax0 = fig.axes[0]
    n_pts = sum(len(a.get_offsets()) for ax, a in _by_gid(fig, "trials", PathCollection)
                if ax is ax0)
    n_bad = sum(len(a.get_offsets()) for ax, a in _by_gid(fig, "untrained", PathCollection)
                if ax is ax0)
    assert (n_pts, n_bad) == (len(t) - 2, 2)
    f = pooled_slope(t[~t["trial"].isin(bad)], "rho", "C", objective="nscl")
    assert f"{f.slope:.2f} [" in ax0.get_title()


def test_zero_values_still_drawn():
    from matplotlib.collections import PathCollection

    t = _trials(zeros=True)
    fig, why = F.scaling_figure(t, "C")
    assert fig is not None, why
    rho_ax = next(ax for ax in fig.axes if ax.get_title().startswith("rho, backbone"))
    zs = [a for ax, a in _by_gid(fig, "at_zero", PathCollection) if ax is rho_ax]
    assert zs and len(zs[0].get_offsets()) == len(TAUS)


def test_scaling_skips_with_reason():
    t = _trials()
    fig, why = F.scaling_figure(t, "B")
    assert fig is None and "batch_size" in why


def test_curves_against_cum_lr_coloured_in_numeric_order_of_C():
    c = _curves()
    fig, why = F.curves_figure(c, ("cka", "rsa", "rho"), logy=False, title="t")
    assert fig is not None, why
    lines = [(ax, a) for ax in _main_axes(fig) for a in ax.get_lines()
             if str(a.get_gid()).startswith("trial=")]
    n_trials = c["trial"].nunique()
    assert len(lines) == n_trials * 2 * 2  # 2 objectives x 2 metrics (no rsa)
    greens = {}
    for ax, ln in lines:
        trial = ln.get_gid().removeprefix("trial=")
        obj = ax.get_title().split(" vs ")[0]
        met = ax.get_title().split(": ")[1].split(" (")[0]
        g = c[(c["trial"] == trial) & (c["objective"] == obj) & (c["metric"] == met)]
        g = g.sort_values("cum_lr")
        np.testing.assert_allclose(ln.get_xdata(), g["cum_lr"])  # S_T, not epoch
        np.testing.assert_allclose(ln.get_ydata(), g["value"])
        greens[int(g["n_classes"].iloc[0])] = ln.get_color()[1]
    order = sorted(greens)  # numeric: 2, 4, 10, 20
    assert [greens[k] for k in order] == sorted(greens.values())  # viridis green rises
    assert len(set(greens.values())) == len(CS)
    cbar = next(ax for ax in fig.axes if ax.get_label() == "colorbar")
    assert [t.get_text() for t in cbar.get_yticklabels()] == ["2", "4", "10", "20"]
    assert "classes" in cbar.get_ylabel()
    assert all("S_T" in ax.get_xlabel() for ax in _main_axes(fig))
    _assert_labelled(fig)
    _assert_legend_outside(fig)


def test_param_distance_log_scale_after_start():
    c = _curves()
    fig, why = F.curves_figure(c, ("param_dist",), logy=True, title="t",
                               positive_after_start=True)
    assert fig is not None, why
    for ax in _main_axes(fig):
        assert ax.get_yscale() == "log"
        for ln in ax.get_lines():
            assert min(ln.get_xdata()) > 0 and min(ln.get_ydata()) > 0  # epoch 0 left out
    _assert_labelled(fig)


def test_curves_fall_back_to_epoch_and_say_so():
    c = _curves().drop(columns="cum_lr")
    fig, _ = F.curves_figure(c, ("cka",), logy=False, title="t")
    ax = _main_axes(fig)[0]
    assert ax.get_xlabel().startswith("epoch (cum_lr not logged)")


def test_numeric_order():
    assert F.numeric_order(["10", "2", "4", 2]) == ["2", "4", "10"]
    assert F.numeric_order([20, 2.5, 10]) == [2.5, 10, 20]


def test_make_figures_writes_png_and_svg(tmp_path):
    made, skipped = F.make_figures(_trials(), _curves(), None, tmp_path)
    assert set(made) == {"misalignment_vs_C", "misalignment_vs_tau", "alignment_over_epochs",
                         "param_distance"}, skipped
    assert "misalignment_vs_B" in skipped and "bound_check" in skipped
    for paths in made.values():
        assert [p.suffix for p in paths] == [".png", ".svg"]
        for p in paths:
            assert p.exists() and p.stat().st_size > 1000, p
        assert paths[1].read_text().lstrip().startswith("<?xml")


def test_scaling_panels_keep_labelled_y_ticks_when_an_interval_spans_decades():
    """Two seeds at one C with very different values: their t-interval spans many decades.
    The y-range follows the points, every panel keeps >= 2 labelled ticks, and no point is
    outside the view."""
    t = _trials()
    t = t[t["seed"] < 2].copy()
    far = (t["n_classes"] == 10) & (t["seed"] == 1)
    t.loc[far, "test/proj/rho"] *= 300.0  # one seed 300x the other at C=10
    fig, _ = F.scaling_figure(t, "C")
    fig.canvas.draw()
    for ax in _main_axes(fig):
        if not ax.axison:
            continue
        lo, hi = ax.get_ylim()
        shown = [tk for tk in ax.yaxis.get_major_ticks()
                 if lo <= tk.get_loc() <= hi and tk.label1.get_text()]
        assert len(shown) >= 2, (ax.get_title(), lo, hi)
        ys = np.concatenate([pts.get_offsets()[:, 1] for a, pts in _by_gid(fig, "trials")
                             if a is ax])
        assert lo <= ys.min() and ys.max() <= hi, ax.get_title()  # every point in view
        # the range is the points' (x4 each side), not the decades of the interval
        assert ys.min() / lo <= 4.01 and hi / ys.max() <= 4.01, (ax.get_title(), lo, hi)


def test_curve_panels_share_one_y_scale_per_metric_across_objectives():
    """NSCL and the other objectives are read against the same axis per metric (the rho of
    NSCL against that of the control is a comparison of heights)."""
    cur = _curves()
    indep = cur[cur["objective"] == "supcon"].copy()
    indep["objective"] = "cl_indep"
    indep.loc[indep["metric"] == "rho", "value"] *= 5.0  # the control wanders much further
    fig, _ = F.curves_figure(pd.concat([cur, indep]), ("cka", "rho"), logy=False, title="t")
    axes = [ax for ax in _main_axes(fig)]
    by_metric = {}
    for ax in axes:
        by_metric.setdefault(ax.get_title().split(": ")[1].split(" (")[0], []).append(ax)
    assert set(by_metric) == {"cka", "rho"}
    for met, axs in by_metric.items():
        assert len(axs) == 3  # nscl, supcon, cl_indep
        assert len({ax.get_ylim() for ax in axs}) == 1, met
        assert all(ax.yaxis.get_ticklabels()[0].get_visible() for ax in axs)
    rho_top = by_metric["rho"][0].get_ylim()[1]
    assert rho_top >= 5.0 * 0.1 * 3 / 2  # the control's largest rho fits every rho panel
