"""Installing onto the ParentPal database as it stands, through `python worker/main.py`.

The database is tests/appdb.py's: Supabase's auth.users with the tokens in raw_user_meta_data, the
user-management starter's public-read profiles, seed 004's events and reminders (its exact SQL) with
rows in every status, a parent without a profile. Then, as an operator would:

* `migrate`, then `check` (printed: `pytest -s` shows both);
* passes (`run --now`) through both gateways (DATABASE_URL, and the Data API stand-in): due adopted
  reminders go out once, with their stored text, to the owner's current token (profile, else
  metadata, else the row's own token); sent ones, ones the old system sent ('pending' with
  sent_at_ts) and ones in an unknown status never; pending events reach Google Calendar with the
  refresh token from metadata; a parent without a profile gets their reminders; DeviceNotRegistered
  clears the metadata token;
* `secure-tokens [--dry-run]`: refresh tokens leave the metadata for the worker's private store,
  with no moment where a token is in neither, and the worker keeps syncing with them.

Everything is real: the worker as a subprocess, PostgreSQL, the Expo, Google and PostgREST stand-ins.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from standins.expo import ExpoStandIn
from standins.google import GoogleStandIn
from standins.postgrest import PostgrestStandIn
from tests.acceptance.cli import clean_env, start_worker, worker
from tests.appdb import (
    NOW,
    App,
    AppDatabase,
    Parent,
    add_event,
    app_database,
    metadata,
    snapshot_rows,
    write_own_profile,
)
from worker.steps.calendar import EVENT_ID_PROPERTY, calendar_event_id

GATEWAYS = ["postgres", "data-api"]


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def app_db(pg_admin_url: str) -> Iterator[AppDatabase]:
    with app_database(pg_admin_url) as built:
        yield built


@pytest.fixture
def conn(app_db: AppDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(app_db.url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def app(app_db: AppDatabase, conn: psycopg.Connection[Any]) -> App:
    """The app database after `python worker/main.py migrate`, and Dana's new profile token written
    by Dana herself (the starter's profiles had no column for it before)."""
    done = worker("migrate", env=clean_env(DATABASE_URL=app_db.url))
    assert done.returncode == 0, done.stderr[-3000:]
    assert write_own_profile(conn, app_db.app.dana.id, expo_push_token=app_db.app.dana_profile_token) == 1
    return app_db.app


@pytest.fixture
def google() -> Iterator[GoogleStandIn]:
    with GoogleStandIn() as standin:
        yield standin


@pytest.fixture
def expo() -> Iterator[ExpoStandIn]:
    with ExpoStandIn() as standin:
        yield standin


@pytest.fixture(params=GATEWAYS)
def database(request: pytest.FixtureRequest, app_db: AppDatabase, app: App) -> Iterator[dict[str, str]]:
    """How a pass reaches the migrated app database: direct Postgres, or the Supabase Data API."""
    if request.param == "postgres":
        yield {"DATABASE_URL": app_db.url}
        return
    with PostgrestStandIn(app_db.url) as api:
        yield {"SUPABASE_URL": api.url, "SUPABASE_SERVICE_ROLE_KEY": api.service_role_key()}


@pytest.fixture
def env(database: dict[str, str], google: GoogleStandIn, expo: ExpoStandIn, app: App) -> dict[str, str]:
    """The worker's environment, Google knowing the parents whose refresh tokens are in metadata."""
    for parent in app.parents:
        if parent.refresh_token:
            google.add_user(parent.email, parent.refresh_token)
    return clean_env(**database, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0",
                     GOOGLE_CLIENT_ID=google.client_id, GOOGLE_CLIENT_SECRET=google.client_secret,
                     GOOGLE_API_URL=google.api_url, GOOGLE_TOKEN_URI=google.token_uri)


# --- helpers ----------------------------------------------------------------------------------------


def _run(env: dict[str, str], at: datetime) -> None:
    done = worker("run", "--now", at.isoformat(), env=env)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-4000:]}"


