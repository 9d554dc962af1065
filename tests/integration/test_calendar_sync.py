"""CalendarSync and the pass in-process: a real database, the Google and Expo stand-ins.

Every test drives the real google-auth / googleapiclient / httplib2 code against the stand-in's
wire format, and checks both sides: the rows in Postgres and the entries in "Google".
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from standins.expo import ExpoStandIn
from standins.google import GoogleStandIn
from tests import seed
from worker.clients.expo import ExpoPusher
from worker.config import Settings
from worker.db import Gateway
from worker.db.postgres import PostgresGateway
from worker.passes import PassResult, run_pass
from worker.steps.calendar import EVENT_ID_PROPERTY, REVOKED_REASON, CalendarSync, calendar_event_id
from worker.steps.calendar import calendar_from_settings as make_calendar

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
START = NOW + timedelta(days=2)
ANNA, BEN, CARA = "anna@example.com", "ben@example.com", "cara@example.com"


@pytest.fixture
def google() -> Iterator[GoogleStandIn]:
    with GoogleStandIn() as standin:
        yield standin


@pytest.fixture
def gateway(db_url: str) -> Iterator[Gateway]:
    with PostgresGateway(db_url) as gw:
        yield gw


def settings_for(google: GoogleStandIn, expo: ExpoStandIn, **extra: str) -> Settings:
    env = {"DATABASE_URL": "postgresql://unused", "EXPO_API_URL": expo.url, "PUSH_RETRY_WAIT": "0",
           "PUSH_REQUEST_ATTEMPTS": "1", "GOOGLE_CLIENT_ID": google.client_id,
           "GOOGLE_CLIENT_SECRET": google.client_secret, "GOOGLE_API_URL": google.api_url,
           "GOOGLE_TOKEN_URI": google.token_uri}
    env.update(extra)
    return Settings.from_env(env)


def run(gateway: Gateway, settings: Settings, now: datetime = NOW,
        calendar: CalendarSync | None = None) -> PassResult:
    """One pass with its own CalendarSync (as the CLI does), unless one is given."""
    pusher = ExpoPusher(settings.expo.api_url, concurrency=2, rate_limit=0, request_attempts=1, retry_wait=0)
    own = calendar is None
    cal = make_calendar(settings.google, settings.passes.reminder_offsets) if own else calendar
    try:
        return run_pass(settings, gateway, now=now, pusher=pusher, calendar=cal)
    finally:
        pusher.close()
        if own and cal is not None:
            cal.close()


def parent(db: psycopg.Connection[Any], google: GoogleStandIn, email: str, token: str | None = None,
           **kw: Any) -> str:
    refresh = token or f"1//refresh-{email}"
    google.add_user(email, refresh)
    return seed.add_parent(db, refresh_token=refresh, **kw)


def event_row(db: psycopg.Connection[Any], event_id: str) -> dict[str, Any]:
    cur = db.execute("SELECT status, google_calendar_id, error_message, error_kind, attempts, "
                     "next_attempt_at, version, synced_version FROM events WHERE id = %s", (event_id,))
    names = [d.name for d in cur.description or []]
    values = cur.fetchone()
    assert values is not None
    return dict(zip(names, values, strict=True))


def entries_for(google: GoogleStandIn, calendar: str, event_id: str) -> list[dict[str, Any]]:
    """Every entry of ``calendar`` that mirrors ``event_id`` (deleted ones included)."""
    return [e for e in google.events(calendar).values()
            if e.get("extendedProperties", {}).get("private", {}).get(EVENT_ID_PROPERTY) == event_id]


def only_entry(google: GoogleStandIn, calendar: str, event_id: str) -> dict[str, Any]:
    found = entries_for(google, calendar, event_id)
    assert len(found) == 1, found
    return found[0]


def api_calls(google: GoogleStandIn, owner: str | None = None) -> list[tuple[str, int]]:
    return [(r.method, r.status) for r in google.requests if owner is None or r.owner == owner]


def hand_delete(google: GoogleStandIn, refresh_token: str, entry_id: str) -> None:
    """The parent deletes the entry in Google Calendar's own UI."""
    conn = http.client.HTTPConnection("127.0.0.1", google.port, timeout=5)
    try:
        form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": refresh_token,
                                       "client_id": google.client_id, "client_secret": google.client_secret})
        conn.request("POST", "/token", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
        token = json.loads(conn.getresponse().read())["access_token"]
        conn.request("DELETE", f"/calendar/v3/calendars/primary/events/{entry_id}",
                     headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 204
    finally:
        conn.close()


# -- the happy path -------------------------------------------------------------------------------


def test_creates_the_entry_under_the_derived_id_and_plans_reminders(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA, timezone="Europe/Berlin")
    child = seed.add_child(db, anna, "Emma")
    event = seed.add_event(db, anna, START, child_id=child)

    result = run(gateway, settings_for(google, expo))

    assert result.exit_code == 0
    assert result.counts.events_synced == 1
    assert result.counts.reminders_planned == 3
    entry = only_entry(google, ANNA, event)
    assert entry["id"] == calendar_event_id(event)
    assert entry["status"] == "confirmed"
    assert entry["summary"] == "Soccer practice (Emma)"
    assert entry["start"] == {"dateTime": "2026-11-24T10:00:00+01:00", "timeZone": "Europe/Berlin"}
    assert entry["location"] == "Field 4"
    assert entry["description"] == "Bring:\n- shin guards\n- water"
    assert entry["reminders"] == {"useDefault": False, "overrides": [
        {"method": "popup", "minutes": 1440}, {"method": "popup", "minutes": 180},
        {"method": "popup", "minutes": 30}]}
    row = event_row(db, event)
    assert (row["status"], row["google_calendar_id"]) == ("synced", calendar_event_id(event))
    assert api_calls(google) == [("POST", 200)]
    assert google.refreshes == {f"1//refresh-{ANNA}": 1}


def test_edit_updates_the_same_entry_and_cancel_deletes_it(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA)
    event = seed.add_event(db, anna, START)
    settings = settings_for(google, expo)
    run(gateway, settings)

    db.execute("UPDATE events SET title = 'Soccer match', start_ts = start_ts + interval '1 hour', "
               "end_ts = end_ts + interval '1 hour', location = NULL WHERE id = %s", (event,))
    edited = run(gateway, settings)
    assert edited.counts.events_synced == 1
    entry = only_entry(google, ANNA, event)
    assert entry["summary"] == "Soccer match"
    assert "location" not in entry  # a full replacement: what the app cleared is gone in Google
    assert entry["start"]["dateTime"] == "2026-11-24T10:00:00+00:00"
    assert event_row(db, event)["google_calendar_id"] == calendar_event_id(event)
    assert api_calls(google)[1:] == [("PUT", 200)]

    db.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (event,))
    cancelled = run(gateway, settings)
    assert cancelled.counts.events_cancelled == 1
    assert only_entry(google, ANNA, event)["status"] == "cancelled"
    row = event_row(db, event)
    assert (row["status"], row["google_calendar_id"]) == ("cancelled", None)
    assert seed.statuses(db) == {"cancelled": 3}
    assert api_calls(google)[2:] == [("DELETE", 204)]


def test_rerun_makes_no_request_and_no_duplicate(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA)
    events = [seed.add_event(db, anna, START + timedelta(hours=i)) for i in range(3)]
    settings = settings_for(google, expo)
    run(gateway, settings)
    run(gateway, settings)
    run(gateway, settings, NOW + timedelta(hours=1))
    assert len(google.events(ANNA)) == 3
    for event in events:
        only_entry(google, ANNA, event)
    assert api_calls(google) == [("POST", 200)] * 3


def test_entry_created_by_a_pass_that_died_is_adopted_not_duplicated(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    """Google accepted the insert, then the pass died before the database recorded the id."""
    import uuid

    anna = parent(db, google, ANNA)
    event = seed.add_event(db, anna, START)
    settings = settings_for(google, expo)
    rows = gateway.claim_events(NOW, uuid.uuid4(), 10, settings.passes.lease_seconds)
    with make_calendar(settings.google, settings.passes.reminder_offsets) as dying:  # type: ignore[union-attr]
        assert dying.sync(rows, NOW)[event].outcome == "synced"
    assert event_row(db, event)["google_calendar_id"] is None  # never completed

    db.execute("UPDATE events SET title = 'Soccer (moved)' WHERE id = %s", (event,))  # and edited meanwhile
    assert run(gateway, settings, NOW + timedelta(minutes=1)).counts.events_synced == 0  # still leased
    later = run(gateway, settings, NOW + timedelta(seconds=settings.passes.lease_seconds + 1))

    assert later.counts.events_synced == 1
    entry = only_entry(google, ANNA, event)
    assert entry["summary"] == "Soccer (moved)"
    assert event_row(db, event)["google_calendar_id"] == calendar_event_id(event)
    assert api_calls(google) == [("POST", 200), ("POST", 409), ("PUT", 200)]


def test_cancel_then_restore_in_the_app_brings_the_entry_back(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA)
    event = seed.add_event(db, anna, START)
    settings = settings_for(google, expo)
    run(gateway, settings)
    db.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (event,))
    run(gateway, settings)
    db.execute("UPDATE events SET status = 'pending' WHERE id = %s", (event,))
    run(gateway, settings)
    assert only_entry(google, ANNA, event)["status"] == "confirmed"
    assert event_row(db, event)["google_calendar_id"] == calendar_event_id(event)
    assert seed.statuses(db) == {"pending": 3}


def test_cancelled_before_any_sync_deletes_nothing_and_is_fine(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA)
    event = seed.add_event(db, anna, START)
    db.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (event,))
    result = run(gateway, settings_for(google, expo))
    assert result.counts.events_cancelled == 1
    assert api_calls(google) == [("DELETE", 404)]  # the derived id is checked: a lost insert would be gone now
    assert google.events(ANNA) == {}


