"""`export-user` and `forget-user`: real processes, a real database (through both gateways) and the
Google stand-in.

The family is seeded the way the app and earlier passes leave it (profile, user metadata, a further
device, preferences, synced / failed / retrying events with their calendar entries in Google,
reminders sent / failed / pending with Expo's tickets, a refused grant), so these tests do not
depend on a pass; the calendar entries are put into the stand-in through the worker's own Google
client, under the ids a pass derives.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from standins.google import GoogleStandIn
from tests import seed
from tests.acceptance.cli import clean_env, worker
from tests.acceptance.conftest import EnvFor, google_env
from worker.clients.google import GoogleCalendar
from worker.steps.calendar import calendar_event_id

START = (datetime.now(UTC) + timedelta(days=7)).replace(minute=0, second=0, microsecond=0)  # live events
ANNA, BEN = "anna@example.com", "ben@example.com"
ANNA_REFRESH = "1//anna-refresh-token-do-not-print"
ANNA_META_REFRESH = "1//anna-metadata-refresh-token"
ANNA_STORED_REFRESH = "1//anna-stored-refresh-token"
BEN_REFRESH = "1//ben-refresh-token"
ANNA_PHONE = "ExponentPushToken[anna-phone-aaaa-1111]"
ANNA_OLD_PHONE = "ExponentPushToken[anna-oldphone-bb-2222]"
ANNA_TABLET = "ExponentPushToken[anna-tablet-ccccc-3333]"
BEN_PHONE = "ExponentPushToken[ben-phone-dddddddd-4444]"
SECRETS = (ANNA_REFRESH, ANNA_META_REFRESH, ANNA_STORED_REFRESH, ANNA_PHONE, ANNA_OLD_PHONE, ANNA_TABLET)


@dataclass
class Family:
    anna: str
    ben: str
    synced: str  # anna's, with an entry in Google
    recurring: str  # anna's, weekly, with an entry in Google
    failed: str  # anna's, Google refused it
    retrying: str  # anna's, a try failed after Google may have stored it (no id recorded)
    bens: str  # ben's, with an entry in Google
    sent: str  # reminders of anna's
    dead: str
    planned: str


@pytest.fixture
def google() -> Iterator[GoogleStandIn]:
    with GoogleStandIn() as standin:
        yield standin


def _put_entry(google: GoogleStandIn, refresh_token: str, event_id: str) -> None:
    """An entry as a pass leaves it: under the id derived from the event's, in the primary calendar."""
    client = GoogleCalendar(api_url=google.api_url, token_uri=google.token_uri, client_id=google.client_id,
                            client_secret=google.client_secret)
    try:
        access = client.access("seed", refresh_token, None)
        assert access is not None
        client.authorize(access).insert({
            "id": calendar_event_id(event_id), "summary": "seeded",
            "start": {"dateTime": START.isoformat()}, "end": {"dateTime": (START + timedelta(hours=1)).isoformat()}})
    finally:
        client.close()


