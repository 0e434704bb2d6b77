"""``python -m analysis [--experiment] NAME [--tracking-uri URI] [--out DIR] [--results-dir PATH]``"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    p = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Analyse a clnscl sweep: tables, scaling fits with bootstrap CIs, figures and "
                    "report.md (logged as artifacts of the sweep's parent MLflow run).")
    p.add_argument("name", nargs="?", default=None,
                   help="the experiment, as a positional argument (same as --experiment)")
    p.add_argument("--experiment", help="MLflow experiment (= sweep) name, or a Ray Tune results "
                                        "directory")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--out", default=None, help="output folder (default ./analysis_out/<experiment>)")
    p.add_argument("--results-dir", default=None,
                   help="read this Ray Tune results directory (storage_path/<name>) instead of MLflow")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--no-figures", action="store_true", help="skip the figures (faster)")
    p.add_argument("--no-log", action="store_true", help="do not log artifacts to MLflow")
    a = p.parse_args(argv)
    if a.name and a.experiment and a.name != a.experiment:
        p.error(f"two experiments given: {a.name!r} and --experiment {a.experiment!r}")
    a.experiment = a.experiment or a.name
    if not a.experiment and not a.results_dir:
        p.error("give --experiment NAME (MLflow) and/or --results-dir PATH (Ray Tune)")

    from .report import write_report
    from .tables import SweepNotFoundError

    try:
        path = write_report(a.experiment, tracking_uri=a.tracking_uri, out_dir=a.out,
                            results_dir=a.results_dir, n_boot=a.n_boot,
                            log_artifacts=not a.no_log, figures=not a.no_figures)
    except SweepNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = path.read_text()
    print(f"report: {path}")
    ex_start = text.find("## Excluded trials")
    if ex_start >= 0:
        block = text[ex_start:text.find("\n## ", ex_start + 3)]
        print(block.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
