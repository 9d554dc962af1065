"""`python worker/main.py run` with Google configured: real processes, a real database, the Google
and Expo stand-ins. The calendar client comes from ``worker.steps.calendar.calendar_from_settings``
through the CLI's ``_calendar``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from standins.expo import ExpoStandIn
from standins.google import GoogleStandIn
from tests import seed
from tests.acceptance.cli import clean_env, run_at, start_worker, worker
from worker.steps.calendar import EVENT_ID_PROPERTY, REVOKED_REASON, calendar_event_id

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
START = NOW + timedelta(days=2)
ANNA, BEN, CARA = "anna@example.com", "ben@example.com", "cara@example.com"


class KillingGoogle(GoogleStandIn):
    """Google that, once armed, SIGKILLs the worker right after it stored an insert: the worker
    never hears that Google accepted it, exactly as a crash at the worst instant would be."""

    victim: subprocess.Popen[str] | None = None

    def _api_request(self, method: str, path: str, authorization: str | None, if_match: str | None,
                     body: bytes) -> tuple[int, Any, dict[str, str]]:
        answer = super()._api_request(method, path, authorization, if_match, body)
        victim = self.victim
        if victim is not None and method == "POST" and answer[0] == 200:
            self.victim = None
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
        return answer


@pytest.fixture
def google() -> Iterator[KillingGoogle]:
    standin = KillingGoogle()
    with standin:
        yield standin


def _env(db_url: str, google: GoogleStandIn, expo: ExpoStandIn, **extra: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0",
                     GOOGLE_CLIENT_ID=google.client_id, GOOGLE_CLIENT_SECRET=google.client_secret,
                     GOOGLE_API_URL=google.api_url, GOOGLE_TOKEN_URI=google.token_uri, **extra)


def _run(env: dict[str, str], now: datetime = NOW) -> dict[str, Any]:
    return run_at(env, now)


def _parent(db: psycopg.Connection[Any], google: GoogleStandIn, email: str, token: str | None = None) -> str:
    refresh = token or f"1//refresh-{email}"
    google.add_user(email, refresh)
    return seed.add_parent(db, refresh_token=refresh)


def _entries(google: GoogleStandIn, calendar: str, event_id: str) -> list[dict[str, Any]]:
    return [e for e in google.events(calendar).values()
            if e.get("extendedProperties", {}).get("private", {}).get(EVENT_ID_PROPERTY) == event_id]


def _row(db: psycopg.Connection[Any], event_id: str) -> tuple[Any, ...]:
    row = db.execute("SELECT status, google_calendar_id, error_message FROM events WHERE id = %s",
                     (event_id,)).fetchone()
    assert row is not None
    return tuple(row)


def test_create_edit_cancel_and_rerun_keep_one_entry(db: psycopg.Connection[Any], db_url: str,
                                                     google: KillingGoogle, expo: ExpoStandIn) -> None:
    anna = _parent(db, google, ANNA)
    event = seed.add_event(db, anna, START, child_id=seed.add_child(db, anna, "Emma"))
    env = _env(db_url, google, expo)
    entry_id = calendar_event_id(event)

    assert _run(env)["events_synced"] == 1
    assert _run(env)["events_synced"] == 0  # rerun: nothing to do, nothing sent
    [entry] = _entries(google, ANNA, event)
    assert (entry["id"], entry["summary"], entry["status"]) == (entry_id, "Soccer practice (Emma)", "confirmed")
    assert _row(db, event) == ("synced", entry_id, None)

    db.execute("UPDATE events SET title = 'Soccer match' WHERE id = %s", (event,))
    assert _run(env)["events_synced"] == 1
    [entry] = _entries(google, ANNA, event)
    assert entry["summary"] == "Soccer match (Emma)"

    db.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (event,))
    assert _run(env)["events_cancelled"] == 1
    [entry] = _entries(google, ANNA, event)
    assert entry["status"] == "cancelled"
    assert _row(db, event) == ("cancelled", None, None)
    assert [(r.method, r.status) for r in google.requests] == [("POST", 200), ("PUT", 200), ("DELETE", 204)]
    assert google.refreshes == {f"1//refresh-{ANNA}": 3}  # one per pass that had work for her


def test_a_pass_killed_after_google_accepted_the_insert_makes_no_second_entry(
        db: psycopg.Connection[Any], db_url: str, google: KillingGoogle, expo: ExpoStandIn) -> None:
    anna = _parent(db, google, ANNA)
    event = seed.add_event(db, anna, START)
    env = _env(db_url, google, expo)

    victim = start_worker("run", "--now", NOW.isoformat(), env=env)
    google.victim = victim
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert len(_entries(google, ANNA, event)) == 1  # Google has it ...
    assert _row(db, event)[1] is None  # ... the database never heard

    assert _run(env, NOW + timedelta(seconds=60))["events_synced"] == 0  # its lease still holds
    after = _run(env, NOW + timedelta(seconds=301))
    assert after["events_synced"] == 1
    [entry] = _entries(google, ANNA, event)
    assert entry["status"] == "confirmed"
    assert _row(db, event) == ("synced", calendar_event_id(event), None)
    assert [(r.method, r.status) for r in google.requests] == [("POST", 200), ("POST", 409), ("PUT", 200)]


def test_revoked_access_fails_once_and_waits_for_a_new_refresh_token(
        db: psycopg.Connection[Any], db_url: str, google: KillingGoogle, expo: ExpoStandIn) -> None:
    anna = _parent(db, google, ANNA, token="1//old")
    event = seed.add_event(db, anna, START)
    google.revoke("1//old")
    env = _env(db_url, google, expo)

    summary = _run(env)
    assert (summary["events_failed"], summary["reminders_planned"]) == (1, 3)
    assert _row(db, event) == ("failed", None, REVOKED_REASON)
    assert _run(env, NOW + timedelta(minutes=1))["events_failed"] == 0
    assert google.refreshes["1//old"] == 1
    assert google.requests == []

    google.add_user(ANNA, "1//new")
    db.execute("UPDATE profiles SET google_refresh_token = '1//new' WHERE id = %s", (anna,))
    assert _run(env, NOW + timedelta(minutes=2))["events_synced"] == 1
    assert _row(db, event) == ("synced", calendar_event_id(event), None)
    assert len(_entries(google, ANNA, event)) == 1


def test_rate_limit_then_success_on_a_later_pass(db: psycopg.Connection[Any], db_url: str,
                                                 google: KillingGoogle, expo: ExpoStandIn) -> None:
    anna = _parent(db, google, ANNA)
    event = seed.add_event(db, anna, START)
    google.fail_next(1, 429, user=ANNA)
    env = _env(db_url, google, expo)

    assert _run(env)["events_retried"] == 1
    status, calendar_id, error = _row(db, event)
    assert (status, calendar_id) == ("pending", None)
    assert "429" in error
    assert _run(env, NOW + timedelta(hours=1))["events_synced"] == 1
    assert len(_entries(google, ANNA, event)) == 1


def test_one_user_failing_while_others_sync(db: psycopg.Connection[Any], db_url: str,
                                            google: KillingGoogle, expo: ExpoStandIn) -> None:
    anna = _parent(db, google, ANNA, token="1//anna")
    ben = _parent(db, google, BEN)
    cara = _parent(db, google, CARA)
    google.revoke("1//anna")
    google.fail_next(1, 403, "forbidden", user=CARA)
    a, b, c = (seed.add_event(db, u, START) for u in (anna, ben, cara))

    summary = _run(_env(db_url, google, expo))
    assert (summary["events_synced"], summary["events_failed"]) == (1, 2)
    assert _row(db, a) == ("failed", None, REVOKED_REASON)
    assert _row(db, b) == ("synced", calendar_event_id(b), None)
    assert _row(db, c)[0] == "failed"
    assert "403 forbidden" in _row(db, c)[2]
    assert len(_entries(google, BEN, b)) == 1
    assert db.execute("SELECT count(*) FROM reminders").fetchone() == (9,)


def test_google_down_for_the_whole_pass_exits_1_and_still_plans(google: GoogleStandIn, db: psycopg.Connection[Any],
                                                                 db_url: str, expo: ExpoStandIn) -> None:
    user = _parent(db, google, "down@example.com", "1//down")
    seed.add_event(db, user, NOW + timedelta(days=2))
    google.fail_next(5, 503)
    result = worker("run", "--now", NOW.isoformat(), env=_env(db_url, google, expo))
    assert result.returncode == 1
    assert "Google Calendar unavailable for the whole pass" in result.stderr
    assert db.execute("SELECT status, attempts FROM events").fetchone() == ("pending", 1)
    assert db.execute("SELECT count(*) FROM reminders").fetchone() == (3,)
