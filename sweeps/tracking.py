"""The small MLflow helper of the sweeps: one experiment per sweep, one parent run per
sweep, one child run per Tune trial.

Why not Ray's MLflow integrations: they leave runs RUNNING when a trial dies and open a
new run on every retry. Here a trial's run is found again by its Tune trial id (tag
``trial_id``), so a retried or restored trial continues its own run; metrics are logged
in batches (``log_batch``: few SQLite transactions) with ``step = epoch``, and the steps a
run already holds are skipped, so re-running epochs after a restore never duplicates
points. Every run ends FINISHED, FAILED (with the error text in tag ``error``) or KILLED.

Default store: ``sqlite:////abs/path/mlflow.db`` in the working directory with artifacts
in ``mlartifacts/`` beside it (MLflow 3 refuses the plain file store). A server
(``http://host:5000``) is checked for an answer before anything starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

PARENT_ROLE = "sweep"
CHILD_ROLE = "trial"
TAG_ROLE = "clnscl.role"
TAG_SWEEP = "clnscl.sweep"
TAG_TRIAL = "trial_id"
TAG_PARENT = "mlflow.parentRunId"
TAG_ERROR = "error"
TAG_CREATE_KEY = "clnscl.create_key"  # one per parent-run creation: finds a re-sent create
MAX_TAG_CHARS = 7000  # MLflow allows 8000 per tag value
MAX_PARAM_CHARS = 5000  # and 6000 per param value
BATCH = 1000  # MLflow's limit of entities per log_batch
# MLflow 3's UI reads the experiment tag mlflow.experimentKind: "custom_model_development"
# is its classic model-training kind ("Machine learning": runs table first), against
# "genai_development" (traces/prompts first). The values are the enum of the installed UI
# bundle (mlflow/server/js/build/static/js/main.*.js); mlflow/demo sets the GenAI one.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"



class TrackingError(RuntimeError):
    """The tracking store cannot be used: the message names the URI."""


# --- URIs ------------------------------------------------------------------------------
def default_tracking_uri(directory: str | os.PathLike | None = None) -> str:
    """``sqlite:////abs/dir/mlflow.db`` (4 slashes: an absolute path)."""
    d = Path(directory or os.getcwd()).resolve()
    return f"sqlite:///{d / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:"):]
    if not rest.startswith("///"):
        raise TrackingError(f"tracking URI {uri!r}: use sqlite:////absolute/path/mlflow.db "
                            "(four slashes for an absolute path)")
    return Path(rest[3:].split("?", 1)[0])


def artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``$CLNSCL_ARTIFACT_ROOT`` when set (an
    S3 URI on a cluster), else ``mlartifacts/`` beside a SQLite database or in the working
    folder for a PostgreSQL/MySQL store (an absolute file URI). None for a server, which
    decides itself."""
    if os.environ.get("CLNSCL_ARTIFACT_ROOT"):  # e.g. s3://bucket/mlartifacts on a cluster
        return os.environ["CLNSCL_ARTIFACT_ROOT"].rstrip("/")
    db = sqlite_path(uri)
    if db is None:
        if urllib.parse.urlsplit(uri).scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
            return (Path.cwd() / "mlartifacts").resolve().as_uri()  # a database store: here
        return None
    return (db.parent / "mlartifacts").resolve().as_uri()


def check_tracking_uri(uri: str, timeout: float = 5.0) -> str:
    """Refuse a store that cannot work, naming the URI: a relative SQLite path, a folder
    that cannot be written, an HTTP server that does not answer, the plain file store."""
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "sqlite":
        db = sqlite_path(uri)
        if not db.is_absolute():
            raise TrackingError(f"tracking URI {uri!r}: the database path {str(db)!r} is "
                                "relative; Ray trials run in other folders, so use "
                                f"sqlite:///{Path(db).resolve()} (absolute)")
        # nothing is created here (a refused sweep leaves nothing behind): the nearest
        # existing folder must be a writable folder; the driver creates the rest
        parent = db.parent
        existing = parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise TrackingError(f"tracking URI {uri!r}: cannot create folder {parent}: "
                                f"{existing} is not a folder")
        if db.exists() and db.is_dir():
            raise TrackingError(f"tracking URI {uri!r}: {db} is a folder, not a database file")
        if not os.access(existing, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(f"tracking URI {uri!r}: {db} is not writable")
        return uri
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                r.read(64)
        except urllib.error.HTTPError as e:
            if e.code >= 500:
                raise TrackingError(f"tracking URI {uri!r}: server error {e.code} "
                                    f"at {url}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"tracking URI {uri!r} is not reachable ({reason}); start the server "
                "(mlflow server --backend-store-uri sqlite:////abs/mlflow.db --port 5000) or "
                "open the SSH tunnel to it, or omit --tracking-uri for a local SQLite "
                "store") from None
        return uri
    if scheme in ("", "file"):
        raise TrackingError(f"tracking URI {uri!r}: MLflow 3 refuses the file store; use "
                            f"{default_tracking_uri()} or an http:// server")
    if scheme.split("+")[0] in ("postgresql", "postgres"):
        if scheme.split("+")[0] == "postgres":
            raise TrackingError(f"tracking URI {redact(uri)!r}: unsupported scheme 'postgres'; "
                                "use postgresql://user:password@host:5432/database")
        return _check_database(postgresql_driver(uri), timeout)
    if scheme.split("+")[0] in ("mysql", "mssql"):
        return _check_database(uri, timeout)
    if scheme == "databricks":
        return uri
    raise TrackingError(f"tracking URI {redact(uri)!r}: unsupported scheme {scheme!r}; use "
                        "sqlite:////abs/path/mlflow.db, postgresql://user:pw@host:5432/db or "
                        "http://host:5000")


def redact(uri: str) -> str:
    """The URI with any password replaced by ***, for messages and tags."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
        return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
    return uri


