"""`python worker/main.py status` on a seeded database: the table, and ``--json`` for scripts.

Why: this is what someone on call reads first; each number must be the one its label promises.
The status has no ``--now``, so the seed is laid out around the real clock.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from standins.expo import ExpoStandIn
from standins.postgrest import PostgrestStandIn
from tests import seed
from tests.acceptance.cli import clean_env, worker


def _reminder(db: psycopg.Connection[Any], event: str, user: str, at: datetime, status: str, **cols: Any) -> None:
    names = ["event_id", "user_id", "notify_at_ts", "message", "status", *cols]
    values = [event, user, at, "m", status, *cols.values()]
    db.execute(f"INSERT INTO reminders ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})", values)


@pytest.fixture
def seeded(db: psycopg.Connection[Any]) -> dict[str, str]:
    now = datetime.now(UTC)
    db.execute("INSERT INTO worker_runs (started_at, finished_at, trigger, counts, exit_code, error, recorded_at) "
               "VALUES (%s, %s, 'cron', '{\"sent\": 4, \"failed\": 0}', 0, NULL, %s), "
               "(%s, %s, 'cron', '{}', 1, 'Expo is unavailable: cannot reach Expo: ConnectionError', %s)",
               (now - timedelta(minutes=2), now - timedelta(minutes=2) + timedelta(seconds=1.5),
                now - timedelta(minutes=2) + timedelta(seconds=1.5),
                now - timedelta(minutes=1), now - timedelta(minutes=1) + timedelta(seconds=3),
                now - timedelta(minutes=1) + timedelta(seconds=3)))
    parent = seed.add_parent(db)
    event = seed.add_event(db, parent, now + timedelta(hours=3))
    for i in range(3):  # due now
        _reminder(db, event, parent, now - timedelta(minutes=5 + i), "pending")
    _reminder(db, event, parent, now - timedelta(minutes=10), "pending", next_attempt_at=now + timedelta(minutes=5))
    _reminder(db, event, parent, now - timedelta(minutes=11), "sending", lease_expires_at=now + timedelta(minutes=4))
    _reminder(db, event, parent, now - timedelta(minutes=20), "sent", expo_ticket_id="t-1", sent_at_ts=now)
    _reminder(db, event, parent, now - timedelta(minutes=30), "failed",
              error_message="the owner has no Expo push token")
    _reminder(db, event, parent, now - timedelta(days=3), "failed", error_message="old news")
    db.execute("UPDATE reminders SET updated_at = %s WHERE error_message = 'old news'", (now - timedelta(days=2),))

    gone = seed.add_parent(db, token=None)
    gone_event = seed.add_event(db, gone, now + timedelta(hours=5))
    for i in range(2):
        _reminder(db, gone_event, gone, now - timedelta(minutes=40 + i), "failed", error_kind="device_not_registered",
                  error_message="delivery failed: DeviceNotRegistered: \"ExponentPushToken[abc]\" is not registered")

    revoked = seed.add_parent(db)
    for i in range(2):
        ev = seed.add_event(db, revoked, now + timedelta(days=1, hours=i))
        db.execute("UPDATE events SET status = 'failed', synced_version = version, error_kind = 'google_revoked', "
                   "error_message = 'Google access was revoked (invalid_grant)' WHERE id = %s", (ev,))
    seed.add_event(db, parent, now + timedelta(days=2))  # waiting for calendar sync (pending)
    return {"gone": gone, "revoked": revoked}


def test_status_json(db_url: str, seeded: dict[str, str]) -> None:
    done = worker("status", "--json", env=clean_env(DATABASE_URL=db_url))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [r["exit_code"] for r in doc["runs"]] == [1, 0]
    assert doc["runs"][1]["counts"] == {"sent": 4, "failed": 0}
    assert doc["runs"][0]["duration_s"] == pytest.approx(3.0)
    assert doc["runs_24h"] == {"total": 2, "failed": 1}
    rem = doc["reminders"]
    assert (rem["due_now"], rem["in_flight"], rem["waiting_retry"], rem["awaiting_receipt"]) == (3, 1, 1, 1)
    reasons = {f["reason"]: f["count"] for f in doc["failed_24h"]}
    assert reasons == {
        'delivery failed: DeviceNotRegistered: "ExpoPushToken[***]" is not registered': 2,
        "the owner has no Expo push token": 1,
    }
    assert doc["events"]["waiting_sync"] == 3  # the seed's events are all new: pending
    assert doc["google_revoked"]["users"] == 1
    assert doc["google_revoked"]["list"][0] == {**doc["google_revoked"]["list"][0],
                                                "user_id": seeded["revoked"], "events": 2}
    assert doc["tokens_cleared"]["users"] == 1
    assert doc["tokens_cleared"]["list"][0]["user_id"] == seeded["gone"]
    assert doc["tokens_cleared"]["list"][0]["reminders"] == 2


def test_status_table(db_url: str, seeded: dict[str, str]) -> None:
    done = worker("status", env=clean_env(DATABASE_URL=db_url))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "last 24 h: 2 passes, 1 failed" in out
    assert "ATTENTION: the last pass failed" in out  # the newest pass failed, none succeeded since
    assert "FAILED (exit 1): Expo is unavailable" in out
    assert "ok: sent=4" in out
    assert "due now" in out
    assert "      2  delivery failed: DeviceNotRegistered" in out
    assert "old news" not in out
    assert f"{seeded['revoked']}     2 events" in out
    assert f"{seeded['gone']}     2 reminders" in out
    assert "ExponentPushToken[abc]" not in out


def test_status_over_the_data_api(db_url: str, seeded: dict[str, str]) -> None:
    with PostgrestStandIn(db_url) as api:
        env = clean_env(SUPABASE_URL=api.url, SUPABASE_SERVICE_ROLE_KEY=api.service_role_key())
        done = worker("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reminders"]["due_now"] == 3


def test_status_without_a_database(db_url: str) -> None:
    done = worker("status", env=clean_env())
    assert done.returncode == 2
    assert done.stderr.startswith("configuration error: DATABASE_URL")
    down = worker("status", env=clean_env(DATABASE_URL="postgresql://nobody@127.0.0.1:9/none"))
    assert down.returncode == 1
    assert "cannot read the database" in down.stderr


def test_runs_are_ordered_by_when_they_ran_with_the_simulated_clock_beside(db_url: str, expo: ExpoStandIn) -> None:
    """A pass run with a future --now (a demo, a test) must not sit on top of the real ones forever."""
    env = clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url)
    assert worker("run", "--now", "2030-01-01T09:00:00Z", env=env).returncode == 0
    assert worker("run", "--trigger", "cron", env=env).returncode == 0  # later, on the real clock

    doc = json.loads(worker("status", "--json", env=env).stdout)
    assert [r["trigger"] for r in doc["runs"]] == ["cron", "manual"]
    assert doc["runs"][1]["started_at"].startswith("2030-01-01T09:00:00")

    table = worker("status", env=env).stdout
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if "ran (UTC)" in line)
    assert "simulated --now" in lines[header]
    real, simulated = lines[header + 1], lines[header + 2]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert real.split()[0] == today and "cron" in real and "2030" not in real, table
    assert simulated.split()[0] == today and "manual" in simulated, table
    assert "2030-01-01 09:00:00" in simulated, table
    assert "ago" in real and "ago" in simulated  # when they really ran, never "in 3y"


def test_attention_goes_once_a_clean_pass_follows_the_failure(db: psycopg.Connection[Any], db_url: str,
                                                               seeded: dict[str, str]) -> None:
    now = datetime.now(UTC)
    db.execute("INSERT INTO worker_runs (started_at, finished_at, trigger, exit_code, recorded_at) "
               "VALUES (%s, %s, 'cron', 0, %s)", (now, now, now + timedelta(seconds=1)))
    doc = json.loads(worker("status", "--json", env=clean_env(DATABASE_URL=db_url)).stdout)
    assert doc["last_problem"]["since_ok"] is True
    assert "ATTENTION: the last pass failed" not in worker("status", env=clean_env(DATABASE_URL=db_url)).stdout
