"""`serve`'s GET /metrics, through the real process over real HTTP, after real passes.

What the alert rules (monitoring/alerts.rules.yaml) read from a serve pod: counters of the passes it
ran, the last pass's gauges, the last success's time, in Prometheus' text format, without the bearer
token, and never a secret. serve is scraped and never pushes, even with a Pushgateway configured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from standins.expo import ExpoStandIn
from tests import seed
from tests.acceptance.test_serve import AUTH, TOKEN, _env, _outcome, free_port, serving
from worker.ops.metrics import KINDS


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str]

    def _record(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = do_GET = _record

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def pushgateway() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Recorder,), {"seen": seen}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_metrics_count_the_passes_serve_ran(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn,
                                            tmp_path: Path, pushgateway: tuple[str, list[str]]) -> None:
    gateway_url, pushed = pushgateway
    seed.add_due_reminders(db, 20, datetime.now(UTC), users=5)
    with serving(_env(db_url, expo, PROMETHEUS_PUSHGATEWAY_URL=gateway_url), tmp_path) as server:
        before = server.http.get("/metrics")  # no bearer: the scraper holds no secret
        assert before.status_code == 200, before.text
        assert before.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        first = scrape(before.text)
        assert {metric(first, "reminder_worker_items_total", kind=k) for k in KINDS} == {0.0}
        assert metric(first, "reminder_worker_passes_total", exit_code="0") == 0.0
        assert "reminder_worker_pass_last_success_timestamp_seconds" not in before.text

        started = time.time()
        run = server.http.post("/run", headers=AUTH, json={})
        assert run.status_code == 202, run.text
        assert _outcome(server, run.json()["run_id"])["status"] == "succeeded"
        after = server.http.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert after.status_code == 200
        now = scrape(after.text)
        assert metric(now, "reminder_worker_items_total", kind="sent") == 20.0
        assert metric(now, "reminder_worker_passes_total", exit_code="0") == 1.0
        assert metric(now, "reminder_worker_passes_total", exit_code="1") == 0.0
        assert metric(now, "reminder_worker_pass_items", kind="sent") == 20.0
        assert metric(now, "reminder_worker_pass_exit_code") == 0.0
        assert metric(now, "reminder_worker_pass_trigger", trigger="http") == 1.0
        success = metric(now, "reminder_worker_pass_last_success_timestamp_seconds")
        assert success is not None and started <= success <= time.time() + 1

        # An OpenMetrics scraper gets OpenMetrics.
        om = server.http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
        assert server.http.post("/metrics").status_code == 405
        log = server.log()
    assert pushed == [], "serve pushed to the Pushgateway: its passes would be counted twice"
    assert TOKEN not in after.text + om.text
    assert "serve.metrics_failed" not in log


def test_metrics_count_a_failed_pass_and_keep_no_success(expo: ExpoStandIn, tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    env = _env(f"postgresql://worker:hunter2-secret@127.0.0.1:{closed}/postgres", expo)
    with serving(env, tmp_path) as server:
        started = server.http.post("/run", headers=AUTH, json={})
        assert started.status_code == 202
        assert _outcome(server, started.json()["run_id"])["exit_code"] == 1
        answer = server.http.get("/metrics")
    assert answer.status_code == 200
    samples = scrape(answer.text)
    assert metric(samples, "reminder_worker_passes_total", exit_code="1") == 1.0
    assert metric(samples, "reminder_worker_passes_total", exit_code="0") == 0.0
    assert metric(samples, "reminder_worker_pass_exit_code") == 1.0
    assert "reminder_worker_pass_last_success_timestamp_seconds" not in answer.text
    assert "hunter2-secret" not in answer.text
