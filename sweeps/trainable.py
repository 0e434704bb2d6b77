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
- ends its run FINISHED, or FAILED with the error text in tag ``error`` (try/finally).
- retries only what a retry can fix (``deterministic_reason``): a transient error (a lost
  worker, an I/O error, anything unrecognised) is re-raised so that Tune retries the trial
  from its last checkpoint (``FailureConfig.max_failures``); a deterministic one
  (``ConfigError``, ``ImportError``, a data file missing while the data loads,
  ``DivergedError``, ``SharedRandomnessError``) ends the trial at once: it reports
  ``failed_final = 1`` (and ``diverged = 1`` for a NaN loss) with ``error_reason``, and its
  run ends FAILED with the error and "[not retried: why]" in tag ``error``.
- a corrupt or truncated latest checkpoint is not retried forever: the trial falls back to
  the previous good one (Tune keeps two), else starts again from epoch 0 (seeded: the same
  records), and says so (stderr and run tag ``checkpoint_fallback``).

Fault-injection hook (tests and demos only): the sweep context may carry
``fault = {"trial": RUN_NAME or "*", "epoch": E, "marker": PATH or None}`` (or a list of
such specs). The matching trial raises ``InjectedFault`` right after reporting epoch E.
With a marker path it fails once (the marker file is created before raising; a retry sees
it and goes on); without one it fails on every attempt (a permanent failure). With
``"error": "diverged"`` it raises ``DivergedError`` instead (a NaN loss, not retried);
``"error": "stall", "seconds": S`` raises nothing and sleeps S seconds (a slow epoch: the
driver-signal tests interrupt a sweep while a trial is known to be mid-run);
``"error": "fill_disk", "path": DIR`` raises nothing and fills the file system of DIR with
one file ``DIR/clnscl-filler`` until it is full (the disk-full test).
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


# the test-only hook's error kinds (see the module docstring)
_FAULT_KINDS = ("fault", "diverged", "config", "import", "data", "shared", "oserror", "sigkill",
                "stall", "fill_disk")


def _maybe_inject_fault(fault, cfg: TrainConfig, epoch: int) -> None:
    """The test-only fault hook (see the module docstring); ``fault`` is one spec or a list.
    ``epoch = -1`` fires while the trial loads its data."""
    for spec in fault if isinstance(fault, list) else [fault] if fault else []:
        target = spec.get("trial", "*")
        if target not in ("*", cfg.run_name()) or int(spec.get("epoch", -2)) != epoch:
            continue
        marker = spec.get("marker")
        if marker:
            marker = Path(marker)
            if marker.exists():
                continue
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{cfg.run_name()} failed once at epoch {epoch}\n")
        kind = spec.get("error", "fault")
        where = f"in trial {cfg.run_name()} after epoch {epoch}"
        if kind == "stall":
            time.sleep(float(spec.get("seconds", 60)))
            continue
        if kind == "fill_disk":
            _fill_file_system(Path(spec["path"]) / "clnscl-filler")
            continue
        if kind == "diverged":
            from clnscl.trainer import DivergedError

            raise DivergedError(f"injected divergence {where}")
        if kind == "config":
            from clnscl.config import ConfigError

            raise ConfigError(f"injected invalid config {where}")
        if kind == "import":
            raise ModuleNotFoundError(f"injected: No module named 'clnscl_missing' ({where})")
        if kind == "data":
            raise FileNotFoundError(f"injected: data file missing while loading ({where})")
        if kind == "shared":
            from clnscl.trainer import SharedRandomnessError

            raise SharedRandomnessError(f"injected input mismatch {where}")
        if kind == "oserror":
            raise OSError(f"injected I/O error {where}")
        if kind == "sigkill":  # the worker process dies mid-trial (a lost worker)
            import signal

            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"injected fault {where}")


def _fill_file_system(path: Path) -> None:
    """Write zeros to ``path`` until its file system is full (test hook)."""
    import errno

    block = b"\0" * (1 << 20)
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        for size in (1 << 16, 1 << 12, 1 << 9):  # the last crumbs too
            with contextlib.suppress(OSError):
                while True:
                    f.write(block[:size])