def _texts(message: dict[str, Any]) -> set[str]:
    """The ways a notification can carry a stored text: as its body, its title, or both lines."""
    title, body = str(message.get("title") or ""), str(message.get("body") or "")
    return {body, title, f"{title}\n{body}"}


def _for(expo: ExpoStandIn, reminder_id: str) -> list[dict[str, Any]]:
    return [m for m in list(expo.messages) if str(m.get("data", {}).get("reminder_id")) == reminder_id]


def _row(conn: psycopg.Connection[Any], table: str, row_id: str) -> dict[str, Any]:
    cur = conn.execute(sql.SQL("SELECT * FROM public.{} WHERE id = %s").format(sql.Identifier(table)), (row_id,))
    names = [c.name for c in cur.description or []]
    row = cur.fetchone()
    assert row is not None, f"{table} {row_id} is gone"
    return dict(zip(names, row, strict=True))


def _rows(conn: psycopg.Connection[Any], ids: list[str]) -> dict[str, dict[str, str | None]]:
    """Every column (the worker's too) of these events and reminders, as text."""
    snap = snapshot_rows(conn, ("public.events", "public.reminders"))
    return {i: row for table in snap.values() for i, row in table.items() if i in ids}


def _entries(google: GoogleStandIn, calendar: str, event_id: str) -> list[dict[str, Any]]:
    return [e for e in google.events(calendar).values()
            if e.get("extendedProperties", {}).get("private", {}).get(EVENT_ID_PROPERTY) == event_id]


