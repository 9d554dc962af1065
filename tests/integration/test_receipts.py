"""The receipts step and run history in-process, against a real database and the Expo stand-in,
through both gateways (direct Postgres and the Supabase Data API).

Why: receipts settle reminders long after the pass that sent them; these tests move the pass's
clock past RECEIPT_DELAY_SECONDS and check each receipt outcome lands in the rows, the profile
and the history exactly as sql/functions/public.worker_record_receipts.sql documents.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from standins.expo import ExpoStandIn
from tests import seed
from worker import logs
from worker.clients.expo import ExpoPusher
from worker.config import Settings
from worker.db import Gateway
from worker.passes import PassResult, run_pass
from worker.records import ReceiptResult
from worker.vocabulary import ErrorKind, ReceiptOutcome

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=16)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.setup("INFO", "json", stream)
    yield stream
    logs.setup("INFO", "json")


def _events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [d for d in docs if d["event"] == name]


def _settings(expo: ExpoStandIn, **kw: Any) -> Settings:
    env = {"DATABASE_URL": "postgresql://unused", "EXPO_API_URL": expo.url, "PUSH_RETRY_WAIT": "0",
           "PUSH_REQUEST_ATTEMPTS": "1"}
    env.update({k.upper(): str(v) for k, v in kw.items()})
    return Settings.from_env(env)


def _pass(gateway: Gateway, settings: Settings, now: datetime, trigger: str = "manual") -> PassResult:
    pusher = ExpoPusher(settings.expo.api_url, concurrency=2, rate_limit=0, request_attempts=1, retry_wait=0)
    try:
        return run_pass(settings, gateway, now=now, pusher=pusher, trigger=trigger)
    finally:
        pusher.close()


def due_reminder(db: psycopg.Connection[Any], marker: str, *, at: datetime = NOW,
                 start: datetime = NOW + timedelta(hours=2)) -> tuple[str, str, str]:
    """A parent whose token carries ``marker`` and one reminder due at ``at`` for an already synced
    event: (user id, token, reminder id)."""
    token = f"ExponentPushToken[{marker}-{uuid.uuid4().hex[:8]}]"
    user = seed.add_parent(db, token=token)
    event = seed.add_event(db, user, start)
    db.execute("UPDATE events SET status = 'synced', synced_version = version WHERE id = %s", (event,))
    row = db.execute("INSERT INTO reminders (event_id, user_id, notify_at_ts, message) "
                     "VALUES (%s, %s, %s, 'planned') RETURNING id", (event, user, at - timedelta(minutes=1))).fetchone()
    assert row is not None
    return user, token, str(row[0])


def _reminder(db: psycopg.Connection[Any], rid: str) -> dict[str, Any]:
    cur = db.execute("SELECT * FROM reminders WHERE id = %s", (rid,))
    names = [c.name for c in cur.description or []]
    row = cur.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


def _token(db: psycopg.Connection[Any], user: str) -> str | None:
    row = db.execute("SELECT expo_push_token FROM profiles WHERE id = %s", (user,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_each_receipt_outcome_settles_its_reminder(db: psycopg.Connection[Any], gateway: Gateway,
                                                   expo: ExpoStandIn, log_lines: io.StringIO) -> None:
    ok = due_reminder(db, "receipt-ok")
    gone = due_reminder(db, "receipt-unregistered")
    big = due_reminder(db, "receipt-toobig")
    slow = due_reminder(db, "receipt-ratelimited")
    creds = due_reminder(db, "receipt-badcreds")
    mismatch = due_reminder(db, "receipt-mismatch")
    missing = due_reminder(db, "receipt-missing")
    settings = _settings(expo)

    sent = _pass(gateway, settings, NOW)
    assert sent.exit_code == 0
    assert sent.counts.sent == 7
    assert sent.counts.receipts_ok == 0  # not yet 15 minutes
    assert expo.receipt_requests == []
    tickets = {r[0] for r in db.execute("SELECT expo_ticket_id FROM reminders").fetchall()}
    assert len(tickets) == 7
    assert None not in tickets

    checked = _pass(gateway, settings, LATER)
    # The project's push credentials are the operator's to fix: the pass says so (exit 1).
    assert (checked.exit_code, checked.error_kind) == (1, ErrorKind.EXPO_CREDENTIALS)
    c = checked.counts
    assert (c.receipts_ok, c.receipts_failed, c.receipts_resent, c.receipts_deferred, c.receipts_missing,
            c.receipts_unknown) == (1, 2, 1, 2, 1, 0)
    assert c.tokens_cleared == 1
    assert len(expo.receipt_requests) == 1

    r = _reminder(db, ok[2])
    assert (r["status"], r["receipt_status"], r["error_message"]) == ("sent", "ok", None)
    r = _reminder(db, gone[2])
    assert (r["status"], r["receipt_status"]) == ("failed", "error")
    assert r["error_message"].startswith("delivery failed: DeviceNotRegistered")
    assert NOW <= r["sent_at_ts"] < NOW + timedelta(seconds=30)  # Expo did accept it then
    assert _token(db, gone[0]) is None
    assert _token(db, ok[0]) == ok[1]
    r = _reminder(db, big[2])
    assert (r["status"], r["receipt_status"], r["error_kind"]) == ("failed", "error", "expo_rejected")
    assert "MessageTooBig" in r["error_message"]
    assert _token(db, big[0]) is not None
    for user, _, rid in (creds, mismatch):  # not the parent's fault: held, no attempt counted
        r = _reminder(db, rid)
        assert (r["status"], r["receipt_status"], r["retry_count"], r["error_kind"]) == \
            ("pending", "error", 0, "expo_credentials")
        assert r["next_attempt_at"] > LATER
        assert _token(db, user) is not None
    r = _reminder(db, slow[2])
    assert (r["status"], r["retry_count"], r["receipt_status"]) == ("pending", 1, "error")
    assert r["next_attempt_at"] > LATER
    r = _reminder(db, missing[2])
    assert (r["status"], r["receipt_status"], r["receipt_checks"]) == ("sent", None, 1)
    assert LATER < r["receipt_next_check_at"] <= LATER + timedelta(minutes=10)
    assert r["receipt_claim_id"] is None

    loud = _events(log_lines, "expo.credentials_invalid")
    assert len(loud) == 1
    assert loud[0]["level"] == "error"
    assert loud[0]["counts"] == {"InvalidCredentials": 1, "MismatchSenderId": 1}

    # The rate-limited one goes out again once its backoff is over, with a fresh receipt cycle.
    resend_at = _reminder(db, slow[2])["next_attempt_at"] + timedelta(seconds=1)
    held_due = sum(_reminder(db, rid)["next_attempt_at"] <= resend_at for _, _, rid in (creds, mismatch))
    again = _pass(gateway, settings, resend_at)
    assert again.counts.sent == 1 + held_due  # the held ones go out again too once their wait is over
    assert len(expo.sent_to(slow[1])) == 2
    r = _reminder(db, slow[2])
    assert (r["status"], r["receipt_status"], r["receipt_checks"]) == ("sent", None, 0)
    assert resend_at <= r["sent_at_ts"] < resend_at + timedelta(seconds=30)

    # A second check of the settled ones asks nothing; the missing one is only due later.
    quiet = _pass(gateway, settings, resend_at + timedelta(seconds=1))
    assert quiet.counts.receipts_ok == quiet.counts.receipts_missing == 0


def test_a_receipt_missing_for_24_hours_is_settled_unknown(db: psycopg.Connection[Any], gateway: Gateway,
                                                           expo: ExpoStandIn) -> None:
    _, _, rid = due_reminder(db, "receipt-missing", start=NOW + timedelta(days=2))
    settings = _settings(expo)
    _pass(gateway, settings, NOW)
    assert _pass(gateway, settings, LATER).counts.receipts_missing == 1
    not_yet = _reminder(db, rid)["receipt_next_check_at"] - timedelta(seconds=1)
    assert _pass(gateway, settings, not_yet).counts.receipts_missing == 0  # backoff respected
    asked = len(expo.receipt_requests)
    final = _pass(gateway, settings, NOW + timedelta(hours=24, minutes=1))
    assert final.counts.receipts_unknown == 1
    r = _reminder(db, rid)
    assert (r["status"], r["receipt_status"]) == ("sent", "unknown")
    assert len(expo.receipt_requests) == asked + 1
    _pass(gateway, settings, NOW + timedelta(days=3))
    assert len(expo.receipt_requests) == asked + 1  # never polled again


def test_receipts_are_bounded_per_pass(db: psycopg.Connection[Any], gateway: Gateway, expo: ExpoStandIn) -> None:
    for _ in range(5):
        due_reminder(db, "receipt-ok")
    settings = _settings(expo, receipt_max_per_pass=2, worker_batch_size=1000)
    _pass(gateway, settings, NOW)
    first = _pass(gateway, settings, LATER)
    assert first.counts.receipts_ok == 2
    second = _pass(gateway, settings, LATER)
    assert second.counts.receipts_ok == 2
    off = _settings(expo, receipt_max_per_pass=0)
    assert _pass(gateway, off, LATER).counts.receipts_ok == 0
    assert db.execute("SELECT count(*) FROM reminders WHERE receipt_status IS NULL").fetchone() == (1,)


def test_expo_down_for_receipts_fails_the_pass_and_loses_nothing(db: psycopg.Connection[Any], gateway: Gateway,
                                                                 expo: ExpoStandIn) -> None:
    _, _, rid = due_reminder(db, "receipt-ok")
    settings = _settings(expo)
    _pass(gateway, settings, NOW)
    expo.fail_next_receipts(1, 503)
    down = _pass(gateway, settings, LATER)
    assert down.exit_code == 1
    assert down.error is not None
    assert "receipts are unavailable" in down.error
    r = _reminder(db, rid)
    assert (r["receipt_status"], r["receipt_checks"], r["receipt_claim_id"]) == (None, 0, None)
    assert r["receipt_next_check_at"] > LATER
    up = _pass(gateway, settings, r["receipt_next_check_at"])
    assert up.exit_code == 0
    assert up.counts.receipts_ok == 1


def test_a_receipt_claim_is_held_until_its_lease_runs_out(db: psycopg.Connection[Any], gateway: Gateway,
                                                          expo: ExpoStandIn) -> None:
    due_reminder(db, "receipt-ok")
    settings = _settings(expo)
    _pass(gateway, settings, NOW)
    first = gateway.claim_receipts(LATER, uuid.uuid4(), 10, 300, 900)
    assert len(first) == 1
    assert gateway.claim_receipts(LATER, uuid.uuid4(), 10, 300, 900) == []
    # the first claimer died: its lease lapses and another pass takes the row over
    taken = gateway.claim_receipts(LATER + timedelta(seconds=301), uuid.uuid4(), 10, 300, 900)
    assert [r.id for r in taken] == [first[0].id]
    # the dead claimer's late write is ignored
    late = ReceiptResult(first[0].id, first[0].token, ReceiptOutcome.OK)
    stale = gateway.record_receipts(LATER, [uuid.uuid4()], 5, [late])
    assert stale["ok"] == 0


def test_every_pass_is_recorded_with_its_trigger_and_old_history_is_pruned(
        db: psycopg.Connection[Any], gateway: Gateway, expo: ExpoStandIn) -> None:
    due_reminder(db, "receipt-ok")
    settings = _settings(expo)
    _pass(gateway, settings, NOW - timedelta(days=40), trigger="cron")
    ok = _pass(gateway, settings, NOW, trigger="loop")
    with ExpoStandIn() as dead:
        gone_url = dead.url
    due_reminder(db, "x", at=NOW + timedelta(minutes=5))
    failed = _pass(gateway, _settings(expo, expo_api_url=gone_url), NOW + timedelta(minutes=5), trigger="http")
    assert ok.exit_code == 0
    assert failed.exit_code == 1
    rows = db.execute("SELECT trigger, exit_code, error, counts, started_at, finished_at FROM worker_runs "
                      "ORDER BY started_at").fetchall()
    # the 40-day-old run was pruned by the next pass's recording call
    assert [(r[0], r[1]) for r in rows] == [("loop", 0), ("http", 1)]
    assert rows[0][3]["sent"] == 1
    assert rows[0][4] == NOW
    assert rows[0][5] >= NOW
    assert "Expo is unavailable" in rows[1][2]


def test_settled_reminders_past_retention_are_pruned(db: psycopg.Connection[Any], gateway: Gateway,
                                                     expo: ExpoStandIn) -> None:
    user = seed.add_parent(db)
    event = seed.add_event(db, user, NOW - timedelta(days=200))
    db.execute("UPDATE events SET status = 'synced', synced_version = version WHERE id = %s", (event,))
    for i, status in enumerate(["sent", "failed", "expired", "cancelled", "sending"]):
        db.execute("INSERT INTO reminders (event_id, user_id, notify_at_ts, message, status, lease_expires_at) "
                   "VALUES (%s, %s, %s, 'm', %s, %s)",
                   (event, user, NOW - timedelta(days=100, minutes=i), status, NOW + timedelta(minutes=5)))
    db.execute("INSERT INTO reminders (event_id, user_id, notify_at_ts, message, status) "
               "VALUES (%s, %s, %s, 'm', 'sent')", (event, user, NOW - timedelta(days=80)))
    result = _pass(gateway, _settings(expo, reminder_retention_days=90), NOW)
    assert result.exit_code == 0
    left = db.execute("SELECT status, notify_at_ts FROM reminders ORDER BY notify_at_ts").fetchall()
    # settled and older than 90 days: gone; in flight (another pass's live claim) or younger: kept
    assert left == [("sending", NOW - timedelta(days=100, minutes=4)), ("sent", NOW - timedelta(days=80))]


def test_api_roles_cannot_read_history_or_call_the_new_functions(db: psycopg.Connection[Any]) -> None:
    for role in ("anon", "authenticated"):
        for call in ("SELECT * FROM public.worker_runs",
                     "SELECT public.worker_status(now())",
                     "SELECT public.worker_claim_receipts(now(), gen_random_uuid(), 1, 1, 1)",
                     "SELECT public.worker_record_receipts(now(), ARRAY[gen_random_uuid()], 1, '[]')",
                     "SELECT public.worker_record_run(now(), now(), now(), 'manual', '{}', 0, null, null, 1, 1, 1)"):
            with db.transaction(force_rollback=True):
                db.execute(f"SET LOCAL ROLE {role}")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    db.execute(call)


def test_a_pass_run_in_the_future_does_not_prune_real_history(db: psycopg.Connection[Any], gateway: Gateway,
                                                              expo: ExpoStandIn) -> None:
    real_now = datetime.now(UTC)
    db.execute("INSERT INTO worker_runs (started_at, finished_at, trigger, exit_code) VALUES (%s, %s, 'cron', 0)",
               (real_now - timedelta(days=10), real_now - timedelta(days=10)))
    assert _pass(gateway, _settings(expo), real_now + timedelta(days=60)).exit_code == 0
    assert db.execute("SELECT count(*) FROM worker_runs").fetchone() == (2,)
