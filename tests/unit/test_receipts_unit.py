"""Receipts, history and metrics, piece by piece: classification, the Expo client's receipt calls
(over real HTTP to the stand-in), settings, the Pushgateway push, and the status table.

Why: the pass-level tests show the pieces work together; these pin each decision on its own, so
a regression names the rule it broke (e.g. "a missing receipt is given up only at 24 hours").
"""

from __future__ import annotations

import io
import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from standins.expo import ExpoStandIn, _payload_size
from worker import logs
from worker.clients.expo import RECEIPT_IDS_PER_REQUEST, ExpoPusher, Outbound, Receipt, ReceiptsUnavailable
from worker.config import ConfigError, Settings
from worker.ops.metrics import push_pass_metrics
from worker.ops.status import ago, render
from worker.planner import EXPO_MAX_PAYLOAD_BYTES
from worker.records import Device, ReceiptRow, ReminderRow
from worker.steps.context import PassCounts, PassResult
from worker.steps.messages import build_messages
from worker.steps.receipts import RECEIPT_HORIZON, receipt_outcome
from worker.vocabulary import ErrorKind, ReceiptOutcome

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
SETTINGS = Settings.from_env({"DATABASE_URL": "postgresql://unused"})


def _row(sent_ago: timedelta = timedelta(minutes=16), checks: int = 0, retries: int = 0) -> ReceiptRow:
    return ReceiptRow(id="r1", token="ExponentPushToken[phone]", ticket_id="t1", sent_at_ts=NOW - sent_ago, receipt_checks=checks, retry_count=retries)


# --- classification -----------------------------------------------------------------------------


def test_ok_receipt_confirms_delivery() -> None:
    out = receipt_outcome(_row(), Receipt("ok"), SETTINGS.passes, NOW)
    assert out.outcome is ReceiptOutcome.OK
    assert out.error is None
    assert out.error_kind is None


def test_device_not_registered_fails_and_names_the_device_to_forget() -> None:
    out = receipt_outcome(_row(), Receipt("error", "DeviceNotRegistered", "gone"), SETTINGS.passes, NOW)
    assert out.outcome is ReceiptOutcome.FAILED
    assert out.token == "ExponentPushToken[phone]"  # worker_record_receipts forgets this device only
    assert out.error == "delivery failed: DeviceNotRegistered: gone"
    assert out.error_kind is ErrorKind.DEVICE_NOT_REGISTERED


@pytest.mark.parametrize("code", ["MessageTooBig", "SomethingNew"])
def test_other_errors_fail_without_touching_the_token(code: str) -> None:
    out = receipt_outcome(_row(), Receipt("error", code, None), SETTINGS.passes, NOW)
    assert out.outcome is ReceiptOutcome.FAILED
    assert out.error_kind is not ErrorKind.DEVICE_NOT_REGISTERED
    assert out.error == f"delivery failed: {code}"


@pytest.mark.parametrize("code", ["InvalidCredentials", "MismatchSenderId"])
def test_the_projects_credentials_defer_the_reminder_without_an_attempt(code: str) -> None:
    out = receipt_outcome(_row(retries=1), Receipt("error", code, None), SETTINGS.passes, NOW, rng=random.Random(4))
    assert out.outcome is ReceiptOutcome.DEFERRED
    assert out.error_kind is ErrorKind.EXPO_CREDENTIALS
    assert out.next_attempt_at is not None and out.next_attempt_at > NOW


def test_rate_exceeded_is_sent_again_with_backoff() -> None:
    out = receipt_outcome(_row(retries=2), Receipt("error", "MessageRateExceeded", "slow down"), SETTINGS.passes, NOW,
                          rng=random.Random(1))
    assert out.outcome is ReceiptOutcome.RESEND
    # third failure: nominal base * 2^2, equal jitter keeps at least half of it
    assert out.next_attempt_at is not None
    delay = (out.next_attempt_at - NOW).total_seconds()
    assert SETTINGS.passes.retry_base_seconds * 2 <= delay <= SETTINGS.passes.retry_base_seconds * 4


