"""What parents expect beyond the seed, through `python worker/main.py run` on both gateways:
their notification preferences, several devices, recurring events.

Each test seeds what the app writes (preferences, push_tokens rows, an event's recurrence), runs real
passes at chosen instants (``--now``) against a real database, the Expo stand-in and the Google
stand-in, and reads back what the worker did: the reminders table, the messages Expo received, the
calendar entries Google holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from standins.expo import ExpoStandIn
from standins.google import GoogleStandIn
from tests import seed
from tests.acceptance.cli import run_at as _run
from tests.acceptance.conftest import EnvFor
from worker.steps.calendar_entry import EVENT_ID_PROPERTY

BERLIN = ZoneInfo("Europe/Berlin")
# Preferences re-plan a parent's events that have not started by the database's clock: live events
# are placed in the real future.
SOON = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def google() -> Iterator[GoogleStandIn]:
    with GoogleStandIn() as standin:
        yield standin


def _prefer(db: psycopg.Connection[Any], user: str, **columns: Any) -> None:
    """Write the parent's preferences row the way the app does (an upsert of the columns it changes)."""
    names = ", ".join(columns)
    values = ", ".join(["%s"] * len(columns))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    db.execute(f"INSERT INTO notification_preferences (user_id, {names}) VALUES (%s, {values}) "
               f"ON CONFLICT (user_id) DO UPDATE SET {updates}", (user, *columns.values()))


def _reminders(db: psycopg.Connection[Any], event: str) -> list[dict[str, Any]]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM reminders WHERE event_id = %s ORDER BY notify_at_ts", (event,)).fetchall()


def _times(db: psycopg.Connection[Any], event: str, status: str = "pending") -> list[datetime]:
    return [r["notify_at_ts"] for r in _reminders(db, event) if r["status"] == status]


def _messages_for(expo: ExpoStandIn, event: str) -> list[dict[str, Any]]:
    return [m for m in expo.messages if m["data"]["event_id"] == event]


def _parent(db: psycopg.Connection[Any], google: GoogleStandIn | None = None, *, email: str = "anna@example.com",
            timezone: str = "UTC", token: str | None = "auto") -> str:
    refresh = None
    if google is not None:
        refresh = f"1//refresh-{email}"
        google.add_user(email, refresh)
    return seed.add_parent(db, token=token, timezone=timezone, refresh_token=refresh)


def _entries(google: GoogleStandIn, email: str, event: str) -> list[dict[str, Any]]:
    return [e for e in google.events(email).values()
            if e.get("extendedProperties", {}).get("private", {}).get(EVENT_ID_PROPERTY) == event]


# --- preferences: lead times ------------------------------------------------------------------------


def test_a_parents_lead_times_replace_the_defaults_and_a_change_replans(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn) -> None:
    anna, ben = _parent(db), _parent(db)
    _prefer(db, anna, reminder_offsets=["1 hour"])
    start = SOON
    hers, his = seed.add_event(db, anna, start), seed.add_event(db, ben, start)
    env = env_for(EXPO_API_URL=expo.url)
    now = start - timedelta(days=2)

    _run(env, now)
    assert _times(db, hers) == [start - timedelta(hours=1)]
    assert _times(db, his) == [start - timedelta(days=1), start - timedelta(hours=3), start - timedelta(minutes=30)]

    _prefer(db, anna, reminder_offsets=["2 hours", "15 minutes"])
    summary = _run(env, now + timedelta(minutes=1))
    assert (summary["reminders_planned"], summary["reminders_unplanned"]) == (2, 1)
    assert _times(db, hers) == [start - timedelta(hours=2), start - timedelta(minutes=15)]

    _prefer(db, anna, reminder_offsets=None)  # back to the defaults
    _run(env, now + timedelta(minutes=2))
    assert _times(db, hers) == _times(db, his)


def test_lead_times_the_worker_cannot_plan_are_refused_by_the_table(db: psycopg.Connection[Any]) -> None:
    anna = _parent(db)
    for bad in (["0 minutes"], ["30 days"], [f"{n} minutes" for n in range(1, 12)], []):
        with pytest.raises(psycopg.errors.CheckViolation):
            _prefer(db, anna, reminder_offsets=bad)
    with pytest.raises(psycopg.errors.CheckViolation):
        _prefer(db, anna, quiet_hours_start=time(21))  # a start without an end


# --- preferences: pushes off, calendar off, a muted child ----------------------------------------------