def _in_private_store(conn: psycopg.Connection[Any], token: str) -> list[str]:
    """The tables of the private `worker` schema that hold ``token``."""
    tables = [str(t) for (t,) in conn.execute(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'worker'").fetchall()]
    return [t for t in tables
            if conn.execute(sql.SQL("SELECT count(*) FROM {} x WHERE strpos(x::text, %s) > 0").format(sql.SQL(t)),
                            (token,)).fetchone() != (0,)]


def _metadata_lines(stdout: str) -> list[str]:
    """`check`'s lines about refresh tokens kept in user metadata."""
    return [line for line in stdout.splitlines()
            if "metadata" in line.lower() and "refresh" in line.lower()]


def _worker_snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """auth.users and every table of the private schema, every column, as text."""
    tables = tuple(str(t) for (t,) in conn.execute(
        "SELECT format('%s.%s', schemaname, tablename) FROM pg_tables WHERE schemaname = 'worker' "
        "AND tablename NOT IN ('schema_migrations', 'schema_definitions') ORDER BY 1").fetchall())
    snap: dict[str, Any] = {"auth.users": snapshot_rows(conn, ("auth.users",))}
    for table in tables:
        snap[table] = sorted(str(r[0]) for r in conn.execute(
            sql.SQL("SELECT x::text FROM {} x").format(sql.SQL(table))).fetchall())
    return snap


def _refresh_token(parent: Parent) -> str:
    assert parent.refresh_token is not None
    return parent.refresh_token


# --- migrate and check on the database as it stands ------------------------------------------------------


def test_migrate_and_check_on_the_app_database_as_it_stands(app_db: AppDatabase,
                                                           conn: psycopg.Connection[Any]) -> None:
    env = clean_env(DATABASE_URL=app_db.url)
    before = worker("check", "--offline", env=env)
    print("\n$ python worker/main.py check    # before migrate\n" + before.stdout)
    assert before.returncode == 1, before.stderr[-3000:]
    assert "Traceback" not in before.stderr
    assert "migrate" in before.stdout

    migrated = worker("migrate", env=env)
    print("$ python worker/main.py migrate\n" + migrated.stdout)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert "001_tables.sql" in migrated.stdout

    check = worker("check", "--offline", env=env)
    print("$ python worker/main.py check\n" + check.stdout)
    assert check.returncode in (0, 1), check.stderr[-3000:]
    assert "Traceback" not in check.stderr
    assert re.search(r"schema version \d+", check.stdout), check.stdout
    lines = check.stdout.splitlines()
    # The rows in statuses the worker does not know, by status.
    assert any("archived" in line and "events" in line for line in lines), check.stdout
    assert any("delivered" in line and "reminders" in line for line in lines), check.stdout
    # Anna's and Ben's refresh tokens are in their user metadata; the line says what to run, legibly
    # (the secret scrubber must not eat plain words).
    [in_metadata] = _metadata_lines(check.stdout)
    assert re.search(r"\b2\b", in_metadata), check.stdout
    assert "secure-tokens" in in_metadata and "***" not in in_metadata, in_metadata

    again = worker("migrate", env=env)
    print("$ python worker/main.py migrate    # again\n" + again.stdout)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"applied 0 migration", again.stdout), again.stdout


def test_check_names_what_breaks_the_worker_or_exposes_a_token(app_db: AppDatabase, app: App,
                                                               conn: psycopg.Connection[Any]) -> None:
    last = conn.execute("DELETE FROM worker.schema_migrations WHERE version = "
                        "(SELECT max(version) FROM worker.schema_migrations) RETURNING filename").fetchone()
    assert last is not None
    conn.execute("GRANT SELECT (google_refresh_token) ON public.profiles TO anon")
    conn.execute("ALTER TABLE public.children DISABLE ROW LEVEL SECURITY")
    conn.execute("ALTER TABLE public.events DROP COLUMN next_attempt_at")
    conn.execute("""
        DO $$ DECLARE f regprocedure; BEGIN
            FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'worker_record_receipts' LOOP
                EXECUTE format('DROP FUNCTION %s', f);
            END LOOP;
        END $$""")

    check = worker("check", "--offline", env=clean_env(DATABASE_URL=app_db.url))

    assert check.returncode == 1, check.stdout + check.stderr[-3000:]
    assert "Traceback" not in check.stderr
    lines = [line.lower() for line in check.stdout.splitlines()]
    assert any("anon" in line and "google_refresh_token" in line for line in lines), check.stdout
    assert any("children" in line and ("row-level" in line or "row level" in line or "rls" in line)
               for line in lines), check.stdout
    assert any("next_attempt_at" in line for line in lines), check.stdout
    assert any("worker_record_receipts" in line for line in lines), check.stdout
    # The migration the database no longer records is pending.
    assert any("migrate" in line and (str(last[0]) in line or "behind" in line or "pending" in line)
               for line in lines), check.stdout


# --- passes over the adopted rows ------------------------------------------------------------------


def test_due_adopted_reminders_go_out_once_with_their_stored_text(app: App, conn: psycopg.Connection[Any],
                                                                  env: dict[str, str], expo: ExpoStandIn) -> None:
    untouched = [app.sent, app.delivered, app.archived, app.eve_failed]
    rows_before = _rows(conn, untouched)
    old_sent_before = _row(conn, "reminders", app.old_sent)

    _run(env, NOW)

    for reminder_id, token in app.due_reminders.items():
        sent = _for(expo, reminder_id)
        assert [m["to"] for m in sent] == [token], f"{reminder_id}: {sent}"
        assert app.messages[reminder_id] in _texts(sent[0]), sent[0]
        row = _row(conn, "reminders", reminder_id)
        assert (row["status"], row["sent_at_ts"] is not None) == ("sent", True), row
    # The owner's current token wins over the row's: nothing to Anna's old phone, Dana's metadata
    # token or Dana's row token.
    assert expo.sent_to("ExponentPushToken[anna-old-phone]") == []
    assert expo.sent_to(app.dana.push_token or "") == []
    assert expo.sent_to("ExponentPushToken[dana-row]") == []
    # Never: the sent one, the one the old system sent, the one in an unknown status; not yet: later.
    for reminder_id in (*app.never_sent, app.later):
        assert _for(expo, reminder_id) == [], reminder_id
    old_sent = _row(conn, "reminders", app.old_sent)
    assert old_sent["sent_at_ts"] == old_sent_before["sent_at_ts"]
    assert old_sent["status"] in ("pending", "sent"), old_sent
    assert _rows(conn, untouched) == rows_before
    # A synced event keeps its calendar entry and its reminders.
    soccer = _row(conn, "events", app.soccer)
    assert (soccer["status"], soccer["google_calendar_id"]) == ("synced", app.calendar_ids[app.soccer])
    assert {str(r[0]) for r in conn.execute("SELECT id FROM public.reminders WHERE event_id = %s",
                                            (app.soccer,))} == {app.sent, app.due, app.later}

    count = len(expo.messages)
    _run(env, NOW + timedelta(minutes=1))
    assert len(expo.messages) == count, expo.messages[count:]


def test_pending_events_sync_with_the_refresh_token_from_metadata(app: App, conn: psycopg.Connection[Any],
                                                                  env: dict[str, str], google: GoogleStandIn,
                                                                  expo: ExpoStandIn) -> None:
    _run(env, NOW)

    ben = _row(conn, "events", app.ben_pending)
    assert (ben["status"], ben["google_calendar_id"], ben["error_message"]) == \
           ("synced", calendar_event_id(app.ben_pending), None)
    [entry] = _entries(google, app.ben.email, app.ben_pending)
    assert entry["summary"] == "Swimming (Leo)"
    assert google.refreshes == {_refresh_token(app.ben): 1}
    # Only Ben's new event went to Google: no synced, failed or archived event was touched.
    assert [(r.method, r.owner) for r in google.requests] == [("POST", app.ben.email)]
    # Cara has no refresh token: no calendar, still synced, reminders still planned (3 h and 30 min).
    cara = _row(conn, "events", app.cara_pending)
    assert (cara["status"], cara["google_calendar_id"]) == ("synced", None)
    planned = conn.execute("SELECT event_id::text, notify_at_ts FROM public.reminders WHERE event_id IN (%s, %s) "
                           "ORDER BY 2", (app.ben_pending, app.cara_pending)).fetchall()
    assert [(e, t - NOW) for e, t in planned if e == app.cara_pending] == \
           [(app.cara_pending, timedelta(hours=2)), (app.cara_pending, timedelta(hours=4, minutes=30))]
    assert len([e for e, _ in planned if e == app.ben_pending]) == 3
    failed = _row(conn, "events", app.eve_failed)
    assert (failed["status"], failed["error_message"]) == ("failed", "Calendar API access denied")
    assert _row(conn, "events", app.archived)["status"] == "archived"


def test_a_refresh_token_in_the_profile_wins_over_metadata(app: App, conn: psycopg.Connection[Any],
                                                           env: dict[str, str], google: GoogleStandIn) -> None:
    google.add_user(app.anna.email, "1//anna-profile-grant")
    assert write_own_profile(conn, app.anna.id, google_refresh_token="1//anna-profile-grant") == 1
    event = add_event(conn, app.anna, "Violin", NOW + timedelta(days=2))

    _run(env, NOW)

    assert len(_entries(google, app.anna.email, event)) == 1
    assert google.refreshes["1//anna-profile-grant"] == 1
    assert google.refreshes[_refresh_token(app.anna)] == 0


def test_planned_reminders_reach_parents_through_their_metadata(app: App, conn: psycopg.Connection[Any],
                                                                env: dict[str, str], expo: ExpoStandIn) -> None:
    _run(env, NOW)
    _run(env, NOW + timedelta(hours=2, minutes=1))  # Cara's 3 h reminder and Anna's adopted 30 min one

    [cara] = expo.sent_to(app.cara.push_token or "")
    assert cara["data"]["event_id"] == app.cara_pending
    assert cara["title"] == "Dentist"
    # Her time zone is in metadata (the profile's default 'UTC' counts as not set): 14:00 UTC is
    # 9:00 AM in New York.
    assert "9:00 AM" in cara["body"], cara
    [later] = _for(expo, app.later)
    assert later["to"] == app.anna.push_token
    assert app.messages[app.later] in _texts(later)

    _run(env, NOW + timedelta(days=1, minutes=1))  # Ben's 24 h reminder; Ben has no profile row

    ben = [m for m in expo.sent_to(app.ben.push_token or "") if m["data"]["event_id"] == app.ben_pending]
    assert len(ben) == 1, ben
    assert ben[0]["title"] == "Swimming (Leo)"
    assert _for(expo, app.old_sent) == [] and _for(expo, app.delivered) == []


def test_device_not_registered_clears_the_metadata_token(app: App, conn: psycopg.Connection[Any],
                                                         env: dict[str, str], expo: ExpoStandIn) -> None:
    assert metadata(conn, app.finn.id)["expo_push_token"] == app.finn.push_token

    _run(env, NOW)

    row = _row(conn, "reminders", app.finn_due)
    assert (row["status"], row["error_kind"]) == ("failed", "device_not_registered"), row
    left = metadata(conn, app.finn.id)
    assert left.get("expo_push_token") is None, left
    assert left.get("timezone") == "UTC"  # the rest of the metadata stays
    # Nobody else lost a token.
    assert metadata(conn, app.anna.id) == app.anna.metadata
    assert metadata(conn, app.ben.id) == app.ben.metadata


def test_device_not_registered_keeps_a_token_the_parent_changed_meanwhile(app: App, conn: psycopg.Connection[Any],
                                                                         env: dict[str, str],
                                                                         expo: ExpoStandIn) -> None:
    expo.latency = 2.0  # Expo answers slowly: time for Finn to register a new phone mid-send
    new_phone = "ExponentPushToken[finn-new-phone]"
    proc = start_worker("run", "--now", NOW.isoformat(), env=env)
    try:
        deadline = time.monotonic() + 30
        while _row(conn, "reminders", app.finn_due)["status"] != "sending":
            assert proc.poll() is None and time.monotonic() < deadline, "the pass never claimed Finn's reminder"
            time.sleep(0.02)
        conn.execute("UPDATE auth.users SET raw_user_meta_data = jsonb_set(raw_user_meta_data, '{expo_push_token}', "
                     "to_jsonb(%s::text)) WHERE id = %s", (new_phone, app.finn.id))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]

    assert _row(conn, "reminders", app.finn_due)["status"] == "failed"
    assert metadata(conn, app.finn.id) == {"expo_push_token": new_phone, "timezone": "UTC"}


