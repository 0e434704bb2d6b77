"""The MLflow helper of the sweeps, against a real SQLite store (no Ray)."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from pathlib import Path

import pytest

from sweeps import tracking as T


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow")
    uri = T.default_tracking_uri(d)
    client = T.connect(uri)
    exp = T.get_or_create_experiment(client, "trk", uri)
    parent = T.start_sweep_run(client, exp, "trk", {"grid.tau": [0.1, 0.5]}, {"k": "v"})
    return {"dir": d, "uri": uri, "client": client, "exp": exp, "parent": parent}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_uri_is_absolute_sqlite_with_artifacts_beside(tmp_path):
    uri = T.default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert uri.startswith("sqlite:////")  # four slashes: absolute
    assert T.artifact_root(uri) == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert T.artifact_root("http://127.0.0.1:5000") is None


@pytest.mark.parametrize("uri, words", [
    ("sqlite:///relative/mlflow.db", ["relative", "absolute"]),
    ("file:///tmp/mlruns", ["file store"]),
    ("/tmp/mlruns", ["file store"]),
    ("ftp://host/x", ["unsupported scheme"]),
])
def test_bad_tracking_uris_are_refused_by_name(uri, words):
    with pytest.raises(T.TrackingError) as e:
        T.check_tracking_uri(uri)
    assert uri in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_unreachable_server_is_named():
    uri = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(T.TrackingError, match="not reachable") as e:
        T.check_tracking_uri(uri, timeout=2)
    assert uri in str(e.value)


def test_answering_server_is_accepted():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Health)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        uri = f"http://127.0.0.1:{srv.server_address[1]}"
        assert T.check_tracking_uri(uri) == uri
    finally:
        srv.shutdown()


def test_experiment_has_absolute_artifact_location(store):
    exp = store["client"].get_experiment(store["exp"])
    assert exp.name == "trk"
    assert exp.artifact_location.startswith("file:///")
    assert exp.artifact_location.startswith((store["dir"].resolve() / "mlartifacts").as_uri())
    # idempotent
    assert T.get_or_create_experiment(store["client"], "trk", store["uri"]) == store["exp"]


def test_trial_run_is_found_again_by_trial_id(store):
    c, exp, parent = store["client"], store["exp"], store["parent"]
    rid, resumed = T.open_trial_run(c, exp, parent, "aaaaa_00000", "tau=0.5 B=64 C=2 seed=0",
                                    params={"tau": 0.5, "objectives": ("cl", "nscl")})
    assert not resumed
    run = c.get_run(rid)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["trial_id"] == "aaaaa_00000"
    assert run.info.run_name == "tau=0.5 B=64 C=2 seed=0"
    assert run.data.params["objectives"] == "cl,nscl"
    T.end_run(c, rid, "FAILED", error="RuntimeError: boom")
    assert c.get_run(rid).data.tags["error"] == "RuntimeError: boom"

    rid2, resumed = T.open_trial_run(c, exp, parent, "aaaaa_00000", "ignored", params={})
    assert (rid2, resumed) == (rid, True)
    run = c.get_run(rid)
    assert run.info.status == "RUNNING" and run.data.tags["attempts"] == "2"
    T.end_run(c, rid, "FINISHED")
    run = c.get_run(rid)
    assert run.info.status == "FINISHED"
    assert "error" not in run.data.tags and run.data.tags["previous_error"] == "RuntimeError: boom"
    # another parent's trial with the same id is a different run
    other = T.start_sweep_run(c, exp, "trk", {}, {})
    rid3, resumed = T.open_trial_run(c, exp, other, "aaaaa_00000", "x", params={})
    assert rid3 != rid and not resumed
    T.end_run(c, rid3)
    T.end_run(c, other)


def test_metrics_logged_once_per_step_and_in_batches(store):
    c, exp, parent = store["client"], store["exp"], store["parent"]
    rid, _ = T.open_trial_run(c, exp, parent, "bbbbb_00000", "metrics", params={})
    recs = [{"epoch": e, "cl/loss": 1.0 / (e + 1), "nscl/cka": float("nan") if e == 0 else 0.9,
             "fingerprint": "abc", "flag": True} for e in range(3)]
    calls = []
    real_log_batch = c.log_batch

    def counting_log_batch(run_id, metrics=(), params=(), tags=()):
        calls.append(len(metrics))
        return real_log_batch(run_id, metrics=metrics, params=params, tags=tags)

    c.log_batch = counting_log_batch  # the real store's call, counted
    assert T.log_records(c, rid, recs) == 3
    # one request per record, with all its numbers (2 each: epoch is the step, and a key)
    assert calls == [3, 3, 3], calls
    calls.clear()
    assert T.logged_steps(c, rid) == {0, 1, 2}
    # a restored trial replays epochs 2..3: only epoch 3 is new
    replay = recs[2:] + [{"epoch": 3, "cl/loss": 0.2, "nscl/cka": 0.95}]
    assert T.log_records(c, rid, replay, skip_steps=T.logged_steps(c, rid)) == 1
    hist = c.get_metric_history(rid, "cl/loss")
    assert sorted(m.step for m in hist) == [0, 1, 2, 3]
    assert "fingerprint" not in c.get_run(rid).data.metrics  # strings are not metrics
    assert "flag" not in c.get_run(rid).data.metrics
    # more than MLflow's 1000 entities per request: split into batches
    wide = {f"m{i:04d}": float(i) for i in range(1500)}
    calls.clear()
    T.log_metrics(c, rid, wide, step=7)
    assert calls == [1000, 500], calls  # MLflow's limit per request, no more requests
    assert len([k for k in c.get_run(rid).data.metrics if k.startswith("m")]) == 1500
    c.log_batch = real_log_batch
    T.end_run(c, rid)


def test_dangling_runs_are_closed(store):
    c, exp = store["client"], store["exp"]
    parent = T.start_sweep_run(c, exp, "trk", {}, {})
    lost, _ = T.open_trial_run(c, exp, parent, "ccccc_00000", "lost", params={})
    failed, _ = T.open_trial_run(c, exp, parent, "ccccc_00001", "failed", params={})
    done, _ = T.open_trial_run(c, exp, parent, "ccccc_00002", "done", params={})
    T.end_run(c, done)
    closed = T.close_dangling_runs(c, exp, parent, {"ccccc_00001": "RayActorError: node died"})
    assert sorted(closed) == sorted([lost, failed])
    assert c.get_run(lost).info.status == "KILLED"
    assert c.get_run(failed).info.status == "FAILED"
    assert c.get_run(failed).data.tags["error"] == "RayActorError: node died"
    assert c.get_run(done).info.status == "FINISHED"
    assert len(T.child_runs(c, exp, parent)) == 3


def test_parent_run_reopened_on_resume(store):
    c, exp = store["client"], store["exp"]
    pid = T.start_sweep_run(c, exp, "trk2", {"preset": "quick"}, {"git_commit": "x"})
    T.end_run(c, pid, "KILLED", error="sweep interrupted")
    again = T.start_sweep_run(c, exp, "trk2", {"preset": "quick"}, {}, run_id=pid)
    assert again == pid
    assert c.get_run(pid).info.status == "RUNNING"
    T.end_run(c, pid)
    assert c.get_run(pid).info.status == "FINISHED"


def test_provenance_and_ui_hint():
    tags = T.provenance_tags()
    for pkg in ("torch", "ray", "mlflow", "clnscl"):
        assert tags[f"version.{pkg}"] and tags[f"version.{pkg}"] != "not installed"
    assert len(tags.get("git_commit", "0" * 40)) == 40
    cmd, url = T.ui_hint("sqlite:////abs/mlflow.db", "3")
    assert cmd.endswith("mlflow ui --backend-store-uri sqlite:////abs/mlflow.db --port 5000")
    assert cmd.split()[0] in ("mlflow", str(Path(sys.executable).parent / "mlflow"))
    assert url == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"


def test_experiment_kind_tag_on_new_and_existing_experiments(tmp_path):
    """MLflow 3's UI reads mlflow.experimentKind: set on a new experiment and added to one
    an older version created without it (or with the GenAI kind)."""
    uri = T.default_tracking_uri(tmp_path)
    c = T.connect(uri)
    new = T.get_or_create_experiment(c, "kind-new", uri)
    assert c.get_experiment(new).tags[T.TAG_EXPERIMENT_KIND] == "custom_model_development"
    old = c.create_experiment("kind-old")  # as an earlier clnscl left it: no kind tag
    assert T.TAG_EXPERIMENT_KIND not in c.get_experiment(old).tags
    assert T.get_or_create_experiment(c, "kind-old", uri) == old
    assert c.get_experiment(old).tags[T.TAG_EXPERIMENT_KIND] == "custom_model_development"
    c.set_experiment_tag(old, T.TAG_EXPERIMENT_KIND, "genai_development")
    T.get_or_create_experiment(c, "kind-old", uri)
    assert c.get_experiment(old).tags[T.TAG_EXPERIMENT_KIND] == "custom_model_development"