def test_pushes_off_cancels_due_reminders_with_the_reason_and_the_calendar_goes_on(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn, google: GoogleStandIn) -> None:
    anna = _parent(db, google)
    _prefer(db, anna, push_enabled=False)
    event = seed.add_event(db, anna, SOON)
    env = env_for(google, EXPO_API_URL=expo.url)

    planned = _run(env, SOON - timedelta(days=2))
    assert (planned["events_synced"], planned["reminders_planned"]) == (1, 3)
    assert len(_entries(google, "anna@example.com", event)) == 1
    due = _run(env, SOON - timedelta(minutes=29))
    assert (due["sent"], due["cancelled"]) == (0, 3)
    assert expo.messages == []
    rows = _reminders(db, event)
    assert {(r["status"], r["error_kind"]) for r in rows} == {("cancelled", "push_disabled")}
    assert all("turned push reminders off" in r["error_message"] for r in rows)

    # Turned back on: reminders that come due from then on are sent.
    later = seed.add_event(db, anna, SOON + timedelta(hours=4))
    _prefer(db, anna, push_enabled=True)
    _run(env, SOON - timedelta(minutes=28))
    _run(env, SOON + timedelta(hours=4) - timedelta(minutes=29))
    assert len(_messages_for(expo, later)) >= 1


def test_calendar_sync_off_makes_no_google_call_and_reminders_go_on(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn, google: GoogleStandIn) -> None:
    anna, ben = _parent(db, google), _parent(db, google, email="ben@example.com")
    _prefer(db, anna, calendar_sync_enabled=False)
    hers, his = seed.add_event(db, anna, SOON), seed.add_event(db, ben, SOON)
    env = env_for(google, EXPO_API_URL=expo.url)

    summary = _run(env, SOON - timedelta(days=2))
    assert summary["events_synced"] == 2
    assert google.refreshes["1//refresh-anna@example.com"] == 0  # no token refresh either
    assert all(r.owner != "anna@example.com" and r.principal != "anna@example.com" for r in google.requests)
    assert _entries(google, "anna@example.com", hers) == []
    assert len(_entries(google, "ben@example.com", his)) == 1
    row = db.execute("SELECT status, google_calendar_id FROM events WHERE id = %s", (hers,)).fetchone()
    assert row == ("synced", None)
    _run(env, SOON - timedelta(minutes=29))
    assert len(_messages_for(expo, hers)) == 1

    # Turned on again: the next pass puts the parent's live events into their calendar.
    _prefer(db, anna, calendar_sync_enabled=True)
    _run(env, SOON - timedelta(minutes=28))
    assert len(_entries(google, "anna@example.com", hers)) == 1


def test_a_muted_childs_events_get_no_push(db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn) -> None:
    anna = _parent(db)
    emma, noah = seed.add_child(db, anna, "Emma"), seed.add_child(db, anna, "Noah")
    _prefer(db, anna, muted_children=[noah])
    emmas = seed.add_event(db, anna, SOON, child_id=emma)
    noahs = seed.add_event(db, anna, SOON, child_id=noah, title="Piano")
    env = env_for(EXPO_API_URL=expo.url)

    _run(env, SOON - timedelta(days=2))
    summary = _run(env, SOON - timedelta(minutes=29))
    assert summary["sent"] == 1
    assert [m["data"]["event_id"] for m in expo.messages] == [emmas]
    noah_rows = _reminders(db, noahs)
    assert {(r["status"], r["error_kind"]) for r in noah_rows} == {("cancelled", "child_muted")}
    assert all("muted reminders for this child" in r["error_message"] for r in noah_rows)


# --- preferences: quiet hours --------------------------------------------------------------------------


def _local(day: datetime, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day.astimezone(BERLIN).date(), time(hour, minute), BERLIN).astimezone(UTC)