def _event(db: psycopg.Connection[Any], user: str, title: str, *, status: str, calendar_id: str | None = None,
           error_kind: str | None = None, error: str | None = None, attempts: int = 0,
           recurrence: str | None = None) -> str:
    row = db.execute(
        "INSERT INTO events (user_id, title, start_ts, end_ts, location, status, google_calendar_id, error_kind,"
        " error_message, attempts, recurrence, version, synced_version, synced_at)"
        " VALUES (%s, %s, %s, %s, 'Field 4', %s, %s, %s, %s, %s, %s, 1, %s, %s) RETURNING id",
        (user, title, START, START + timedelta(hours=1), status, calendar_id, error_kind, error, attempts,
         recurrence, 0 if status == "pending" else 1, START - timedelta(days=1) if status == "synced" else None),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _reminder(db: psycopg.Connection[Any], user: str, event: str, notify: datetime, *, status: str,
              sent: bool = False, error_kind: str | None = None, error: str | None = None,
              receipt: str | None = None) -> str:
    row = db.execute(
        "INSERT INTO reminders (event_id, user_id, notify_at_ts, message, status, sent_at_ts, retry_count,"
        " error_kind, error_message, receipt_status, planned_by_worker) VALUES (%s, %s, %s, 'Soccer practice',"
        " %s, %s, %s, %s, %s, %s, true) RETURNING id",
        (event, user, notify, status, notify if sent else None, 1 if error_kind else 0, error_kind, error, receipt),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _family(db: psycopg.Connection[Any], google: GoogleStandIn) -> Family:
    google.add_user(ANNA, ANNA_REFRESH)
    google.add_user(BEN, BEN_REFRESH)
    anna = seed.add_parent(db, token=ANNA_PHONE, timezone="Europe/Berlin", refresh_token=ANNA_REFRESH)
    ben = seed.add_parent(db, token=BEN_PHONE, refresh_token=BEN_REFRESH)
    db.execute("UPDATE auth.users SET raw_user_meta_data = %s WHERE id = %s",
               (Jsonb({"full_name": "Anna", "expo_push_token": ANNA_OLD_PHONE,
                       "google_refresh_token": ANNA_META_REFRESH}), anna))
    db.execute("INSERT INTO worker.refresh_tokens (user_id, refresh_token) VALUES (%s, %s)",
               (anna, ANNA_STORED_REFRESH))
    db.execute("INSERT INTO worker.revoked_grants (user_id, token_sha256) VALUES (%s, 'ab12')", (anna,))
    db.execute("INSERT INTO push_tokens (user_id, token) VALUES (%s, %s)", (anna, ANNA_TABLET))
    db.execute("INSERT INTO notification_preferences (user_id, reminder_offsets, quiet_hours_start, quiet_hours_end)"
               " VALUES (%s, ARRAY[interval '1 day', interval '1 hour'], '21:00', '07:00')", (anna,))

    synced = _event(db, anna, "Soccer practice", status="synced")
    recurring = _event(db, anna, "Swimming", status="synced", recurrence="FREQ=WEEKLY;BYDAY=TU")
    failed = _event(db, anna, "Piano", status="failed", error_kind="google_refused",
                    error="Google Calendar refused the change (403 forbidden: Forbidden)")
    retrying = _event(db, anna, "Dentist", status="pending", error_kind="google_unavailable", attempts=1,
                      error="Google Calendar is unavailable (503 backendError); trying again later")
    bens = _event(db, ben, "Chess club", status="synced")
    for user_refresh, event in ((ANNA_REFRESH, synced), (ANNA_REFRESH, recurring), (BEN_REFRESH, bens)):
        _put_entry(google, user_refresh, event)
        db.execute("UPDATE events SET google_calendar_id = %s WHERE id = %s", (calendar_event_id(event), event))

    sent = _reminder(db, anna, synced, START - timedelta(hours=3), status="sent", sent=True, receipt="ok")
    dead = _reminder(db, anna, synced, START - timedelta(days=1), status="failed", error_kind="device_not_registered",
                     error=f'"{ANNA_OLD_PHONE}" is not a registered push notification recipient')
    planned = _reminder(db, anna, synced, START - timedelta(minutes=30), status="pending")
    db.execute("UPDATE reminders SET occurs_at = %s WHERE id = %s", (START, planned))
    bens_reminder = _reminder(db, ben, bens, START - timedelta(hours=3), status="sent", sent=True)
    for reminder, token, ticket in ((sent, ANNA_PHONE, "ticket-phone"), (sent, ANNA_TABLET, "ticket-tablet"),
                                    (bens_reminder, BEN_PHONE, "ticket-ben")):
        db.execute("INSERT INTO worker.push_tickets (reminder_id, token, ticket_id, sent_at, receipt_status)"
                   " VALUES (%s, %s, %s, %s, 'ok')", (reminder, token, ticket, START - timedelta(hours=3)))
    return Family(anna, ben, synced, recurring, failed, retrying, bens, sent, dead, planned)


def _snapshot(db: psycopg.Connection[Any], user: str | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the worker or these commands could touch (of one user, or all)."""
    mine = "TRUE" if user is None else "user_id = %(u)s"
    queries = {
        "users": f"SELECT * FROM auth.users WHERE {'TRUE' if user is None else 'id = %(u)s'} ORDER BY id",
        "profiles": f"SELECT * FROM profiles WHERE {'TRUE' if user is None else 'id = %(u)s'} ORDER BY id",
        "events": f"SELECT * FROM events WHERE {mine} ORDER BY id",
        "reminders": f"SELECT * FROM reminders WHERE {mine} ORDER BY id",
        "tickets": "SELECT t.* FROM worker.push_tickets t JOIN reminders r ON r.id = t.reminder_id"
                   f" WHERE {'TRUE' if user is None else 'r.user_id = %(u)s'} ORDER BY t.ticket_id",
        "devices": f"SELECT * FROM push_tokens WHERE {mine} ORDER BY id",
        "preferences": f"SELECT * FROM notification_preferences WHERE {mine} ORDER BY user_id",
        "stored": f"SELECT * FROM worker.refresh_tokens WHERE {mine} ORDER BY user_id",
        "refused": f"SELECT * FROM worker.revoked_grants WHERE {mine} ORDER BY user_id",
    }
    return {name: db.execute(sql, {"u": user}).fetchall() for name, sql in queries.items()}


def _entry_status(google: GoogleStandIn, calendar: str, event_id: str) -> str:
    return str(google.events(calendar)[calendar_event_id(event_id)]["status"])


def _no_secret_in(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
        assert "anna-refresh" not in text


# --- export-user ---------------------------------------------------------------------------------


def test_export_shows_what_the_worker_holds_with_tokens_masked(db: psycopg.Connection[Any], env_for: EnvFor,
                                                                google: GoogleStandIn) -> None:
    family = _family(db, google)
    before = _snapshot(db)
    requests = len(google.requests)

    done = worker("export-user", family.anna, env=env_for(google))
    assert done.returncode == 0, done.stderr
    _no_secret_in(done.stdout, done.stderr)
    assert family.ben not in done.stdout
    doc = json.loads(done.stdout)
    assert list(doc)[:3] == ["user_id", "found", "exported_at"]
    assert (doc["user_id"], doc["found"]) == (family.anna, True)
    assert doc["profile"] == {"exists": True, "timezone": "Europe/Berlin", "push_token_source": "profile",
                              "google_calendar_id": None}

    tokens = doc["tokens"]
    assert [(t["source"], t["token"]) for t in tokens["push"]] == [
        ("profile", "ExponentPushToken[***1111]"), ("metadata", "ExponentPushToken[***2222]"),
        ("device", "ExponentPushToken[***3333]")]
    assert tokens["push"][2]["created_at"] and tokens["push"][2]["last_seen_at"]
    assert tokens["google_refresh_token"] == "present"
    assert tokens["google_refresh_token_in"] == ["profile", "metadata", "worker_store"]
    assert tokens["google_grant_refused_at"] is not None

    prefs = doc["preferences"]
    assert (prefs["reminder_offsets"], prefs["quiet_hours_start"], prefs["quiet_hours_end"], prefs["push_enabled"]) \
        == (["1 day", "01:00:00"], "21:00:00", "07:00:00", True)
    assert "user_id" not in prefs

    events = {e["id"]: e for e in doc["events"]}
    assert set(events) == {family.synced, family.recurring, family.failed, family.retrying}
    assert events[family.synced]["google_calendar_id"] == calendar_event_id(family.synced)
    assert events[family.synced]["synced_at"] is not None
    assert events[family.recurring]["recurrence"] == "FREQ=WEEKLY;BYDAY=TU"
    assert (events[family.failed]["status"], events[family.failed]["error_kind"]) == ("failed", "google_refused")
    assert sorted(events[family.synced]) == sorted([
        "id", "title", "start_ts", "end_ts", "status", "recurrence", "google_calendar_id", "error_kind",
        "error_message", "synced_at"])

    reminders = {r["id"]: r for r in doc["reminders"]}
    assert set(reminders) == {family.sent, family.dead, family.planned}
    assert (reminders[family.sent]["status"], reminders[family.sent]["receipt_status"]) == ("sent", "ok")
    assert reminders[family.sent]["sent_at_ts"] is not None
    assert reminders[family.dead]["error_kind"] == "device_not_registered"
    assert reminders[family.dead]["error_message"] == \
        '"ExpoPushToken[***]" is not a registered push notification recipient'
    assert reminders[family.dead]["retry_count"] == 1
    assert reminders[family.planned]["occurs_at"] is not None

    assert sorted((d["ticket_id"], d["token"], d["receipt_status"]) for d in doc["deliveries"]) == [
        ("ticket-phone", "ExponentPushToken[***1111]", "ok"), ("ticket-tablet", "ExponentPushToken[***3333]", "ok")]

    assert _snapshot(db) == before  # nothing changed
    assert len(google.requests) == requests  # and Google was not asked


def test_export_of_a_parent_with_nothing_but_an_account(db: psycopg.Connection[Any], env_for: EnvFor) -> None:
    user = seed.add_parent(db, profile=False)
    done = worker("export-user", user, env=env_for())
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["profile"] == {"exists": False, "timezone": "UTC", "push_token_source": None,
                              "google_calendar_id": None}
    assert doc["tokens"] == {"push": [], "google_refresh_token": "absent", "google_refresh_token_in": [],
                             "google_grant_refused_at": None}
    assert (doc["preferences"], doc["events"], doc["reminders"], doc["deliveries"]) == (None, [], [], [])


def test_an_unknown_user_exits_1_with_one_line(db: psycopg.Connection[Any], env_for: EnvFor) -> None:
    nobody = str(uuid.uuid4())
    for command in (["export-user", nobody], ["forget-user", nobody], ["forget-user", nobody, "--yes"]):
        done = worker(*command, env=env_for())
        assert done.returncode == 1, done.stderr
        assert done.stdout == ""
        assert done.stderr.strip().splitlines()[-1] == f"{command[0]}: no user {nobody}"


@pytest.mark.parametrize("command", ["export-user", "forget-user"])
def test_a_user_id_that_is_not_a_uuid_exits_2_naming_it(db_url: str, command: str) -> None:
    done = worker(command, "anna@example.com", env=clean_env(DATABASE_URL=db_url))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "'anna@example.com' is not a user id" in line


def test_without_a_database_or_schema_the_commands_exit_2(empty_db_url: str) -> None:
    user = str(uuid.uuid4())
    done = worker("export-user", user, env=clean_env())
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr
    done = worker("forget-user", user, "--yes", env=clean_env(DATABASE_URL=empty_db_url))
    assert done.returncode == 2
    assert "migrate" in done.stderr


# --- forget-user ---------------------------------------------------------------------------------


def test_the_dry_run_changes_nothing_and_asks_google_nothing(db: psycopg.Connection[Any], env_for: EnvFor,
                                                              google: GoogleStandIn) -> None:
    family = _family(db, google)
    before = _snapshot(db)
    requests, refreshes = len(google.requests), dict(google.refreshes)

    done = worker("forget-user", family.anna, env=env_for(google))
    assert done.returncode == 0, done.stderr
    _no_secret_in(done.stdout, done.stderr)
    assert done.stdout.splitlines() == [
        f"forget-user {family.anna}: dry run, nothing changed (add --yes to erase)",
        "Google Calendar: 2 entries would be deleted (and 1 event whose entry may exist without a recorded id"
        " would be checked)",
        "would delete: 3 reminders (with 2 delivery tickets), 1 device (push_tokens), the notification preferences,"
        " the Google refresh token in the worker's store, the record of a Google grant that was refused",
        "would clear: profile expo_push_token, google_refresh_token; user metadata expo_push_token,"
        " google_refresh_token; the calendar entry id of 2 events; the retry state of 1 event",
        "kept: 4 events (the app's data: passes still plan their reminders, which reach no one without a device;"
        " deleting the user in Supabase Auth removes them and everything else of theirs)",
    ]
    assert _snapshot(db) == before
    assert (len(google.requests), dict(google.refreshes)) == (requests, refreshes)


def test_yes_deletes_the_calendar_entries_then_the_worker_data(db: psycopg.Connection[Any], env_for: EnvFor,
                                                               google: GoogleStandIn) -> None:
    family = _family(db, google)
    bens_rows = _snapshot(db, family.ben)
    requests = len(google.requests)

    done = worker("forget-user", family.anna, "--yes", env=env_for(google))
    assert done.returncode == 0, done.stderr
    _no_secret_in(done.stdout, done.stderr)
    assert done.stdout.splitlines()[:2] == [
        f"forget-user {family.anna}: erased",
        "Google Calendar: 2 entries: 2 deleted; 1 event without a recorded id looked for, none found",
    ]
    assert "delete: 3 reminders (with 2 delivery tickets), 1 device (push_tokens)" in done.stdout
    assert "kept: 4 events" in done.stdout

    # Google: anna's two entries are deleted, the id a retried try would have used was looked for.
    assert _entry_status(google, ANNA, family.synced) == "cancelled"
    assert _entry_status(google, ANNA, family.recurring) == "cancelled"
    assert _entry_status(google, BEN, family.bens) == "confirmed"
    deletes = [(r.method, r.status) for r in google.requests[requests:]]
    assert sorted(deletes) == [("DELETE", 204), ("DELETE", 204), ("DELETE", 404)]

    after = _snapshot(db, family.anna)
    assert (after["reminders"], after["tickets"], after["devices"], after["preferences"], after["stored"],
            after["refused"]) == ([], [], [], [], [], [])
    profile = db.execute("SELECT expo_push_token, google_refresh_token, google_calendar_id, timezone FROM profiles"
                         " WHERE id = %s", (family.anna,)).fetchone()
    assert profile == (None, None, None, "Europe/Berlin")  # the app's column stays
    assert db.execute("SELECT raw_user_meta_data FROM auth.users WHERE id = %s", (family.anna,)).fetchone() \
        == ({"full_name": "Anna"},)
    events = {str(r[0]): r[1:] for r in db.execute(
        "SELECT id, google_calendar_id, error_kind, error_message, attempts, next_attempt_at FROM events"
        " WHERE user_id = %s", (family.anna,))}
    for event in (family.synced, family.recurring, family.retrying):
        assert events[event] == (None, None, None, 0, None), event
    assert events[family.failed][:3] == (None, "google_refused", "Google Calendar refused the change (403 forbidden:"
                                         " Forbidden)")  # a failed event keeps its reason
    # The erasure itself neither edits nor re-syncs an event (deleting the preferences row re-plans
    # the live synced ones, as any change of preferences does: worker.preferences_on_change).
    assert db.execute("SELECT status, version FROM events WHERE id IN (%s, %s) ORDER BY status",
                      (family.failed, family.retrying)).fetchall() == [("failed", 1), ("pending", 1)]
    assert _snapshot(db, family.ben) == bens_rows  # another parent is untouched

    # The export now says so.
    doc = json.loads(worker("export-user", family.anna, env=env_for()).stdout)
    assert (doc["tokens"]["push"], doc["tokens"]["google_refresh_token"], doc["reminders"], doc["preferences"]) \
        == ([], "absent", [], None)

    # Twice is harmless: nothing left to delete, no Google call.
    requests = len(google.requests)
    again = worker("forget-user", family.anna, "--yes", env=env_for(google))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1:4] == ["Google Calendar: no entries made by the worker",
                                              "delete: nothing", "clear: nothing"]
    assert len(google.requests) == requests
    assert _snapshot(db, family.ben) == bens_rows


def test_a_google_failure_is_reported_and_the_erasure_goes_on(db: psycopg.Connection[Any], env_for: EnvFor,
                                                               google: GoogleStandIn) -> None:
    family = _family(db, google)
    google.fail_next(1, 503, user=ANNA, method="DELETE")  # transient: tried again, then deleted
    google.fail_next(1, 403, "forbidden", user=ANNA, method="DELETE")  # permanent: reported

    done = worker("forget-user", family.anna, "--yes", env=env_for(google))
    assert done.returncode == 0, done.stderr
    _no_secret_in(done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert lines[1].startswith("Google Calendar: 2 entries: 1 deleted, 1 not deleted (they stay in the parent's"
                               " calendar)")
    [not_deleted] = [line for line in lines if "not deleted: event" in line]
    failed_event = not_deleted.split("event ")[1].split(":")[0]
    assert failed_event in (family.synced, family.recurring)
    assert "403 forbidden" in not_deleted
    other = family.recurring if failed_event == family.synced else family.synced
    assert _entry_status(google, ANNA, failed_event) == "confirmed"
    assert _entry_status(google, ANNA, other) == "cancelled"
    assert '"forget_user.calendar_error"' in done.stderr

    after = _snapshot(db, family.anna)  # erased all the same
    assert (after["reminders"], after["devices"], after["stored"]) == ([], [], [])
    assert db.execute("SELECT count(*) FROM events WHERE user_id = %s AND google_calendar_id IS NOT NULL",
                      (family.anna,)).fetchone() == (0,)


def test_a_revoked_grant_is_asked_once_and_every_entry_reported(db: psycopg.Connection[Any], db_url: str,
                                                               google: GoogleStandIn) -> None:
    family = _family(db, google)
    google.revoke(ANNA_REFRESH)
    refreshes = google.refreshes[ANNA_REFRESH]

    done = worker("forget-user", family.anna, "--yes", env=clean_env(DATABASE_URL=db_url, **google_env(google)))
    assert done.returncode == 0, done.stderr
    assert google.refreshes[ANNA_REFRESH] == refreshes + 1
    assert done.stdout.count("not deleted: event") == 3  # the two entries and the one looked for
    assert "Google access was revoked" in done.stdout
    assert _snapshot(db, family.anna)["reminders"] == []


def test_without_google_configured_the_entries_stay_and_the_erasure_goes_on(db: psycopg.Connection[Any],
                                                                           db_url: str,
                                                                           google: GoogleStandIn) -> None:
    family = _family(db, google)
    requests = len(google.requests)
    done = worker("forget-user", family.anna, "--yes", env=clean_env(DATABASE_URL=db_url))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == (
        "Google Calendar: 2 entries cannot be deleted: Google is not configured here (GOOGLE_CLIENT_ID and"
        " GOOGLE_CLIENT_SECRET, or the service account); they stay in the parent's calendar")
    assert len(google.requests) == requests
    assert _snapshot(db, family.anna)["devices"] == []


def test_a_parent_whose_event_a_pass_holds_is_not_erased_yet(db: psycopg.Connection[Any], db_url: str,
                                                            google: GoogleStandIn) -> None:
    family = _family(db, google)
    db.execute("UPDATE events SET claim_id = gen_random_uuid(), lease_expires_at = now() + interval '5 minutes'"
               " WHERE id = %s", (family.retrying,))
    before = _snapshot(db)
    requests = len(google.requests)
    env = clean_env(DATABASE_URL=db_url, **google_env(google))

    dry = worker("forget-user", family.anna, env=env)
    assert dry.returncode == 0, dry.stderr
    assert "a pass is working on 1 event of theirs right now" in dry.stdout
    done = worker("forget-user", family.anna, "--yes", env=env)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("forget-user: a pass is working on 1 event of this parent right now (its lease ends at")
    assert line.endswith("nothing was changed: try again after that")
    assert _snapshot(db) == before
    assert len(google.requests) == requests


def test_deleting_the_auth_user_afterwards_still_cascades(db: psycopg.Connection[Any], env_for: EnvFor,
                                                          google: GoogleStandIn) -> None:
    family = _family(db, google)
    seed.add_child(db, family.anna)
    assert worker("forget-user", family.anna, "--yes", env=env_for(google)).returncode == 0
    db.execute("DELETE FROM auth.users WHERE id = %s", (family.anna,))
    for table in ("profiles WHERE id", "events WHERE user_id", "children WHERE user_id", "reminders WHERE user_id"):
        assert db.execute(f"SELECT count(*) FROM {table} = %s", (family.anna,)).fetchone() == (0,), table
    assert db.execute("SELECT count(*) FROM events WHERE user_id = %s", (family.ben,)).fetchone() == (1,)
    done = worker("export-user", family.anna, env=env_for())
    assert done.returncode == 1


def test_an_entry_a_crashed_pass_left_unrecorded_is_found_and_deleted(db: psycopg.Connection[Any], db_url: str,
                                                                     google: GoogleStandIn) -> None:
    family = _family(db, google)
    crashed = _event(db, family.anna, "Birthday party", status="pending")
    _put_entry(google, ANNA_REFRESH, crashed)  # Google stored it; the pass died before the database heard
    db.execute("UPDATE events SET claim_id = gen_random_uuid(), lease_expires_at = now() - interval '1 minute'"
               " WHERE id = %s", (crashed,))

    done = worker("forget-user", family.anna, "--yes", env=clean_env(DATABASE_URL=db_url, **google_env(google)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == (
        "Google Calendar: 2 entries: 2 deleted; 2 events without a recorded id looked for, 1 found and deleted")
    assert _entry_status(google, ANNA, crashed) == "cancelled"


def test_push_tokens_are_masked_to_at_most_their_last_four_characters(db: psycopg.Connection[Any]) -> None:
    cases = {
        "ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]": "ExponentPushToken[***xxxx]",
        "ExpoPushToken[abcdefgh1234]": "ExpoPushToken[***1234]",
        "ExponentPushToken[short]": "ExponentPushToken[***]",
        "ExponentPushToken[]": "ExponentPushToken[***]",
        "fcm:some-raw-device-token-9876": "***9876",
        "tiny-token": "***",
        "": "***",
    }
    for token, masked in cases.items():
        assert db.execute("SELECT worker.mask_push_token(%s)", (token,)).fetchone() == (masked,), token
    assert db.execute("SELECT worker.mask_push_token(NULL)").fetchone() == (None,)


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_only_the_service_role_may_call_them(db: psycopg.Connection[Any], role: str) -> None:
    user = seed.add_parent(db, refresh_token=ANNA_REFRESH)
    for function in ("worker_export_user(uuid)", "worker_forget_user(uuid, boolean)",
                     "worker_forget_user_calendar(uuid)"):
        allowed = db.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE'),"
                             " has_function_privilege('service_role', %s, 'EXECUTE')",
                             (role, f"public.{function}", f"public.{function}")).fetchone()
        assert allowed == (False, True), function
    db.execute(f"SET ROLE {role}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("SELECT public.worker_forget_user_calendar(%s)", (user,))
