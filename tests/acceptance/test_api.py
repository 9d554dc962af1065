"""The seed's Python API (``from worker.main import ReminderWorker``) through small asyncio scripts run
as ``python -c`` from the repository root, the way the seed runs them, on a real database and the
Expo stand-in."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from standins.expo import ExpoStandIn
from tests import seed
from tests.acceptance.cli import ROOT, clean_env
from worker.steps.context import PassCounts

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
COUNT_KEYS = {f.name for f in fields(PassCounts)}
EVENT_KEYS = {"id", "user_id", "title", "start_ts", "end_ts", "status", "attempts", "next_attempt_at",
              "error_message"}

# One call of the API, its answer as JSON on stdout: `python -c SCRIPT CALL [NOW | LIMIT]`.
SCRIPT = """
import asyncio
import json
import sys
from dataclasses import asdict
from datetime import datetime

from worker.main import ReminderWorker


async def main():
    worker = ReminderWorker()
    call, arg = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    if call == "_get_pending_events":
        answer = await worker._get_pending_events(*([int(arg)] if arg else []))
    else:
        report = await getattr(worker, call)(datetime.fromisoformat(arg) if arg else None)
        answer = dict(asdict(report), ok=report.ok)
    print(json.dumps(answer))


asyncio.run(main())
"""

# The seed's own scripts, as written.
SEED_HEALTH_CHECK = """
from worker.main import ReminderWorker
import asyncio

async def health_check():
    worker = ReminderWorker()
    events = await worker._get_pending_events()
    print(f'Found {len(events)} pending events')

asyncio.run(health_check())
"""

SEED_INTEGRATION_TEST = """
from worker.main import ReminderWorker
import asyncio

async def integration_test():
    worker = ReminderWorker()

    # Test event processing
    await worker.process_events()
    print('Event processing completed')

    # Test push notifications
    await worker.process_push_notifications()
    print('Push notification processing completed')