def test_quiet_hours_hold_a_reminder_or_move_it_before_they_begin(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn) -> None:
    anna = _parent(db, timezone="Europe/Berlin")
    _prefer(db, anna, quiet_hours_start=time(21), quiet_hours_end=time(7))
    day = SOON + timedelta(days=1)
    early = seed.add_event(db, anna, _local(day, 6, 30))  # starts inside quiet hours
    breakfast = seed.add_event(db, anna, _local(day, 8))  # starts an hour after they end
    env = env_for(EXPO_API_URL=expo.url)

    _run(env, SOON - timedelta(days=1))
    eve = _local(day - timedelta(days=1), 20, 59)
    # 24h before (06:30 the day before) is inside: held until 07:00. 3h (03:30) and 30 min (06:00)
    # before are inside too, and the event starts before quiet hours end: both move to 20:59 the
    # evening before and become one reminder.
    assert _times(db, early) == [_local(day - timedelta(days=1), 7), eve]
    # 3h before is 05:00, inside: held until 07:00; 30 min before (07:30) is outside.
    assert _times(db, breakfast) == [_local(day - timedelta(days=1), 8), _local(day, 7), _local(day, 7, 30)]

    before = day - timedelta(days=1)
    for moment in (_local(before, 7), _local(before, 8)):
        assert _run(env, moment + timedelta(seconds=30))["sent"] == 1
    expo.reset()
    sent = _run(env, eve + timedelta(seconds=30))
    assert sent["sent"] == 1
    assert [m["data"]["event_id"] for m in expo.messages] == [early]
    hours = {datetime.fromisoformat(r["notify_at_ts"].isoformat()).astimezone(BERLIN).hour
             for r in _reminders(db, breakfast) + _reminders(db, early)}
    assert not hours & {21, 22, 23, 0, 1, 2, 3, 4, 5, 6}  # nothing planned inside quiet hours


# --- several devices per parent --------------------------------------------------------------------


def test_a_reminder_goes_to_every_device_once_and_a_dead_one_is_forgotten_alone(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn) -> None:
    phone, tablet = "ExponentPushToken[anna-phone-0001]", "ExponentPushToken[anna-tablet-0002]"
    old = "ExponentPushToken[anna-unregistered-0003]"
    anna = _parent(db, token=phone)
    for token in (phone, tablet, old):  # the profile's token is listed again: it is sent to once
        db.execute("INSERT INTO push_tokens (user_id, token) VALUES (%s, %s)", (anna, token))
    event = seed.add_event(db, anna, SOON)
    env = env_for(EXPO_API_URL=expo.url)

    _run(env, SOON - timedelta(days=2))
    summary = _run(env, SOON - timedelta(minutes=29))
    assert (summary["sent"], summary["tokens_cleared"]) == (1, 1)
    assert [r.message_count for r in expo.requests] == [3]  # one Expo request, one message per device
    assert Counter(m["to"] for m in expo.messages) == Counter({phone: 1, tablet: 1})  # what Expo accepted
    row = _reminders(db, event)[-1]
    assert (row["status"], row["error_kind"]) == ("sent", None)
    kept = {t for (t,) in db.execute("SELECT token FROM push_tokens WHERE user_id = %s", (anna,))}
    assert kept == {phone, tablet}
    assert db.execute("SELECT expo_push_token FROM profiles WHERE id = %s", (anna,)).fetchone() == (phone,)

    # Receipts are asked for per device: both tickets settle the reminder as delivered.
    receipts = _run(env, SOON - timedelta(minutes=10))
    assert receipts["receipts_ok"] == 2
    row = _reminders(db, event)[-1]
    assert (row["status"], row["receipt_status"]) == ("sent", "ok")


def test_a_device_gone_by_its_receipt_is_forgotten_and_the_reminder_stays_delivered(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn) -> None:
    phone, gone = "ExponentPushToken[ben-phone-0001]", "ExponentPushToken[ben-receipt-unregistered-2]"
    ben = _parent(db, token=phone)
    db.execute("INSERT INTO push_tokens (user_id, token) VALUES (%s, %s)", (ben, gone))
    event = seed.add_event(db, ben, SOON)
    env = env_for(EXPO_API_URL=expo.url)

    _run(env, SOON - timedelta(days=2))
    assert _run(env, SOON - timedelta(minutes=29))["sent"] == 1
    receipts = _run(env, SOON - timedelta(minutes=10))
    assert (receipts["receipts_ok"], receipts["receipts_failed"], receipts["tokens_cleared"]) == (1, 1, 1)
    assert db.execute("SELECT count(*) FROM push_tokens WHERE user_id = %s", (ben,)).fetchone() == (0,)
    row = _reminders(db, event)[-1]
    assert (row["status"], row["receipt_status"]) == ("sent", "ok")


