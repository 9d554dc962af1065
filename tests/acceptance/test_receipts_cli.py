"""Receipts through `python worker/main.py run`: a pass sends, a pass 15+ minutes later (``--now``)
reads the receipts, a pass a day later gives up on the missing one.

Why: this is how production meets receipts - separate processes, minutes apart, nothing shared
but the database and Expo - so nothing may hide in a process's memory.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from standins.expo import ExpoStandIn
from tests.acceptance.cli import clean_env, worker
from tests.integration.test_receipts import due_reminder

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _env(db_url: str, expo: ExpoStandIn, **extra: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0", **extra)


def _lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _summary(stderr: str) -> dict[str, Any]:
    found = [d for d in _lines(stderr) if d["event"] == "pass.summary"]
    assert found, stderr
    return found[-1]


def _run(env: dict[str, str], at: datetime, exit_code: int = 0) -> dict[str, Any]:
    done = worker("run", "--now", at.isoformat(), env=env)
    assert done.returncode == exit_code, done.stderr
    summary = _summary(done.stderr)
    summary["_lines"] = _lines(done.stderr)
    return summary


def _row(db: psycopg.Connection[Any], rid: str) -> tuple[Any, ...]:
    row = db.execute("SELECT status, receipt_status, retry_count, error_message FROM reminders WHERE id = %s",
                     (rid,)).fetchone()
    assert row is not None
    return tuple(row)


def test_receipts_ok_each_error_and_missing(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn) -> None:
    start = NOW + timedelta(days=2)
    ok = due_reminder(db, "receipt-ok", start=start)
    gone = due_reminder(db, "receipt-unregistered", start=start)
    big = due_reminder(db, "receipt-toobig", start=start)
    slow = due_reminder(db, "receipt-ratelimited", start=start)
    creds = due_reminder(db, "receipt-badcreds", start=start)
    mismatch = due_reminder(db, "receipt-mismatch", start=start)
    missing = due_reminder(db, "receipt-missing", start=start)
    env = _env(db_url, expo)

    sent = _run(env, NOW)
    assert sent["sent"] == 7
    assert expo.receipt_requests == []
    early = _run(env, NOW + timedelta(minutes=14))  # receipts are not due before 15 minutes
    assert early["receipts_ok"] == 0
    assert expo.receipt_requests == []

    # InvalidCredentials / MismatchSenderId are the operator's to fix: the pass exits 1 and says so.
    checked = _run(env, NOW + timedelta(minutes=16), exit_code=1)
    assert checked["error_kind"] == "expo_credentials"
    assert {k: checked[k] for k in ("receipts_ok", "receipts_failed", "receipts_resent", "receipts_deferred",
                                    "receipts_missing", "receipts_unknown", "tokens_cleared")} == {
        "receipts_ok": 1, "receipts_failed": 2, "receipts_resent": 1, "receipts_deferred": 2,
        "receipts_missing": 1, "receipts_unknown": 0, "tokens_cleared": 1}
    loud = [d for d in checked["_lines"] if d["event"] == "expo.credentials_invalid"]
    assert len(loud) == 1
    assert loud[0]["level"] == "error"
    assert loud[0]["total"] == 2
    assert "ExponentPushToken[" not in json.dumps(checked["_lines"])  # tokens never reach the logs

    assert _row(db, ok[2])[:2] == ("sent", "ok")
    status, receipt, _, error = _row(db, gone[2])
    assert (status, receipt) == ("failed", "error")
    assert error.startswith("delivery failed: DeviceNotRegistered")
    assert db.execute("SELECT expo_push_token FROM profiles WHERE id = %s", (gone[0],)).fetchone() == (None,)
    assert _row(db, big[2])[:2] == ("failed", "error")
    for _, _, rid in (creds, mismatch):  # held for the operator, no attempt burned
        assert _row(db, rid)[:3] == ("pending", "error", 0)
    assert _row(db, slow[2])[:3] == ("pending", "error", 1)
    assert _row(db, missing[2])[:2] == ("sent", None)

    # The rate-limited one's backoff is over, and so is the held ones' wait: all three go out again.
    resent = _run(env, NOW + timedelta(minutes=20))
    assert resent["sent"] == 3
    assert len(expo.sent_to(slow[1])) == 2

    day_later = _run(env, NOW + timedelta(hours=24, minutes=5), exit_code=1)  # the held ones' receipts again
    assert day_later["receipts_unknown"] == 1
    assert _row(db, missing[2])[:2] == ("sent", "unknown")
    asked = len(expo.receipt_requests)
    _run(env, NOW + timedelta(hours=30))
    assert len(expo.receipt_requests) == asked  # nothing left to ask about


def test_receipt_delay_comes_from_the_environment(db: psycopg.Connection[Any], db_url: str,
                                                  expo: ExpoStandIn) -> None:
    due_reminder(db, "receipt-ok")
    env = _env(db_url, expo, RECEIPT_DELAY_SECONDS="60")
    _run(env, NOW)
    assert _run(env, NOW + timedelta(seconds=61))["receipts_ok"] == 1


def test_expo_receipts_down_exits_1_and_the_next_pass_catches_up(db: psycopg.Connection[Any], db_url: str,
                                                                 expo: ExpoStandIn) -> None:
    _, _, rid = due_reminder(db, "receipt-ok")
    env = _env(db_url, expo, PUSH_REQUEST_ATTEMPTS="1")
    _run(env, NOW)
    expo.fail_next_receipts(1, 500)
    down = worker("run", "--now", (NOW + timedelta(minutes=16)).isoformat(), env=env)
    assert down.returncode == 1
    assert "receipts are unavailable" in _summary(down.stderr)["error"]
    assert _row(db, rid)[:2] == ("sent", None)
    assert _run(env, NOW + timedelta(minutes=20))["receipts_ok"] == 1