# -- entries the parent deleted in Google ------------------------------------------------------------


def test_an_edit_in_the_app_brings_back_an_entry_deleted_in_google(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA)
    event = seed.add_event(db, anna, START)
    settings = settings_for(google, expo)
    run(gateway, settings)
    hand_delete(google, f"1//refresh-{ANNA}", calendar_event_id(event))
    assert only_entry(google, ANNA, event)["status"] == "cancelled"

    db.execute("UPDATE events SET title = 'Soccer final' WHERE id = %s", (event,))
    run(gateway, settings)
    entry = only_entry(google, ANNA, event)
    assert (entry["status"], entry["summary"]) == ("confirmed", "Soccer final")


def test_a_retry_of_the_same_version_leaves_a_hand_deleted_entry_deleted(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA)
    event = seed.add_event(db, anna, START)
    settings = settings_for(google, expo)
    run(gateway, settings)
    db.execute("UPDATE events SET title = 'Soccer final' WHERE id = %s", (event,))
    google.fail_next(1, 503, user=ANNA)
    assert run(gateway, settings).counts.events_retried == 1
    hand_delete(google, f"1//refresh-{ANNA}", calendar_event_id(event))  # after the edit, before the retry

    retried = run(gateway, settings, NOW + timedelta(hours=1))
    assert retried.counts.events_synced == 1
    entry = only_entry(google, ANNA, event)
    assert (entry["status"], entry["summary"]) == ("cancelled", "Soccer final")  # content kept, still deleted
    assert event_row(db, event)["status"] == "synced"

    db.execute("UPDATE events SET title = 'Soccer final (2pm)' WHERE id = %s", (event,))  # a new edit
    run(gateway, settings, NOW + timedelta(hours=1))
    assert only_entry(google, ANNA, event)["status"] == "confirmed"


