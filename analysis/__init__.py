"""Analysis of clnscl sweeps: tables, fits of the predicted scaling forms, figures, report.

Torch-free: reads MLflow (or a Ray Tune results directory) and never imports ``clnscl``'s
training code. Entry points:

- :func:`load_trials` / :func:`load_curves` - final metrics / per-epoch long table;
- :func:`fit_power_law` / :func:`fit_line` - fits with bootstrap CIs (``analysis.fits``);
- :func:`write_report` - tables, fits, figures and ``report.md``, logged to the parent run.

Command line: ``python -m analysis --experiment NAME [--tracking-uri URI] [--out DIR]
[--results-dir PATH]``.
"""

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
                   "PowerLawFit",
                   "Sweep",
                   "SweepNotFoundError",
                   "bound_check",
                   "compare_objectives",
                   "curves_table",
                   "default_tracking_uri",
                   "fit_line",
                   "fit_power_law",
                   "load_curves",
                   "load_sweep",
                   "load_trials",
                   "param_growth",
                   "parse_param",
                   "parse_params",
                   "run_all",
                   "scaling_fits",
                   "trials_table",
                   "verdict",
                   "write_report",
]