def storage_full(exc: BaseException) -> bool:
    """A full disk or exhausted quota anywhere in the exception's chain."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc):  # wrapped by pyarrow / Ray
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# --- which errors a retry can fix ------------------------------------------------------
def deterministic_reason(exc: BaseException, phase: str) -> str | None:
    """Why retrying ``exc`` cannot help (the same inputs give the same error), or None
    for a transient error that a retry from the last checkpoint may get past (a lost
    worker, an I/O error, anything unrecognised). ``phase``: where the trial was
    (``config``, ``import``, ``data``, ``checkpoint``, ``train``); a missing file is
    deterministic only while the data loads (a missing data set stays missing)."""
    from clnscl.config import ConfigError

    try:
        from clnscl.trainer import DivergedError, SharedRandomnessError
    except Exception:  # noqa: BLE001 - the trainer itself does not import
        DivergedError = SharedRandomnessError = ()
    if isinstance(exc, ConfigError):
        return "invalid configuration"
    if isinstance(exc, ImportError):  # ModuleNotFoundError included
        return "import error (fix the environment, then rerun)"
    if DivergedError and isinstance(exc, DivergedError):
        return "diverged (NaN/Inf loss): a retry replays the same steps"
    if SharedRandomnessError and isinstance(exc, SharedRandomnessError):
        return "coupled models consumed different inputs (a bug, not bad luck)"
    if isinstance(exc, FileNotFoundError) and phase == "data":
        return "data missing"
    if storage_full(exc):
        return ("the storage folder's disk is full: free space, then rerun the same command "
                "(the trial continues from its last checkpoint)")
    return None


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
    """Load one checkpoint (state, records, meta); raises on anything unreadable or
    inconsistent (truncated state file, bad JSON, epoch mismatch)."""
    with checkpoint.as_directory() as d:
        with open(os.path.join(d, RECORDS_FILE)) as f:
            records = json.load(f)
        meta = {}
        if os.path.exists(os.path.join(d, CHECKPOINT_META)):
            with open(os.path.join(d, CHECKPOINT_META)) as f:
                meta = json.load(f)
        trainer.load_checkpoint(os.path.join(d, STATE_FILE))
    if "epoch" in meta and int(meta["epoch"]) != trainer.epoch:
        raise ValueError(f"state file holds epoch {trainer.epoch}, meta.json says "
                         f"{meta['epoch']}")
    if not isinstance(records, list) or not all("epoch" in r for r in records):
        raise ValueError("records.json is not a list of records")
    return [r for r in records if r["epoch"] <= trainer.epoch]


def _older_checkpoints(checkpoint) -> list:
    """The trial's other checkpoints in its storage folder (Tune keeps two), newest first."""
    import pyarrow.fs as pafs
    from ray import tune

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent, name = path.rsplit("/", 1)
    infos = fs.get_file_info(pafs.FileSelector(parent))
    older = sorted((i.path.rstrip("/") for i in infos if i.type == pafs.FileType.Directory
                    and i.base_name.startswith("checkpoint_") and i.base_name < name),
                   reverse=True)
    return [tune.Checkpoint(p, filesystem=fs) for p in older]


