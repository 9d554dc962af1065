"""worker/ops/metrics.py: the counters of a long-lived process (serve's /metrics, run --loop's pushes)
and which pass pushes what to a Pushgateway. The one-pass push (the CronJob's) is tested in
tests/unit/test_receipts_unit.py; the rules that read all of it in tests/unit/test_alerts.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from worker.ops import metrics
from worker.ops.metrics import KINDS, PassMetrics, push_pass_metrics
from worker.steps.context import PassCounts, PassResult

Seen = list[tuple[str, str, bytes]]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def test_a_fresh_process_exposes_every_kind_at_zero_and_no_last_pass() -> None:
    text = PassMetrics().exposition()[0].decode()
    for kind in KINDS:
        assert value(text, "reminder_worker_items_total", kind=kind) == 0.0, kind
    for code in ("0", "1", "2"):
        assert value(text, "reminder_worker_passes_total", exit_code=code) == 0.0
    assert "reminder_worker_pass_" not in text  # no last pass yet, and above all no last success


def test_counters_add_up_passes_and_the_last_success_stays() -> None:
    m = PassMetrics()
    m.observe(PassResult(counts=PassCounts(sent=3, failed=1), exit_code=0, duration=2.5), "http", now=100.0)
    m.observe(PassResult(counts=PassCounts(sent=2), exit_code=1, duration=1.0), "http", now=160.0)
    text = m.exposition()[0].decode()
    assert value(text, "reminder_worker_items_total", kind="sent") == 5.0
    assert value(text, "reminder_worker_items_total", kind="failed") == 1.0
    assert value(text, "reminder_worker_passes_total", exit_code="0") == 1.0
    assert value(text, "reminder_worker_passes_total", exit_code="1") == 1.0
    assert value(text, "reminder_worker_pass_items", kind="sent") == 2.0  # the last pass's
    assert value(text, "reminder_worker_pass_exit_code") == 1.0
    assert value(text, "reminder_worker_pass_last_run_timestamp_seconds") == 160.0
    assert value(text, "reminder_worker_pass_last_success_timestamp_seconds") == 100.0
    assert value(text, "reminder_worker_pass_trigger", trigger="http") == 1.0


def test_a_process_whose_passes_all_fail_has_no_last_success() -> None:
    m = PassMetrics()
    m.observe(PassResult(exit_code=2), "http", now=100.0)
    text = m.exposition()[0].decode()
    assert value(text, "reminder_worker_passes_total", exit_code="2") == 1.0
    assert "last_success" not in text


def test_metrics_speak_openmetrics_when_asked() -> None:
    body, content_type = PassMetrics().exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF")
    assert PassMetrics().exposition()[1] == "text/plain; version=0.0.4; charset=utf-8"


class _Recorder(BaseHTTPRequestHandler):
    seen: Seen

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = _record

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def pushgateway() -> Iterator[tuple[str, Seen]]:
    seen: Seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Recorder,), {"seen": seen}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_loop_pushes_its_process_counters_under_its_own_instance(
        pushgateway: tuple[str, Seen], monkeypatch: pytest.MonkeyPatch) -> None:
    url, seen = pushgateway
    monkeypatch.setattr(metrics, "instance_name", lambda: "reminder-worker-loop-7d9f-abcde")
    metrics._loop.cache_clear()
    try:
        assert push_pass_metrics(url, PassResult(counts=PassCounts(sent=3), exit_code=0), "loop")
        assert push_pass_metrics(url, PassResult(counts=PassCounts(sent=4), exit_code=1), "loop")
    finally:
        metrics._loop.cache_clear()
    assert [(m, p) for m, p, _ in seen] == [("POST", "/metrics/job/reminder_worker/instance/reminder-worker-loop-7d9f-abcde")] * 2
    text = seen[1][2].decode()
    assert value(text, "reminder_worker_items_total", kind="sent") == 7.0  # counted across passes
    assert value(text, "reminder_worker_passes_total", exit_code="0") == 1.0
    assert value(text, "reminder_worker_passes_total", exit_code="1") == 1.0
    assert value(text, "reminder_worker_pass_last_success_timestamp_seconds") is not None


def test_serves_passes_are_never_pushed(pushgateway: tuple[str, Seen]) -> None:
    url, seen = pushgateway
    assert not push_pass_metrics(url, PassResult(counts=PassCounts(sent=3)), "http")
    assert seen == []  # serve is scraped at /metrics: a push too would count its passes twice
    assert push_pass_metrics(url, PassResult(counts=PassCounts(sent=3)), "manual")
    assert seen[0][1] == "/metrics/job/reminder_worker"  # one pass, one group: the CronJob's shape