def postgresql_driver(uri: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 reads a bare
    ``postgresql://`` as psycopg 3; with only psycopg2(-binary) installed the URI names
    it (``postgresql+psycopg2://``), so MLflow in every trial uses the same driver."""
    scheme, rest = uri.split("://", 1)
    if scheme.lower() != "postgresql":
        return uri
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and \
            importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return uri


def _check_database(uri: str, timeout: float) -> str:
    """A SQL store (postgresql://user:pw@host:port/db) must accept a connection."""
    shown = redact(uri)
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    try:
        import sqlalchemy
    except ImportError:  # pragma: no cover - mlflow depends on it
        raise TrackingError(f"tracking URI {shown!r}: sqlalchemy is not installed") from None
    if scheme.startswith("postgresql"):
        import importlib.util

        if not any(importlib.util.find_spec(m) for m in ("psycopg2", "psycopg")):
            raise TrackingError(f"tracking URI {shown!r}: no PostgreSQL driver is installed; "
                                "pip install psycopg2-binary") from None
    args = {"connect_timeout": int(max(1, timeout))} if scheme.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as e:  # noqa: BLE001 - any driver error: refuse, naming the URI
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrackingError(f"tracking URI {shown!r}: the database does not accept a "
                            f"connection ({first.replace(uri, shown)}); start it, check host, "
                            "port, user, password and database name") from None
    return uri


# --- client and retries ----------------------------------------------------------------
def connect(uri: str):
    from mlflow import MlflowClient

    return _retry(MlflowClient, tracking_uri=uri)


def _retry(fn, *args, attempts: int = 8, **kwargs):
    """Retry on SQLite lock contention (several trial processes share one database)."""
    delay = 0.2
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            text = str(e).lower()
            transient = "database is locked" in text or "database table is locked" in text
            if not transient or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 3.0)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _clip(text, n: int) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 20] + " ...[truncated]"


