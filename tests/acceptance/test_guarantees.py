"""The contract's guarantees through `python worker/main.py`, one scenario each.

* Poison rows fail alone: a value Python cannot hold (year 10000, infinity), an unknown time zone,
  times out of order - in the events step, the push step, the receipts step and `status`.
* An edit never loses a reminder that is due; a moved event's due reminder goes out once.
* A late pass sends one reminder per event, not a pile (older overdue ones are 'superseded').
* Expo answers about the whole project: a request mixing projects is split; credential errors
  defer reminders (no attempt burnt), exit 1, and say so in history, `status` and `check`.
* Secrets stay out of rows and logs; bad configuration exits 2 with one line.

Everything is real: the worker as a subprocess, Postgres, the Expo and Google stand-ins over HTTP.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from standins.expo import ExpoStandIn
from tests import seed
from tests.acceptance.cli import clean_env, worker
from tests.acceptance.faults import (
    delivered,
    event,
    expo_tickets,
    has_secret_assignment,
    messages_for,
    post_form,
    reminder,
    reminders_of,
    replica_role,
    stderr_lines,
)
from tests.integration.test_receipts import due_reminder

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
YEAR_10000 = "'10000-01-01 00:00+00'::timestamptz"


def _env(db_url: str, expo: ExpoStandIn, **extra: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0", **extra)


def _run(env: dict[str, str], at: datetime, expect: int | None = 0) -> str:
    done = worker("run", "--now", at.isoformat(), env=env)
    if expect is not None:
        assert done.returncode == expect, f"exit {done.returncode}, expected {expect}:\n{done.stderr[-4000:]}"
    return done.stderr


def _raw_event(db: psycopg.Connection[Any], user_id: str, start_sql: str, end_sql: str,
               title: str = "Far future") -> str:
    """An event whose times are SQL expressions (Python's datetime cannot hold them)."""
    row = db.execute(
        f"INSERT INTO public.events (user_id, title, start_ts, end_ts, location) "
        f"VALUES (%s, %s, {start_sql}, {end_sql}, 'Gym') RETURNING id", (user_id, title)).fetchone()
    assert row is not None
    return str(row[0])


def _synced(db: psycopg.Connection[Any], event_id: str) -> None:
    db.execute("UPDATE public.events SET status = 'synced', synced_version = version WHERE id = %s", (event_id,))


def _due_reminder_for(db: psycopg.Connection[Any], event_id: str, user_id: str, at: datetime) -> str:
    row = db.execute("INSERT INTO public.reminders (event_id, user_id, notify_at_ts, message) "
                     "VALUES (%s, %s, %s, 'planned') RETURNING id", (event_id, user_id, at)).fetchone()
    assert row is not None
    return str(row[0])


def _last_run(db: psycopg.Connection[Any]) -> tuple[int, str | None]:
    row = db.execute("SELECT exit_code, error FROM public.worker_runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row is not None, "the pass left no history row"
    return int(row[0]), row[1]


def _lower(value: Any) -> str:
    return str(value or "").lower()


def _outcome(db: psycopg.Connection[Any], table: str, row_id: str) -> tuple[str, str | None]:
    """(status, error_message) of a row whose timestamps Python may not be able to load."""
    row = db.execute(f"SELECT status, error_message FROM public.{table} WHERE id = %s", (row_id,)).fetchone()
    assert row is not None
    return str(row[0]), row[1]


def _names_expo_credentials(text: str | None) -> bool:
    """Whether an operator's text points at Expo credentials (the push credentials, or the
    access token EXPO_ACCESS_TOKEN that Expo refused)."""
    lowered = _lower(text)
    return "expo" in lowered and any(w in lowered for w in ("credential", "access token", "access_token"))


# --- poison rows fail alone --------------------------------------------------------------------


def test_events_python_cannot_hold_fail_alone_and_the_pass_goes_on(db: psycopg.Connection[Any], db_url: str,
                                                                   expo: ExpoStandIn) -> None:
    good = seed.add_parent(db)
    fine = seed.add_event(db, good, NOW + timedelta(hours=5))
    backwards = seed.add_event(db, good, NOW + timedelta(hours=6), end=NOW + timedelta(hours=4))
    far = seed.add_parent(db)
    y10k = _raw_event(db, far, YEAR_10000, "'10000-01-01 01:00+00'::timestamptz")
    forever = _raw_event(db, far, "'infinity'::timestamptz", "'infinity'::timestamptz", title="Forever")
    seed.add_due_reminders(db, 5, NOW, users=5)  # the push step of the same pass has work too

    _run(_env(db_url, expo), NOW)

    assert event(db, fine)["status"] == "synced"
    assert len(reminders_of(db, fine)) == 2  # 3h and 30m; 24h already past
    assert seed.statuses(db).get("sent") == 5 and len(delivered(expo)) == 5
    bad = {name: _outcome(db, "events", eid)
           for name, eid in (("y10k", y10k), ("forever", forever), ("backwards", backwards))}
    assert {name: status for name, (status, _) in bad.items()} == {n: "failed" for n in bad}
    assert any(word in _lower(bad["y10k"][1]) for word in ("10000", "start_ts")), bad["y10k"]
    assert any(word in _lower(bad["forever"][1]) for word in ("infinity", "start_ts")), bad["forever"]
    assert "before start_ts" in _lower(bad["backwards"][1])


def test_an_unknown_time_zone_fails_its_event_alone(db: psycopg.Connection[Any], db_url: str,
                                                    expo: ExpoStandIn) -> None:
    lost = seed.add_parent(db)
    with replica_role(db):  # the profiles trigger refuses unknown zones; plant one past it
        db.execute("UPDATE public.profiles SET timezone = 'Mars/Olympus_Mons' WHERE id = %s", (lost,))
    stranded = seed.add_event(db, lost, NOW + timedelta(hours=5))
    good = seed.add_parent(db, timezone="Europe/Berlin")
    fine = seed.add_event(db, good, NOW + timedelta(hours=5))

    _run(_env(db_url, expo), NOW)

    row = event(db, stranded)
    assert row["status"] == "failed", row
    message = _lower(row["error_message"])
    assert "time zone" in message or "timezone" in message, row["error_message"]
    assert event(db, fine)["status"] == "synced"
    assert len(reminders_of(db, fine)) == 2


def test_a_due_reminder_whose_owner_has_an_unknown_time_zone_fails_alone(db: psycopg.Connection[Any], db_url: str,
                                                                       expo: ExpoStandIn) -> None:
    seed.add_due_reminders(db, 30, NOW, users=3)
    lost = seed.add_parent(db)
    with replica_role(db):
        db.execute("UPDATE public.profiles SET timezone = 'Mars/Olympus_Mons' WHERE id = %s", (lost,))
    stranded = seed.add_event(db, lost, NOW + timedelta(hours=1))
    _synced(db, stranded)
    poison = _due_reminder_for(db, stranded, lost, NOW - timedelta(minutes=1))

    _run(_env(db_url, expo), NOW)

    assert seed.statuses(db) == {"sent": 30, "failed": 1}
    assert poison not in delivered(expo)
    row = reminder(db, poison)
    assert (row["status"], row["error_kind"]) == ("failed", "timezone")
    assert "Mars/Olympus_Mons" in row["error_message"]


def test_a_due_reminder_of_an_undecodable_event_fails_alone(db: psycopg.Connection[Any], db_url: str,
                                                            expo: ExpoStandIn) -> None:
    seed.add_due_reminders(db, 250, NOW, users=10)
    owner = seed.add_parent(db)
    far = _raw_event(db, owner, YEAR_10000, "'10000-01-01 01:00+00'::timestamptz")
    _synced(db, far)
    poison = _due_reminder_for(db, far, owner, NOW - timedelta(minutes=1))

    _run(_env(db_url, expo), NOW)

    assert seed.statuses(db) == {"sent": 250, "failed": 1}
    counts = delivered(expo)
    assert len(counts) == 250 and max(counts.values()) == 1
    assert poison not in counts
    row = reminder(db, poison)
    assert row["status"] == "failed"
    assert any(word in _lower(row["error_message"]) for word in ("10000", "start_ts")), row["error_message"]


def test_the_receipts_step_sets_an_undecodable_row_aside(db: psycopg.Connection[Any], db_url: str,
                                                          expo: ExpoStandIn) -> None:
    start = NOW + timedelta(days=2)
    fine = [due_reminder(db, "receipt-ok", start=start)[2] for _ in range(3)]
    poison = due_reminder(db, "receipt-ok", start=start)[2]
    env = _env(db_url, expo)
    _run(env, NOW)
    assert seed.statuses(db) == {"sent": 4}
    # What the receipts claim reads: the device's ticket (worker.push_tickets).
    db.execute("UPDATE worker.push_tickets SET sent_at = '-infinity' WHERE reminder_id = %s", (poison,))

    _run(env, NOW + timedelta(minutes=16))

    assert [reminder(db, rid)["receipt_status"] for rid in fine] == ["ok", "ok", "ok"]
    row = db.execute("SELECT status, receipt_status, error_message FROM public.reminders WHERE id = %s",
                     (poison,)).fetchone()
    assert row is not None
    status, receipt, error = row
    # Set aside: failed, or (Expo did accept it) settled with no receipt to wait for; never left
    # in the queue of receipts to check, where every pass would trip over it again.
    assert status == "failed" or (status == "sent" and receipt in ("unknown", "error")), row
    assert any(word in _lower(error) for word in ("sent_at", "infinity")), error


def test_status_prints_with_an_undecodable_row(db: psycopg.Connection[Any], db_url: str) -> None:
    now = datetime.now(UTC)
    parent = seed.add_parent(db)
    ev = seed.add_event(db, parent, now + timedelta(hours=3))
    _due_reminder_for(db, ev, parent, now - timedelta(minutes=5))
    db.execute("INSERT INTO public.reminders (event_id, user_id, notify_at_ts, message) "
               "VALUES (%s, %s, '-infinity', 'planned')", (ev, parent))

    done = worker("status", env=clean_env(DATABASE_URL=db_url))

    assert done.returncode == 0, done.stderr[-3000:]
    assert "due now" in done.stdout
    assert "Traceback" not in done.stderr


# --- an edit never loses a reminder that is due --------------------------------------------------


def _planned_event(db: psycopg.Connection[Any], env: dict[str, str], **kw: Any) -> tuple[str, str, dict[str, Any]]:
    """A parent (UTC) and an event at NOW+5h, planned by a pass at NOW: (parent, event, 3h reminder)."""
    parent = seed.add_parent(db)
    child = kw.pop("child", None)
    child_id = seed.add_child(db, parent, child) if child else None
    ev = seed.add_event(db, parent, NOW + timedelta(hours=5), child_id=child_id, **kw)
    _run(env, NOW)
    rows = reminders_of(db, ev)
    assert [r["notify_at_ts"] for r in rows] == [NOW + timedelta(hours=2), NOW + timedelta(hours=4, minutes=30)]
    return parent, ev, rows[0]


def test_a_title_edit_keeps_the_reminder_that_just_came_due(db: psycopg.Connection[Any], db_url: str,
                                                            expo: ExpoStandIn) -> None:
    env = _env(db_url, expo)
    _, ev, due = _planned_event(db, env, title="Soccer practice")
    at = NOW + timedelta(hours=2, minutes=1)  # the 3h reminder came due a minute ago, no pass since
    db.execute("UPDATE public.events SET title = 'Soccer match' WHERE id = %s", (ev,))

    _run(env, at)

    sent = messages_for(expo, ev)
    assert len(sent) == 1, "the due reminder must still go out, once"
    assert sent[0]["data"]["reminder_id"] == str(due["id"])
    assert "Soccer match" in sent[0]["title"]
    row = reminder(db, str(due["id"]))
    assert (row["status"], row["notify_at_ts"]) == ("sent", due["notify_at_ts"])
    later = [r for r in reminders_of(db, ev) if r["id"] != due["id"]]
    assert [(r["status"], r["notify_at_ts"]) for r in later] == [("pending", NOW + timedelta(hours=4, minutes=30))]


def test_a_location_edit_keeps_a_reminder_waiting_for_its_next_try(db: psycopg.Connection[Any], db_url: str,
                                                                   expo: ExpoStandIn) -> None:
    env = _env(db_url, expo, PUSH_REQUEST_ATTEMPTS="1")
    _, ev, due = _planned_event(db, env, location="Field 4")
    at = NOW + timedelta(hours=2, minutes=1)
    expo.fail_next(1, status=503)
    _run(env, at, expect=1)  # Expo down for the whole pass
    waiting = reminder(db, str(due["id"]))
    assert (waiting["status"], waiting["retry_count"]) == ("pending", 1)
    assert waiting["next_attempt_at"] > at
    db.execute("UPDATE public.events SET location = 'Field 7 (north gate)' WHERE id = %s", (ev,))

    _run(env, waiting["next_attempt_at"] + timedelta(seconds=1))

    sent = messages_for(expo, ev)
    assert len(sent) == 1, "the reminder waiting for its next try must still go out, once"
    assert sent[0]["data"]["reminder_id"] == str(due["id"])
    assert "Field 7 (north gate)" in sent[0]["body"]
    assert reminder(db, str(due["id"]))["status"] == "sent"


def test_deleting_the_child_keeps_the_due_reminder(db: psycopg.Connection[Any], db_url: str,
                                                   expo: ExpoStandIn) -> None:
    env = _env(db_url, expo)
    _, ev, due = _planned_event(db, env, child="Emma")
    assert "(Emma)" in due["message"]
    db.execute("DELETE FROM public.children WHERE id = (SELECT child_id FROM public.events WHERE id = %s)", (ev,))
    assert event(db, ev)["status"] == "pending"  # the app's edit: the event goes back to the worker

    _run(env, NOW + timedelta(hours=2, minutes=1))

    sent = messages_for(expo, ev)
    assert len(sent) == 1, "the due reminder must still go out after its child was deleted"
    assert sent[0]["data"]["reminder_id"] == str(due["id"])
    assert "Emma" not in sent[0]["title"] and "Soccer practice" in sent[0]["title"]


def test_a_moved_event_sends_its_due_reminder_once_with_the_new_time(db: psycopg.Connection[Any], db_url: str,
                                                                     expo: ExpoStandIn) -> None:
    env = _env(db_url, expo)
    _, ev, due = _planned_event(db, env)  # starts 14:00 UTC; reminders at 11:00 and 13:30
    _, started, _ = _planned_event(db, env)
    at = NOW + timedelta(hours=2, minutes=1)  # 11:01: both 11:00 reminders are due, unsent
    db.execute("UPDATE public.events SET start_ts = %s, end_ts = %s WHERE id = %s",
               (NOW + timedelta(hours=6), NOW + timedelta(hours=7), ev))  # now 15:00
    db.execute("UPDATE public.events SET start_ts = %s, end_ts = %s WHERE id = %s",
               (at - timedelta(minutes=5), at + timedelta(minutes=55), started))  # has started

    _run(env, at)

    sent = messages_for(expo, ev)
    assert len(sent) == 1, "the reminder due for the old time goes out once"
    assert sent[0]["data"]["reminder_id"] == str(due["id"])
    assert "15:00" in sent[0]["body"] and "14:00" not in sent[0]["body"], sent[0]["body"]
    times = sorted(r["notify_at_ts"] for r in reminders_of(db, ev) if r["status"] == "pending")
    assert times == [NOW + timedelta(hours=3), NOW + timedelta(hours=5, minutes=30)]  # 12:00 and 14:30

    for t in (NOW + timedelta(hours=3, minutes=1), NOW + timedelta(hours=4, minutes=31),
              NOW + timedelta(hours=5, minutes=31)):
        _run(env, t)
    counts = delivered(expo)
    assert len(messages_for(expo, ev)) == 3 and all(counts[str(r["id"])] <= 1 for r in reminders_of(db, ev))
    assert messages_for(expo, started) == []  # an event that has started is not reminded of
    assert all(r["status"] != "sent" for r in reminders_of(db, started))


# --- a late pass sends one reminder, not a pile ------------------------------------------------


def test_a_late_pass_sends_only_the_latest_overdue_reminder(db: psycopg.Connection[Any], db_url: str,
                                                            expo: ExpoStandIn) -> None:
    env = _env(db_url, expo)
    parent = seed.add_parent(db)
    all_three = seed.add_event(db, parent, NOW + timedelta(hours=25))
    two = seed.add_event(db, parent, NOW + timedelta(hours=26))
    created_late = seed.add_event(db, parent, NOW + timedelta(hours=5))
    _run(env, NOW)
    assert len(reminders_of(db, all_three)) == len(reminders_of(db, two)) == 3
    assert [r["notify_at_ts"] for r in reminders_of(db, created_late)] == [
        NOW + timedelta(hours=2), NOW + timedelta(hours=4, minutes=30)]  # no 24h reminder: its time had passed

    late = NOW + timedelta(hours=24, minutes=40)  # no pass for almost a day
    _run(env, late)

    a24, a3, a30 = reminders_of(db, all_three)
    assert [m["data"]["reminder_id"] for m in messages_for(expo, all_three)] == [str(a30["id"])]
    b24, b3, b30 = reminders_of(db, two)
    assert [m["data"]["reminder_id"] for m in messages_for(expo, two)] == [str(b3["id"])]
    for older in (a24, a3, b24):
        assert (older["status"], older["sent_at_ts"]) == ("expired", None), older
        assert older.get("error_kind") == "superseded", older
    assert b30["status"] == "pending"
    _run(env, NOW + timedelta(hours=25, minutes=31))
    assert [m["data"]["reminder_id"] for m in messages_for(expo, two)] == [str(b3["id"]), str(b30["id"])]


# --- Expo answers that concern the whole project --------------------------------------------------


def test_a_request_mixing_expo_projects_is_split_and_sent(db: psycopg.Connection[Any], db_url: str,
                                                         expo: ExpoStandIn) -> None:
    with ExpoStandIn() as probe:  # the stand-in refuses a mixed request, as Expo does
        status, answer = expo_tickets(probe.url, ["ExponentPushToken[probe-a]",
                                                  "ExponentPushToken[project-teachers-probe]"])
    assert status == 400 and answer["errors"][0]["code"] == "PUSH_TOO_MANY_EXPERIENCE_IDS", answer
    seed.add_due_reminders(db, 99, NOW, users=9)
    other = due_reminder(db, "project-teachers")[2]

    _run(_env(db_url, expo), NOW)

    assert seed.statuses(db) == {"sent": 100}
    counts = delivered(expo)
    assert len(counts) == 100 and max(counts.values()) == 1 and other in counts


def _assert_credentials_reported(db: psycopg.Connection[Any], env: dict[str, str], deferred: list[str],
                                 at: datetime) -> None:
    for rid in deferred:
        row = reminder(db, rid)
        assert (row["status"], row["retry_count"]) == ("pending", 0), row
        assert row["next_attempt_at"] is not None and row["next_attempt_at"] > at, row
    exit_code, error = _last_run(db)
    assert exit_code == 1
    assert _names_expo_credentials(error), error
    for rid in deferred:
        assert reminder(db, rid).get("error_kind") == "expo_credentials"
    status = worker("status", env=env)
    assert status.returncode == 0, status.stderr[-2000:]
    assert _names_expo_credentials(status.stdout), status.stdout
    check = worker("check", env=env)
    assert check.returncode != 0, check.stdout
    assert _names_expo_credentials(check.stdout + check.stderr), check.stdout + check.stderr


def test_expo_credential_ticket_errors_defer_and_exit_1(db: psycopg.Connection[Any], db_url: str,
                                                        expo: ExpoStandIn) -> None:
    with ExpoStandIn() as probe:
        status, answer = expo_tickets(probe.url, ["ExponentPushToken[ticket-badcreds-probe]",
                                                  "ExponentPushToken[ticket-mismatch-probe]"])
    assert status == 200, answer
    assert [t["details"]["error"] for t in answer["data"]] == ["InvalidCredentials", "MismatchSenderId"]
    good = [due_reminder(db, "fine") for _ in range(3)]
    bad = [due_reminder(db, "ticket-badcreds")[2], due_reminder(db, "ticket-mismatch")[2]]
    env = _env(db_url, expo)

    _run(env, NOW, expect=1)

    for _, token, rid in good:
        assert reminder(db, rid)["status"] == "sent"
        assert len(expo.sent_to(token)) == 1
    _assert_credentials_reported(db, env, bad, NOW)


def test_expo_refusing_the_access_token_defers_and_exits_1(db: psycopg.Connection[Any], db_url: str) -> None:
    rids = [due_reminder(db, "fine")[2] for _ in range(3)]
    with ExpoStandIn(access_token="right") as expo:
        env = _env(db_url, expo, EXPO_ACCESS_TOKEN="wrong")
        _run(env, NOW, expect=1)
        assert expo.messages == []
        assert {r.status for r in expo.requests} == {401}
        _assert_credentials_reported(db, env, rids, NOW)


# --- secrets and bad configuration -------------------------------------------------------------

CLIENT_SECRET = "GOCSPX-echoed-client-secret-5e1d"
WRONG_SECRET = "GOCSPX-mistyped-client-secret-77c2"


@pytest.mark.parametrize("case", ["revoked", "unknown", "wrong_client_secret"])
def test_google_echoing_the_token_request_leaks_no_secret(db: psycopg.Connection[Any], db_url: str,
                                                          expo: ExpoStandIn, case: str) -> None:
    """Google's token endpoint may quote the request (client_secret=..., refresh_token=...) in its
    error_description; none of it may reach events.error_message or the logs."""
    from standins.google import GoogleStandIn

    refresh = f"1//0g-{case}-refresh-token-{uuid.uuid4().hex[:10]}"
    configured = WRONG_SECRET if case == "wrong_client_secret" else CLIENT_SECRET
    with GoogleStandIn(client_secret=CLIENT_SECRET, echo_token_requests=True) as google:
        if case != "unknown":
            google.add_user("anna@example.com", refresh)
        if case == "revoked":
            google.revoke(refresh)
        status, text = post_form(google.token_uri, {"grant_type": "refresh_token", "client_id": google.client_id,
                                                    "client_secret": configured, "refresh_token": refresh})
        assert status in (400, 401) and configured in text and quote(refresh, safe="") in text, \
            f"the stand-in must echo the request: {text}"
        parent = seed.add_parent(db, refresh_token=refresh)
        ev = seed.add_event(db, parent, NOW + timedelta(days=2))
        env = _env(db_url, expo, GOOGLE_CLIENT_ID=google.client_id, GOOGLE_CLIENT_SECRET=configured,
                   GOOGLE_API_URL=google.api_url, GOOGLE_TOKEN_URI=google.token_uri)
        stderr = _run(env, NOW)

    row = event(db, ev)
    if case == "wrong_client_secret":  # our configuration, not the parent's grant: tried again later
        assert row["status"] != "synced" and row["error_message"], row
    else:
        assert row["status"] == "failed", row
    for text, where in ((str(row["error_message"] or ""), "events.error_message"), (stderr, "stderr")):
        assert configured not in text, f"{where}: {text}"
        assert refresh not in text and quote(refresh, safe="") not in text, f"{where}: {text}"
        assert not has_secret_assignment(text, "client_secret"), f"{where}: {text}"
        assert not has_secret_assignment(text, "refresh_token"), f"{where}: {text}"


def test_a_nul_in_an_expo_ticket_does_not_break_the_outcome_write(db: psycopg.Connection[Any], db_url: str,
                                                                  expo: ExpoStandIn) -> None:
    with ExpoStandIn() as probe:
        _, answer = expo_tickets(probe.url, ["ExponentPushToken[ticket-nul-probe]"])
    [ticket] = answer["data"]
    assert ticket["details"]["error"] == "MessageRateExceeded" and "\x00" in ticket["message"], ticket
    good = [due_reminder(db, "fine") for _ in range(4)]
    nul = due_reminder(db, "ticket-nul")[2]
    env = _env(db_url, expo)

    _run(env, NOW)

    row = reminder(db, nul)
    assert (row["status"], row["retry_count"]) == ("pending", 1), row
    assert "\x00" not in row["error_message"] and "MessageRateExceeded" in row["error_message"]
    assert [reminder(db, rid)["status"] for _, _, rid in good] == ["sent"] * 4
    _run(env, NOW + timedelta(minutes=10))  # leases of anything left 'sending' have lapsed by now
    assert [len(expo.sent_to(token)) for _, token, _ in good] == [1] * 4


def test_a_malformed_service_role_key_exits_2_without_echoing_it() -> None:
    done = worker("run", env=clean_env(SUPABASE_URL="http://127.0.0.1:9", SUPABASE_SERVICE_ROLE_KEY="not-a-key"))
    assert done.returncode == 2, done.stderr[-3000:]
    lines = stderr_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert "SUPABASE_SERVICE_ROLE_KEY" in lines[0] and "not-a-key" not in lines[0]


def test_a_bad_now_exits_2_with_one_line(db_url: str) -> None:
    done = worker("run", "--now", "yesterday", env=clean_env(DATABASE_URL=db_url))
    assert done.returncode == 2
    lines = stderr_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert "--now" in lines[0]


@pytest.mark.parametrize("interval", ["0", "-5", "0.5"])
def test_an_interval_below_one_second_exits_2(db_url: str, expo: ExpoStandIn, interval: str) -> None:
    import subprocess

    try:
        done = worker("run", "--loop", "--interval", interval, env=_env(db_url, expo), timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`run --loop --interval {interval}` kept running instead of exiting 2")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = stderr_lines(done.stderr)
    assert len(lines) == 1 and "--interval" in lines[0], done.stderr


def test_run_on_a_database_never_migrated_exits_2_and_says_migrate(empty_db_url: str, expo: ExpoStandIn) -> None:
    done = worker("run", "--now", NOW.isoformat(), env=_env(empty_db_url, expo))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "schema" in done.stderr.lower()
    assert re.search(r"\bmigrate\b", done.stderr), done.stderr
