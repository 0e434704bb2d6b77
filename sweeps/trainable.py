"""The Tune function trainable: one trial = one ``CoupledTrainer`` (one grid point).

What a trial does:

- builds its ``TrainConfig`` from the Tune config (the grid point) and the trainer;
- opens its MLflow child run, found again by the Tune trial id on a retry or a restore,
  so that one trial always has exactly one run;
- resumes from Tune's last checkpoint when there is one (whole trainer state + the
  records so far), and skips the epochs its run already holds when logging;
- reports every evaluation record to Tune (numbers only; strings such as the batch
  fingerprint go to MLflow tags) and logs it to MLflow with ``step = epoch`` in one batch;
- checkpoints every ``checkpoint_every`` evaluation records and after the last one;
- ends its run FINISHED, or FAILED with the error text in tag ``error`` (try/finally), and
  re-raises so that Tune retries it from the checkpoint (``FailureConfig.max_failures``).
  A diverged trial (NaN loss, ``DivergedError``) is not retried: retrying replays the same
  computation. It reports ``diverged = 1`` and its run ends FAILED with the message.

Fault-injection hook (tests and demos only): the sweep context may carry
``fault = {"trial": RUN_NAME or "*", "epoch": E, "marker": PATH or None}`` (or a list of
such specs). The matching trial raises ``InjectedFault`` right after reporting epoch E.
With a marker path it fails once (the marker file is created before raising; a retry sees
it and goes on); without one it fails on every attempt (a permanent failure). With
``"error": "diverged"`` it raises ``DivergedError`` instead (a NaN loss, not retried).
``grid.py --inject-fault JSON`` sets it; nothing else does.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import traceback
from pathlib import Path

from clnscl import records as rec_names
from clnscl.config import TrainConfig

from . import tracking
from .presets import apply_budget

STATE_FILE = "state.pt"
RECORDS_FILE = "records.json"
CHECKPOINT_META = "meta.json"


class InjectedFault(RuntimeError):
    """Raised by the fault-injection hook (tests only)."""


def _maybe_inject_fault(fault, cfg: TrainConfig, epoch: int) -> None:
    """The test-only fault hook (see the module docstring); ``fault`` is one spec or a list."""
    for spec in fault if isinstance(fault, list) else [fault] if fault else []:
        target = spec.get("trial", "*")
        if target not in ("*", cfg.run_name()) or int(spec.get("epoch", -1)) != epoch:
            continue
        marker = spec.get("marker")
        if marker:
            marker = Path(marker)
            if marker.exists():
                continue
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{cfg.run_name()} failed once at epoch {epoch}\n")
        if spec.get("error") == "diverged":
            from clnscl.trainer import DivergedError

            raise DivergedError(f"injected divergence in trial {cfg.run_name()} "
                                f"after epoch {epoch}")
        raise InjectedFault(f"injected fault in trial {cfg.run_name()} after epoch {epoch}")


def plot_curves(records: list[dict], cfg: TrainConfig, path: str | os.PathLike) -> None:
    """A PNG of the trial's alignment curves over epochs (CL vs every other objective)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    others = rec_names.compared(cfg.objectives)
    # misalignment on log axes: the values of interest sit near CKA = 1, rho = 0
    panels = [("cka", "1 - linear CKA", True), ("rsa", "1 - RSA", True),
              ("rho", "rho: similarity-matrix distance", False),
              ("param_dist", "parameter distance", False)]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (metric, title, one_minus) in zip(axes.flat, panels):
        plotted = []
        for obj in others:
            for split_feat, style in (("", "-"), ("test/proj/", "--")):
                if metric == "param_dist" and split_feat:
                    continue
                ys = [r.get(f"{obj}/{split_feat}{metric}", float("nan")) for r in records]
                ys = [1.0 - y if one_minus else y for y in ys]
                # log axes: zeros and float noise (epoch 0, identical models) are left out
                ys = [y if y > 1e-12 else float("nan") for y in ys]
                where = " (test, proj)" if split_feat else \
                    "" if metric == "param_dist" else " (test, backbone)"
                label = f"CL vs {obj.upper()}{where}"
                ax.plot(epochs, ys, ls=style, marker="o" if not split_feat else None, label=label)
                plotted += [y for y in ys if not math.isnan(y)]
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if plotted:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(f"{cfg.run_name()}  dataset={cfg.dataset} arch={cfg.arch}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _report_with_checkpoint(trainer, records: list[dict], metrics: dict) -> None:
    """Tune copies the checkpoint folder to the sweep storage inside report()."""
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="clnscl-ckpt-") as d:
        trainer.save_checkpoint(os.path.join(d, STATE_FILE))
        with open(os.path.join(d, RECORDS_FILE), "w") as f:
            json.dump(records, f)
        with open(os.path.join(d, CHECKPOINT_META), "w") as f:
            json.dump({"epoch": trainer.epoch, "n_records": len(records)}, f)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _load_checkpoint(trainer, checkpoint) -> list[dict]:
    with checkpoint.as_directory() as d:
        trainer.load_checkpoint(os.path.join(d, STATE_FILE))
        with open(os.path.join(d, RECORDS_FILE)) as f:
            records = json.load(f)
    return [r for r in records if r["epoch"] <= trainer.epoch]


