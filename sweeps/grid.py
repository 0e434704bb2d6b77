"""Run a sweep of coupled CL/NSCL trials with Ray Tune, tracked in MLflow.

    python sweeps/grid.py                      # the quick preset on this machine (~5 min, 2 CPUs)
    python sweeps/grid.py --preset cifar100 --dry-run
    python sweeps/grid.py --preset cifar10 --tau 0.5 --batch-size 1024 --seeds 3 --name c10-classes

Every grid point is validated (one TrainConfig each), and the storage folder and the
tracking store are checked, before Ray starts; usage errors exit with status 2. The same
command with the same --name resumes an interrupted sweep (finished trials are not rerun).
Exit status: 0 all trials finished, 1 some trial failed or diverged, 2 usage error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python sweeps/grid.py
    _ROOT = str(Path(__file__).resolve().parents[1])
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

from clnscl.config import DATASET_CLASSES, ConfigError, TrainConfig, parse_assignment
from sweeps import tracking
from sweeps.costs import SWEEP_OVERHEAD_S, estimate_trial
from sweeps.costs import format_seconds as _fmt_s
from sweeps.presets import (
    Preset,
    PresetError,
    available_presets,
    load_preset,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILE = "clnscl_sweep.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

# Live-table columns (Tune's CLIReporter): short names for the few metrics worth watching.
METRIC_COLUMNS = {"epoch": "epoch", "cl/loss": "cl loss", "nscl/cka": "cka", "nscl/rsa": "rsa",
                  "nscl/rho": "rho"}
PARAMETER_COLUMNS = {"tau": "tau", "batch_size": "B", "n_classes": "C", "seed": "seed"}
# Summary columns per grid point (headline = test split, backbone features; clnscl.records)
SUMMARY_METRICS = ("cka", "rho")  # CL vs each other model (the CSV keeps rsa, param_dist too)
CSV_METRICS = ("cka", "rsa", "rho", "param_dist")
# Did CL learn? Its drift from the shared initial model (a model that did not move is
# "aligned" by inertia): linear CKA to its initial features, and kNN gain over them.
DRIFT_SUMMARY = ("init_cka", "knn_gain")

# Throughput used by the cost estimate: training images per second for ONE model
# (forward + backward of one augmented view at 32x32, evaluation included; scaled by
# (32/image_size)^2 for other sizes). smallcnn on CPU: measured with the quick preset on this
# project's 2-core dev machine (one thread per trial: ~550 images/s at 16x16). resnet18/50
# on CPU: the smallcnn number scaled by their FLOPs. GPU numbers: NOT measured, rough
# assumptions for one modern data-centre GPU (A100/H100 class, fp32/TF32). The estimate is
# an order of magnitude; the live table's time_s is the real number.
class UsageError(ValueError):
    """A command-line problem found before Ray starts (exit status 2)."""


# --- command line ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/grid.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick",
                   help=f"preset name ({', '.join(available_presets())}) or a path to a .yaml "
                        "file (default: quick)")
    g = p.add_argument_group("grid axes (replace the preset's)")
    g.add_argument("--tau", type=float, nargs="+", metavar="TAU", help="temperatures")
    g.add_argument("--batch-size", type=int, nargs="+", metavar="B", help="batch sizes")
    g.add_argument("--classes", type=int, nargs="+", metavar="C", help="class counts")
    g.add_argument("--seeds", type=int, metavar="N", help="seeds per grid point (0..N-1)")
    c = p.add_argument_group("trial settings (replace the preset's config)")
    c.add_argument("--epochs", type=int, help="epochs of every trial (replaces an image budget)")
    c.add_argument("--budget-images", type=int, metavar="N",
                   help="train every grid point on about N images (epochs = ceil(N / subset "
                        "size)): equal cumulative learning rate across C (and B, linear lr "
                        "rule); 0 = use epochs")
    c.add_argument("--objectives", help="cl plus any of nscl,supcon,ce, e.g. cl,nscl,supcon,ce")
    c.add_argument("--dataset", help=", ".join(DATASET_CLASSES))
    c.add_argument("--data-root")
    c.add_argument("--arch", help="smallcnn, resnet18, resnet50")
    c.add_argument("--device", help="cpu, cuda, cuda:N, auto")
    c.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other TrainConfig field, e.g. --set eval_every=5 (repeatable)")
    r = p.add_argument_group("sweep")
    r.add_argument("--name", help="sweep name = MLflow experiment = Tune folder (default: the "
                                  "preset name); the same name resumes an interrupted sweep")
    r.add_argument("--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///$PWD/mlflow.db with artifacts in "
                                          "$PWD/mlartifacts); or http://host:5000")
    r.add_argument("--storage", help="absolute folder (or s3:// URI) for Tune results and "
                                     "checkpoints (default $PWD/ray_results)")
    r.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (preset resources.cpu)")
    r.add_argument("--gpus-per-trial", type=float, help="GPU share per trial, e.g. 0.5")
    r.add_argument("--checkpoint-every", type=int, metavar="K",
                   help="checkpoint every K evaluation records (and the last)")
    r.add_argument("--max-failures", type=int, help="retries of a failed trial (-1: forever)")
    r.add_argument("--max-concurrent", type=int,
                   help="at most this many trials at once (0: no limit)")
    r.add_argument("--address", help="join this Ray cluster (default: $RAY_ADDRESS, else a "
                                     "local Ray is started)")
    r.add_argument("--report-every", type=float, default=None, metavar="SECONDS",
                   help="seconds between live trial tables (default 30)")
    r.add_argument("--dry-run", action="store_true",
                   help="print the trials, their resources and a cost estimate; start nothing")
    r.add_argument("--no-analysis", action="store_true", help="skip the analysis report at the end")
    r.add_argument("--inject-fault", metavar="JSON", help=argparse.SUPPRESS)
    # testing only: {"trial": RUN_NAME|"*", "epoch": E, "marker": PATH|null} (or a list),
    # see the fault-injection hook in sweeps/trainable.py
    return p


@dataclasses.dataclass
class Plan:
    preset: Preset
    points: list[TrainConfig]
    name: str
    storage: str
    tracking_uri: str
    experiment_dir: str
    resume: bool
    stored: dict
    fault: dict | None


def _is_uri(path: str) -> bool:
    return "://" in path


def check_storage(path: str) -> str:
    """An absolute folder that can be created and written, or a cloud URI (s3://, gs://).
    Nothing is created here (a refused sweep leaves nothing behind): the nearest existing
    folder on the way must be writable; ``run_sweep`` creates the folder."""
    if _is_uri(path):
        if path.startswith("file://"):
            path = path[len("file://"):]
        else:
            scheme = path.split("://", 1)[0].lower()
            if scheme not in ("s3", "gs", "gcs", "abfs", "az", "hdfs"):
                raise UsageError(f"invalid --storage {path!r}: unsupported scheme {scheme!r}; "
                                 "allowed an absolute folder, s3://bucket/path, gs://bucket/"
                                 "path, abfs://..., hdfs://...")
            return path.rstrip("/")
    p = Path(os.path.expanduser(path))
    if not p.is_absolute():
        raise UsageError(f"invalid --storage {path!r}: must be an absolute path (Ray Tune runs "
                         f"trials in other folders), e.g. {Path(path).resolve()}")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"invalid --storage {path!r}: not writable ({existing} is a file, "
                         "not a folder)")
    try:
        probe = existing / f".clnscl-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"invalid --storage {path!r}: not writable ({e.strerror or e})") from None
    return str(p)


def _config_overrides(args) -> dict:
    out = {}
    for flag, fld in (("epochs", "epochs"), ("objectives", "objectives"), ("dataset", "dataset"),
                      ("data_root", "data_root"), ("arch", "arch"), ("device", "device")):
        v = getattr(args, flag)
        if v is not None:
            out[fld] = v
    for item in args.set:
        name, value = parse_assignment(item)
        if name in ("tau", "batch_size", "n_classes", "seed"):
            flag = {"n_classes": "--classes", "seed": "--seeds"}.get(
                name, "--" + name.replace("_", "-"))
            raise UsageError(f"invalid --set {item!r}: {name} is a grid axis, use {flag}")
        out[name] = value
    return out


def _check_local_resources(preset: Preset, args) -> None:
    """A sweep that will start its own local Ray must fit one trial on this machine; on a
    cluster started by `ray up` a trial must fit one of the node types the autoscaler can
    add (its GPUs count, not the head's); a cluster without autoscaler config is trusted."""
    import ray

    if args.dry_run or ray.is_initialized():
        return
    if cluster_address(args):
        types = cluster_node_types()
        if types is not None:
            check_cluster_resources(preset, types)
        return
    cpus = os.cpu_count() or 1
    if preset.cpu > cpus:
        raise UsageError(f"invalid resources.cpu={preset.cpu:g}: this machine has {cpus} CPUs "
                         "(use --cpus-per-trial, or join a cluster with --address)")
    if preset.gpu > 0:
        import torch

        gpus = torch.cuda.device_count()
        if preset.gpu > gpus:
            raise UsageError(
                f"invalid resources.gpu={preset.gpu:g}: this machine has {gpus} GPUs (run the "
                "published-scale presets on a GPU machine or cluster, --address; or use "
                "--gpus-per-trial 0 --device cpu)")


# --- data: found (or downloaded once) on the driver, before Ray starts -------------------
FOLDER_SETS = ("tinyimagenet", "miniimagenet", "imagefolder")


def _abs_root(root: str) -> str:
    return str(Path(os.path.expanduser(root)).resolve())


def resolve_data_root(preset: Preset) -> Preset:
    """The data root of a file-backed data set made absolute on the driver (trials run in
    their own working folders, where a relative root means something else). A preset
    without one gets the loader's default root, resolved here."""
    cfg = preset.config
    dataset = cfg.get("dataset", "synthetic")
    root = cfg.get("data_root")
    if dataset == "synthetic":
        return preset
    if root in (None, ""):
        if dataset in ("cifar10", "cifar100"):
            root = "./data"
        else:
            from clnscl.data.torchvision_sets import DEFAULT_ROOTS

            root = DEFAULT_ROOTS.get(dataset)
            if root is None:
                raise UsageError(f"invalid --data-root (none): dataset {dataset!r} needs a "
                                 "folder with train/<class>/ and val/<class>/ (or test/<class>/)")
    if _is_uri(str(root)):
        raise UsageError(f"invalid --data-root {root!r}: allowed a local folder (the same path "
                         "on every node), not a URI")
    absolute = _abs_root(str(root))
    return preset if absolute == root else preset.replace(config={"data_root": absolute})


def _download_lock(root: Path):
    """The trials' lock (one download per machine at a time), taken on the driver too."""
    from .trainable import download_lock

    return download_lock(root)


def check_data(cfg: TrainConfig) -> None:
    """The data set of a sweep exists under its (absolute) root; with download=true a
    missing CIFAR set is fetched once here (under a file lock). Raises UsageError naming
    the path and what was expected."""
    name, root = cfg.dataset, cfg.data_root
    if name == "synthetic":
        return
    root_p = Path(root)
    if name in ("cifar10", "cifar100"):
        from clnscl.data.torchvision_sets import CIFAR_CLASSES, cifar_files

        missing = [p for p in cifar_files(name, root_p) if not p.is_file()]
        if missing and cfg.download:
            print(f"Downloading {name} once into {root} (before any trial starts) ...",
                  flush=True)
            try:
                with _download_lock(root_p):
                    CIFAR_CLASSES[name](str(root_p), train=True, download=True)
                    CIFAR_CLASSES[name](str(root_p), train=False, download=True)
            except Exception as e:  # noqa: BLE001 - no network, no space: a usage problem
                raise UsageError(f"invalid --data-root {root!r}: downloading {name} failed "
                                 f"({type(e).__name__}: {e})") from None
            missing = [p for p in cifar_files(name, root_p) if not p.is_file()]
        if missing:
            folder = root_p / CIFAR_CLASSES[name].base_folder
            raise UsageError(
                f"dataset {name} not found: data root {root!r} lacks {len(missing)} file(s), "
                f"e.g. {missing[0]} (expected the folder {folder} with "
                f"{', '.join(p.name for p in cifar_files(name, root_p))}). Point --data-root "
                "at the folder that contains it, or add --set download=true to fetch it once "
                "before the trials (needs internet)")
        return
    train_dir = root_p / "train" if (root_p / "train").is_dir() else root_p
    if not train_dir.is_dir() or not any(p.is_dir() for p in train_dir.iterdir()):
        raise UsageError(
            f"dataset {name} not found: no class folders under data root {root!r} (expected "
            f"{root_p / 'train'}/<class>/<images> with val/<class>/ or test/<class>/, or "
            "<class>/<images> directly under the root); these sets are not downloaded, "
            "set --data-root")


# --- the cluster: joined, or a local Ray on loopback -----------------------------------
def autoscaler_config_path() -> Path:
    """Where `ray up` leaves the autoscaler's config on the head node."""
    return Path(os.path.expanduser("~")) / "ray_bootstrap_config.yaml"


def cluster_address(args) -> str | None:
    """--address, else $RAY_ADDRESS, else "auto" on the head of a `ray up` cluster (its
    autoscaler config is there; `ray exec` sets no RAY_ADDRESS), else None: a local Ray."""
    if args.address:
        return args.address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    if autoscaler_config_path().is_file():
        return "auto"
    return None


def cluster_node_types(path: Path | None = None) -> dict[str, dict] | None:
    """{node type: {"CPU": n, "GPU": n, "max_workers": n}} of the autoscaler config, or
    None when there is none (a fixed cluster: Ray places the trials)."""
    import yaml

    path = path or autoscaler_config_path()
    if not path.is_file():
        return None
    conf = yaml.safe_load(path.read_text()) or {}
    head = conf.get("head_node_type")
    out = {}
    for name, nt in (conf.get("available_node_types") or {}).items():
        res = nt.get("resources") or {}
        n = nt.get("max_workers", conf.get("max_workers", 0)) if name != head else 1
        out[name] = {"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0)),
                     "max_workers": int(n or 0)}
    return out


def check_cluster_resources(preset: Preset, node_types: dict[str, dict]) -> dict[str, int]:
    """The node types a trial fits on and how many trials the autoscaler can run at once
    there (workers it can add x trials per node). UsageError when none fits."""
    fits = {}
    for name, r in node_types.items():
        if r["max_workers"] <= 0:
            continue
        per_node = r["CPU"] // preset.cpu if preset.cpu > 0 else 10**6
        if preset.gpu > 0:
            per_node = min(per_node, r["GPU"] // preset.gpu)
        if per_node >= 1:
            fits[name] = int(per_node * r["max_workers"])
    if not fits:
        have = ", ".join(f"{k} ({v['CPU']:g} CPU, {v['GPU']:g} GPU, up to {v['max_workers']})"
                         for k, v in node_types.items())
        raise UsageError(f"invalid resources cpu={preset.cpu:g} gpu={preset.gpu:g}: no node "
                         f"type of the cluster can hold one trial; node types: {have} "
                         "(use --cpus-per-trial / --gpus-per-trial, or add a node type)")
    return fits


def plan_sweep(args) -> Plan:
    """Everything that can be checked before Ray starts; raises UsageError, PresetError,
    ConfigError or TrackingError with a message naming the field."""
    preset = load_preset(args.preset)
    changes = {}
    for flag, axis in (("tau", "tau"), ("batch_size", "batch_size"), ("classes", "n_classes")):
        if getattr(args, flag) is not None:
            changes[axis] = getattr(args, flag)
    for flag, key in (("seeds", "seeds"), ("cpus_per_trial", "cpu"), ("gpus_per_trial", "gpu"),
                      ("checkpoint_every", "checkpoint_every"), ("max_failures", "max_failures"),
                      ("max_concurrent", "max_concurrent")):
        if getattr(args, flag) is not None:
            changes[key] = getattr(args, flag)
    changes["config"] = _config_overrides(args)
    if args.budget_images is not None:
        changes["budget_images"] = args.budget_images or None
    elif args.epochs is not None:
        changes["budget_images"] = None
    if args.report_every is not None and not (args.report_every > 0
                                              and math.isfinite(args.report_every)):
        raise UsageError(f"invalid --report-every {args.report_every:g}: allowed a number of "
                         "seconds > 0 (default 30)")
    dataset = changes["config"].get("dataset", preset.config.get("dataset", "synthetic"))
    if dataset not in DATASET_CLASSES:
        raise UsageError(f"invalid dataset={dataset!r}: allowed {', '.join(DATASET_CLASSES)}")
    preset = resolve_data_root(preset.replace(**changes))
    points = preset.points()  # ConfigError for the first invalid grid point
    if not args.dry_run:
        check_data(points[0])  # one dataset and root per sweep
    if preset.gpu > 0 and not any(cfg.device != "cpu" for cfg in points):
        print("warning: trials get a GPU share but device=cpu; set --device cuda or auto",
              file=sys.stderr)
    _check_local_resources(preset, args)

    name = args.name or preset.name
    if not NAME_RE.match(name):
        raise UsageError(f"invalid --name {name!r}: allowed letters, digits, '.', '_', '-' "
                         "(it names a folder and an MLflow experiment)")
    storage = check_storage(args.storage or str(Path.cwd() / "ray_results"))
    experiment_dir = f"{storage}/{name}"

    from ray import tune  # importing starts nothing

    resume = bool(tune.Tuner.can_restore(experiment_dir))
    stored, unreadable = {}, None
    if resume:
        try:
            stored = json.loads(_read_text(f"{experiment_dir}/{SWEEP_FILE}"))
            if not isinstance(stored, dict) or not stored.get("parent_run_id"):
                raise ValueError("no parent_run_id in it")
        except FileNotFoundError:
            stored, unreadable = {}, "missing"
        except (OSError, ValueError) as e:
            stored, unreadable = {}, f"unreadable ({type(e).__name__}: {e})"
    # --tracking-uri, then $MLFLOW_TRACKING_URI, then the store the sweep used last: a sweep
    # resumed on a new head (new server address, or the database moved) follows the user
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") \
        or (stored.get("tracking_uri") if resume else None) or tracking.default_tracking_uri()
    uri = tracking.check_tracking_uri(uri)  # a postgresql:// URI names its driver
    if resume and unreadable:
        stored = _find_sweep_in_store(name, uri, experiment_dir, unreadable)
    if resume and stored:
        now = json.loads(json.dumps(preset.grid_spec()))
        was = stored.get("spec", {})
        diff = [k for k in ("grid", "config", "budget_images", "evals") if now[k] != was.get(k)]
        if diff:
            raise UsageError(
                f"sweep {name!r} at {experiment_dir} was started with a different "
                f"{' and '.join(diff)}; resume it with its original settings (see "
                f"{experiment_dir}/{SWEEP_FILE}) or choose another --name")
        _check_resume_settings(name, preset, args, stored)
        kept = [k for k in ("resources", "max_failures") if k in was and now[k] != was[k]]
        if kept:
            print(f"warning: resuming sweep {name!r}: its original {' and '.join(kept)} "
                  f"({', '.join(str(was[k]) for k in kept)}) stay in force", file=sys.stderr)
    if resume and stored.get("tracking_uri") and uri != stored["tracking_uri"]:
        print(f"note: sweep {name!r} logged to {tracking.redact(stored['tracking_uri'])} "
              f"before; it now logs to {tracking.redact(uri)} (trial runs missing there are "
              "created and back-filled from the checkpoints)", file=sys.stderr)
    fault = None
    if args.inject_fault:
        try:
            fault = json.loads(args.inject_fault)
            assert isinstance(fault, dict) or (isinstance(fault, list) and
                                               all(isinstance(f, dict) for f in fault))
        except (ValueError, AssertionError):
            raise UsageError(f"invalid --inject-fault {args.inject_fault!r}: a JSON object "
                             '{"trial": NAME or "*", "epoch": E, "marker": PATH or null}') from None
    return Plan(preset=preset, points=points, name=name, storage=storage, tracking_uri=uri,
                experiment_dir=experiment_dir, resume=resume, stored=stored, fault=fault)


def _find_sweep_in_store(name: str, uri: str, experiment_dir: str, why: str) -> dict:
    """The sweep file is gone or unreadable: find the sweep's parent run again in MLflow by
    its stable keys (experiment = sweep name, tags clnscl.role = sweep, clnscl.sweep =
    name), so that the resumed sweep continues it (and its trials' runs) instead of
    starting a second parent. Refuses (UsageError) rather than guess."""
    where = f"{experiment_dir}/{SWEEP_FILE}"
    try:
        client = tracking.connect(uri)
        exp = tracking._retry(client.get_experiment_by_name, name)
        run = tracking.find_sweep_run(client, exp.experiment_id, name) if exp else None
    except Exception as e:  # noqa: BLE001 - the store must answer to resume safely
        raise UsageError(f"sweep {name!r}: its sweep file {where} is {why}, and the tracking "
                         f"store {tracking.redact(uri)} could not be searched for its parent "
                         f"run ({type(e).__name__}); pass --tracking-uri of the store it "
                         "used") from None
    if run is None:
        raise UsageError(f"sweep {name!r}: its sweep file {where} is {why}, and the tracking "
                         f"store {tracking.redact(uri)} holds no parent run of it (tag "
                         f"clnscl.sweep = {name!r}); pass --tracking-uri of the store it used, "
                         "or start it again under another --name")
    try:
        spec = json.loads(run.data.tags.get("grid_spec", "{}"))
    except ValueError:
        spec = {}
    params = run.data.params
    settings = {k: float(params[k]) if k == "report_every" else int(params[k])
                for k in ("max_concurrent", "report_every") if params.get(k) not in (None, "None")}
    print(f"note: sweep {name!r}: sweep file {where} is {why}; found its parent run "
          f"{run.info.run_id} in {tracking.redact(uri)} by tag clnscl.sweep (its trials' runs "
          "are found by trial id); the file is written again", file=sys.stderr)
    return {"name": name, "spec": spec, "tracking_uri": uri,
            "experiment_id": run.info.experiment_id, "parent_run_id": run.info.run_id,
            "settings": settings, "created": run.info.start_time / 1000.0}


def _check_resume_settings(name: str, preset: Preset, args, stored: dict) -> None:
    """--max-concurrent and --report-every are fixed when a sweep starts (Tune restores
    them with the experiment): a different value on resume is refused, not ignored."""
    was = stored.get("settings") or {}
    now = {"max_concurrent": preset.max_concurrent or 0,
           "report_every": args.report_every if args.report_every is not None else None}
    for key, flag in (("max_concurrent", "--max-concurrent"), ("report_every", "--report-every")):
        if key not in was or now[key] is None:
            continue
        if float(now[key]) != float(was[key]):
            raise UsageError(
                f"invalid {flag} {now[key]:g} on resume: sweep {name!r} was started with "
                f"{flag} {was[key]:g}, which Ray Tune restores with the sweep; allowed: "
                f"{was[key]:g} (or leave {flag} out), or start a new sweep with --name")


# --- dry run ---------------------------------------------------------------------------
def _fmt_n(n) -> str:
    if n is None:
        return "?"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def dry_run(plan: Plan, out=None) -> None:
    out = out or sys.stdout
    p = plan.preset
    rows = []
    for i, cfg in enumerate(plan.points):
        e = estimate_trial(cfg, p.gpu)
        rows.append((i, cfg, e))
    print(f"Sweep {plan.name!r}: preset {p.name} ({p.path})", file=out)
    if p.description:
        print(f"  {p.description}", file=out)
    fixed = p.fixed_config()
    print("  fixed config: " + ", ".join(f"{k}={v}" for k, v in fixed.items()), file=out)
    print(f"  grid: tau={list(p.tau)} x B={list(p.batch_size)} x C={list(p.n_classes)} x "
          f"seeds={p.seeds}  ->  {len(plan.points)} trials", file=out)
    if p.budget_images:
        print(f"  image budget: {p.budget_images} training images per trial (epochs = "
              f"ceil(budget / subset size), {p.evals} evaluations after epoch 0): equal S_T "
              "across C", file=out)
    print(file=out)
    hdr = f"{'#':>4}  {'trial (MLflow run name)':<30} {'train imgs':>10} {'epochs':>6} " \
          f"{'steps/ep':>8} {'views':>8} {'train':>8} {'evals':>8} {'est. time':>9}"
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for i, cfg, e in rows:
        print(f"{i:>4}  {cfg.run_name():<30} {_fmt_n(e['train_images']):>10} {cfg.epochs:>6} "
              f"{e['steps'] if e['steps'] is not None else '?':>8} {_fmt_n(e['images']):>8} "
              f"{_fmt_s(e['train_s']):>8} {_fmt_s(e['eval_s']):>8} {_fmt_s(e['seconds']):>9}",
              file=out)
    print(file=out)
    res = f"{p.cpu:g} CPU" + (f" + {p.gpu:g} GPU" if p.gpu else "")
    print(f"Resources per trial: {res}; checkpoint every {p.checkpoint_every} evaluation "
          f"record(s); up to {p.max_failures} retries per trial"
          + (f"; at most {p.max_concurrent} at once" if p.max_concurrent else ""), file=out)
    secs = [e["seconds"] for _, _, e in rows]
    imgs = [e["images"] for _, _, e in rows]
    if all(s is not None for s in secs):
        total = sum(secs)
        kind = rows[0][2]["kind"]
        evals = sum(e["eval_s"] for _, _, e in rows)
        print(f"Cost estimate: {_fmt_n(sum(imgs))} training views (epochs x subset x 2 views x "
              f"{len(p.points()[0].objectives)} models, summed over trials); about "
              f"{_fmt_s(total)} of trial time ({100 * evals / total:.0f}% of it evaluation)"
              + (f" = {total / 3600 * max(p.gpu, 0):.1f} GPU-hours" if kind == "gpu" else ""),
              file=out)
        slots = _local_slots(p)
        if slots:
            print(f"  on this machine ({slots} trial(s) at once): about "
                  f"{_fmt_s(total / min(slots, len(rows)) + SWEEP_OVERHEAD_S)} wall time", file=out)
        for source in sorted({e["source"] for _, _, e in rows}):
            print(f"  throughput {source}", file=out)
        print("  This is an ESTIMATE (training views and evaluation rows counted from the config, "
              "times a throughput); the first trials' time_s in the live table is the real "
              "number. Measure this machine: .venv/bin/python benchmarks/bench.py", file=out)
    else:
        print("Cost estimate: unknown subset size for this data set (counted when loaded).",
              file=out)
    print(f"Results: Tune storage {plan.experiment_dir}; MLflow {plan.tracking_uri} "
          f"(experiment {plan.name!r})" + ("  [resuming an existing sweep]" if plan.resume else ""),
          file=out)


def _local_slots(p: Preset) -> int:
    cpus = os.cpu_count() or 1
    slots = int(cpus // p.cpu) if p.cpu > 0 else 10**6
    if p.gpu > 0:
        try:
            import torch

            gpus = torch.cuda.device_count()
        except Exception:  # noqa: BLE001
            gpus = 0
        slots = min(slots, int(gpus / p.gpu)) if gpus else 0
    if p.max_concurrent:
        slots = min(slots, p.max_concurrent)
    return slots


# --- the run ---------------------------------------------------------------------------
def _read_text(path: str) -> str:
    if not _is_uri(path):
        return Path(path).read_text()
    import pyarrow.fs

    fs, p = pyarrow.fs.FileSystem.from_uri(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode()


def _write_text(path: str, text: str) -> None:
    if not _is_uri(path):
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
        return
    import pyarrow.fs

    fs, p = pyarrow.fs.FileSystem.from_uri(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def _report_every(args, plan: Plan) -> float:
    """--report-every, else the sweep's own (on resume), else 30 s."""
    if args.report_every is not None:
        return args.report_every
    return float((plan.stored.get("settings") or {}).get("report_every", 30.0))


def _write_sweep_file(plan: Plan, experiment_id: str, parent_run_id: str,
                      settings: dict | None = None) -> None:
    """What a later run with the same --name needs: the grid (to refuse a different one),
    the tracking store and the parent run (to continue it)."""
    data = {"name": plan.name, "spec": json.loads(json.dumps(plan.preset.grid_spec())),
            "tracking_uri": plan.tracking_uri, "experiment_id": experiment_id,
            "parent_run_id": parent_run_id, "created": plan.stored.get("created", time.time()),
            "settings": plan.stored.get("settings") or settings or {}}
    _write_text(f"{plan.experiment_dir}/{SWEEP_FILE}", json.dumps(data, indent=1))


def _latest_experiment_state(experiment_dir: str) -> str | None:
    """Path of Tune's newest ``experiment_state-*.json`` in the sweep folder (or None)."""
    if not _is_uri(experiment_dir):
        files = sorted(Path(experiment_dir).glob("experiment_state-*.json"))
        return str(files[-1]) if files else None
    import pyarrow.fs

    fs, p = pyarrow.fs.FileSystem.from_uri(experiment_dir)
    names = sorted(i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(p))
                   if i.base_name.startswith("experiment_state-") and
                   i.base_name.endswith(".json"))
    return f"{experiment_dir}/{names[-1]}" if names else None


def reopen_failed_trials(experiment_dir: str) -> list[str]:
    """Trials that ended at once with an error a retry could not fix (missing data, an
    import error, a full disk...) report and return, so Tune records them TERMINATED and
    would never run them again. A rerun is how the user says "fixed, try again": mark them
    errored in Tune's experiment state so that ``resume_errored`` continues them from their
    last checkpoint. Diverged trials stay ended (a rerun replays the same steps). Returns
    the reopened trials' names; on a state file it cannot read, warns and reopens none."""
    path = _latest_experiment_state(experiment_dir)
    if path is None:
        return []
    try:
        state = json.loads(_read_text(path))
        reopened = []
        for entry in state["trial_data"]:
            trial, meta = (json.loads(x) if isinstance(x, str) else x for x in entry[:2])
            last = meta.get("last_result") or {}
            if isinstance(last, str):
                last = json.loads(last)
            if trial.get("status") == "TERMINATED" and last.get("failed_final") \
                    and not last.get("diverged"):
                trial["status"] = "ERROR"
                entry[0] = json.dumps(trial) if isinstance(entry[0], str) else trial
                reopened.append(str(trial.get("custom_trial_name") or trial.get("trial_id")))
        if reopened:
            _write_text(path, json.dumps(state))
        return reopened
    except Exception as e:  # noqa: BLE001 - Tune's format changed: resume as Tune would
        print(f"warning: could not reopen trials that failed for good in {path} "
              f"({type(e).__name__}: {e}); they stay ended", file=sys.stderr)
        return []


def _start_ray(address: str | None) -> bool:
    """Join a running cluster (--address, $RAY_ADDRESS) or start a local Ray. Returns True
    when this process started/joined Ray and so must shut it down."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # a local Ray listens on loopback only (Ray's own switch; its processes inherit it)
        from ray._private import ray_constants

        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
        pp = os.environ.get("PYTHONPATH", "")
        env = {"PYTHONPATH": str(REPO_ROOT) + (os.pathsep + pp if pp else ""),
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        ray.init(runtime_env={"env_vars": env}, include_dashboard=False,
                 _node_ip_address="127.0.0.1")
    return True


def reuse_actors(preset: Preset) -> bool:
    """CPU trials reuse their worker process (no torch import per trial); GPU trials get a
    fresh one each, so that no trial inherits the last one's CUDA memory (the caching
    allocator keeps it reserved in the process, which starves trials packed on a GPU)."""
    return not preset.gpu


def tune_trial_name(trial) -> str:
    """Tune's console table names a trial by its grid point, as MLflow does
    (``tau=0.5 B=32 C=8 seed=0``), not ``train_trial_2c341_00000``."""
    return TrainConfig.from_dict(trial.config).run_name()


def tune_trial_dirname(trial) -> str:
    """A trial's folder: Tune's id first (unique, and how a trial that never reported is
    found again), then the grid point without spaces."""
    return f"train_trial_{trial.trial_id}_" + tune_trial_name(trial).replace(" ", "_")


def _trial_status(result, cfg: TrainConfig) -> str:
    m = result.metrics or {}
    if result.error is not None:
        return "failed"
    if m.get("diverged"):
        return "diverged"
    if m.get("failed_final"):  # a deterministic error: ended at once, not retried
        return "failed"
    if m.get("epoch") == cfg.epochs:
        return "finished"
    return "incomplete"


def _trial_id(result) -> str | None:
    tid = (result.metrics or {}).get("trial_id")
    if tid:
        return str(tid)
    try:  # a trial that never reported: its folder name carries the id
        m = re.search(r"_([0-9a-f]{5}_\d{5})", Path(result.path).name)
        return m.group(1) if m else None
    except Exception:  # noqa: BLE001
        return None


def summarize(results, preset: Preset) -> tuple[pd.DataFrame, pd.DataFrame, dict]:  # noqa: F821
    """(per-trial table, per-grid-point table with mean and std over seeds, status counts)."""
    import pandas as pd

    rows, not_started = [], 0
    for r in results:
        if not r.config:  # a trial that never started (e.g. the sweep was interrupted)
            not_started += 1
            continue
        cfg = preset.resolve(TrainConfig.from_dict(dict(r.config)))
        m = r.metrics or {}
        row = {"tau": cfg.tau, "B": cfg.batch_size, "C": cfg.n_classes, "seed": cfg.seed,
               "status": _trial_status(r, cfg), "epoch": m.get("epoch"), "trial_id": _trial_id(r),
               "S_T": m.get("cum_lr")}
        for met in DRIFT_SUMMARY:
            row[f"cl/{met}"] = m.get(f"cl/{met}")
        for obj in cfg.objectives:
            if obj != "cl":
                for met in CSV_METRICS:
                    row[f"{obj}/{met}"] = m.get(f"{obj}/{met}")
            row[f"{obj}/knn"] = m.get(f"{obj}/knn_acc")
        rows.append(row)
    cols = ["tau", "B", "C", "seed", "status", "epoch", "trial_id", "S_T"]
    trials = pd.DataFrame(rows, columns=list(dict.fromkeys(cols + [k for r in rows for k in r])))
    trials = trials.sort_values(["tau", "B", "C", "seed"]).reset_index(drop=True)
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    if not_started:
        counts["not started"] = not_started
    ok = trials[trials["status"] == "finished"]
    metric_cols = ["S_T"] + [c for c in trials.columns if "/" in c]
    if len(ok):
        g = ok.groupby(["tau", "B", "C"])
        points = g[metric_cols].agg(["mean", "std"])
        points.insert(0, ("n", ""), g.size())
    else:
        points = pd.DataFrame()
    return trials, points, counts


def _fmt_v(v) -> str:
    import pandas as pd

    if v is None or pd.isna(v):
        return "-"
    return f"{v:.3f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"


def format_points(points, seeds: int) -> str:
    """Per grid point: CL vs each objective (cka, rsa, rho, param_dist), then kNN accuracies."""
    if points is None or len(points) == 0:
        return "(no finished trial)"
    import pandas as pd

    names = [c[0] for c in points.columns if c[0] != "n"]
    names = list(dict.fromkeys(names))
    # S_T, CL's drift, then CL vs X (the console shows SUMMARY_METRICS; the CSV has all)
    align = [c for c in names if not c.endswith("/knn")
             and (c == "S_T" or c.startswith("cl/") or c.split("/")[-1] in SUMMARY_METRICS)]
    knn = [c for c in names if c == "cl/knn"]
    cols = {}
    for c in align + sorted(knn, key=lambda c: (c.split("/")[0] != "cl", c)):
        mean, std = points[(c, "mean")], points[(c, "std")]
        label = (c[:-4] + " knn" if c.endswith("/knn") else c).replace("cl_indep/", "indep/")
        if seeds > 1:
            cols[label] = [_fmt_v(a) + (f"±{_fmt_v(b)}" if pd.notna(b) else "")
                           for a, b in zip(mean, std)]
        else:
            cols[label] = [_fmt_v(a) for a in mean]
    df = pd.DataFrame(cols, index=points.index)
    if seeds > 1:
        df.insert(0, "n", points[("n", "")].values)
    return df.to_string()


def _run_analysis(plan: Plan) -> None:
    from analysis import write_report

    out_dir = Path.cwd() / "analysis_out" / plan.name
    try:
        report = write_report(experiment=plan.name, tracking_uri=plan.tracking_uri,
                              out_dir=str(out_dir))
        print(f"analysis: report written to {report}")
        _print_claims(Path(report).parent / "claims.csv")
    except Exception as e:  # noqa: BLE001 - the sweep's results stand without the report
        print(f"analysis: failed ({type(e).__name__}: {e}); run it again with "
              f"`python -m analysis --experiment {plan.name} --tracking-uri {plan.tracking_uri}`")


def _print_claims(path: Path) -> None:
    """The report's answer (one row per claim) on the console: what a sweep is run for."""
    import pandas as pd

    if not path.exists():
        return
    claims = pd.read_csv(path)
    cols = [c for c in ("claim", "measure", "estimate", "ci_low", "ci_high", "predicted",
                        "verdict", "n_trials") if c in claims.columns]
    print(f"analysis: claims ({path}):")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(claims[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def _wait_for_store(client, experiment_id: str, uri: str, timeout: float = 600.0) -> None:
    """After the trials: wait (up to ``timeout`` s) for a tracking store that stopped
    answering, so the sweep's records are back-filled rather than lost."""
    deadline, said = time.time() + timeout, False
    while True:
        try:
            client.get_experiment(experiment_id)
            return
        except Exception as e:
            if time.time() > deadline:
                raise
            if not said:
                print(f"Waiting for the tracking store {tracking.redact(uri)} to answer "
                      f"({type(e).__name__}) to back-fill the trials' records ...",
                      file=sys.stderr, flush=True)
                said = True
            time.sleep(5)


def backfill(results, preset: Preset, client, sweep_ctx: dict) -> int:
    """Every trial's run gets the records of its last checkpoint (those it could not log
    during a tracking outage) and a finished trial's run ends FINISHED. Returns the number
    of runs touched."""
    from sweeps.trainable import backfill_trial_run

    n = 0
    for r in results:
        tid = _trial_id(r)
        if not r.config or not tid or r.checkpoint is None:
            continue
        cfg = preset.resolve(TrainConfig.from_dict(dict(r.config)))
        try:
            if backfill_trial_run(client, sweep_ctx, tid, cfg, r.checkpoint,
                                  finished=_trial_status(r, cfg) == "finished"):
                n += 1
        except Exception as e:  # noqa: BLE001 - report, keep the sweep's outcome
            print(f"warning: could not back-fill the MLflow run of trial {tid}: "
                  f"{type(e).__name__}: {e}", file=sys.stderr)
    return n


class _StopSignals:
    """SIGTERM is turned into SIGINT (Tune's graceful stop: the sweep ends its open MLflow
    runs KILLED with the reason, then exits 130); records which signal came."""

    def __init__(self):
        self.received: str | None = None
        self._old = {}

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return

        def on_term(signum, frame):
            self.received = "SIGTERM"
            os.kill(os.getpid(), signal.SIGINT)  # Tune's handler, else KeyboardInterrupt

        self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
        self._old["int"] = signal.getsignal(signal.SIGINT)

        def on_int(signum, frame):
            self.received = self.received or "SIGINT"
            raise KeyboardInterrupt

        self._old[signal.SIGINT] = signal.signal(signal.SIGINT, on_int)

    def uninstall(self) -> None:
        import signal

        for sig, h in self._old.items():
            if sig != "int":
                signal.signal(sig, h)
        self._old = {}

    def reason(self) -> str | None:
        if not self.received:
            return None
        return f"sweep interrupted ({self.received} to the driver)"


def run_sweep(plan: Plan, args) -> int:
    from ray import tune

    from sweeps.trainable import train_trial

    p = plan.preset
    if not _is_uri(plan.storage):
        Path(plan.storage).mkdir(parents=True, exist_ok=True)
    db = tracking.sqlite_path(plan.tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    client = tracking.connect(plan.tracking_uri)
    exp_id = tracking.get_or_create_experiment(client, plan.name, plan.tracking_uri)
    spec = p.grid_spec()
    params = {"preset": p.name, "grid.tau": spec["grid"]["tau"],
              "grid.batch_size": spec["grid"]["batch_size"],
              "grid.n_classes": spec["grid"]["n_classes"], "grid.seeds": p.seeds,
              "n_trials": len(plan.points), "resources.cpu": p.cpu, "resources.gpu": p.gpu,
              "checkpoint_every": p.checkpoint_every, "max_failures": p.max_failures,
              "budget_images": p.budget_images, "evals": p.evals if p.budget_images else None,
              "storage": plan.experiment_dir, "max_concurrent": p.max_concurrent or 0,
              "report_every": _report_every(args, plan),
              **{f"config.{k}": v for k, v in spec["config"].items()}}
    tags = {**tracking.provenance_tags(REPO_ROOT), "preset_path": p.path,
            "description": p.description, "grid_spec": json.dumps(spec)}
    previous = plan.stored.get("parent_run_id") if plan.resume else None
    parent = tracking.start_sweep_run(client, exp_id, plan.name, params, tags, run_id=previous)
    _write_sweep_file(plan, exp_id, parent, settings={
        "max_concurrent": p.max_concurrent or 0, "report_every": _report_every(args, plan)})
    cmd, url = tracking.ui_hint(plan.tracking_uri, exp_id)
    print(f"Sweep {plan.name!r}: {len(plan.points)} trials, "
          + ("RESUMING (finished trials are not rerun)" if plan.resume else "new")
          + f"\n  Tune storage: {plan.experiment_dir}\n  MLflow: {plan.tracking_uri} "
          f"(experiment {exp_id}, parent run {parent})\n  UI: {cmd}  then open {url}", flush=True)

    started_ray = False
    status, code, error = "FAILED", 1, "sweep failed"
    stop = _StopSignals()
    try:
        started_ray = _start_ray(cluster_address(args))
        stop.install()  # after ray.init, whose core worker installs its own SIGTERM handler
        sweep_ctx = {"tracking_uri": plan.tracking_uri, "experiment_id": exp_id,
                     "parent_run_id": parent, "checkpoint_every": p.checkpoint_every,
                     "cpus_per_trial": p.cpu, "sweep_name": plan.name, "fault": plan.fault,
                     "budget_images": p.budget_images, "evals": p.evals,
                     "tracking_wait_s": float(os.environ.get("CLNSCL_TRACKING_WAIT_S", "60"))}
        trainable = tune.with_resources(tune.with_parameters(train_trial, sweep=sweep_ctx),
                                        {"cpu": p.cpu, "gpu": p.gpu})
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table, our columns
        reporter = tune.CLIReporter(metric_columns=METRIC_COLUMNS,
                                    parameter_columns=PARAMETER_COLUMNS,
                                    max_report_frequency=max(1, int(_report_every(args, plan))),
                                    max_progress_rows=40, max_error_rows=10)
        if plan.resume:
            reopened = reopen_failed_trials(plan.experiment_dir)
            if reopened:
                print(f"note: {len(reopened)} trial(s) that ended with an error a retry could "
                      "not fix are tried again from their last checkpoint: "
                      + ", ".join(reopened), file=sys.stderr)
            tuner = tune.Tuner.restore(plan.experiment_dir, trainable=trainable,
                                       resume_errored=True)
        else:
            fixed = p.base_config()  # the image budget, if any, is applied in the trial
            space = {**fixed, "tau": tune.grid_search(list(p.tau)),
                     "batch_size": tune.grid_search(list(p.batch_size)),
                     "n_classes": tune.grid_search(list(p.n_classes)),
                     "seed": tune.grid_search(p.seed_values)}
            tuner = tune.Tuner(
                trainable, param_space=space,
                tune_config=tune.TuneConfig(max_concurrent_trials=p.max_concurrent or None,
                                            reuse_actors=reuse_actors(p),
                                            trial_name_creator=tune_trial_name,
                                            trial_dirname_creator=tune_trial_dirname),
                run_config=tune.RunConfig(
                    name=plan.name, storage_path=plan.storage, verbose=1,
                    progress_reporter=reporter,
                    failure_config=tune.FailureConfig(max_failures=p.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        t0 = time.time()
        results = tuner.fit()
        wall = time.time() - t0

        trials, points, counts = summarize(results, p)
        errors = {}
        for r in results:
            if r.error is not None and _trial_id(r):
                errors[_trial_id(r)] = f"{type(r.error).__name__}: {r.error}"
            elif (r.metrics or {}).get("error_reason") and _trial_id(r):
                errors[_trial_id(r)] = str(r.metrics["error_reason"])
        if stop.received is None and (counts.get("incomplete") or counts.get("not started")):
            stop.received = "SIGINT"  # Tune's own handler took it: a graceful stop
        _wait_for_store(client, exp_id, plan.tracking_uri)
        backfill(results, p, client, sweep_ctx)
        tracking.close_dangling_runs(client, exp_id, parent, errors, reason=stop.reason())
        n = len(trials) + counts.get("not started", 0)
        n_ok = counts.get("finished", 0)
        print()
        print(f"Summary of sweep {plan.name!r}: {n_ok}/{n} trials finished"
              + "".join(f", {v} {k}" for k, v in counts.items() if k != "finished")
              + f" ({wall:.0f}s)")
        print("Per grid point at the last epoch: S_T = cumulative learning rate (the theory's "
              "time axis; " + ("about equal across C under the image budget" if p.budget_images
                               else "at fixed epochs it grows with C, as the subset does")
              + "); cl/init_cka, cl/knn_gain = CL's drift from the shared initial model "
              "(near 1 / at or below 0: CL did not learn, read nothing into its alignment); "
              "X/cka, X/rho = CL vs X (test split, backbone features; indep = the uncoupled "
              "control, the scale for every other rho); 'cl knn' = CL's kNN accuracy"
              + (f", mean±std over {p.seeds} seeds" if p.seeds > 1 else "")
              + ":")
        print(format_points(points, p.seeds))
        bad = trials[trials["status"] != "finished"]
        if len(bad):
            print("\nTrials not finished:")
            for _, row in bad.iterrows():
                tid = row["trial_id"]
                why = errors.get(tid, "").splitlines()[0][:200] if tid in errors else ""
                print(f"  tau={row['tau']:g} B={row['B']} C={row['C']} seed={row['seed']}: "
                      f"{row['status']} {why}")
        summary_dir = Path(plan.experiment_dir) if not _is_uri(plan.storage) else Path.cwd()
        summary_csv = summary_dir / "summary_trials.csv"
        try:
            trials.to_csv(summary_csv, index=False)
        except OSError as e:  # e.g. the storage folder's disk is full: keep the table anyway
            import tempfile

            fallback = Path(tempfile.mkdtemp(prefix="clnscl-summary-")) / summary_csv.name
            trials.to_csv(fallback, index=False)
            print(f"warning: could not write {summary_csv} ({e.strerror or e}); wrote "
                  f"{fallback} instead", file=sys.stderr)
            summary_csv = fallback
        tracking._retry(client.log_artifact, parent, str(summary_csv))
        tracking.log_metrics(client, parent, {"n_trials": n, "n_finished": n_ok,
                                              "n_failed": n - n_ok, "wall_s": wall}, step=0)
        try:  # the parent's description links MLflow's comparison of each slice across C
            across = tracking.save_comparisons_across_classes(client, exp_id, parent)
        except Exception as e:  # noqa: BLE001 - a convenience; the runs are all there
            across = []
            print(f"warning: could not save the comparisons across C: {e}", file=sys.stderr)
        if stop.received or counts.get("incomplete") or counts.get("not started"):
            status, code = "KILLED", 130
        elif n_ok == n:
            status, code = "FINISHED", 0
        else:
            status, code = "FAILED", 1
        tracking.end_run(client, parent, status,
                         error=None if status == "FINISHED"
                         else (stop.reason() + "; " if stop.received else "")
                         + f"{n - n_ok} of {n} trials not finished")
        status = "DONE"
        if not args.no_analysis and n_ok:
            _run_analysis(plan)
        print("\nResults:\n"
              f"  Tune storage (checkpoints, per-trial results): {plan.experiment_dir}\n"
              f"  MLflow store: {plan.tracking_uri}  (experiment {plan.name!r}, id {exp_id}, "
              f"parent run {parent})\n  Per-trial summary: {summary_csv}\n"
              f"  Open the UI:  {cmd}\n  Runs table:   {url}"
              + (f"\n  Across C:     {tracking.compare_url(url.split('/#/')[0], exp_id, across[0][1])}"
                 f"  ({across[0][0]}; every slice is linked in the parent run's description)"
                 if across else ""))
        if code == 130:
            print(f"Interrupted: resume with the same command (--name {plan.name}).")
        elif code:
            print(f"Some trials did not finish; rerun the same command (--name {plan.name}) to "
                  "retry them from their checkpoints (finished trials are not rerun).")
        return code
    except KeyboardInterrupt:
        print(f"\nInterrupted: resume with the same command (--name {plan.name}).", file=sys.stderr)
        status, code, error = "KILLED", 130, stop.reason() or "sweep interrupted (Ctrl+C)"
        return code
    except Exception as e:
        error = f"sweep failed: {type(e).__name__}: {e}"
        raise
    finally:
        stop.uninstall()
        if status != "DONE":  # the parent run never stays RUNNING
            try:
                tracking.close_dangling_runs(client, exp_id, parent, reason=error)
                tracking.end_run(client, parent, "KILLED" if status == "KILLED" else "FAILED",
                                 error=error)
            except Exception as e:  # noqa: BLE001 - never mask the sweep's own outcome
                print(f"warning: could not close MLflow run {parent}: {e}", file=sys.stderr)
        if started_ray:
            import ray

            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plan = plan_sweep(args)
    except (UsageError, PresetError, ConfigError, tracking.TrackingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        dry_run(plan)
        return 0
    return run_sweep(plan, args)


if __name__ == "__main__":
    sys.exit(main())