def test_every_device_gone_fails_the_reminder_and_clears_every_token(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn) -> None:
    phone, tablet = "ExponentPushToken[cleo-unregistered-01]", "ExponentPushToken[cleo-unregistered-02]"
    cleo = _parent(db, token=phone)
    db.execute("INSERT INTO push_tokens (user_id, token) VALUES (%s, %s)", (cleo, tablet))
    event = seed.add_event(db, cleo, SOON)
    env = env_for(EXPO_API_URL=expo.url)

    _run(env, SOON - timedelta(days=2))
    summary = _run(env, SOON - timedelta(minutes=29))
    assert (summary["failed"], summary["tokens_cleared"]) == (1, 2)
    row = _reminders(db, event)[-1]
    assert (row["status"], row["error_kind"]) == ("failed", "device_not_registered")
    assert db.execute("SELECT expo_push_token FROM profiles WHERE id = %s", (cleo,)).fetchone() == (None,)
    assert db.execute("SELECT count(*) FROM push_tokens WHERE user_id = %s", (cleo,)).fetchone() == (0,)


# --- recurring events --------------------------------------------------------------------------------

# Simulated days around Europe's spring-forward night (2027-03-28): the rule is expanded in the
# parent's zone, so 09:00 stays 09:00 on the clock while the UTC instant moves by an hour.
FIRST = datetime(2027, 3, 16, 9, 0, tzinfo=BERLIN)  # a Tuesday
MONDAY = datetime(2027, 3, 22, 12, 0, tzinfo=UTC)


def _recurring(db: psycopg.Connection[Any], user: str, rule: str, *, title: str = "Swim practice") -> str:
    row = db.execute("INSERT INTO events (user_id, title, start_ts, end_ts, location, recurrence) "
                     "VALUES (%s, %s, %s, %s, 'Pool', %s) RETURNING id",
                     (user, title, FIRST, FIRST + timedelta(hours=1), rule)).fetchone()
    assert row is not None
    return str(row[0])


def _occurrences(db: psycopg.Connection[Any], event: str, status: str = "pending") -> list[datetime]:
    return sorted({r["occurs_at"] for r in _reminders(db, event) if r["status"] == status})


def test_a_weekly_practice_stays_at_nine_local_across_daylight_saving_with_one_calendar_entry(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn, google: GoogleStandIn) -> None:
    anna = _parent(db, google, timezone="Europe/Berlin")
    _prefer(db, anna, reminder_offsets=["30 minutes"])
    event = _recurring(db, anna, "FREQ=WEEKLY;BYDAY=TU,TH;UNTIL=20270430")
    env = env_for(google, EXPO_API_URL=expo.url, RECURRENCE_HORIZON_DAYS="14")

    summary = _run(env, MONDAY)
    assert summary["events_synced"] == 1
    [entry] = _entries(google, "anna@example.com", event)
    assert entry["recurrence"] == ["RRULE:FREQ=WEEKLY;BYDAY=TU,TH;UNTIL=20270430T215959Z"]
    assert entry["start"] == {"dateTime": "2027-03-16T09:00:00+01:00", "timeZone": "Europe/Berlin"}
    occurrences = _occurrences(db, event)
    assert occurrences[0] == datetime(2027, 3, 23, 8, 0, tzinfo=UTC)  # 09:00 CET
    assert datetime(2027, 3, 30, 7, 0, tzinfo=UTC) in occurrences  # 09:00 CEST
    assert {o.astimezone(BERLIN).time() for o in occurrences} == {time(9)}
    assert {o.astimezone(BERLIN).strftime("%a") for o in occurrences} == {"Tue", "Thu"}
    assert _times(db, event) == [o - timedelta(minutes=30) for o in occurrences]
    assert occurrences[-1] <= MONDAY + timedelta(days=14 + 2)
    row = db.execute("SELECT planned_until FROM events WHERE id = %s", (event,)).fetchone()
    assert row is not None  # --now starts the pass's clock, which then runs: a few seconds at most
    assert MONDAY + timedelta(days=14) <= row[0] < MONDAY + timedelta(days=14, seconds=30)

    # A pass in between sends what is due and extends nothing yet (more than half the horizon left).
    tuesday = datetime(2027, 3, 23, 7, 31, tzinfo=UTC)
    quiet = _run(env, tuesday)
    assert (quiet["sent"], quiet["events_extended"]) == (1, 0)
    assert expo.messages[0]["data"]["event_id"] == event
    assert "09:00" in expo.messages[0]["body"] or "9:00" in expo.messages[0]["body"]

    # Eight days on, less than half the horizon is planned: the pass plans further, Google is not called.
    calls = len(google.requests)
    later = _run(env, MONDAY + timedelta(days=8))
    assert later["events_extended"] == 1
    assert len(google.requests) == calls
    after = _occurrences(db, event)
    assert after[-1] > occurrences[-1]
    assert max(after) <= MONDAY + timedelta(days=8 + 14 + 2)
    pairs = db.execute("SELECT notify_at_ts, count(*) FROM reminders WHERE event_id = %s GROUP BY 1 "
                       "HAVING count(*) > 1", (event,)).fetchall()
    assert pairs == []
    # The rule's UNTIL ends it: nothing is planned past 2027-04-30.
    _run(env, datetime(2027, 4, 25, 12, 0, tzinfo=UTC))
    assert max(_occurrences(db, event)) == datetime(2027, 4, 29, 7, 0, tzinfo=UTC)