def test_unknown_statuses_are_left_alone_and_reported(app_db: AppDatabase, app: App, conn: psycopg.Connection[Any],
                                                      env: dict[str, str], expo: ExpoStandIn) -> None:
    before = _rows(conn, [app.archived, app.delivered])

    _run(env, NOW)
    _run(env, NOW + timedelta(days=4))  # well past both rows' times

    assert _rows(conn, [app.archived, app.delivered]) == before
    assert _for(expo, app.delivered) == []
    check = worker("check", "--offline", env=clean_env(DATABASE_URL=app_db.url))
    assert check.returncode in (0, 1), check.stderr[-3000:]
    assert "Traceback" not in check.stderr
    assert "'archived'" in check.stdout or "archived" in check.stdout
    assert "delivered" in check.stdout


# --- secure-tokens ----------------------------------------------------------------------------------


def test_secure_tokens_dry_run_changes_nothing_and_says_how_many(app_db: AppDatabase, app: App,
                                                                 conn: psycopg.Connection[Any]) -> None:
    before = _worker_snapshot(conn)

    done = worker("secure-tokens", "--dry-run", env=clean_env(DATABASE_URL=app_db.url))

    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"\b2\b", done.stdout), done.stdout  # Anna's and Ben's
    assert _worker_snapshot(conn) == before
    assert metadata(conn, app.ben.id) == app.ben.metadata


