"""Load a sweep into two tables: final metrics per (trial, compared objective), and curves.

Sources:

- an MLflow experiment (one parent run per sweep, one child run per trial, params as
  strings, metrics logged with ``step = epoch``);
- a Ray Tune results directory (``storage_path/<name>/``: one folder per trial with
  ``params.json`` and ``result.json``), for sweeps run without MLflow.

Metric names are parsed generically by their ``/`` structure (the scheme of
``clnscl.records``): ``{obj}/{metric}`` (model metrics and headline aliases) and
``{obj}/{split}/{features}/{metric}`` (alignment variants). No torch, no ``clnscl`` import.

Trials that failed, were killed, are still running, or diverged (non-finite losses or
metrics) are left out; ``df.attrs["excluded"]`` lists ``(trial name, reason)`` for each.
"""

from __future__ import annotations

import ast
import glob
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# ---------------------------------------------------------------------------------------
# names (mirrors clnscl.records without importing it)

BOOKKEEPING = ("epoch", "step", "step_lr", "cum_lr", "time_s", "eval_rows", "knn_bank_rows")
REFERENCE_OBJECTIVE = "cl"
COMPARED_ORDER = ("nscl", "supcon", "ce", "cl_indep")
CONTROL_OBJECTIVE = "cl_indep"  # the uncoupled control: CL with its own batches and views
ALIGNMENT_METRICS = ("cka", "cka_debiased", "rsa", "rho", "cka_cos", "bound_sqrt", "bound_ratio")
PARAM_METRICS = ("param_dist", "param_dist_layer")
DRIFT_METRICS = ("init_cka", "weight_move", "knn_gain")  # drift from the shared init
MODEL_METRICS = ("loss", "knn_acc", "ncc_acc", "probe_acc", *DRIFT_METRICS)
# metrics that may legitimately be NaN (bounds say nothing for rho >= 1; the unbiased HSIC
# estimator can be negative, making debiased CKA undefined): never a reason to exclude.
MAY_BE_NAN = ("bound_sqrt", "bound_ratio", "cka_debiased")
# MLflow's SQL store keeps +-inf as +-float max
_INF_LIKE = 1e300

# typed TrainConfig fields (MLflow gives every param as a string)
INT_PARAMS = {"n_classes", "batch_size", "seed", "epochs", "eval_every", "eval_size", "knn_k",
              "image_size", "warmup_epochs", "proj_dim", "proj_hidden", "class_seed",
              "synthetic_train_per_class", "synthetic_test_per_class"}
FLOAT_PARAMS = {"tau", "lr", "momentum", "weight_decay"}
BOOL_PARAMS = {"include_positive", "download", "linear_probe"}
LIST_PARAMS = {"objectives"}
# params that change what is trained (the only ones a fit slices by when they vary)
SCIENTIFIC_PARAMS = ("dataset", "n_classes", "tau", "batch_size", "include_positive", "arch",
                     "proj_dim", "proj_hidden", "epochs", "optimizer", "lr", "lr_rule",
                     "momentum", "weight_decay", "warmup_epochs", "image_size",
                     "synthetic_train_per_class", "synthetic_test_per_class", "eval_size",
                     "knn_k", "objectives")
# leading columns of the tables, in this order when present
LEAD_COLUMNS = ("trial", "objective", "dataset", "n_classes", "tau", "batch_size", "seed",
                "lr", "lr_rule", "epochs", "include_positive", "arch", "objectives", "run_id",
                "trial_id", "status")


# run tags worth a column (others, e.g. fingerprints and node ids, stay in MLflow)
TAG_COLUMNS = ("class_ids", "attempts", "trial_name", "budget_images")


class SweepNotFoundError(LookupError):
    """The experiment or results directory does not exist; the message lists what does."""


# ---------------------------------------------------------------------------------------
# parameter parsing


def _parse_scalar(s: str):
    t = s.strip()
    if t in ("None", "none", "null", ""):
        return None
    if t in ("True", "true"):
        return True
    if t in ("False", "false"):
        return False
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        pass
    if t[:1] in "[({" and t[-1:] in "])}":
        try:
            return ast.literal_eval(t)
        except (ValueError, SyntaxError):
            return t
    return t


