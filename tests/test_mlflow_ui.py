"""The MLflow UI of a sweep, checked in a real browser (Debian's chromium driven by
Playwright, headless) against ``mlflow ui`` on 127.0.0.1: the URL the sweep prints opens the
experiment's runs table in model-training mode, the trials are visible under their parent
run, and the metric columns ``nscl/cka`` / ``nscl/rho`` can be added. Screenshots are left
in the test's tmp folder. Skipped, with the reason, when chromium or playwright is missing
(``.ci/run`` installs chromium; ``pip install -e .[test]`` installs playwright)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sweeps import tracking as T

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip("Debian's chromium is not installed "
                "(apt-get install -y chromium chromium-driver)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e .[test])")

SWEEP = "ui-sweep"
CLASSES = (2, 4)
RUN_NAMES = [f"tau=0.5 B=16 C={c} seed=0" for c in CLASSES]
GENAI_ONLY = ("Observability", "Judges", "Prompts & versions", "Training runs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_sweep(uri: str) -> str:
    """A sweep's parent run and one child run per class count, through sweeps.tracking."""
    client = T.connect(uri)
    exp = T.get_or_create_experiment(client, SWEEP, uri)
    parent = T.start_sweep_run(client, exp, SWEEP, {"grid.n_classes": list(CLASSES)}, {})
    for c, name in zip(CLASSES, RUN_NAMES):
        rid, _ = T.open_trial_run(client, exp, parent, f"trial_{c}", name,
                                  {"tau": 0.5, "batch_size": 16, "n_classes": c, "seed": 0})
        T.log_records(client, rid, [{"epoch": e, "nscl/cka": 0.5 + 0.1 * e + 0.01 * c,
                                     "nscl/rho": 0.3 + 0.05 * e} for e in range(3)])
        T.end_run(client, rid)
    T.end_run(client, parent)
    assert client.get_experiment(exp).tags[T.TAG_EXPERIMENT_KIND] == T.EXPERIMENT_KIND
    return exp


@pytest.fixture
def mlflow_ui(tmp_path):
    """``mlflow ui`` on 127.0.0.1 in its own process group (only that group is ended)."""
    uri = T.default_tracking_uri(tmp_path)
    exp = _log_sweep(uri)
    port = _free_port()
    log = open(tmp_path / "mlflow_ui.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui",
                             "--backend-store-uri", uri, "--host", "127.0.0.1",
                             "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("mlflow ui did not answer: "
                                + (tmp_path / "mlflow_ui.log").read_text()[-2000:])
                time.sleep(0.3)
        yield uri, exp, port
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def test_printed_url_opens_runs_table_in_model_training_mode(mlflow_ui, tmp_path):
    uri, exp, port = mlflow_ui
    _, url = T.ui_hint(uri, exp, port=port)
    assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/{exp}/runs")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 2400, "height": 900})
            page.goto(url)
            parent = page.locator("[role=row]").filter(has_text=SWEEP)
            parent.first.wait_for(timeout=30_000)  # the runs table with the parent row
            page.screenshot(path=tmp_path / "1_runs_table.png")

            # model-training mode: the experiment's sidebar is Runs / Models / Model
            # registry, the runs table is titled "Runs"; none of the GenAI-first pages
            assert f"/experiments/{exp}/runs" in page.url
            nav = page.locator("nav").first.inner_text()
            assert "Model registry" in nav and "Runs" in nav.split(), nav
            body = page.inner_text("body")
            for word in GENAI_ONLY:
                assert word not in body, f"GenAI page element {word!r} shown"

            # the trials under their parent run: expand it, both run names are shown
            parent.first.locator(
                "button[data-component-id$='runnamecellrenderer.tsx_46']").click()
            for name in RUN_NAMES:
                page.get_by_text(name, exact=True).first.wait_for(timeout=10_000)
            assert f"{1 + len(RUN_NAMES)} matching runs" in page.inner_text("body")
            page.screenshot(path=tmp_path / "2_trials_expanded.png")

            # the metric columns: listed under "Metrics" in the Columns menu, then shown
            page.get_by_role("button", name="Columns").first.click()
            for metric in ("nscl/cka", "nscl/rho"):
                page.get_by_text(metric, exact=True).first.wait_for(timeout=10_000)
            page.screenshot(path=tmp_path / "3_columns_menu.png")
            for metric in ("nscl/cka", "nscl/rho"):  # the tree node's checkbox
                page.locator(f"[class*=tree-treenode]:has(span[title='{metric}']) "
                             "[class*=tree-checkbox]").first.click()
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
            page.screenshot(path=tmp_path / "4_metric_columns.png")
            for metric in ("nscl/cka", "nscl/rho"):
                header = page.locator("[role=columnheader]").filter(has_text=metric)
                header.first.wait_for(timeout=10_000)
            table = page.locator("[role=grid]").first.inner_text()
            # the last epoch's nscl/cka of each trial (0.72 at C=2, 0.74 at C=4)
            assert "0.72" in table and "0.74" in table, table
        finally:
            browser.close()
    for shot in ("1_runs_table", "2_trials_expanded", "3_columns_menu", "4_metric_columns"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 10_000


def test_saved_comparison_across_classes_shows_nscl_metrics_by_C(mlflow_ui, tmp_path):
    """The sweep saves, in its parent run's description, one link per (tau, B, seed) to
    MLflow's comparison of the trials across C; the link opens a page that lists both
    trials, the param n_classes and the metrics nscl/cka and nscl/rho with their values."""
    uri, exp, port = mlflow_ui
    client = T.connect(uri)
    parent = T.find_sweep_run(client, exp, SWEEP).info.run_id
    saved = T.save_comparisons_across_classes(client, exp, parent)
    assert [label for label, _ in saved] == ["tau=0.5 B=16 seed=0"]
    by_c = {int(client.get_run(r).data.params["n_classes"]) for r in saved[0][1]}
    assert by_c == set(CLASSES)
    base = f"http://127.0.0.1:{port}"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 1400})
            # the parent run's page: its description holds the link; following it lands on
            # the comparison
            page.goto(f"{base}/#/experiments/{exp}/runs/{parent}?workflowType=machine_learning")
            link = page.get_by_role("link", name="tau=0.5 B=16 seed=0: C = 2, 4")
            link.first.wait_for(timeout=30_000)
            page.screenshot(path=tmp_path / "5_parent_description.png")
            href = link.first.get_attribute("href")  # it opens in a new tab: go there
            assert href == T.compare_url("", exp, saved[0][1]), href
            page.goto(base + href)
            page.get_by_text("nscl/rho", exact=True).first.wait_for(timeout=30_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=tmp_path / "6_compare_across_C.png", full_page=True)
            body = page.inner_text("body")
            for text in (*RUN_NAMES, "n_classes", "nscl/cka", "nscl/rho"):
                assert text in body, text
            # the last epoch's values, side by side (nscl/cka 0.72 at C=2, 0.74 at C=4)
            assert "0.72" in body and "0.74" in body
        finally:
            browser.close()
    for shot in ("5_parent_description", "6_compare_across_C"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 10_000