def test_missing_receipt_is_polled_again_but_never_past_the_horizon() -> None:
    young = receipt_outcome(_row(checks=0), None, SETTINGS.passes, NOW, rng=random.Random(2))
    assert young.outcome is ReceiptOutcome.MISSING
    assert young.next_check_at is not None
    assert NOW < young.next_check_at <= NOW + timedelta(minutes=10)
    late = _row(sent_ago=RECEIPT_HORIZON - timedelta(minutes=5), checks=6)
    near = receipt_outcome(late, None, SETTINGS.passes, NOW, rng=random.Random(3))
    assert near.outcome is ReceiptOutcome.MISSING
    assert near.next_check_at == late.sent_at_ts + RECEIPT_HORIZON


def test_missing_receipt_at_24_hours_is_settled_unknown() -> None:
    out = receipt_outcome(_row(sent_ago=RECEIPT_HORIZON), None, SETTINGS.passes, NOW)
    assert out.outcome is ReceiptOutcome.UNKNOWN
    assert "24 hours" in (out.error or "")


# --- our messages are never MessageTooBig ----------------------------------------------------------


def test_a_message_of_huge_parts_stays_within_expos_payload_limit() -> None:
    row = ReminderRow(
        id="9b2f2c4e-0000-4000-8000-000000000001", event_id="9b2f2c4e-0000-4000-8000-000000000002",
        user_id="u", notify_at_ts=NOW, retry_count=0, title="Fußball-Turnier 🏆 " * 2000,
        start_ts=NOW + timedelta(hours=3), location="Großer Sportplatz am Ende der Straße 🏟 " * 1500,
        prep_items=tuple(f"Trinkflasche Nr. {i} 🥤 und Schienbeinschoner" for i in range(2000)),
        child_name="Émilie-Charlotte 👧" * 300, has_profile=True,
        devices=(Device("ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]", "profile"),), timezone="Europe/Berlin")
    messages = build_messages(row, NOW)
    assert isinstance(messages, list) and len(messages) == 1
    built = messages[0]
    payload = built.payload()
    compact = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(compact) <= EXPO_MAX_PAYLOAD_BYTES
    assert len(json.dumps(payload).encode()) <= EXPO_MAX_PAYLOAD_BYTES  # even \u-escaped, as requests sends it
    assert _payload_size(payload) <= EXPO_MAX_PAYLOAD_BYTES  # the stand-in's (Expo's) measure
    assert built.title
    assert built.body


# --- the client: getReceipts over HTTP ---------------------------------------------------------------


@pytest.fixture
def expo() -> Iterator[ExpoStandIn]:
    with ExpoStandIn(access_token="expo-secret-token") as standin:
        yield standin


def _pusher(expo: ExpoStandIn, **kw: Any) -> ExpoPusher:
    args: dict[str, Any] = {"access_token": "expo-secret-token", "rate_limit": 0, "retry_wait": 0,
                            "request_attempts": 2}
    args.update(kw)
    return ExpoPusher(expo.url, **args)


def _tickets(pusher: ExpoPusher, tokens: list[str]) -> list[str]:
    msgs = [Outbound(f"r{i}", t, "t", "b", {}) for i, t in enumerate(tokens)]
    deliveries, _ = pusher.send(msgs)
    return [d.ticket_id for d in deliveries if d.ticket_id]


def test_check_receipts_chunks_by_300_with_our_authorization(expo: ExpoStandIn) -> None:
    pusher = _pusher(expo)
    try:
        ids = _tickets(pusher, [f"ExponentPushToken[ok-{i}]" for i in range(650)])
        ids.append("00000000-0000-4000-8000-00000000dead")  # unknown to Expo: no receipt
        receipts = pusher.check_receipts(ids)
    finally:
        pusher.close()
    assert sorted(len(r) for r in expo.receipt_requests) == [51, RECEIPT_IDS_PER_REQUEST, RECEIPT_IDS_PER_REQUEST]
    assert len(receipts) == 650
    assert all(r == Receipt("ok") for r in receipts.values())