# --- experiments and runs --------------------------------------------------------------
def get_or_create_experiment(client, name: str, uri: str) -> str:
    """The experiment of a sweep (created on the driver with an absolute artifact
    location for a SQLite store; a deleted one of the same name is restored)."""
    exp = _retry(client.get_experiment_by_name, name)
    if exp is None:
        root = artifact_root(uri)
        location = None
        if root is not None:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            location = f"{root}/{safe}"
        try:
            return _retry(client.create_experiment, name, artifact_location=location,
                          tags={"clnscl.sweep": name, TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
        except Exception:
            exp = _retry(client.get_experiment_by_name, name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        _retry(client.restore_experiment, exp.experiment_id)
    if exp.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:  # an older sweep's experiment
        _retry(client.set_experiment_tag, exp.experiment_id, TAG_EXPERIMENT_KIND,
               EXPERIMENT_KIND)
    return exp.experiment_id


def find_run(client, experiment_id: str, filter_string: str):
    runs = _retry(client.search_runs, [experiment_id], filter_string=filter_string,
                  max_results=10, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def _create_once(client, experiment_id: str, key_filter: str, tags: Mapping, run_name: str):
    """create_run made idempotent by the run's stable key (``key_filter`` finds it): a
    request whose response was lost may have created the run (then it is found, not
    created twice), and an HTTP client that re-sent a create the server had already done
    leaves two runs with the same key (the oldest is kept, the others deleted)."""
    try:
        created = _retry(client.create_run, experiment_id, run_name=run_name,
                         tags={k: str(v) for k, v in tags.items()})
    except Exception:  # noqa: BLE001 - the response may be lost after the run was made
        created = None
    runs = _retry(client.search_runs, [experiment_id], filter_string=key_filter,
                  max_results=50, order_by=["attributes.start_time ASC"])
    if not runs:
        if created is None:  # nothing there: the create really failed; say why
            return _retry(client.create_run, experiment_id, run_name=run_name,
                          tags={k: str(v) for k, v in tags.items()})
        return created
    keep = min(runs, key=lambda r: (r.info.start_time, r.info.run_id))
    for extra in runs:
        if extra.info.run_id != keep.info.run_id:
            _retry(client.set_tag, extra.info.run_id, "duplicate_of", keep.info.run_id)
            _retry(client.delete_run, extra.info.run_id)
    return keep


def _q(value: str) -> str:
    return str(value).replace("'", "\\'")


def _params(params: Mapping) -> list:
    from mlflow.entities import Param

    return [Param(str(k), _clip(_param_text(v), MAX_PARAM_CHARS)) for k, v in params.items()]


def _param_text(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _tags(tags: Mapping) -> list:
    from mlflow.entities import RunTag

    return [RunTag(str(k), _clip(v, MAX_TAG_CHARS)) for k, v in tags.items() if v is not None]


def log_params_tags(client, run_id: str, params: Mapping | None = None,
                    tags: Mapping | None = None) -> None:
    p, t = _params(params or {}), _tags(tags or {})
    for i in range(0, max(len(p), 1), 100):
        chunk = p[i:i + 100]
        if chunk:
            _retry(client.log_batch, run_id, params=chunk)
    for i in range(0, len(t), 100):
        _retry(client.log_batch, run_id, tags=t[i:i + 100])


def start_sweep_run(client, experiment_id: str, sweep_name: str, params: Mapping,
                    tags: Mapping, run_id: str | None = None) -> str:
    """The sweep's parent run: reopened (status RUNNING) when ``run_id`` names an
    existing run of this experiment (a resumed sweep), else created."""
    if run_id:
        try:
            run = _retry(client.get_run, run_id)
        except Exception:  # noqa: BLE001 - gone: start a new parent run
            run = None
        if run is not None and run.info.experiment_id == experiment_id:
            _retry(client.update_run, run_id, status="RUNNING")
            log_params_tags(client, run_id, tags={**tags, "resumed": "true"})
            return run_id
    all_tags = {TAG_ROLE: PARENT_ROLE, TAG_SWEEP: sweep_name, TAG_CREATE_KEY: uuid.uuid4().hex,
                **tags}
    run = _create_once(client, experiment_id,
                       f"tags.`{TAG_CREATE_KEY}` = '{all_tags[TAG_CREATE_KEY]}'", all_tags,
                       sweep_name)
    log_params_tags(client, run.info.run_id, params=params)
    return run.info.run_id


def find_sweep_run(client, experiment_id: str, sweep_name: str):
    """The sweep's parent run found by its stable keys (tags ``clnscl.role = sweep`` and
    ``clnscl.sweep = NAME``), the newest when there are several; None when none."""
    return find_run(client, experiment_id,
                    f"tags.`{TAG_ROLE}` = '{PARENT_ROLE}' and "
                    f"tags.`{TAG_SWEEP}` = '{_q(sweep_name)}'")


def open_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str,
                   run_name: str, params: Mapping, tags: Mapping | None = None) -> tuple[str, bool]:
    """The child run of a Tune trial: the existing one with this trial id (a retry or a
    restore continues it, status back to RUNNING), else a new one nested under the parent.
    Returns (run_id, resumed)."""
    run = find_run(client, experiment_id,
                   f"tags.{TAG_TRIAL} = '{_q(trial_id)}' and "
                   f"tags.`{TAG_PARENT}` = '{_q(parent_run_id)}'")
    if run is not None:
        rid = run.info.run_id
        attempts = int(run.data.tags.get("attempts", "1")) + 1
        _retry(client.update_run, rid, status="RUNNING")
        log_params_tags(client, rid, tags={**(tags or {}), "attempts": attempts})
        return rid, True
    all_tags = {TAG_PARENT: parent_run_id, TAG_TRIAL: trial_id, TAG_ROLE: CHILD_ROLE,
                "attempts": 1, **(tags or {})}
    run = _create_once(client, experiment_id,
                       f"tags.{TAG_TRIAL} = '{_q(trial_id)}' and "
                       f"tags.`{TAG_PARENT}` = '{_q(parent_run_id)}'", all_tags, run_name)
    rid = run.info.run_id
    log_params_tags(client, rid, params=params)
    return rid, False


def logged_steps(client, run_id: str, key: str = "epoch") -> set[int]:
    """Steps already logged for ``key`` (the trainable logs ``epoch`` with every record)."""
    return {m.step for m in _retry(client.get_metric_history, run_id, key)}


def numeric_items(record: Mapping) -> dict[str, float]:
    """The metrics of a record: numbers only (bools and strings excluded)."""
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def string_items(record: Mapping) -> dict[str, str]:
    return {k: v for k, v in record.items() if isinstance(v, str)}


def log_metrics(client, run_id: str, metrics: Mapping[str, float], step: int,
                timestamp: int | None = None) -> None:
    """One batch per 1000 values (the MLflow limit): few transactions on SQLite."""
    from mlflow.entities import Metric

    ts = timestamp or _now_ms()
    items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()]
    for i in range(0, len(items), BATCH):
        _retry(client.log_batch, run_id, metrics=items[i:i + BATCH])


def log_records(client, run_id: str, records: Iterable[Mapping], skip_steps: set[int] | None = None,
                step_key: str = "epoch") -> int:
    """Log each record's numbers at step = record[step_key], skipping steps the run
    already holds (idempotent after a restore). Returns how many records were logged."""
    skip = set(skip_steps or ())
    n = 0
    for rec in records:
        step = int(rec[step_key])
        if step in skip:
            continue
        log_metrics(client, run_id, numeric_items(rec), step)
        skip.add(step)
        n += 1
    return n


def set_tags(client, run_id: str, tags: Mapping) -> None:
    log_params_tags(client, run_id, tags=tags)


def end_run(client, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
    """End a run; FAILED/KILLED runs carry the error text in tag ``error``, a run that
    finishes after an earlier failure keeps it as ``previous_error``."""
    run = _retry(client.get_run, run_id)
    if error:
        set_tags(client, run_id, {TAG_ERROR: error})
    elif status == "FINISHED" and TAG_ERROR in run.data.tags:
        set_tags(client, run_id, {"previous_error": run.data.tags[TAG_ERROR]})
        _retry(client.delete_tag, run_id, TAG_ERROR)
    _retry(client.set_terminated, run_id, status=status, end_time=_now_ms())


def child_runs(client, experiment_id: str, parent_run_id: str) -> list:
    out, token = [], None
    while True:
        page = _retry(client.search_runs, [experiment_id],
                      filter_string=f"tags.`{TAG_PARENT}` = '{_q(parent_run_id)}'",
                      max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def close_dangling_runs(client, experiment_id: str, parent_run_id: str,
                        errors_by_trial: Mapping[str, str] | None = None,
                        reason: str | None = None) -> list[str]:
    """After the sweep (no trial is running any more): a child run still RUNNING belongs to
    a trial whose process was killed before its ``finally`` ran (node lost, Ctrl+C). End it
    FAILED with the trial's error when Tune recorded one, else KILLED. Returns the run ids."""
    errors_by_trial = errors_by_trial or {}
    closed = []
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status != "RUNNING":
            continue
        tid = run.data.tags.get(TAG_TRIAL, "")
        err = errors_by_trial.get(tid)
        end_run(client, run.info.run_id, "FAILED" if err else "KILLED",
                error=err or reason or "the trial process ended without closing its run "
                                       "(interrupted or its node was lost)")
        closed.append(run.info.run_id)
    return closed


# --- provenance ------------------------------------------------------------------------
def provenance_tags(repo: str | os.PathLike | None = None) -> dict[str, str]:
    """Git commit (and whether the tree was dirty) and package versions."""
    repo = str(repo or Path(__file__).resolve().parents[1])
    tags: dict[str, str] = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip()
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=repo, capture_output=True, text=True, timeout=10,
                                   check=False).stdout.strip()
            tags["git_commit"] = commit
            tags["mlflow.source.git.commit"] = commit
            tags["git_dirty"] = str(bool(dirty)).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    for pkg in ("clnscl", "torch", "ray", "mlflow", "numpy"):
        try:
            tags[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            tags[f"version.{pkg}"] = "not installed"
    return tags


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's run-comparison page for these runs (params, metrics, scatter and parallel-
    coordinates plots side by side). ``base`` = "" gives the in-app link."""
    return (f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(run_ids))}"
            f"&experiments={urllib.parse.quote(json.dumps([str(experiment_id)]))}"
            "&workflowType=machine_learning")


def save_comparisons_across_classes(client, experiment_id: str, parent_run_id: str,
                                    metrics: Iterable[str] = ("nscl/cka", "nscl/rho")
                                    ) -> list[tuple[str, list[str]]]:
    """The question a sweep asks across C, saved where the UI shows it: the parent run's
    description lists, per (tau, B, seed), a link to MLflow's comparison of the trials
    that differ only in the number of classes. Returns [(slice label, run ids by C)]."""
    groups: dict[tuple, list] = {}
    for run in child_runs(client, experiment_id, parent_run_id):
        p = run.data.params
        if not all(k in p for k in ("tau", "batch_size", "n_classes", "seed")):
            continue
        key = (float(p["tau"]), int(p["batch_size"]), int(p["seed"]))
        groups.setdefault(key, []).append((int(p["n_classes"]), run.info.run_id))
    saved, lines = [], []
    for (tau, b, seed), runs in sorted(groups.items()):
        if len(runs) < 2:
            continue
        runs.sort()
        label = f"tau={tau:g} B={b} seed={seed}"
        ids = [rid for _, rid in runs]
        saved.append((label, ids))
        lines.append(f"- [{label}: C = {', '.join(str(c) for c, _ in runs)}]"
                     f"({compare_url('', experiment_id, ids)})")
    if saved:
        text = ("Across the number of classes C (one comparison per tau, B, seed):\n\n"
                + "\n".join(lines) + "\n\nIn each: *Scatter Plot* with X = param `n_classes`, "
                f"Y = {' or '.join(f'`{m}`' for m in metrics)}; the metrics table below it.")
        _retry(client.set_tag, parent_run_id, "mlflow.note.content", text)
    return saved


def ui_hint(uri: str, experiment_id: str | None = None, port: int = 5000) -> tuple[str, str]:
    """The command that opens the store in the MLflow UI and the URL of the runs table.
    MLflow 3.17's UI takes its mode from its own GenAI / Model training switch (the
    ``workflowType`` URL parameter, else the browser's last choice, GenAI by default), not
    from the experiment tag: the URL asks for ``workflowType=machine_learning``."""
    if uri.startswith("sqlite:"):
        # the mlflow beside this interpreter (.venv/bin/mlflow), so the command works as printed
        exe = Path(sys.executable).parent / "mlflow"
        cmd = f"{exe if exe.exists() else 'mlflow'} ui --backend-store-uri {uri} --port {port}"
        base = f"http://127.0.0.1:{port}"
    else:
        cmd = f"(server already running) open {uri}"
        base = uri.rstrip("/")
    url = (f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
           if experiment_id else base)
    return cmd, url


__all__ = [
    "TrackingError",
    "artifact_root",
    "check_tracking_uri",
    "child_runs",
    "close_dangling_runs",
    "compare_url",
    "connect",
    "default_tracking_uri",
    "end_run",
    "get_or_create_experiment",
    "log_metrics",
    "log_records",
    "logged_steps",
    "numeric_items",
    "open_trial_run",
    "provenance_tags",
    "save_comparisons_across_classes",
    "set_tags",
    "start_sweep_run",
    "string_items",
    "ui_hint",
]