def test_an_entry_google_no_longer_has_is_recreated_by_an_edit_but_not_by_a_retry(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    """The stored id is unknown to Google (update answers 404): e.g. an entry of another calendar."""
    anna = parent(db, google, ANNA)
    edited, retried = seed.add_event(db, anna, START), seed.add_event(db, anna, START + timedelta(hours=1))
    db.execute("UPDATE events SET google_calendar_id = 'gone0000000001', attempts = 0 WHERE id = %s", (edited,))
    db.execute("UPDATE events SET google_calendar_id = 'gone0000000002' WHERE id = %s", (retried,))
    db.execute("UPDATE events SET attempts = 2 WHERE id = %s", (retried,))  # a retry of the same version

    result = run(gateway, settings_for(google, expo))

    assert result.counts.events_synced == 2
    assert only_entry(google, ANNA, edited)["status"] == "confirmed"
    assert event_row(db, edited)["google_calendar_id"] == calendar_event_id(edited)
    assert entries_for(google, ANNA, retried) == []
    assert event_row(db, retried)["google_calendar_id"] is None
    assert sorted(api_calls(google)) == [("POST", 200), ("PUT", 404), ("PUT", 404)]


# -- errors -----------------------------------------------------------------------------------------


def test_revoked_access_fails_the_users_events_until_the_refresh_token_changes(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA, token="1//old")
    events = [seed.add_event(db, anna, START + timedelta(hours=i)) for i in range(2)]
    synced = seed.add_event(db, anna, START + timedelta(hours=5))
    settings = settings_for(google, expo)
    run(gateway, settings)
    google.revoke("1//old")
    db.execute("UPDATE events SET title = title || '!' WHERE id = ANY(%s::uuid[])", (events,))
    db.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (synced,))

    failed = run(gateway, settings)
    assert failed.counts.events_failed == 2
    assert failed.counts.events_cancelled == 1
    for event in events:
        row = event_row(db, event)
        assert (row["status"], row["error_message"], row["error_kind"]) == (
            "failed", REVOKED_REASON, "google_revoked")
        assert row["google_calendar_id"] == calendar_event_id(event)
    assert event_row(db, synced)["error_kind"] == "google_revoked"  # its entry is still in Google
    assert google.refreshes["1//old"] == 2  # one per pass, not one per event
    assert db.execute("SELECT count(*) FROM reminders WHERE status = 'pending'").fetchone() == (6,)

    calls = len(google.requests)
    assert run(gateway, settings, NOW + timedelta(hours=3)).counts.events_failed == 0
    assert google.refreshes["1//old"] == 2  # not retried every minute
    assert len(google.requests) == calls

    google.add_user(ANNA, "1//new")
    db.execute("UPDATE profiles SET google_refresh_token = '1//new' WHERE id = %s", (anna,))
    # The next pass sees a token other than the refused one and gives the events back.
    back = run(gateway, settings, NOW + timedelta(hours=3))
    assert back.counts.events_synced == 2
    assert back.counts.events_cancelled == 1
    assert [only_entry(google, ANNA, e)["summary"] for e in events] == ["Soccer practice!"] * 2
    assert only_entry(google, ANNA, synced)["status"] == "cancelled"
    assert {event_row(db, e)["error_kind"] for e in [*events, synced]} == {None}