def test_check_receipts_parses_each_error(expo: ExpoStandIn) -> None:
    pusher = _pusher(expo)
    markers = ["receipt-unregistered", "receipt-toobig", "receipt-ratelimited", "receipt-badcreds",
               "receipt-mismatch", "receipt-missing"]
    try:
        ids = _tickets(pusher, [f"ExponentPushToken[{m}]" for m in markers])
        receipts = pusher.check_receipts(ids)
    finally:
        pusher.close()
    got = [receipts[i].error if i in receipts else None for i in ids]
    assert got == ["DeviceNotRegistered", "MessageTooBig", "MessageRateExceeded", "InvalidCredentials",
                   "MismatchSenderId", None]
    unregistered = receipts[ids[0]]
    assert unregistered.message is not None
    assert "ExponentPushToken[receipt" not in unregistered.message  # the token is scrubbed


def test_check_receipts_retries_transient_errors(expo: ExpoStandIn) -> None:
    pusher = _pusher(expo)
    try:
        ids = _tickets(pusher, ["ExponentPushToken[a]"])
        expo.fail_next_receipts(1, 503)
        receipts = pusher.check_receipts(ids)
    finally:
        pusher.close()
    assert list(receipts) == ids
    assert len(expo.receipt_requests) == 2


def test_refused_token_is_not_retried_and_reports_what_was_unanswered(expo: ExpoStandIn) -> None:
    good = _pusher(expo)
    try:
        ids = _tickets(good, ["ExponentPushToken[a]", "ExponentPushToken[b]"])
    finally:
        good.close()
    bad = _pusher(expo, access_token="wrong")
    try:
        with pytest.raises(ReceiptsUnavailable) as caught:
            bad.check_receipts(ids)
    finally:
        bad.close()
    assert "HTTP 401" in str(caught.value)
    assert caught.value.unanswered == ids
    assert caught.value.receipts == {}
    assert len(expo.receipt_requests) == 0  # refused before the ids were read


def test_unreachable_expo_is_receipts_unavailable() -> None:
    pusher = ExpoPusher("http://127.0.0.1:9/--/api/v2", rate_limit=0, retry_wait=0, request_attempts=2, timeout=2)
    try:
        with pytest.raises(ReceiptsUnavailable, match="cannot reach Expo"):
            pusher.check_receipts(["x"])
    finally:
        pusher.close()


# --- settings -----------------------------------------------------------------------------------------


def test_new_settings_defaults_and_validation() -> None:
    assert SETTINGS.expo.receipt_delay_seconds == 900
    assert SETTINGS.expo.receipt_max_per_pass == 10_000
    assert SETTINGS.passes.worker_runs_retention_days == 30
    assert SETTINGS.passes.reminder_retention_days == 90
    assert SETTINGS.passes.pushgateway_url is None
    assert SETTINGS.passes.trigger is None
    base = {"DATABASE_URL": "postgresql://unused"}
    assert Settings.from_env({**base, "WORKER_TRIGGER": "CRON"}).passes.trigger == "cron"
    for name, value in [("WORKER_TRIGGER", "sometimes"), ("RECEIPT_DELAY_SECONDS", "soon"),
                        ("RECEIPT_MAX_PER_PASS", "-1"), ("WORKER_RUNS_RETENTION_DAYS", "0"),
                        ("REMINDER_RETENTION_DAYS", "x"), ("PROMETHEUS_PUSHGATEWAY_URL", "pushgw:9091")]:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({**base, name: value})
        assert caught.value.variable == name