def _as_list(v) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [str(x).strip() for x in v]
    s = str(v).strip()
    if s[:1] in "[(" and s[-1:] in "])":
        try:
            return [str(x).strip() for x in ast.literal_eval(s)]
        except (ValueError, SyntaxError):
            s = s[1:-1]
    return [p.strip().strip("'\"") for p in s.split(",") if p.strip().strip("'\"")]


def parse_param(name: str, value):
    """One parameter to its Python type (MLflow stores every param as a string).

    Known TrainConfig fields get their declared type (``"True"`` -> True, ``"256"`` -> 256,
    ``"['cl', 'nscl']"`` or ``"cl,nscl"`` -> ``["cl", "nscl"]``); other names are parsed
    generically (None, bools, ints, floats, Python literals, else the string). Already
    typed values (Ray's params.json) pass through the same rules.
    """
    if name in LIST_PARAMS:
        return _as_list(value)
    v = _parse_scalar(value) if isinstance(value, str) else value
    try:
        if v is None:
            return None
        if name in BOOL_PARAMS:
            if isinstance(v, str):
                raise ValueError(v)
            return bool(v)
        if name in INT_PARAMS:
            if isinstance(v, float) and not v.is_integer():
                raise ValueError(v)
            return int(v)
        if name in FLOAT_PARAMS:
            return float(v)
    except (TypeError, ValueError):
        return value  # keep what was there rather than guess
    return v


def parse_params(params: dict) -> dict:
    return {k: parse_param(k, v) for k, v in params.items()}


def _table_value(v):
    """Lists become ``"a,b"`` strings in tables (hashable, CSV-friendly)."""
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


# ---------------------------------------------------------------------------------------
# the raw form of a loaded trial


@dataclass
class TrialRecord:
    name: str
    params: dict
    status: str  # FINISHED, FAILED, KILLED, RUNNING, ... (Ray: TERMINATED -> FINISHED)
    final: dict = field(default_factory=dict)  # metric key -> last value
    history: dict | None = None  # metric key -> [(epoch, value)] sorted by epoch
    run_id: str | None = None
    trial_id: str | None = None
    error: str | None = None
    tags: dict = field(default_factory=dict)
    path: str | None = None


@dataclass
class Sweep:
    """What was loaded: the trial records, why some are left out, and where they came from."""

    name: str
    kind: str  # "mlflow" or "ray"
    records: list
    excluded: list  # [(trial name, reason)]
    notes: list  # free-text remarks about the source
    tracking_uri: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    path: str | None = None

    @property
    def included(self) -> list:
        bad = {id(r) for r in self.records if _exclusion_reason(r) is not None}
        return [r for r in self.records if id(r) not in bad]

    def source_attrs(self) -> dict:
        return {"name": self.name, "kind": self.kind, "tracking_uri": self.tracking_uri,
                "experiment_id": self.experiment_id, "parent_run_id": self.parent_run_id,
                "path": self.path, "notes": list(self.notes)}


def default_tracking_uri() -> str:
    return "sqlite:///" + os.path.abspath(os.path.join(os.getcwd(), "mlflow.db"))


def _nonfinite(v) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return not math.isfinite(f) or abs(f) >= _INF_LIKE