def test_rate_limited_user_is_retried_with_backoff_then_synced(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA)
    events = [seed.add_event(db, anna, START + timedelta(hours=i)) for i in range(3)]
    google.fail_next(1, 403, "rateLimitExceeded", user=ANNA)
    settings = settings_for(google, expo)

    first = run(gateway, settings)
    assert first.counts.events_retried == 3
    assert first.counts.reminders_planned == 9  # reminders do not wait for Google
    assert api_calls(google) == [("POST", 403)]  # the rest of her events waited without asking
    row = event_row(db, events[0])
    assert row["status"] == "pending"
    assert row["attempts"] == 1
    assert row["next_attempt_at"] > NOW
    assert "rateLimitExceeded" in row["error_message"]

    assert run(gateway, settings, NOW + timedelta(seconds=5)).counts.events_synced == 0  # backing off
    later = run(gateway, settings, NOW + timedelta(hours=1))
    assert later.counts.events_synced == 3
    for event in events:
        assert only_entry(google, ANNA, event)["status"] == "confirmed"
        assert event_row(db, event)["error_message"] is None


def test_a_401_refreshes_once_and_retries(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA)
    first = seed.add_event(db, anna, START)
    settings = settings_for(google, expo)
    with make_calendar(settings.google, settings.passes.reminder_offsets) as calendar:  # type: ignore[union-attr]
        run(gateway, settings, calendar=calendar)
        google.expire_access_tokens()  # the cached access token dies (Google revoked it early)
        second = seed.add_event(db, anna, START + timedelta(hours=1))
        result = run(gateway, settings, calendar=calendar)
    assert result.counts.events_synced == 1
    assert api_calls(google) == [("POST", 200), ("POST", 401), ("POST", 200)]
    assert google.refreshes == {f"1//refresh-{ANNA}": 2}
    only_entry(google, ANNA, first)
    only_entry(google, ANNA, second)