# --- metrics --------------------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes]]

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
def pushgateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    seen: list[tuple[str, str, bytes]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _result(exit_code: int = 0) -> PassResult:
    return PassResult(counts=PassCounts(sent=3, receipts_ok=2), duration=1.25, exit_code=exit_code)


def test_metrics_are_pushed_to_the_pushgateway(pushgateway: tuple[str, list[tuple[str, str, bytes]]]) -> None:
    url, seen = pushgateway
    settings = Settings.from_env({"DATABASE_URL": "postgresql://unused", "PROMETHEUS_PUSHGATEWAY_URL": url})
    assert push_pass_metrics(settings.passes.pushgateway_url, _result(), "cron")
    method, path, body = seen[0]
    text = body.decode()
    assert (method, path) == ("POST", "/metrics/job/reminder_worker")
    assert 'reminder_worker_pass_items{kind="sent"} 3.0' in text
    assert 'reminder_worker_pass_items{kind="receipts_ok"} 2.0' in text
    assert "reminder_worker_pass_duration_seconds 1.25" in text
    assert "reminder_worker_pass_exit_code 0.0" in text
    assert 'reminder_worker_pass_trigger{trigger="cron"} 1.0' in text
    assert "reminder_worker_pass_last_success_timestamp_seconds" in text
    assert push_pass_metrics(settings.passes.pushgateway_url, _result(exit_code=1), "cron")
    assert "last_success" not in seen[1][2].decode()  # a failed pass keeps the last success's time


def test_metrics_are_off_by_default_and_a_failed_push_is_only_logged() -> None:
    assert not push_pass_metrics(SETTINGS.passes.pushgateway_url, _result(), "manual")
    stream = io.StringIO()
    logs.setup("INFO", "json", stream)
    settings = Settings.from_env({"DATABASE_URL": "postgresql://unused",
                                  "PROMETHEUS_PUSHGATEWAY_URL": "http://127.0.0.1:9"})
    assert not push_pass_metrics(settings.passes.pushgateway_url, _result(), "manual")
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["metrics.push_failed"]


# --- the status table ---------------------------------------------------------------------------------


def test_status_table_renders_every_section() -> None:
    doc = {
        "now": NOW.isoformat(), "schema_version": 4,
        "runs": [{"id": 2, "started_at": (NOW - timedelta(minutes=1)).isoformat(), "duration_s": 0.5,
                  "trigger": "cron", "exit_code": 0, "error": None, "counts": {"sent": 4, "failed": 0}},
                 {"id": 1, "started_at": (NOW - timedelta(minutes=2)).isoformat(), "duration_s": 3,
                  "trigger": "manual", "exit_code": 1, "error": "Expo is unavailable: boom", "counts": {}}],
        "runs_24h": {"total": 2, "failed": 1},
        "reminders": {"due_now": 7, "oldest_due": (NOW - timedelta(minutes=3)).isoformat(), "in_flight": 1,
                      "in_flight_lapsed": 0, "waiting_retry": 2, "awaiting_receipt": 5},
        "failed_24h": [{"reason": "delivery failed: DeviceNotRegistered", "count": 3}],
        "events": {"waiting_sync": 4, "retrying": 1, "cancelling": 0, "oldest_waiting": None},
        "google_revoked": {"users": 1, "list": [{"user_id": "u-1", "events": 2, "last": NOW.isoformat()}]},
        "tokens_cleared": {"users": 0, "list": []},
    }
    text = render(doc, NOW)
    assert "last 24 h: 2 passes, 1 failed" in text
    assert "ok: sent=4" in text
    assert "FAILED (exit 1): Expo is unavailable: boom" in text
    assert "oldest due 3m ago" in text
    assert "     3  delivery failed: DeviceNotRegistered" in text
    assert "u-1     2 events" in text
    assert "Push token cleared (DeviceNotRegistered): 0 users" in text
    assert ago(NOW + timedelta(hours=2), NOW) == "in 2h00m"