def _leaf(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _short_error(err: str | None, limit: int = 240) -> str | None:
    """The first non-empty line of an error text (the tag may carry a whole traceback)."""
    if not err:
        return None
    line = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _exclusion_reason(rec: TrialRecord) -> str | None:
    status = (rec.status or "UNKNOWN").upper()
    err = _short_error(rec.error)
    if err and "Diverged" in err.split(":")[0]:
        return f"diverged (status {status}): {err}"
    if status == "DIVERGED":
        return "diverged (reported diverged = 1)"
    if status != "FINISHED":
        what = {"RUNNING": "still running", "SCHEDULED": "not started", "PENDING": "not started",
                "PAUSED": "paused", "KILLED": "killed", "FAILED": "failed",
                "ERROR": "failed"}.get(status, "not finished")
        msg = f"{what} (status {status})"
        return msg + (f": {err}" if err else "")
    if err:
        return f"error recorded: {err}"
    metrics = {k: v for k, v in rec.final.items() if "/" in k}
    if not metrics:
        return "no metrics logged"
    losses = sorted(k for k, v in metrics.items() if _leaf(k) == "loss" and _nonfinite(v))
    if rec.history:
        for k, pts in rec.history.items():
            if _leaf(k) == "loss" and k not in losses and any(_nonfinite(v) for _, v in pts):
                losses.append(k)
    if losses:
        return "diverged: non-finite " + ", ".join(sorted(losses))
    bad = sorted(k for k, v in metrics.items() if _nonfinite(v) and _leaf(k) not in MAY_BE_NAN)
    if bad:
        shown = ", ".join(bad[:4]) + (f" (+{len(bad) - 4} more)" if len(bad) > 4 else "")
        return f"diverged: non-finite final {shown}"
    return None


def _unique_names(records: list) -> None:
    """Two runs of one grid point (e.g. a trial restarted as a new run) keep apart."""
    seen: dict[str, int] = {}
    for r in records:
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in records:
        if seen[r.name] > 1:
            ident = (r.run_id or r.trial_id or os.path.basename(r.path or "") or "?")[:8]
            r.name = f"{r.name} [{ident}]"


def _trial_name(params: dict, fallback: str) -> str:
    try:
        return (f"tau={float(params['tau']):g} B={int(params['batch_size'])} "
                f"C={int(params['n_classes'])} seed={int(params['seed'])}")
    except (KeyError, TypeError, ValueError):
        return fallback


# ---------------------------------------------------------------------------------------
# MLflow source


def _mlflow_client(tracking_uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _all_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _points(metrics) -> list[tuple[int, float]]:
    last: dict[int, tuple[int, float]] = {}
    for m in metrics:  # a re-logged step keeps its newest value
        if m.step not in last or m.timestamp >= last[m.step][0]:
            last[m.step] = (m.timestamp, m.value)
    return sorted((s, v) for s, (_, v) in last.items())


def _fill_histories(client, records: list, keys_by_run: dict) -> None:
    """Metric histories of every run: one bulk query per key where the store offers it."""
    for rec in records:
        rec.history = {}
    by_id = {rec.run_id: rec for rec in records}
    keys: dict[str, list[str]] = {}
    for rid, ks in keys_by_run.items():
        for k in ks:
            keys.setdefault(k, []).append(rid)
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    bulk = getattr(store, "get_metric_history_bulk", None)
    for key, rids in keys.items():
        got = None
        if bulk is not None:
            try:
                got: dict[str, list] = {}
                for mw in bulk(rids, key, max_results=10_000_000):
                    got.setdefault(mw.run_id, []).append(getattr(mw, "metric", mw))
            except Exception:  # noqa: BLE001 - a store without it: fall back to per-run calls
                got, bulk = None, None
        for rid in rids:
            pts = got.get(rid, []) if got is not None else client.get_metric_history(rid, key)
            by_id[rid].history[key] = _points(pts)


def _load_mlflow(experiment: str, tracking_uri: str | None, history: bool) -> Sweep:
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        db = uri[len("sqlite:///"):]
        if not os.path.exists(db):
            raise SweepNotFoundError(
                f"MLflow store {uri} does not exist (no file {db}); pass --tracking-uri, or "
                f"a Ray Tune results directory instead of an experiment name")
    client = _mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise SweepNotFoundError(
            f"no MLflow experiment named {experiment!r} in {uri}; existing experiments: "
            + (", ".join(repr(n) for n in names) if names else "none"))
    runs = _all_runs(client, exp.experiment_id)
    notes: list[str] = []
    parent_key = "mlflow.parentRunId"
    children = [r for r in runs if r.data.tags.get(parent_key)
                and r.data.tags.get("clnscl.role") != "sweep"]
    by_id = {r.info.run_id: r for r in runs}
    parent_id = None
    if children:
        groups: dict[str, list] = {}
        for r in children:
            groups.setdefault(r.data.tags[parent_key], []).append(r)

        def started(pid):
            p = by_id.get(pid)
            t = p.info.start_time if p is not None else None
            return t if t is not None else max(c.info.start_time or 0 for c in groups[pid])

        parent_id = max(groups, key=started)
        trials = groups[parent_id]
        if len(groups) > 1:
            others = sum(len(v) for k, v in groups.items() if k != parent_id)
            notes.append(f"the experiment holds {len(groups)} sweeps (parent runs); analysed the "
                         f"newest (parent run {parent_id}), ignored {others} trial run(s) of "
                         f"older ones")
        if parent_id not in by_id:
            notes.append(f"parent run {parent_id} is not in the experiment; artifacts cannot be "
                         f"logged")
            parent_id = None
    else:
        trials = [r for r in runs if any("/" in k for k in r.data.metrics)]
        parents = [r for r in runs if r not in trials]
        if parents:
            parent_id = max(parents, key=lambda r: r.info.start_time or 0).info.run_id
        if trials:
            notes.append("no run carries an mlflow.parentRunId tag: every run with metrics is "
                         "taken as a trial")
    records = []
    for r in sorted(trials, key=lambda r: (r.info.start_time or 0, r.info.run_id)):
        params = parse_params(r.data.params)
        tags = dict(r.data.tags)
        status = str(r.info.status)
        tag_status = tags.get("status")
        if tag_status and tag_status.upper() != "FINISHED" and status == "FINISHED":
            status = tag_status.upper()
        rec = TrialRecord(
            name=r.info.run_name or tags.get("mlflow.runName") or _trial_name(params, r.info.run_id),
            params=params, status=status, final=dict(r.data.metrics), run_id=r.info.run_id,
            trial_id=tags.get("trial_id"), error=tags.get("error") or None,
            tags={k: v for k, v in tags.items() if not k.startswith("mlflow.")})
        records.append(rec)
    _unique_names(records)
    if history:
        _fill_histories(client, records, {r.info.run_id: list(r.data.metrics) for r in trials})
    sweep = Sweep(name=experiment, kind="mlflow", records=records, excluded=[], notes=notes,
                  tracking_uri=uri, experiment_id=exp.experiment_id, parent_run_id=parent_id)
    sweep.excluded = [(r.name, why) for r in records if (why := _exclusion_reason(r))]
    return sweep


# ---------------------------------------------------------------------------------------
# Ray Tune source

_TUNE_STATUS = {"TERMINATED": "FINISHED", "ERROR": "FAILED", "RUNNING": "RUNNING",
                "PENDING": "PENDING", "PAUSED": "PAUSED"}


def _ray_states(root: Path) -> dict:
    """Trial status by trial dir name and trial id, from the newest experiment_state file."""
    files = sorted(glob.glob(str(root / "experiment_state*.json")), key=os.path.getmtime)
    out: dict[str, str] = {}
    if not files:
        return out
    try:
        state = json.loads(Path(files[-1]).read_text())
        for item in state.get("trial_data", []):
            tj = item[0] if isinstance(item, (list, tuple)) else item
            t = json.loads(tj) if isinstance(tj, str) else tj
            status = _TUNE_STATUS.get(str(t.get("status", "")).upper(), str(t.get("status")))
            for k in (t.get("relative_logdir"), t.get("trial_id")):
                if k:
                    out[str(k)] = status
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return {}
    return out


def _read_results(path: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a half-written last line of a running trial
    return rows


def _metric_items(row: dict):
    for k, v in row.items():
        if ("/" in k or k in BOOKKEEPING) and isinstance(v, (int, float)) and not isinstance(v, bool):
            yield k, float(v)
        elif ("/" in k or k in BOOKKEEPING) and v is None:
            yield k, float("nan")


def _load_ray(path: str | Path, history: bool) -> Sweep:
    root = Path(path).resolve()
    if not root.is_dir():
        raise SweepNotFoundError(f"Ray Tune results directory {root} does not exist")
    dirs = sorted({p.parent for pat in ("params.json", "result.json")
                   for p in list(root.glob(pat)) + list(root.glob(f"*/{pat}"))
                   + list(root.glob(f"*/*/{pat}"))})
    if not dirs:
        subs = sorted(p.name for p in root.iterdir() if p.is_dir())[:20]
        raise SweepNotFoundError(
            f"no trial folders (with params.json / result.json) under {root}; sub-folders: "
            + (", ".join(subs) if subs else "none"))
    states = _ray_states(root)
    notes = []
    if not states:
        notes.append("no experiment_state file: trials with results and no error.txt are "
                     "taken as finished")
    records = []
    for d in dirs:
        params_raw = {}
        if (d / "params.json").exists():
            try:
                params_raw = json.loads((d / "params.json").read_text())
            except ValueError:
                params_raw = {}
        rows = _read_results(d / "result.json")
        if not params_raw and rows and isinstance(rows[-1].get("config"), dict):
            params_raw = rows[-1]["config"]
        params = parse_params(params_raw)
        trial_id = next((str(r["trial_id"]) for r in rows if r.get("trial_id")), None)
        status = states.get(d.name) or (states.get(trial_id) if trial_id else None)
        error = None
        err = d / "error.txt"
        if err.exists():
            lines = [ln.strip() for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
            error = (lines[-1] if lines else "error.txt present")[:300]
            status = "FAILED" if status in (None, "FINISHED") else status
        if status is None:
            status = "FINISHED" if rows else "PENDING"
        if any(r.get("diverged") for r in rows if isinstance(r.get("diverged"), (int, float))):
            status = "DIVERGED"
        final: dict[str, float] = {}
        hist: dict[str, dict[int, float]] = {}
        for i, row in enumerate(rows):
            if row.get("__duplicate__"):
                continue
            items = dict(_metric_items(row))
            ep = items.get("epoch", row.get("training_iteration", i + 1))
            ep = int(ep) if ep is not None and math.isfinite(float(ep)) else i
            for k, v in items.items():
                final[k] = v
                hist.setdefault(k, {})[ep] = v
        rec = TrialRecord(name=_trial_name(params, d.name), params=params, status=status,
                          final=final, trial_id=trial_id, error=error, path=str(d),
                          history={k: sorted(v.items()) for k, v in hist.items()}
                          if history else None)
        records.append(rec)
    _unique_names(records)
    sweep = Sweep(name=root.name, kind="ray", records=records, excluded=[], notes=notes,
                  path=str(root))
    sweep.excluded = [(r.name, why) for r in records if (why := _exclusion_reason(r))]
    return sweep


# ---------------------------------------------------------------------------------------
# public loaders


def load_sweep(experiment: str | os.PathLike | None = None, tracking_uri: str | None = None,
               results_dir: str | os.PathLike | None = None, history: bool = True) -> Sweep:
    """Load a sweep's raw trial records from MLflow or a Ray Tune results directory.

    ``results_dir`` (or an ``experiment`` that is an existing path) selects the Ray source;
    otherwise ``experiment`` names an MLflow experiment in ``tracking_uri`` (default
    ``sqlite:///<cwd>/mlflow.db``).
    """
    if results_dir is not None:
        return _load_ray(results_dir, history)
    if experiment is None:
        raise ValueError("give an MLflow experiment name or a Ray Tune results directory")
    if os.path.isdir(os.fspath(experiment)):
        return _load_ray(experiment, history)
    return _load_mlflow(str(experiment), tracking_uri, history)


def _split_key(key: str):
    """``nscl/test/proj/rho`` -> (``nscl``, ``test/proj/rho``); bookkeeping -> (None, key)."""
    if key in BOOKKEEPING:
        return None, key
    if "/" not in key:
        return None, None
    obj, rest = key.split("/", 1)
    return obj, rest


def _compared_objectives(rec: TrialRecord) -> list[str]:
    """Objectives (other than cl) that carry alignment or parameter metrics, stable order."""
    seen = set()
    for k in rec.final:
        obj, rest = _split_key(k)
        if obj and obj != REFERENCE_OBJECTIVE and _leaf(rest) in ALIGNMENT_METRICS + PARAM_METRICS:
            seen.add(obj)
    return [o for o in COMPARED_ORDER if o in seen] + sorted(seen - set(COMPARED_ORDER))


def _order_columns(df: pd.DataFrame) -> pd.DataFrame:
    lead = [c for c in LEAD_COLUMNS if c in df.columns]
    return df[lead + [c for c in df.columns if c not in lead]]


def _base_row(rec: TrialRecord) -> dict:
    row = {"trial": rec.name}
    row.update({k: _table_value(v) for k, v in rec.params.items()})
    row.update({"run_id": rec.run_id, "trial_id": rec.trial_id, "status": rec.status})
    for k in TAG_COLUMNS:
        if k in rec.tags and k not in row:
            row[k] = rec.tags[k]
    return row


def _with_attrs(df: pd.DataFrame, sweep: Sweep) -> pd.DataFrame:
    df.attrs["excluded"] = list(sweep.excluded)
    df.attrs["source"] = sweep.source_attrs()
    return df


def trials_table(sweep: Sweep) -> pd.DataFrame:
    """One row per (included trial, compared objective) with the final metric values."""
    rows = []
    for rec in sweep.included:
        base = _base_row(rec)
        for k in BOOKKEEPING:
            if k in rec.final:
                base["last_epoch" if k == "epoch" else k] = rec.final[k]
        ref = {}
        for k, v in rec.final.items():
            obj, rest = _split_key(k)
            if obj == REFERENCE_OBJECTIVE and rest in MODEL_METRICS:
                ref[f"cl_{rest}"] = v
        for obj in _compared_objectives(rec):
            row = dict(base, objective=obj, **ref)
            for k, v in rec.final.items():
                o, rest = _split_key(k)
                if o == obj:
                    row[rest] = np.nan if _nonfinite(v) else float(v)
            rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = _order_columns(df)
        if "last_epoch" in df:
            df["last_epoch"] = df["last_epoch"].astype("Int64")
    return _with_attrs(df, sweep)


def curves_table(sweep: Sweep) -> pd.DataFrame:
    """Long table (trial, objective, epoch, metric, value) plus step/step_lr/cum_lr and the grid."""
    frames = []
    for rec in sweep.included:
        hist = rec.history or {}
        book = {}
        for k in ("step", "step_lr", "cum_lr", "time_s", "eval_rows", "knn_bank_rows"):
            if k in hist:
                book[k] = dict(hist[k])
        base = _base_row(rec)
        rows = []
        for key, pts in hist.items():
            obj, rest = _split_key(key)
            if obj is None:
                continue
            for ep, v in pts:
                r = {"trial": rec.name, "objective": obj, "epoch": int(ep), "metric": rest,
                     "value": np.nan if _nonfinite(v) else float(v)}
                for b, m in book.items():
                    r[b] = m.get(ep, np.nan)
                rows.append(r)
        if not rows:
            continue
        f = pd.DataFrame(rows)
        for k, v in base.items():
            if k not in f.columns:
                f[k] = v
        frames.append(f)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["trial", "objective", "epoch", "metric", "value"])
    if not df.empty:
        df = df.sort_values(["trial", "objective", "metric", "epoch"], kind="stable")
        df = _order_columns(df.reset_index(drop=True))
        lead = ["trial", "objective", "epoch", "metric", "value"]
        df = df[lead + [c for c in df.columns if c not in lead]]
    return _with_attrs(df, sweep)


def load_trials(experiment, tracking_uri: str | None = None, results_dir=None) -> pd.DataFrame:
    """Final metrics: one row per (trial, compared objective), typed grid columns.

    ``experiment`` is an MLflow experiment name, or a Ray Tune results directory (an
    existing path). Left-out trials are in ``df.attrs["excluded"]`` as (name, reason).
    """
    return trials_table(load_sweep(experiment, tracking_uri, results_dir, history=False))


def load_curves(experiment, tracking_uri: str | None = None, results_dir=None) -> pd.DataFrame:
    """Per-epoch values: long table (trial, objective, epoch, metric, value) + grid columns."""
    return curves_table(load_sweep(experiment, tracking_uri, results_dir, history=True))


__all__ = [
    "SCIENTIFIC_PARAMS",
    "Sweep",
    "SweepNotFoundError",
    "TrialRecord",
    "curves_table",
    "default_tracking_uri",
    "load_curves",
    "load_sweep",
    "load_trials",
    "parse_param",
    "parse_params",
    "trials_table",
]
