"""Analysis of clnscl sweeps: tables, fits of the predicted scaling forms, figures, report.

Torch-free: reads MLflow (or a Ray Tune results directory) and never imports ``clnscl``'s
training code. Entry points:

- :func:`load_trials` / :func:`load_curves` - final metrics / per-epoch long table;
- :func:`fit_power_law` / :func:`fit_line` - fits with bootstrap CIs (``analysis.fits``);
- :func:`pooled_slope` - the primary, pooled test of a scaling claim (``analysis.pooled``);
- :func:`claims_table` - one row per claim, controls applied (``analysis.claims``);
- :func:`write_report` - tables, fits, figures and ``report.md``, logged to the parent run.

Command line: ``python -m analysis --experiment NAME [--tracking-uri URI] [--out DIR]
[--results-dir PATH]``.
"""

from .claims import (
                   claims_table,
                   control_ratio,
                   growth_forms,
                   matched_cum_lr,
                   paired_objectives,
                   pooled_table,
                   training_status,
)
from .fits import (
                   LineFit,
                   PowerLawFit,
                   bound_check,
                   compare_objectives,
                   fit_line,
                   fit_power_law,
                   param_growth,
                   run_all,
                   scaling_fits,
                   verdict,
)
from .pooled import PooledSlope, bound_local_slope, judge, pooled_slope
from .report import write_report
from .tables import (
                   Sweep,
                   SweepNotFoundError,
                   curves_table,
                   default_tracking_uri,
                   load_curves,
                   load_sweep,
                   load_trials,
                   parse_param,
                   parse_params,
                   trials_table,
)

__all__ = [
                   "LineFit",
                   "PooledSlope",
                   "PowerLawFit",
                   "Sweep",
                   "SweepNotFoundError",
                   "bound_check",
                   "bound_local_slope",
                   "claims_table",
                   "compare_objectives",
                   "control_ratio",
                   "curves_table",
                   "default_tracking_uri",
                   "fit_line",
                   "fit_power_law",
                   "growth_forms",
                   "judge",
                   "load_curves",
                   "load_sweep",
                   "load_trials",
                   "matched_cum_lr",
                   "paired_objectives",
                   "param_growth",
                   "parse_param",
                   "parse_params",
                   "pooled_slope",
                   "pooled_table",
                   "run_all",
                   "scaling_fits",
                   "training_status",
                   "trials_table",
                   "verdict",
                   "write_report",
]
