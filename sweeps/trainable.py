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

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
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


@contextlib.contextmanager
def download_lock(root: str | os.PathLike):
    """An exclusive file lock in a data root: one download per machine at a time (the
    trials of one node share the folder)."""
    import fcntl

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".clnscl-download.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class TrialLog:
    """The MLflow side of one trial, which never fails the trial.

    Every call to the store is guarded: when the store does not answer (server down,
    network, database restarting) the trial keeps training; the records it could not log
    are kept (and are in every checkpoint) and are logged, all of them, once the store
    answers again (tried again at the next record, at most every ``retry_s`` seconds).
    Logging is idempotent: the steps a run holds are skipped. ``outages`` counts the
    times the store stopped answering (tag ``tracking_outages``)."""

    def __init__(self, uri: str, sweep: dict, trial_id: str, cfg: TrainConfig, tags: dict,
                 node_id: str, retry_s: float = 5.0):
        self.uri, self.sweep, self.trial_id, self.cfg = uri, sweep, trial_id, cfg
        self.tags, self.node_id, self.retry_s = tags, node_id, retry_s
        self.client = self.run_id = None
        self.logged: set[int] = set()
        self.class_ids = None
        self.tags_done = False
        self.down_since: float | None = None
        self.next_try = 0.0
        self.outages = 0
        self.last_error = ""

    # -- guards
    def _down(self, e: BaseException) -> None:
        self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if self.down_since is None:
            self.down_since = time.time()
            self.outages += 1
            print(f"[clnscl] tracking store {tracking.redact(self.uri)} not answering "
                  f"({self.last_error[:300]}); training goes on, records are kept and logged "
                  "when it answers", file=sys.stderr, flush=True)
        self.next_try = time.time() + self.retry_s

    def _up(self) -> None:
        if self.down_since is not None:
            print(f"[clnscl] tracking store answers again after "
                  f"{time.time() - self.down_since:.0f}s; back-filling", file=sys.stderr,
                  flush=True)
            self.down_since = None

    def _open(self) -> None:
        if self.client is None:
            self.client = tracking.connect(self.uri)
        if self.run_id is None:
            run_id, _ = tracking.open_trial_run(
                self.client, self.sweep["experiment_id"], self.sweep["parent_run_id"],
                self.trial_id, self.cfg.run_name(), params=self.cfg.to_dict(), tags=self.tags)
            prior = self.client.get_run(run_id).data.tags.get("node_ids", "")
            tracking.set_tags(self.client, run_id, {
                "node_id": self.node_id,
                "node_ids": ",".join([x for x in prior.split(",") if x] + [self.node_id])})
            self.logged = tracking.logged_steps(self.client, run_id)
            self.run_id = run_id

    def sync(self, records: list[dict], force: bool = False) -> bool:
        """Log every record the run lacks; True when the run holds them all."""
        if not force and time.time() < self.next_try:
            return False
        try:
            self._open()
            if self.class_ids is not None and not self.tags_done:
                ids = ",".join(str(c) for c in self.class_ids)
                tracking.set_tags(self.client, self.run_id, {"class_ids": ids})
                if "class_ids" not in self.client.get_run(self.run_id).data.params:
                    tracking.log_params_tags(self.client, self.run_id,
                                             params={"class_ids": ids})
                self.tags_done = True
            for rec in records:
                if rec["epoch"] not in self.logged:
                    tracking.log_metrics(self.client, self.run_id,
                                         tracking.numeric_items(rec), step=rec["epoch"])
                    self.logged.add(rec["epoch"])
            strings = tracking.string_items(records[-1]) if records else {}
            if strings:
                tracking.set_tags(self.client, self.run_id, strings)
            if self.outages:
                tracking.set_tags(self.client, self.run_id,
                                  {"tracking_outages": self.outages})
            self._up()
            return True
        except Exception as e:  # noqa: BLE001 - the store, not the trial, failed
            self._down(e)
            return False

    def tag(self, tags: dict) -> None:
        if self.run_id is None:
            return
        try:
            tracking.set_tags(self.client, self.run_id, tags)
        except Exception as e:  # noqa: BLE001
            self._down(e)

    def finish(self, status: str, error: str | None, records: list[dict], trainer,
               wait_s: float) -> bool:
        """Back-fill, final metrics, artifacts, end the run; retried for up to ``wait_s``
        seconds while the store does not answer. False: the driver back-fills it from the
        trial's last checkpoint at the end of the sweep."""
        deadline = time.time() + max(0.0, wait_s)
        while True:
            try:
                if not self.sync(records, force=True):
                    raise RuntimeError(self.last_error or "tracking store not answering")
                if status == "FINISHED":
                    final = records[-1] if records else {}
                    # no '/' in these names: the analysis reads 'a/b' as an objective's metric
                    tracking.log_metrics(self.client, self.run_id, {
                        "final_epoch": trainer.epoch, "trial_time_s": final.get("time_s", 0.0),
                        "n_records": len(records)}, step=trainer.epoch)
                    _log_artifacts(self.client, self.run_id, self.cfg, trainer.class_ids,
                                   records)
                tracking.end_run(self.client, self.run_id, status,
                                 error=error if status != "FINISHED" else None)
                return True
            except Exception as e:  # noqa: BLE001
                self._down(e)
                if time.time() >= deadline:
                    print(f"[clnscl] could not close the MLflow run of trial {self.trial_id} "
                          f"({self.last_error}); the sweep back-fills it from the checkpoint",
                          file=sys.stderr, flush=True)
                    return False
                time.sleep(min(self.retry_s, max(0.1, deadline - time.time())))