def test_editing_the_rule_replans_unsent_reminders_and_cancelling_cancels_them_all(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn, google: GoogleStandIn) -> None:
    anna = _parent(db, google, timezone="Europe/Berlin")
    event = _recurring(db, anna, "FREQ=WEEKLY;BYDAY=TU,TH")
    env = env_for(google, EXPO_API_URL=expo.url)
    _run(env, MONDAY)
    assert {o.astimezone(BERLIN).strftime("%a") for o in _occurrences(db, event)} == {"Tue", "Thu"}

    db.execute("UPDATE events SET recurrence = 'FREQ=WEEKLY;BYDAY=WE' WHERE id = %s", (event,))
    edited = _run(env, MONDAY + timedelta(minutes=1))
    assert edited["events_synced"] == 1
    assert {o.astimezone(BERLIN).strftime("%a") for o in _occurrences(db, event)} == {"Wed"}
    [entry] = _entries(google, "anna@example.com", event)
    assert entry["recurrence"] == ["RRULE:FREQ=WEEKLY;BYDAY=WE"]

    db.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (event,))
    cancelled = _run(env, MONDAY + timedelta(minutes=2))
    assert cancelled["events_cancelled"] == 1
    assert _times(db, event) == []
    assert {r["status"] for r in _reminders(db, event)} == {"cancelled"}
    assert [e.get("status") for e in _entries(google, "anna@example.com", event)] in ([], ["cancelled"])
    # Cancelled, it is never extended again.
    assert _run(env, MONDAY + timedelta(days=10))["events_extended"] == 0
    assert _times(db, event) == []


@pytest.mark.parametrize(("rule", "reason"), [
    ("FREQ=FORTNIGHTLY", "FREQ"),
    ("FREQ=HOURLY", "not a family schedule"),
    ("FREQ=WEEKLY;COUNT=3;UNTIL=20270501", "COUNT"),
    ("FREQ=WEEKLY;UNTIL=20270101", "before the first start"),
    ("DTSTART:20270316T090000\nRRULE:FREQ=DAILY", "DTSTART"),
])
def test_a_malformed_rule_fails_that_event_alone_with_the_reason(
        db: psycopg.Connection[Any], env_for: EnvFor, expo: ExpoStandIn, google: GoogleStandIn,
        rule: str, reason: str) -> None:
    anna = _parent(db, google, timezone="Europe/Berlin")
    bad = _recurring(db, anna, rule, title="Broken")
    good = _recurring(db, anna, "FREQ=DAILY;COUNT=30")
    env = env_for(google, EXPO_API_URL=expo.url)

    summary = _run(env, MONDAY)
    assert (summary["events_failed"], summary["events_synced"]) == (1, 1)
    status, kind, message = db.execute("SELECT status, error_kind, error_message FROM events WHERE id = %s",
                                       (bad,)).fetchone() or (None, None, "")
    assert (status, kind) == ("failed", "invalid_row")
    assert isinstance(message, str)
    assert message.startswith("recurrence: ") and reason.lower() in message.lower()
    assert _reminders(db, bad) == []
    assert _entries(google, "anna@example.com", bad) == []
    assert len(_occurrences(db, good)) >= 14
    # Fixed by the parent: the next pass picks it up.
    db.execute("UPDATE events SET recurrence = 'FREQ=WEEKLY' WHERE id = %s", (bad,))
    _run(env, MONDAY + timedelta(minutes=1))
    assert db.execute("SELECT status FROM events WHERE id = %s", (bad,)).fetchone() == ("synced",)
