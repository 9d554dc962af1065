"""The events step at Google's pace: many parents at once, a few requests per parent, one token
refresh per parent per pass, a rate limit that holds back only its parent, the project's cap, and
no Google client stack loaded by a pass that has nothing to tell Google.

A real database and the Google stand-in, driven through the real google-auth / googleapiclient /
httplib2 code; concurrency is measured where Google would see it, at the stand-in
(``GoogleStandIn.max_in_flight``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from standins.expo import ExpoStandIn
from standins.google import GoogleStandIn
from tests import seed
from tests.integration.test_calendar_sync import (
    api_calls,
    event_row,
    only_entry,
    parent,
    run,
    settings_for,
)
from worker.db import Gateway
from worker.db.postgres import PostgresGateway

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
START = NOW + timedelta(days=2)
ANNA, BEN, CARA, DAN = "anna@example.com", "ben@example.com", "cara@example.com", "dan@example.com"
#: What a pass must not import when it has nothing to tell Google.
GOOGLE_STACK = ("googleapiclient", "google.auth", "google.oauth2", "google_auth_httplib2", "httplib2")


@pytest.fixture
def google() -> Iterator[GoogleStandIn]:
    with GoogleStandIn() as standin:
        yield standin


@pytest.fixture
def gateway(db_url: str) -> Iterator[Gateway]:
    with PostgresGateway(db_url) as gw:
        yield gw


def _events(db: psycopg.Connection[Any], user: str, count: int, offset: int = 0) -> list[str]:
    return [seed.add_event(db, user, START + timedelta(minutes=offset + i)) for i in range(count)]


# -- concurrency ----------------------------------------------------------------------------------


@pytest.mark.parametrize("per_parent", [1, 2])
def test_many_parents_at_once_but_at_most_the_cap_per_parent_and_one_refresh_each(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn,
        per_parent: int) -> None:
    emails = [ANNA, BEN, CARA, DAN]
    users = {email: parent(db, google, email) for email in emails}
    events = {email: _events(db, user, 6, offset=10 * n) for n, (email, user) in enumerate(users.items())}
    google.latency = 0.05  # every request, the token's included, is in flight for 50 ms at least

    result = run(gateway, settings_for(google, expo, CALENDAR_CONCURRENCY="16",
                                       CALENDAR_CONCURRENCY_PER_PARENT=str(per_parent)))

    assert result.counts.events_synced == 24
    for email in emails:
        assert google.max_in_flight[email] == per_parent  # reached (parallel), never passed
        for event in events[email]:
            only_entry(google, email, event)
    assert google.max_in_flight_total >= len(emails) * per_parent // 2 + 1  # parents at once
    assert google.refreshes == {f"1//refresh-{email}": 1 for email in emails}
    assert api_calls(google) == [("POST", 200)] * 24


def test_a_parents_first_request_goes_alone(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    """Until Google answered a parent once, one request: a revoked grant or a rate limit costs one."""
    anna = parent(db, google, ANNA)
    _events(db, anna, 5)
    google.latency = 0.05
    google.fail_next(1, 429, user=ANNA)
    result = run(gateway, settings_for(google, expo, CALENDAR_CONCURRENCY="8",
                                       CALENDAR_CONCURRENCY_PER_PARENT="4"))
    assert result.counts.events_retried == 5
    assert api_calls(google) == [("POST", 429)]
    assert google.max_in_flight[ANNA] == 1


# -- rate limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "reason"), [(429, "rateLimitExceeded"), (403, "userRateLimitExceeded"),
                                                (403, "rateLimitExceeded")])
def test_a_rate_limit_holds_back_only_that_parent_for_the_rest_of_the_pass(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn,
        status: int, reason: str) -> None:
    anna, ben = parent(db, google, ANNA), parent(db, google, BEN)
    # Interleaved start times and batches of 4: both parents' events span three batches.
    anna_events = [seed.add_event(db, anna, START + timedelta(minutes=2 * i)) for i in range(6)]
    ben_events = [seed.add_event(db, ben, START + timedelta(minutes=2 * i + 1)) for i in range(6)]
    google.fail_next(1, status, reason, user=ANNA, retry_after=600)
    settings = settings_for(google, expo, WORKER_BATCH_SIZE="4", CALENDAR_CONCURRENCY="4")

    first = run(gateway, settings)

    assert first.exit_code == 0  # a parent's rate limit is not Google failing
    assert first.counts.events_synced == 6
    assert first.counts.events_retried == 6
    assert first.counts.reminders_planned == 36  # reminders do not wait for Google
    assert api_calls(google, ANNA) == [("POST", status)]  # one request, then held back in later batches too
    assert api_calls(google, BEN) == [("POST", 200)] * 6
    for event in anna_events:
        row = event_row(db, event)
        assert (row["status"], row["attempts"], row["error_kind"]) == ("pending", 1, "google_rate_limited")
        assert row["next_attempt_at"] >= NOW + timedelta(seconds=600)  # Google's Retry-After, at least
        assert reason in row["error_message"]
    for event in ben_events:
        assert event_row(db, event)["status"] == "synced"

    assert run(gateway, settings, NOW + timedelta(minutes=5)).counts.events_synced == 0  # still waiting
    later = run(gateway, settings, NOW + timedelta(hours=2))
    assert later.counts.events_synced == 6
    for event in anna_events:
        assert only_entry(google, ANNA, event)["status"] == "confirmed"
        assert event_row(db, event)["error_kind"] is None


# -- the project's cap ----------------------------------------------------------------------------


def test_the_project_cap_spaces_requests_out(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    for email in (ANNA, BEN, CARA):
        _events(db, parent(db, google, email), 4)

    result = run(gateway, settings_for(google, expo, GOOGLE_MAX_REQUESTS_PER_SECOND="5",
                                       CALENDAR_CONCURRENCY="12"))

    assert result.counts.events_synced == 12
    times = sorted(r.time for r in google.requests)
    assert len(times) == 12
    # Never more than 5 Calendar requests within a second (token requests are not the API's quota).
    assert min(later - earlier for earlier, later in zip(times, times[5:], strict=False)) >= 0.9
    assert times[-1] - times[0] >= 1.8


def test_the_project_cap_holds_for_two_workers_together(
        db: psycopg.Connection[Any], db_url: str, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    """GOOGLE_MAX_REQUESTS_PER_SECOND is the project's quota, not a worker's: two passes at once
    book their requests on the schedule they share (worker.send_schedule, 'google')."""
    for email in (ANNA, BEN, CARA, DAN):
        _events(db, parent(db, google, email), 4)
    settings = settings_for(google, expo, GOOGLE_MAX_REQUESTS_PER_SECOND="5", CALENDAR_CONCURRENCY="12",
                            WORKER_BATCH_SIZE="8")
    results: list[Any] = []

    def one_pass() -> None:
        with PostgresGateway(db_url) as gw:
            results.append(run(gw, settings))

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(r.counts.events_synced for r in results) == 16
    times = sorted(r.time for r in google.requests)
    assert len(times) == 16
    # Together never more than 5 within a second: each worker alone would have allowed 5.
    assert min(later - earlier for earlier, later in zip(times, times[5:], strict=False)) >= 0.9
    assert times[-1] - times[0] >= 2.7
    booked = db.execute("SELECT count(*) FROM worker.send_schedule WHERE name = 'google'").fetchone()
    assert booked == (1,)


def test_the_shared_cap_falls_back_to_the_worker_s_own_when_the_database_is_away() -> None:
    """Booking needs the database; a database away while Google is being talked to must not fail
    calendar requests: the pace keeps the rate with this worker's own limiter instead."""
    import time

    from worker.steps.pace import SharedPace

    unreachable = "host=127.0.0.1 port=9 dbname=none user=none connect_timeout=1"
    pace = SharedPace(lambda: PostgresGateway(unreachable), "google", 10.0, patience=0.2)
    started = time.monotonic()
    waits = [pace.acquire() for _ in range(15)]
    took = time.monotonic() - started
    pace.close()
    assert pace.bookings == 0
    assert 0.8 <= took < 5  # 10 a second in any window: the 11th to 15th wait for the next second
    assert sum(waits) > 0


