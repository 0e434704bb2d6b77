"""Exactly one MLflow run per sweep and per trial even when the network loses the answer to
`create_run`: a real `mlflow server` on 127.0.0.1 behind a small proxy that forwards the
first create-run request to the server (the run is created) and then loses the response.
With MLflow's HTTP retries on (the driver), the client sends the create again and the
server creates a second run; with retries off (the trials), the caller sees an error.
Either way the sweep and trial runs are found again by their stable keys: one run each."""

from __future__ import annotations

import http.client
import http.server
import threading

import pytest
from test_tracking_outage import MlflowServer, _free_port

from sweeps import tracking


class LosingProxy(http.server.ThreadingHTTPServer):
    """Forwards everything to the server; for the next ``lose`` create-run requests the
    server's answer is replaced by a 503 (after the server has acted on the request)."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.lose = 0
        self.lost = 0
        self.creates_seen = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if self.command == "POST" and self.path.endswith("/mlflow/runs/create"):
                    proxy.creates_seen += 1
                    if proxy.lose > 0:
                        proxy.lose -= 1
                        proxy.lost += 1
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    d = tmp_path_factory.mktemp("create_once")
    server = MlflowServer(d / "mlflow.db", d / "artifacts", _free_port(), d / "server.log")
    server.start()
    proxy = LosingProxy(int(server.url.rsplit(":", 1)[1]))
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy, f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        server.stop()


def _runs(client, exp_id):
    return client.search_runs([exp_id])  # active runs only (deleted ones are not listed)


@pytest.mark.slow
def test_a_resent_create_leaves_one_parent_run(proxied, monkeypatch):
    proxy, uri = proxied
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    client = tracking.connect(uri)
    exp = tracking.get_or_create_experiment(client, "resent", uri)
    before, lost = proxy.creates_seen, proxy.lost
    proxy.lose = 1
    parent = tracking.start_sweep_run(client, exp, "resent", {"n_trials": 2}, {})
    assert proxy.lost - lost == 1 and proxy.creates_seen - before == 2  # two runs made
    runs = _runs(client, exp)
    assert [r.info.run_id for r in runs] == [parent], [r.info.run_name for r in runs]
    assert client.get_run(parent).data.params["n_trials"] == "2"
    dup = [r for r in client.search_runs([exp], run_view_type=2)  # deleted ones
           if r.info.run_id != parent]
    assert len(dup) == 1 and dup[0].data.tags["duplicate_of"] == parent


@pytest.mark.slow
def test_a_lost_create_response_in_a_trial_leaves_one_trial_run(proxied, monkeypatch):
    proxy, uri = proxied
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as in the trials
    client = tracking.connect(uri)
    exp = tracking.get_or_create_experiment(client, "lost", uri)
    parent = tracking.start_sweep_run(client, exp, "lost", {}, {})
    lost = proxy.lost
    proxy.lose = 1
    rid, resumed = tracking.open_trial_run(client, exp, parent, "abc12_00000",
                                           "tau=1 B=16 C=2 seed=0", {"tau": 1.0})
    assert proxy.lost - lost == 1 and not resumed
    kids = [r for r in _runs(client, exp) if r.info.run_id != parent]
    assert [r.info.run_id for r in kids] == [rid]
    assert kids[0].data.tags["trial_id"] == "abc12_00000"
    assert client.get_run(rid).data.params["tau"] == "1.0"
    # the trial's next attempt finds the same run
    again, resumed = tracking.open_trial_run(client, exp, parent, "abc12_00000",
                                             "tau=1 B=16 C=2 seed=0", {"tau": 1.0})
    assert again == rid and resumed