def _log_artifacts(client, run_id: str, cfg: TrainConfig, class_ids, records: list[dict]) -> None:
    with tempfile.TemporaryDirectory(prefix="clnscl-art-") as d:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"config": cfg.to_dict(), "class_ids": class_ids,
                       "run_name": cfg.run_name()}, f, indent=1)
        with open(os.path.join(d, "records.json"), "w") as f:
            json.dump({"config": cfg.to_dict(), "class_ids": class_ids, "records": records}, f)
        try:
            plot_curves(records, cfg, os.path.join(d, "alignment_curves.png"))
        except Exception as e:  # noqa: BLE001 - a plot must not fail a finished trial
            with open(os.path.join(d, "plot_error.txt"), "w") as f:
                f.write(f"{type(e).__name__}: {e}\n")
        tracking._retry(client.log_artifacts, run_id, d)


def train_trial(config: dict, sweep: dict | None = None) -> None:
    """Tune function trainable. ``config``: the TrainConfig fields of one grid point;
    ``sweep``: the sweep context (tracking_uri, experiment_id, parent_run_id,
    checkpoint_every, cpus_per_trial, optional fault), bound by ``tune.with_parameters``."""
    import ray
    from ray import tune

    sweep = dict(sweep or {})
    # one line per checkpoint from Ray Train's storage code is noise in the sweep's output
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = apply_budget(TrainConfig.from_dict(config), sweep.get("budget_images"),
                       sweep.get("evals", 4))
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    node_id = ray.get_runtime_context().get_node_id()
    every = int(sweep.get("checkpoint_every", 1))

    cpus = sweep.get("cpus_per_trial")
    if cpus:
        import torch

        torch.set_num_threads(max(1, int(cpus)))

    client = run_id = None
    if sweep.get("tracking_uri"):
        client = tracking.connect(sweep["tracking_uri"])
        run_id, _ = tracking.open_trial_run(
            client, sweep["experiment_id"], sweep["parent_run_id"], trial_id, cfg.run_name(),
            params=cfg.to_dict(),
            tags={"trial_name": ctx.get_trial_name(), "sweep": sweep.get("sweep_name", ""),
                  # epochs/eval_every derived from an image budget (equal S_T across C)
                  "budget_images": sweep.get("budget_images")})
        prior = client.get_run(run_id).data.tags.get("node_ids", "")
        tracking.set_tags(client, run_id, {
            "node_id": node_id,
            "node_ids": ",".join([x for x in prior.split(",") if x] + [node_id]),
        })

    status, error = "FAILED", None
    try:
        from clnscl.trainer import CoupledTrainer, DivergedError

        trainer = CoupledTrainer(cfg)
        records: list[dict] = []
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            records = _load_checkpoint(trainer, checkpoint)
        done_steps = tracking.logged_steps(client, run_id) if client else set()
        if client:
            tracking.set_tags(client, run_id, {
                "class_ids": ",".join(str(c) for c in trainer.class_ids),
                "resumed_from_epoch": trainer.epoch if checkpoint is not None else None,
            })
            if "class_ids" not in client.get_run(run_id).data.params:
                tracking.log_params_tags(client, run_id, params={
                    "class_ids": ",".join(str(c) for c in trainer.class_ids)})
        try:
            for rec in trainer.run():
                records.append(rec)
                metrics = tracking.numeric_items(rec)
                if client:
                    if rec["epoch"] not in done_steps:
                        tracking.log_metrics(client, run_id, metrics, step=rec["epoch"])
                        done_steps.add(rec["epoch"])
                    strings = tracking.string_items(rec)
                    if strings:
                        tracking.set_tags(client, run_id, strings)
                last = trainer.epoch >= cfg.epochs
                if last or len(records) % every == 0:
                    _report_with_checkpoint(trainer, records, metrics)
                else:
                    tune.report(metrics)
                _maybe_inject_fault(sweep.get("fault"), cfg, rec["epoch"])
        except DivergedError as e:
            # deterministic: a retry would replay the same steps; end the trial, record why
            error = f"{type(e).__name__}: {e}"
            tune.report({"epoch": trainer.epoch, "diverged": 1.0})
            return
        if client:
            # the final record is the run's summary (MLflow shows each metric's last value);
            # add the bookkeeping that has no per-epoch meaning. No '/' in these names: the
            # analysis reads every 'a/b' metric as an objective's.
            final = records[-1] if records else {}
            tracking.log_metrics(client, run_id, {
                "final_epoch": trainer.epoch, "trial_time_s": final.get("time_s", 0.0),
                "n_records": len(records)}, step=trainer.epoch)
            _log_artifacts(client, run_id, cfg, trainer.class_ids, records)
        status = "FINISHED"
    except BaseException as e:
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        raise
    finally:
        if client:
            try:
                tracking.end_run(client, run_id, status,
                                 error=error if status != "FINISHED" else None)
            except Exception:  # noqa: BLE001 - never mask the trial's own error
                traceback.print_exc()


__all__ = ["InjectedFault", "plot_curves", "train_trial"]