def test_one_users_failures_never_stop_other_users(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    anna = parent(db, google, ANNA, token="1//anna")
    ben = parent(db, google, BEN)
    cara = parent(db, google, CARA)
    nobody = seed.add_parent(db)  # no Google at all
    google.revoke("1//anna")
    google.fail_next(1, 500, user=CARA)
    google.fail_next(1, 403, "forbidden", user=BEN)
    a = seed.add_event(db, anna, START)
    b1, b2 = seed.add_event(db, ben, START), seed.add_event(db, ben, START + timedelta(hours=1))
    c1, c2 = seed.add_event(db, cara, START), seed.add_event(db, cara, START + timedelta(hours=1))
    n = seed.add_event(db, nobody, START)
    bad = seed.add_event(db, ben, START, end=START - timedelta(hours=1))  # times out of order

    result = run(gateway, settings_for(google, expo, CALENDAR_CONCURRENCY="2"))

    assert result.exit_code == 0
    assert event_row(db, a)["status"] == "failed"
    assert (event_row(db, b1)["status"], event_row(db, b2)["status"]) == ("failed", "synced")
    assert "403 forbidden" in event_row(db, b1)["error_message"]
    assert event_row(db, b1)["error_kind"] == "google_refused"  # not revoked: no reconnect will bring it back
    assert (event_row(db, c1)["status"], event_row(db, c2)["status"]) == ("pending", "synced")
    assert (event_row(db, n)["status"], event_row(db, n)["google_calendar_id"]) == ("synced", None)
    assert event_row(db, bad)["status"] == "failed"
    assert "before start_ts" in event_row(db, bad)["error_message"]
    assert entries_for(google, BEN, bad) == []
    assert db.execute("SELECT count(*) FROM reminders").fetchone() == (6 * 3,)  # all but the bad row


def test_exactly_one_token_refresh_per_user_per_pass_across_batches(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    users = {email: parent(db, google, email) for email in (ANNA, BEN, CARA)}
    for i in range(5):
        for user in users.values():
            seed.add_event(db, user, START + timedelta(hours=i))
    settings = settings_for(google, expo, WORKER_BATCH_SIZE="4", CALENDAR_CONCURRENCY="3")
    result = run(gateway, settings)
    assert result.counts.events_synced == 15
    assert google.refreshes == {f"1//refresh-{email}": 1 for email in users}
    assert {email: len(google.events(email)) for email in users} == dict.fromkeys(users, 5)

    for user in users.values():
        seed.add_event(db, user, START + timedelta(days=1))
    run(gateway, settings)
    assert google.refreshes == {f"1//refresh-{email}": 2 for email in users}


def test_service_account_writes_to_the_calendar_the_parent_shared(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    robot = "reminders@family-app.iam.gserviceaccount.com"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    google.add_service_account(robot, public_pem)
    shared = ["family-a@group.calendar.google.com", "family-b@group.calendar.google.com"]
    users = []
    for cal in shared:
        google.share_calendar(cal, robot)
        user = seed.add_parent(db, timezone="Europe/Berlin")
        db.execute("UPDATE profiles SET google_calendar_id = %s WHERE id = %s", (cal, user))
        users.append(user)
    events = [seed.add_event(db, u, START + timedelta(hours=i)) for u in users for i in range(2)]
    settings = settings_for(google, expo, GOOGLE_CLIENT_ID="", GOOGLE_CLIENT_SECRET="",
                            GOOGLE_CLIENT_EMAIL=robot, GOOGLE_PRIVATE_KEY=private_pem.replace("\n", "\\n"),
                            GOOGLE_PROJECT_ID="family-app")
    before = {t.ident for t in threading.enumerate()}

    result = run(gateway, settings)

    assert result.counts.events_synced == 4
    for cal, user_events in zip(shared, (events[:2], events[2:]), strict=True):
        for event in user_events:
            assert only_entry(google, cal, event)["status"] == "confirmed"
            assert event_row(db, event)["google_calendar_id"] == calendar_event_id(event)
    assert google.refreshes == {robot: 1}  # one token for the service account, shared by its users
    assert {r.principal for r in google.requests} == {robot}
    leftover = [t for t in threading.enumerate() if t.ident not in before]
    assert leftover == []  # no regional-access-boundary thread (nor pool threads) left running


def test_no_credentials_skips_the_calendar_but_plans_reminders(
        db: psycopg.Connection[Any], gateway: Gateway, google: GoogleStandIn, expo: ExpoStandIn) -> None:
    user = seed.add_parent(db)
    event = seed.add_event(db, user, START)
    result = run(gateway, settings_for(google, expo))
    assert result.counts.events_synced == 1
    assert result.counts.reminders_planned == 3
    assert (event_row(db, event)["status"], event_row(db, event)["google_calendar_id"]) == ("synced", None)
    assert google.requests == []
    assert google.refreshes == {}
