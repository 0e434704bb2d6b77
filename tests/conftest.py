import os

# Keep every Ray process on loopback, no usage stats or telemetry, before anything imports Ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 cores: one thread per process is fastest


import shutil

import pytest


@pytest.fixture(scope="session")
def fresh_mlflow_store(tmp_path_factory):
    """fresh_mlflow_store(name) -> (root, uri, client): a new SQLite MLflow store, copied from
    one initialised per session (creating MLflow's schema takes seconds; a copy takes none)."""
    from mlflow import MlflowClient

    template = tmp_path_factory.getbasetemp() / "mlflow_template.db"

    def make(name):
        if not template.exists():
            tmp = tmp_path_factory.getbasetemp() / "mlflow_template.tmp.db"
            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments()
            tmp.rename(template)
        root = tmp_path_factory.mktemp(name)
        shutil.copy(template, root / "mlflow.db")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        return root, uri, MlflowClient(tracking_uri=uri)

    return make


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray per test module (2 CPUs, no dashboard), shut down after it."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