def test_the_project_cap_is_off_at_zero_and_on_by_default() -> None:
    from worker.config import Settings

    assert Settings.from_env({}).google.max_requests_per_second == 150
    assert Settings.from_env({"GOOGLE_MAX_REQUESTS_PER_SECOND": "0"}).google.max_requests_per_second == 0


# -- nothing of Google without calendar work --------------------------------------------------------


_PASS = """
import json, sys
from worker.cli import main
code = main(["run", "--now", sys.argv[1]])
stack = sys.argv[2].split(",")
print(json.dumps({"code": code,
                  "loaded": sorted({m for m in sys.modules for s in stack if m == s or m.startswith(s + ".")})}))
"""


def _pass_modules(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _PASS, NOW.isoformat(), ",".join(GOOGLE_STACK)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_a_pass_without_calendar_work_never_imports_the_google_client_stack(
        db: psycopg.Connection[Any], db_url: str, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    from tests.acceptance.cli import clean_env

    nobody = seed.add_parent(db)  # no refresh token: nothing to tell Google
    seed.add_event(db, nobody, START)
    base = clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, LOG_LEVEL="WARNING")
    google_env = {"GOOGLE_CLIENT_ID": google.client_id, "GOOGLE_CLIENT_SECRET": google.client_secret,
                  "GOOGLE_API_URL": google.api_url, "GOOGLE_TOKEN_URI": google.token_uri}

    assert _pass_modules(base) == {"code": 0, "loaded": []}  # no Google settings
    db.execute("UPDATE events SET title = 'Soccer match'")  # pending again, still nobody's calendar
    assert _pass_modules({**base, **google_env}) == {"code": 0, "loaded": []}  # Google set, no work for it
    assert seed.statuses(db) == {"pending": 3}  # the events were synced (reminders planned) all the same
    assert google.requests == []

    anna = parent(db, google, ANNA)  # now a parent with a grant: the stack is loaded, and used
    event = seed.add_event(db, anna, START)
    seen = _pass_modules({**base, **google_env})
    assert seen["code"] == 0
    assert {"googleapiclient", "google.auth", "httplib2"} <= set(seen["loaded"])
    only_entry(google, ANNA, event)