def test_secure_tokens_moves_them_and_the_worker_keeps_syncing(app_db: AppDatabase, app: App,
                                                               conn: psycopg.Connection[Any], env: dict[str, str],
                                                               google: GoogleStandIn) -> None:
    moving = (app.anna, app.ben)

    done = worker("secure-tokens", env=env)

    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"\b2\b", done.stdout), done.stdout
    for parent in moving:
        left = metadata(conn, parent.id)
        assert "google_refresh_token" not in left, left
        assert left == {k: v for k, v in parent.metadata.items() if k != "google_refresh_token"}
        assert _in_private_store(conn, _refresh_token(parent)), f"{parent.email}'s token is in no worker table"
    assert not _in_private_store(conn, "1//cara")  # nobody else's

    snapshot = _worker_snapshot(conn)
    again = worker("secure-tokens", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _worker_snapshot(conn) == snapshot
    check = worker("check", "--offline", env=clean_env(DATABASE_URL=app_db.url))
    assert all(set(re.findall(r"\b\d+\b", line)) <= {"0"} for line in _metadata_lines(check.stdout)), check.stdout

    # The worker syncs with the moved token: Ben's pending event, and a new one he adds now.
    new = add_event(conn, app.ben, "Tennis", NOW + timedelta(days=3))
    _run(env, NOW)
    for event_id in (app.ben_pending, new):
        assert _row(conn, "events", event_id)["status"] == "synced"
        assert len(_entries(google, app.ben.email, event_id)) == 1, event_id
    assert google.refreshes[_refresh_token(app.ben)] >= 1


def _wait_until_blocked(conn: psycopg.Connection[Any], proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "secure-tokens finished while its private store was locked"
        waiting = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock'").fetchone()
        if waiting != (0,):
            return
        time.sleep(0.05)
    raise AssertionError("secure-tokens never waited for its private store")


def private_store_and_gap(conn: psycopg.Connection[Any], app: App) -> tuple[str, sql.Composed]:
    """The private store's table, and a query naming the parents whose refresh token is in neither
    their metadata nor the store (one statement: one snapshot)."""
    stores = [str(t) for (t,) in conn.execute(
        "SELECT DISTINCT format('%I.%I', c.relnamespace::regnamespace::text, c.relname) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relnamespace = 'worker'::regnamespace AND c.relkind = 'r' "
        "AND a.attname IN ('refresh_token', 'google_refresh_token') AND NOT a.attisdropped").fetchall()]
    assert len(stores) == 1, f"expected one private store of refresh tokens in schema worker, found {stores}"
    tokens = [(p.id, _refresh_token(p)) for p in (app.anna, app.ben)]
    in_neither = sql.SQL(
        "SELECT t.id FROM (VALUES {}) AS t(id, token) JOIN auth.users u ON u.id = t.id::uuid "
        "WHERE u.raw_user_meta_data ->> 'google_refresh_token' IS DISTINCT FROM t.token "
        "AND NOT EXISTS (SELECT 1 FROM {} s WHERE strpos(s::text, t.token) > 0)").format(
        sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(i), sql.Literal(t)) for i, t in tokens),
        sql.SQL(stores[0]))
    return stores[0], in_neither


def test_secure_tokens_leaves_no_moment_where_a_token_is_in_neither_place(app_db: AppDatabase, app: App,
                                                                         conn: psycopg.Connection[Any]) -> None:
    store, in_neither = private_store_and_gap(conn, app)
    tokens = [(p.id, _refresh_token(p)) for p in (app.anna, app.ben)]

    # Hold the store: the move must wait there, and meanwhile every token is somewhere.
    with psycopg.connect(app_db.url) as locker:
        locker.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.SQL(store)))
        proc = start_worker("secure-tokens", env=clean_env(DATABASE_URL=app_db.url))
        try:
            _wait_until_blocked(conn, proc)
            assert conn.execute(in_neither).fetchall() == []
        finally:
            locker.rollback()
            try:
                out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert conn.execute(in_neither).fetchall() == []
    assert all("google_refresh_token" not in metadata(conn, i) for i, _ in tokens), out