def _quiet_http_retries() -> None:
    """MLflow's HTTP client retries a dead server for minutes per call; a trial retries
    itself (TrialLog), so each call gives up fast and training goes on."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def train_trial(config: dict, sweep: dict | None = None) -> None:
    """Tune function trainable. ``config``: the TrainConfig fields of one grid point;
    ``sweep``: the sweep context (tracking_uri, experiment_id, parent_run_id,
    checkpoint_every, cpus_per_trial, optional fault), bound by ``tune.with_parameters``.

    Order per record: checkpoint (or report) to Tune first, then MLflow; a tracking outage
    never fails the trial (``TrialLog``)."""
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

    log = None
    if sweep.get("tracking_uri"):
        _quiet_http_retries()
        log = TrialLog(sweep["tracking_uri"], sweep, trial_id, cfg, node_id=node_id,
                       retry_s=float(sweep.get("tracking_retry_s", 5.0)), tags={
                           "trial_name": ctx.get_trial_name(),
                           "sweep": sweep.get("sweep_name", ""),
                           # epochs/eval_every derived from an image budget (equal S_T across C)
                           "budget_images": sweep.get("budget_images")})
        log.sync([], force=True)  # open the run now if the store answers; else later

    status, error, trainer, records = "FAILED", None, None, []
    try:
        from clnscl.trainer import CoupledTrainer, DivergedError

        if cfg.download and cfg.data_root:
            with download_lock(cfg.data_root):  # one download per node
                trainer = CoupledTrainer(cfg)
        else:
            trainer = CoupledTrainer(cfg)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            records = _load_checkpoint(trainer, checkpoint)
        if log:
            log.class_ids = list(trainer.class_ids)
            log.tags["resumed_from_epoch"] = trainer.epoch if checkpoint is not None else None
            log.tag({"resumed_from_epoch": log.tags["resumed_from_epoch"]})
            log.sync(records, force=True)
        try:
            for rec in trainer.run():
                records.append(rec)
                metrics = tracking.numeric_items(rec)
                last = trainer.epoch >= cfg.epochs
                if last or len(records) % every == 0:
                    _report_with_checkpoint(trainer, records, metrics)
                else:
                    tune.report(metrics)
                if log:
                    log.sync(records)
                _maybe_inject_fault(sweep.get("fault"), cfg, rec["epoch"])
        except DivergedError as e:
            # deterministic: a retry would replay the same steps; end the trial, record why
            error = f"{type(e).__name__}: {e}"
            tune.report({"epoch": trainer.epoch, "diverged": 1.0})
            return
        status = "FINISHED"
    except BaseException as e:
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        raise
    finally:
        if log:
            try:
                wait = float(sweep.get("tracking_wait_s", 60.0)) if status == "FINISHED" else 5.0
                log.finish(status, error, records, trainer, wait_s=wait)
            except Exception:  # noqa: BLE001 - never mask the trial's own error
                traceback.print_exc()


def backfill_trial_run(client, sweep: dict, trial_id: str, cfg: TrainConfig,
                       checkpoint, finished: bool, error: str | None = None) -> str | None:
    """On the driver after the sweep: the trial's run holds every record of its last
    checkpoint (created if the store never saw the trial), and is ended FINISHED (with
    its artifacts) when the trial finished. Returns the run id (None: no checkpoint)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d, open(os.path.join(d, RECORDS_FILE)) as f:
        records = json.load(f)
    run = tracking.find_run(client, sweep["experiment_id"],
                            f"tags.{tracking.TAG_TRIAL} = '{tracking._q(trial_id)}' and "
                            f"tags.`{tracking.TAG_PARENT}` = "
                            f"'{tracking._q(sweep['parent_run_id'])}'")
    if run is not None and run.info.status == "FINISHED":
        have = tracking.logged_steps(client, run.info.run_id)
        if {int(r["epoch"]) for r in records} <= have:
            return run.info.run_id  # nothing to do
    if run is None:
        run_id, _ = tracking.open_trial_run(client, sweep["experiment_id"],
                                            sweep["parent_run_id"], trial_id, cfg.run_name(),
                                            params=cfg.to_dict(), tags={"backfilled": "true"})
    else:
        run_id = run.info.run_id
    n = tracking.log_records(client, run_id, records,
                             skip_steps=tracking.logged_steps(client, run_id))
    if n:
        tracking.set_tags(client, run_id, {"backfilled_records": n})
    if finished and records:
        last = records[-1]
        tracking.log_metrics(client, run_id, {"final_epoch": last["epoch"],
                                              "trial_time_s": last.get("time_s", 0.0),
                                              "n_records": len(records)}, step=last["epoch"])
        artifacts = {a.path for a in tracking._retry(client.list_artifacts, run_id)}
        if "records.json" not in artifacts:
            class_ids = [int(c) for c in client.get_run(run_id).data.params.get(
                "class_ids", "").split(",") if c]
            _log_artifacts(client, run_id, cfg, class_ids, records)
        tracking.end_run(client, run_id, "FINISHED")
    elif error:
        tracking.end_run(client, run_id, "FAILED", error=error)
    return run_id


__all__ = ["InjectedFault", "TrialLog", "backfill_trial_run", "download_lock", "plot_curves",
           "train_trial"]
