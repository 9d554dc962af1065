"""`python worker/main.py run` end to end: a real database, the Expo stand-in, real processes."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from standins.expo import ExpoStandIn
from tests import seed
from tests.acceptance.cli import clean_env, start_worker, worker

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _env(db_url: str, expo: ExpoStandIn, **extra: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0", **extra)


def _at(t: datetime) -> str:
    return t.isoformat()


def _summary(stderr: str) -> dict[str, Any]:
    for line in reversed(stderr.splitlines()):
        if '"pass.summary"' in line:
            doc: dict[str, Any] = json.loads(line)
            return doc
    raise AssertionError(f"no summary line in:\n{stderr}")


def test_second_pass_sends_nothing_new(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn) -> None:
    parent = seed.add_parent(db)
    seed.add_event(db, parent, NOW + timedelta(hours=5))  # 3h and 30m reminders ahead; 24h already past
    env = _env(db_url, expo)

    planned = worker("run", "--now", _at(NOW), env=env)
    assert planned.returncode == 0, planned.stderr
    assert _summary(planned.stderr)["reminders_planned"] == 2
    due = NOW + timedelta(hours=2, minutes=1)
    first = worker("run", "--now", _at(due), env=env)
    second = worker("run", "--now", _at(due), env=env)
    assert first.returncode == second.returncode == 0
    assert _summary(first.stderr)["sent"] == 1
    assert _summary(second.stderr)["sent"] == 0
    assert len(expo.messages) == 1
    assert db.execute("SELECT count(*) FROM reminders").fetchone() == (2,)


def test_two_passes_at_once_send_each_reminder_exactly_once(db: psycopg.Connection[Any], db_url: str,
                                                            expo: ExpoStandIn) -> None:
    seed.add_due_reminders(db, 500, NOW)
    expo.latency = 0.05
    env = _env(db_url, expo, WORKER_BATCH_SIZE="100", PUSH_CONCURRENCY="2")
    procs = [start_worker("run", "--now", _at(NOW), env=env) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    ids = Counter(m["data"]["reminder_id"] for m in expo.messages)
    assert len(ids) == 500
    assert max(ids.values()) == 1
    assert seed.statuses(db) == {"sent": 500}


def test_a_pass_killed_mid_send_loses_nothing(db: psycopg.Connection[Any], db_url: str,
                                              expo: ExpoStandIn) -> None:
    seed.add_due_reminders(db, 300, NOW)
    expo.latency = 0.5
    env = _env(db_url, expo, WORKER_BATCH_SIZE="100", PUSH_CONCURRENCY="1")
    victim = start_worker("run", "--now", _at(NOW), env=env)
    deadline = time.monotonic() + 20
    while len(expo.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=10)
    in_flight_at_death = 100  # at most one request of 100 was on the wire when the process died
    stuck = seed.statuses(db)
    # Each request's outcome is written as it returns: what the kill leaves claimed is at most the
    # request in flight and the claimed rows not yet sent.
    assert stuck.get("sent", 0) >= 100
    assert stuck.get("sending", 0) <= 200

    # Before the lease runs out nobody touches them; after it, a later pass finishes the work.
    early = worker("run", "--now", _at(NOW + timedelta(seconds=60)), env=env)
    assert early.returncode == 0 and seed.statuses(db).get("sending", 0) == stuck.get("sending", 0)
    # The lease runs from the claim's own clock (the killed pass's --now plus the seconds it ran).
    late = worker("run", "--now", _at(NOW + timedelta(seconds=330)), env=env)
    assert late.returncode == 0, late.stderr
    assert seed.statuses(db) == {"sent": 300}
    ids = Counter(m["data"]["reminder_id"] for m in expo.messages)
    assert len(ids) == 300
    assert sum(n - 1 for n in ids.values()) <= in_flight_at_death


def test_transient_expo_failures_back_off_then_succeed(db: psycopg.Connection[Any], db_url: str,
                                                       expo: ExpoStandIn) -> None:
    parent = seed.add_parent(db)
    seed.add_event(db, parent, NOW + timedelta(hours=5))
    env = _env(db_url, expo, PUSH_REQUEST_ATTEMPTS="1")
    assert worker("run", "--now", _at(NOW), env=env).returncode == 0
    t = NOW + timedelta(hours=2, minutes=1)

    expo.fail_next(1, status=500)
    r500 = worker("run", "--now", _at(t), env=env)
    assert r500.returncode == 1  # Expo failed for the whole pass
    row = db.execute("SELECT status, retry_count, next_attempt_at, error_message FROM reminders "
                     "WHERE notify_at_ts <= %s", (t,)).fetchone()
    assert row is not None
    assert row[0] == "pending" and row[1] == 1 and row[2] > t and "500" in row[3]

    # Not retried before its backoff is over.
    assert _summary(worker("run", "--now", _at(t), env=env).stderr)["sent"] == 0

    t = row[2] + timedelta(seconds=1)
    expo.fail_next(1, status=429)
    assert worker("run", "--now", _at(t), env=env).returncode == 1
    row = db.execute("SELECT retry_count, next_attempt_at FROM reminders WHERE notify_at_ts <= %s",
                     (t,)).fetchone()
    assert row is not None and row[0] == 2

    # Connection refused: point the worker at a port nobody listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    t = row[1] + timedelta(seconds=1)
    refused = worker("run", "--now", _at(t), env=dict(env, EXPO_API_URL=f"http://127.0.0.1:{closed_port}/--/api/v2"))
    assert refused.returncode == 1
    row = db.execute("SELECT retry_count, next_attempt_at FROM reminders WHERE notify_at_ts <= %s",
                     (t,)).fetchone()
    assert row is not None and row[0] == 3

    t = row[1] + timedelta(seconds=1)
    ok = worker("run", "--now", _at(t), env=env)
    assert ok.returncode == 0
    assert _summary(ok.stderr)["sent"] == 1
    status, retries, sent_at = db.execute("SELECT status, retry_count, sent_at_ts FROM reminders "
                                          "WHERE notify_at_ts <= %s", (t,)).fetchone()
    assert (status, retries) == ("sent", 3)
    assert t <= sent_at < t + timedelta(seconds=30)  # the pass's clock starts at --now and moves on


def test_five_failures_make_a_reminder_failed(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn) -> None:
    seed.add_due_reminders(db, 1, NOW, users=1)
    env = _env(db_url, expo, PUSH_REQUEST_ATTEMPTS="1", RETRY_BASE_SECONDS="1")
    t = NOW
    for attempt in range(1, 6):
        expo.fail_next(1, status=503)
        assert worker("run", "--now", _at(t), env=env).returncode == 1
        status, retries, error = db.execute("SELECT status, retry_count, error_message FROM reminders").fetchone()
        assert retries == attempt
        assert status == ("failed" if attempt == 5 else "pending")
        t += timedelta(minutes=10)
    assert error.startswith("gave up after 5 attempts")
    assert worker("run", "--now", _at(t), env=env).returncode == 0
    assert expo.messages == []


def test_device_not_registered_clears_the_token(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn) -> None:
    gone = seed.add_parent(db, token="ExponentPushToken[unregistered-1]")
    fine = seed.add_parent(db)
    seed.add_event(db, gone, NOW + timedelta(hours=5))
    seed.add_event(db, fine, NOW + timedelta(hours=5))
    env = _env(db_url, expo)
    worker("run", "--now", _at(NOW), env=env)
    result = worker("run", "--now", _at(NOW + timedelta(hours=2, minutes=1)), env=env)
    assert result.returncode == 0
    assert "unregistered-1" not in result.stderr  # the token never reaches the logs
    assert db.execute("SELECT expo_push_token FROM profiles WHERE id = %s", (gone,)).fetchone() == (None,)
    assert db.execute("SELECT expo_push_token FROM profiles WHERE id = %s", (fine,)).fetchone() != (None,)
    rows = dict(db.execute("SELECT user_id::text, status FROM reminders WHERE notify_at_ts <= %s",
                           (NOW + timedelta(hours=2, minutes=1),)).fetchall())
    assert rows == {gone: "failed", fine: "sent"}
    assert "DeviceNotRegistered" in db.execute(
        "SELECT error_message FROM reminders WHERE user_id = %s AND status = 'failed'", (gone,)).fetchone()[0]
    # The next reminder of that parent fails for want of a token; nothing is sent to the dead device.
    later = worker("run", "--now", _at(NOW + timedelta(hours=4, minutes=31)), env=env)
    assert later.returncode == 0
    last_error = db.execute("SELECT error_message FROM reminders WHERE user_id = %s ORDER BY notify_at_ts DESC "
                            "LIMIT 1", (gone,)).fetchone()[0]
    assert last_error.startswith("the owner has no Expo push token")


def test_bad_rows_fail_or_expire_alone(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn) -> None:
    good = seed.add_parent(db)
    malformed = seed.add_parent(db, token="not-a-token")
    no_profile = seed.add_parent(db, profile=False)
    backwards = seed.add_parent(db)
    long_title = seed.add_parent(db)
    for user in (good, malformed, no_profile):
        seed.add_event(db, user, NOW + timedelta(hours=5))
    seed.add_event(db, backwards, NOW + timedelta(hours=5), end=NOW + timedelta(hours=4))
    seed.add_event(db, long_title, NOW + timedelta(hours=5), title="x" * 600)
    # A reminder whose event has started by the time the worker sees it.
    started = seed.add_event(db, good, NOW - timedelta(minutes=5))
    db.execute("UPDATE events SET status = 'synced', synced_version = version WHERE id = %s", (started,))
    db.execute("INSERT INTO reminders (event_id, user_id, notify_at_ts, message) VALUES (%s, %s, %s, 'late')",
               (started, good, NOW - timedelta(minutes=35)))
    env = _env(db_url, expo)

    result = worker("run", "--now", _at(NOW), env=env)
    assert result.returncode == 0, result.stderr
    events = dict(db.execute("SELECT user_id::text, error_message FROM events WHERE status = 'failed'").fetchall())
    assert set(events) == {backwards, long_title}
    assert "before start_ts" in events[backwards]
    assert "title is too long" in events[long_title]
    assert db.execute("SELECT status, error_message FROM reminders WHERE event_id = %s", (started,)).fetchone() == (
        "expired", "the event had already started")

    result = worker("run", "--now", _at(NOW + timedelta(hours=2, minutes=1)), env=env)
    assert result.returncode == 0
    rows = dict(db.execute("SELECT user_id::text, status || ': ' || coalesce(error_message, '') FROM reminders "
                           "WHERE notify_at_ts = %s", (NOW + timedelta(hours=2),)).fetchall())
    assert rows[good] == "sent: "
    assert rows[malformed].startswith("failed: the owner's push token is malformed")
    # No profile and no token in the user's metadata either: nothing to send to.
    assert rows[no_profile].startswith("failed: the owner has no Expo push token")
    assert "not-a-token" not in result.stderr
    assert len(expo.messages) == 1


def test_no_database_configured_exits_2_naming_the_variable(expo: ExpoStandIn) -> None:
    result = worker("run", env=clean_env(EXPO_API_URL=expo.url))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("configuration error: DATABASE_URL")
    assert len(result.stderr.strip().splitlines()) == 1


def test_invalid_setting_exits_2_with_one_line(db_url: str) -> None:
    result = worker("run", env=clean_env(DATABASE_URL=db_url, REMINDER_OFFSETS="24h,soon"))
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: REMINDER_OFFSETS: 'soon' is not a lead time like 24h, 3h, 30m or 90s"


def test_unreachable_database_exits_1(tmp_path: Any) -> None:
    result = worker("run", env=clean_env(DATABASE_URL=f"postgresql://postgres@/postgres?host={tmp_path}"))
    assert result.returncode == 1
    assert "cannot connect to the database" in result.stderr