def restore_trial(make_trainer, checkpoint) -> tuple[object, list[dict], str | None]:
    """(trainer, records, note): the trainer restored from Tune's latest checkpoint, else
    from the previous good one when the latest is corrupt or truncated, else from scratch
    (the computation is seeded: the same records come out). ``note`` says what was
    skipped (None when the latest checkpoint loaded)."""
    trainer = make_trainer()
    if checkpoint is None:
        return trainer, [], None
    bad = []
    try:
        candidates = [checkpoint] + _older_checkpoints(checkpoint)
    except Exception:  # noqa: BLE001 - listing failed: only the latest
        candidates = [checkpoint]
    for ckpt in candidates:
        try:
            records = _load_checkpoint(trainer, ckpt)
        except Exception as e:  # noqa: BLE001 - corrupt/truncated: try the previous one
            bad.append(f"{ckpt.path.rstrip('/').rsplit('/', 1)[-1]} unreadable "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
            trainer = make_trainer()  # a half-loaded state is not trusted
            continue
        if not bad:
            return trainer, records, None
        note = "; ".join(bad) + f"; resumed from {ckpt.path.rstrip('/').rsplit('/', 1)[-1]} " \
                                f"(epoch {trainer.epoch})"
        print(f"[clnscl] checkpoint fallback: {note}", file=sys.stderr, flush=True)
        return trainer, records, note
    note = "; ".join(bad) + "; no readable checkpoint, restarted from epoch 0 (same seeds: " \
                            "same results)"
    print(f"[clnscl] checkpoint fallback: {note}", file=sys.stderr, flush=True)
    return trainer, [], note


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
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    node_id = ray.get_runtime_context().get_node_id()
    every = int(sweep.get("checkpoint_every", 1))

    cpus = sweep.get("cpus_per_trial")
    if cpus:
        import torch

        torch.set_num_threads(max(1, int(cpus)))

    log, cfg = None, None
    status, error, trainer, records, phase = "FAILED", None, None, [], "config"
    try:
        cfg = apply_budget(TrainConfig.from_dict(config), sweep.get("budget_images"),
                           sweep.get("evals", 4))
        if sweep.get("tracking_uri"):
            _quiet_http_retries()
            log = TrialLog(sweep["tracking_uri"], sweep, trial_id, cfg, node_id=node_id,
                           retry_s=float(sweep.get("tracking_retry_s", 5.0)), tags={
                               "trial_name": ctx.get_trial_name(),
                               "sweep": sweep.get("sweep_name", ""),
                               # epochs/eval_every derived from an image budget
                               "budget_images": sweep.get("budget_images")})
            log.sync([], force=True)  # open the run now if the store answers; else later

        phase = "import"
        from clnscl.trainer import CoupledTrainer

        def make_trainer():
            _maybe_inject_fault(sweep.get("fault"), cfg, -1)  # test hook: while loading data
            if cfg.download and cfg.data_root:
                with download_lock(cfg.data_root):  # one download per node
                    return CoupledTrainer(cfg)
            return CoupledTrainer(cfg)

        phase = "data"
        checkpoint = tune.get_checkpoint()
        trainer, records, fallback = restore_trial(make_trainer, checkpoint)
        phase = "train"
        if log:
            log.class_ids = list(trainer.class_ids)
            log.tags["resumed_from_epoch"] = trainer.epoch if checkpoint is not None else None
            log.tag({"resumed_from_epoch": log.tags["resumed_from_epoch"]})
            if fallback:
                log.tags["checkpoint_fallback"] = fallback
                log.tag({"checkpoint_fallback": fallback})
            log.sync(records, force=True)
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
        status = "FINISHED"
    except BaseException as e:
        reason = deterministic_reason(e, phase) if isinstance(e, Exception) else None
        error = f"{type(e).__name__}: {e}"
        if reason is None:  # transient (or unknown): Tune retries from the last checkpoint
            error = f"{error}\n{traceback.format_exc()}"
            raise
        # deterministic: end the trial now with the reason; a retry would fail the same way
        error = f"{error} [not retried: {reason}]"
        print(f"[clnscl] trial {cfg.run_name() if cfg else trial_id} ended: {error}",
              file=sys.stderr, flush=True)
        out = {"epoch": trainer.epoch if trainer is not None else -1, "failed_final": 1.0,
               "error_reason": error[:1000]}
        if type(e).__name__ == "DivergedError":
            out["diverged"] = 1.0
        tune.report(out)
        return
    finally:
        if log:
            try:
                wait = float(sweep.get("tracking_wait_s", 60.0)) if status == "FINISHED" else 5.0
                log.finish(status, error, records, trainer, wait_s=wait)
            except Exception:  # noqa: BLE001 - never mask the trial's own error
                traceback.print_exc()
        trainer = None
        release_device_memory()


def release_device_memory() -> None:
    """After a trial: collect its tensors and hand the CUDA cache back, so that the next
    trial in a reused worker (or another process on a shared GPU) gets the memory."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - cleanup must not fail a finished trial
        pass


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