asyncio.run(integration_test())
"""


def _env(db_url: str, expo: ExpoStandIn, **extra: str) -> dict[str, str]:
    return clean_env(**{"DATABASE_URL": db_url, "EXPO_API_URL": expo.url, "PUSH_RETRY_WAIT": "0", **extra})


def _python(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def _call(call: str, env: dict[str, str], arg: datetime | int | None = None) -> Any:
    done = _python(SCRIPT, call, *([] if arg is None else [arg.isoformat() if isinstance(arg, datetime) else str(arg)]),
                   env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _report(call: str, env: dict[str, str], now: datetime) -> dict[str, Any]:
    report: dict[str, Any] = _call(call, env, now)
    assert set(report["counts"]) == COUNT_KEYS
    return report


def test_pending_events_lists_what_waits_soonest_first_and_no_token(db: psycopg.Connection[Any], db_url: str,
                                                                     expo: ExpoStandIn) -> None:
    parent = seed.add_parent(db, refresh_token="1//the-parents-refresh-token")
    row = db.execute("SELECT expo_push_token FROM profiles WHERE id = %s", (parent,)).fetchone()
    assert row is not None and row[0]
    token = str(row[0])
    later = seed.add_event(db, parent, NOW + timedelta(days=2), title="Piano")
    sooner = seed.add_event(db, parent, NOW + timedelta(hours=5))
    synced = seed.add_event(db, parent, NOW + timedelta(hours=6))
    db.execute("UPDATE events SET status = 'synced', synced_version = version WHERE id = %s", (synced,))
    cancelled = seed.add_event(db, parent, NOW + timedelta(hours=7))
    db.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (cancelled,))
    env = _env(db_url, expo)

    done = _python(SCRIPT, "_get_pending_events", env=env)
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout)
    assert [e["id"] for e in events] == [sooner, later]
    assert all(set(e) == EVENT_KEYS and e["status"] == "pending" and e["user_id"] == parent for e in events)
    assert events[1]["title"] == "Piano" and events[0]["attempts"] == 0
    assert datetime.fromisoformat(events[0]["start_ts"]) == NOW + timedelta(hours=5)
    assert token not in done.stdout + done.stderr and "refresh-token" not in done.stdout + done.stderr
    assert [e["id"] for e in _call("_get_pending_events", env, 1)] == [sooner]

    health = _python(SEED_HEALTH_CHECK, env=env)
    assert health.returncode == 0, health.stderr
    assert health.stdout == "Found 2 pending events\n"
    # Read-only: nothing claimed, nothing sent.
    assert db.execute("SELECT count(*) FROM events WHERE claim_id IS NOT NULL").fetchone() == (0,)
    assert expo.messages == []


def test_process_events_syncs_and_plans_and_sends_nothing(db: psycopg.Connection[Any], db_url: str,
                                                          expo: ExpoStandIn) -> None:
    parent = seed.add_parent(db)
    soon = seed.add_event(db, parent, NOW + timedelta(hours=5))  # 3h and 30m ahead; 24h already past
    later = seed.add_event(db, parent, NOW + timedelta(days=2))  # all three ahead
    broken = seed.add_event(db, parent, NOW + timedelta(hours=8), end=NOW + timedelta(hours=7))
    env = _env(db_url, expo)

    report = _report("process_events", env, NOW)
    assert report["exit_code"] == 0 and report["ok"] and report["error"] is None
    counts = report["counts"]
    assert (counts["events_synced"], counts["events_failed"], counts["reminders_planned"]) == (2, 1, 5)
    assert sum(counts.values()) == 2 + 1 + 5
    planned = dict(db.execute("SELECT event_id::text, count(*) FROM reminders GROUP BY 1").fetchall())
    assert planned == {soon: 2, later: 3}
    assert dict(db.execute("SELECT id::text, status FROM events").fetchall()) == {
        soon: "synced", later: "synced", broken: "failed"}
    assert expo.messages == []
    assert _call("_get_pending_events", env) == []
    # Only the step: no pass is recorded.
    assert db.execute("SELECT count(*) FROM worker_runs").fetchone() == (0,)

    again = _report("process_events", env, NOW)
    assert again["exit_code"] == 0 and sum(again["counts"].values()) == 0


def test_process_push_notifications_sends_the_due_reminders(db: psycopg.Connection[Any], db_url: str,
                                                            expo: ExpoStandIn) -> None:
    seed.add_due_reminders(db, 3, NOW, users=2)
    parent = seed.add_parent(db)
    seed.add_event(db, parent, NOW + timedelta(hours=5))  # pending: the push step leaves it alone
    env = _env(db_url, expo)

    report = _report("process_push_notifications", env, NOW)
    assert report["exit_code"] == 0, report
    assert report["counts"]["sent"] == 3 and sum(report["counts"].values()) == 3
    assert seed.statuses(db) == {"sent": 3}
    sent = {r[0] for r in db.execute("SELECT id::text FROM reminders WHERE sent_at_ts IS NOT NULL").fetchall()}
    assert {m["data"]["reminder_id"] for m in expo.messages} == sent and len(expo.messages) == 3
    assert [e["id"] for e in _call("_get_pending_events", env)] != []  # events are the events step's

    again = _report("process_push_notifications", env, NOW + timedelta(seconds=10))
    assert again["exit_code"] == 0 and again["counts"]["sent"] == 0
    assert len(expo.messages) == 3
    assert db.execute("SELECT count(*) FROM worker_runs").fetchone() == (0,)


def test_expo_failing_for_the_whole_call_is_exit_1_not_an_exception(db: psycopg.Connection[Any], db_url: str,
                                                                     expo: ExpoStandIn) -> None:
    seed.add_due_reminders(db, 1, NOW, users=1)
    expo.fail_next(1, status=500)
    env = _env(db_url, expo, PUSH_REQUEST_ATTEMPTS="1")

    report = _report("process_push_notifications", env, NOW)
    assert report["exit_code"] == 1 and not report["ok"]
    assert report["error_kind"] == "expo_unavailable" and "Expo" in report["error"]
    assert report["counts"]["sent"] == 0 and report["counts"]["retried"] == 1
    row = db.execute("SELECT status, retry_count FROM reminders").fetchone()
    assert row == ("pending", 1)  # recorded for a later try


def test_run_once_is_a_whole_pass_recorded_in_worker_runs(db: psycopg.Connection[Any], db_url: str,
                                                          expo: ExpoStandIn) -> None:
    seed.add_due_reminders(db, 2, NOW, users=1)
    parent = seed.add_parent(db)
    seed.add_event(db, parent, NOW + timedelta(hours=5))
    env = _env(db_url, expo)

    report = _report("run_once", env, NOW)
    assert report["exit_code"] == 0, report
    counts = report["counts"]
    assert (counts["events_synced"], counts["reminders_planned"], counts["sent"]) == (1, 2, 2)
    assert len(expo.messages) == 2
    assert seed.statuses(db) == {"sent": 2, "pending": 2}

    # The environment the CLI reads: WORKER_TRIGGER names what started the pass.
    second = _report("run_once", dict(env, WORKER_TRIGGER="cron"), NOW + timedelta(minutes=1))
    assert second["exit_code"] == 0 and second["counts"]["sent"] == 0
    runs = db.execute("SELECT trigger, exit_code, started_at, counts FROM worker_runs ORDER BY id").fetchall()
    assert [(r[0], r[1], r[2]) for r in runs] == [("manual", 0, NOW), ("cron", 0, NOW + timedelta(minutes=1))]
    assert runs[0][3] == counts and runs[1][3] == second["counts"]


def test_the_seeds_scripts_run_as_written(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn) -> None:
    now = datetime.now(UTC)
    seed.add_due_reminders(db, 2, now, users=1)
    parent = seed.add_parent(db)
    event = seed.add_event(db, parent, now + timedelta(hours=5))
    env = _env(db_url, expo)

    done = _python(SEED_INTEGRATION_TEST, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Event processing completed\nPush notification processing completed\n"
    assert db.execute("SELECT status FROM events WHERE id = %s", (event,)).fetchone() == ("synced",)
    assert len(expo.messages) == 2 and seed.statuses(db) == {"sent": 2, "pending": 2}
    assert '"api.summary"' in done.stderr  # the CLI's log lines, on stderr

    health = _python(SEED_HEALTH_CHECK, env=env)
    assert health.returncode == 0, health.stderr
    assert health.stdout == "Found 0 pending events\n"


@pytest.mark.parametrize(("variable", "value"), [("PUSH_MAX_ATTEMPTS", "zero"), ("REMINDER_OFFSETS", "soon"),
                                                 ("DATABASE_URL", "")])
def test_a_bad_environment_raises_config_error_naming_the_variable(db_url: str, expo: ExpoStandIn, variable: str,
                                                                   value: str) -> None:
    env = _env(db_url, expo, **{variable: value})
    caught = _python("from worker.main import ReminderWorker\n"
                     "from worker.config import ConfigError\n"
                     "try:\n    ReminderWorker()\n"
                     "except ConfigError as exc:\n    print(exc.variable)\n", env=env)
    assert caught.returncode == 0, caught.stderr
    assert caught.stdout == f"{variable}\n"

    raised = _python("from worker.main import ReminderWorker\nReminderWorker()\n", env=env)
    assert raised.returncode == 1
    assert f"worker.config.ConfigError: {variable}: " in raised.stderr


def test_importing_the_api_stays_light() -> None:
    done = _python("import json, sys\n"
                   "from worker.main import ReminderWorker\n"
                   "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n", env=clean_env())
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert loaded.isdisjoint({"exponent_server_sdk", "googleapiclient", "google", "supabase", "postgrest",
                              "starlette", "uvicorn", "requests", "httpx", "psycopg"})
