"""Run history through `python worker/main.py run`: one worker_runs row per pass, whatever its
outcome (0, 1, and 2 when a database can still be found), with its trigger; old rows pruned.

Why: "did the worker run at 3 a.m., and how did it go?" must be answerable from the database
alone, including for the passes that went wrong.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from standins.expo import ExpoStandIn
from tests.acceptance.cli import clean_env, start_worker, worker
from tests.integration.test_receipts import due_reminder

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _env(db_url: str, expo_url: str, **extra: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo_url, PUSH_RETRY_WAIT="0", **extra)


def _runs(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT trigger, exit_code, error, counts, started_at FROM worker_runs ORDER BY id").fetchall()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_good_pass_is_recorded_with_its_counts(db: psycopg.Connection[Any], db_url: str,
                                                 expo: ExpoStandIn) -> None:
    due_reminder(db, "ok")
    done = worker("run", "--now", NOW.isoformat(), env=_env(db_url, expo.url))
    assert done.returncode == 0, done.stderr
    [(trigger, code, error, counts, started)] = _runs(db)
    assert (trigger, code, error, started) == ("manual", 0, None, NOW)
    assert counts["sent"] == 1
    summary = next(json.loads(x) for x in done.stderr.splitlines() if '"pass.summary"' in x)
    assert counts == {k: v for k, v in summary.items() if k in counts}


def test_the_trigger_comes_from_worker_trigger_or_the_flag(db: psycopg.Connection[Any], db_url: str,
                                                           expo: ExpoStandIn) -> None:
    assert worker("run", env=_env(db_url, expo.url, WORKER_TRIGGER="cron")).returncode == 0
    assert worker("run", "--trigger", "http", env=_env(db_url, expo.url)).returncode == 0
    assert [r[0] for r in _runs(db)] == ["cron", "http"]


def test_loop_passes_are_recorded_as_loop(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn) -> None:
    proc = start_worker("run", "--loop", "--interval", "1", env=_env(db_url, expo.url, WORKER_TRIGGER="cron"))
    try:
        deadline = time.monotonic() + 30
        while len(_runs(db)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    runs = _runs(db)
    assert len(runs) >= 2
    assert {r[0] for r in runs} == {"loop"}


def test_a_failed_pass_is_recorded_with_its_error(db: psycopg.Connection[Any], db_url: str) -> None:
    due_reminder(db, "ok")
    env = _env(db_url, f"http://127.0.0.1:{_closed_port()}/--/api/v2", PUSH_REQUEST_ATTEMPTS="1")
    done = worker("run", "--now", NOW.isoformat(), env=env)
    assert done.returncode == 1
    [(trigger, code, error, counts, _)] = _runs(db)
    assert (trigger, code) == ("manual", 1)
    assert error.startswith("Expo is unavailable")
    assert counts["retried"] == 1


def test_an_invalid_configuration_is_recorded_when_the_database_is_reachable(
        db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn) -> None:
    env = _env(db_url, expo.url, REMINDER_OFFSETS="bogus", WORKER_TRIGGER="cron")
    done = worker("run", "--now", NOW.isoformat(), env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1  # still exactly one line, naming the variable
    assert done.stderr.startswith("configuration error: REMINDER_OFFSETS")
    [(trigger, code, error, counts, started)] = _runs(db)
    assert (trigger, code, counts, started) == ("cron", 2, {}, NOW)
    assert "REMINDER_OFFSETS" in error


def test_an_invalid_configuration_with_an_unreachable_database_still_exits_2(expo: ExpoStandIn) -> None:
    env = clean_env(DATABASE_URL=f"postgresql://nobody@127.0.0.1:{_closed_port()}/none",
                    EXPO_API_URL=expo.url, REMINDER_OFFSETS="bogus")
    done = worker("run", env=env)
    assert done.returncode == 2
    assert done.stderr.startswith("configuration error: REMINDER_OFFSETS")
    assert done.stderr.count("\n") == 1


def test_history_older_than_the_retention_is_pruned(db: psycopg.Connection[Any], db_url: str,
                                                    expo: ExpoStandIn) -> None:
    for days in (45, 35, 25):
        db.execute("INSERT INTO worker_runs (started_at, finished_at, trigger, exit_code) "
                   "VALUES (%s, %s, 'cron', 0)", (NOW - timedelta(days=days), NOW - timedelta(days=days)))
    keep = worker("run", "--now", NOW.isoformat(), env=_env(db_url, expo.url, WORKER_RUNS_RETENTION_DAYS="40"))
    assert keep.returncode == 0
    assert len(_runs(db)) == 3  # 45 days: gone; 35, 25 and this pass: kept
    default = worker("run", "--now", NOW.isoformat(), env=_env(db_url, expo.url))
    assert default.returncode == 0
    assert sorted((NOW - r[4]).days for r in _runs(db)) == [0, 0, 25]
