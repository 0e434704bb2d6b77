"""Ray Tune sweeps of coupled CL/NSCL trials, tracked in MLflow.

Entry point: ``python sweeps/grid.py`` (or ``python -m sweeps.grid``); see ``--help``.

- ``sweeps.presets``: the YAML presets in ``sweeps/presets/`` and their expansion into
  one validated ``TrainConfig`` per grid point;
- ``sweeps.trainable``: the Tune function trainable (one trial = one ``CoupledTrainer``);
- ``sweeps.tracking``: the small MLflow helper (parent/child runs, idempotent logging).
"""
