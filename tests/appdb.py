"""The ParentPal database as it stands before the worker arrives, to test ``migrate`` adopting it.

What a Supabase project running the seed's app holds (seed 004 and the issue "Install onto the
ParentPal database as it stands"):

* Supabase's roles with their default privileges (``SUPABASE_LIKE``), the ``auth`` schema with
  Supabase's own ``auth.users`` (many more columns than the worker's stand-in) and ``auth.uid()``
  as Supabase defines it.
* The ``profiles`` table of Supabase's user-management starter, exactly as the starter creates it:
  RLS on, its three policies (public read!), and the table grants the default privileges give.
* A ``children`` table, and seed 004's ``events`` and ``reminders`` created with the seed's exact SQL.
* Tokens where the seed's app writes them: ``supabase.auth.updateUser({ data: { expo_push_token } })``
  and ``{ google_refresh_token }`` land in ``auth.users.raw_user_meta_data``.
* Rows in every status, including ones the worker does not know, and one parent with no profile.

``build_app_database`` fills an empty database and returns handles (ids, tokens, messages) in an
``App``; ``app_database`` is the same as a context manager that creates and drops the database.
``snapshot_rows`` reads every row of the app's tables as text, so a test can prove that every
existing row keeps every value (``app_columns_only`` compares the app's columns, not the worker's).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from tests.conftest import SUPABASE_LIKE

#: The instant the fixture's rows are relative to; acceptance tests run ``run --now`` at it.
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

# Supabase's auth schema as the platform creates it (supabase/auth migrations, trimmed to the
# columns that matter plus enough of the rest that nothing may assume our minimal stand-in).
SUPABASE_AUTH = """
CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

CREATE TABLE auth.users (
    instance_id uuid NULL,
    id uuid NOT NULL,
    aud varchar(255) NULL,
    "role" varchar(255) NULL,
    email varchar(255) NULL,
    encrypted_password varchar(255) NULL,
    email_confirmed_at timestamptz NULL,
    invited_at timestamptz NULL,
    confirmation_token varchar(255) NULL,
    confirmation_sent_at timestamptz NULL,
    recovery_token varchar(255) NULL,
    recovery_sent_at timestamptz NULL,
    email_change_token_new varchar(255) NULL,
    email_change varchar(255) NULL,
    email_change_sent_at timestamptz NULL,
    last_sign_in_at timestamptz NULL,
    raw_app_meta_data jsonb NULL,
    raw_user_meta_data jsonb NULL,
    is_super_admin bool NULL,
    created_at timestamptz NULL,
    updated_at timestamptz NULL,
    phone text NULL UNIQUE DEFAULT NULL,
    phone_confirmed_at timestamptz NULL,
    phone_change text NULL DEFAULT '',
    phone_change_token varchar(255) NULL DEFAULT '',
    phone_change_sent_at timestamptz NULL,
    confirmed_at timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
    email_change_token_current varchar(255) NULL DEFAULT '',
    email_change_confirm_status smallint NULL DEFAULT 0
        CHECK (email_change_confirm_status >= 0 AND email_change_confirm_status <= 2),
    banned_until timestamptz NULL,
    reauthentication_token varchar(255) NULL DEFAULT '',
    reauthentication_sent_at timestamptz NULL,
    is_sso_user boolean NOT NULL DEFAULT false,
    deleted_at timestamptz NULL,
    is_anonymous boolean NOT NULL DEFAULT false,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
CREATE UNIQUE INDEX users_email_partial_key ON auth.users (email) WHERE (is_sso_user = false);
CREATE INDEX users_instance_id_email_idx ON auth.users (instance_id, lower(email::text));
COMMENT ON TABLE auth.users IS 'Auth: Stores user login data within a secure schema.';

-- Supabase's: the `sub` claim of the request's JWT.
CREATE FUNCTION auth.uid() RETURNS uuid
    LANGUAGE sql STABLE
AS $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text
    LANGUAGE sql STABLE
AS $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;
CREATE FUNCTION auth.jwt() RETURNS jsonb
    LANGUAGE sql STABLE
AS $$
  select
    coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO anon, authenticated, service_role;
"""

# Supabase's user-management starter, verbatim.
STARTER_PROFILES = """
create table profiles (
  id uuid references auth.users not null primary key,
  updated_at timestamp with time zone,
  username text unique,
  full_name text,
  avatar_url text,
  website text,

  constraint username_length check (char_length(username) >= 3)
);
alter table profiles
  enable row level security;

create policy "Public profiles are viewable by everyone." on profiles
  for select using (true);

create policy "Users can insert their own profile." on profiles
  for insert with check ((select auth.uid()) = id);

create policy "Users can update own profile." on profiles
  for update using ((select auth.uid()) = id);
"""

#: The starter's policies: name -> command.
STARTER_POLICIES = {
    "Public profiles are viewable by everyone.": "SELECT",
    "Users can insert their own profile.": "INSERT",
    "Users can update own profile.": "UPDATE",
}
#: The starter's own columns: what the public profile feature reads.
STARTER_COLUMNS = ("id", "updated_at", "username", "full_name", "avatar_url", "website")

APP_CHILDREN = """
create table children (
  id uuid primary key default gen_random_uuid(),
  user_id uuid references auth.users,
  name text not null
);
"""

# Seed 004's "Database Schema Requirements", verbatim.
SEED_EVENTS = """
CREATE TABLE events (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID REFERENCES auth.users(id),
  child_id UUID REFERENCES children(id),
  title TEXT NOT NULL,
  start_ts TIMESTAMPTZ NOT NULL,
  end_ts TIMESTAMPTZ NOT NULL,
  location TEXT,
  prep_items TEXT[],
  status TEXT DEFAULT 'pending',
  google_calendar_id TEXT,
  error_message TEXT,
  created_at TIMESTAMPTZ DEFAULT NOW()
);
"""

SEED_REMINDERS = """
CREATE TABLE reminders (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  event_id UUID REFERENCES events(id) ON DELETE CASCADE,
  user_id UUID REFERENCES auth.users(id),
  notify_at_ts TIMESTAMPTZ NOT NULL,
  message TEXT NOT NULL,
  push_token TEXT,
  sent_at_ts TIMESTAMPTZ,
  status TEXT DEFAULT 'pending',
  retry_count INTEGER DEFAULT 0,
  error_message TEXT,
  created_at TIMESTAMPTZ DEFAULT NOW(),
  UNIQUE(event_id, notify_at_ts)
);
"""

#: The app's tables, each keyed by ``id``.
APP_TABLES = ("auth.users", "public.profiles", "public.children", "public.events", "public.reminders")


@dataclass(frozen=True)
class Parent:
    """A parent as the app left them: what is in ``raw_user_meta_data`` and whether a profile exists."""

    id: str
    email: str
    push_token: str | None  # raw_user_meta_data.expo_push_token
    refresh_token: str | None  # raw_user_meta_data.google_refresh_token
    timezone: str | None  # raw_user_meta_data.timezone
    has_profile: bool

    @property
    def metadata(self) -> dict[str, str]:
        keys = {"expo_push_token": self.push_token, "google_refresh_token": self.refresh_token,
                "timezone": self.timezone}
        return {k: v for k, v in keys.items() if v is not None}


@dataclass(frozen=True)
class App:
    """Handles on the rows ``build_app_database`` wrote (ids are text)."""

    anna: Parent  # profile (starter), push + refresh token + Europe/Berlin in metadata
    ben: Parent  # NO profile row; push + refresh token in metadata
    cara: Parent  # profile; push token + America/New_York in metadata, no refresh token
    dana: Parent  # profile; push token in metadata, and (after migrate) another one in her profile
    eve: Parent  # profile; no token anywhere (her reminder carries its own push_token)
    finn: Parent  # profile; a metadata push token Expo answers DeviceNotRegistered for
    dana_profile_token: str  # what Dana writes into her profile after migrate (must win)

    # events
    soccer: str  # Anna, synced, google_calendar_id set; reminders sent / due / later
    piano: str  # Anna, synced; a 'pending' reminder the old system sent (sent_at_ts set)
    archived: str  # Anna, status 'archived' (unknown to the worker), with a 'delivered' reminder
    ben_pending: str  # Ben (no profile, refresh token in metadata), pending, child Leo
    ben_synced: str  # Ben, synced, with a due reminder without a row token
    cara_pending: str  # Cara (push token only in metadata), pending, 14:00 UTC = 9:00 AM in New York
    dana_synced: str  # Dana, synced, with a due reminder
    eve_failed: str  # Eve, failed with an error_message
    eve_synced: str  # Eve, synced, with a due reminder whose row has a push_token
    finn_synced: str  # Finn, synced, with a due reminder (his token is unregistered)
    calendar_ids: dict[str, str]  # synced event -> its google_calendar_id

    # reminders
    sent: str  # soccer, 'sent', sent_at_ts set
    due: str  # soccer, 'pending', due, sent_at_ts NULL, push_token on the row (Anna's old phone)
    later: str  # soccer, 'pending', not due at NOW
    old_sent: str  # piano, 'pending' but sent_at_ts set: sent by the old system
    delivered: str  # archived, status 'delivered' (unknown to the worker), sent_at_ts NULL, due
    ben_due: str  # ben_synced, 'pending', due, no row token
    dana_due: str  # dana_synced, 'pending', due, row token
    eve_due: str  # eve_synced, 'pending', due, row token (the only token Eve has)
    finn_due: str  # finn_synced, 'pending', due, no row token
    messages: dict[str, str]  # reminder id -> its stored message
    row_tokens: dict[str, str | None]  # reminder id -> reminders.push_token

    @property
    def parents(self) -> tuple[Parent, ...]:
        return (self.anna, self.ben, self.cara, self.dana, self.eve, self.finn)

    @property
    def due_reminders(self) -> dict[str, str]:
        """Reminder id -> the token a pass at NOW must send it to (the owner's current token)."""
        return {
            self.due: _token(self.anna.push_token),
            self.ben_due: _token(self.ben.push_token),
            self.dana_due: self.dana_profile_token,
            self.eve_due: _token(self.row_tokens[self.eve_due]),
        }

    @property
    def never_sent(self) -> tuple[str, ...]:
        """Reminders no pass may send: sent, sent by the old system, in an unknown status."""
        return (self.sent, self.old_sent, self.delivered)


@dataclass(frozen=True)
class AppDatabase:
    url: str
    app: App


def _token(value: str | None) -> str:
    assert value is not None
    return value


def _with_db(url: str, dbname: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    parts["dbname"] = dbname
    return psycopg.conninfo.make_conninfo("", **parts)


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> str:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return str(row[0])


def _user(conn: psycopg.Connection[Any], name: str, *, push: bool = True, refresh: bool = False,
          timezone: str | None = None, profile: bool = True, push_token: str | None = None) -> Parent:
    """A signed-up parent as GoTrue writes them, with what the app put in user metadata."""
    email = f"{name}@example.com"
    parent = Parent(
        id=str(uuid.uuid4()), email=email,
        push_token=(push_token or f"ExponentPushToken[{name}-meta]") if push else None,
        refresh_token=f"1//{name}-refresh-token" if refresh else None,
        timezone=timezone, has_profile=profile)
    conn.execute(
        "INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, "
        "last_sign_in_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at) "
        "VALUES ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', 'authenticated', %s, "
        "'$2a$10$abcdefghijklmnopqrstuv', %s, %s, %s, %s, %s, %s)",
        (parent.id, email, NOW - timedelta(days=30), NOW - timedelta(days=1),
         json.dumps({"provider": "email", "providers": ["email"]}), json.dumps(parent.metadata),
         NOW - timedelta(days=30), NOW - timedelta(days=1)))
    if profile:
        conn.execute(
            "INSERT INTO profiles (id, updated_at, username, full_name, avatar_url, website) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (parent.id, NOW - timedelta(days=2), name, f"{name.title()} Parent",
             f"{parent.id}/avatar.png", f"https://{name}.example.com"))
    return parent


def _child(conn: psycopg.Connection[Any], parent: Parent, name: str) -> str:
    return _one(conn, "INSERT INTO children (user_id, name) VALUES (%s, %s) RETURNING id", (parent.id, name))


def _event(conn: psycopg.Connection[Any], parent: Parent, title: str, start: datetime, *,
           status: str = "pending", child: str | None = None, calendar_id: str | None = None,
           error: str | None = None, location: str | None = "Field 4",
           prep: list[str] | None = None) -> str:
    return _one(
        conn,
        "INSERT INTO events (user_id, child_id, title, start_ts, end_ts, location, prep_items, status, "
        "google_calendar_id, error_message, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (parent.id, child, title, start, start + timedelta(hours=1), location, prep, status, calendar_id,
         error, NOW - timedelta(days=3)))


def _reminder(conn: psycopg.Connection[Any], event_id: str, parent: Parent, at: datetime, message: str, *,
              status: str = "pending", token: str | None = None, sent_at: datetime | None = None) -> str:
    return _one(
        conn,
        "INSERT INTO reminders (event_id, user_id, notify_at_ts, message, push_token, sent_at_ts, status, "
        "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (event_id, parent.id, at, message, token, sent_at, status, NOW - timedelta(days=3)))


def build_app_database(conn: psycopg.Connection[Any]) -> App:
    """Create the app's database as it stands before the worker, in the (empty) database of ``conn``."""
    conn.execute(SUPABASE_LIKE)
    conn.execute(SUPABASE_AUTH)
    conn.execute(STARTER_PROFILES)
    conn.execute(APP_CHILDREN)
    conn.execute(SEED_EVENTS)
    conn.execute(SEED_REMINDERS)

    anna = _user(conn, "anna", refresh=True, timezone="Europe/Berlin")
    ben = _user(conn, "ben", refresh=True, profile=False)
    cara = _user(conn, "cara", timezone="America/New_York")
    dana = _user(conn, "dana")
    eve = _user(conn, "eve", push=False, timezone="Europe/London")
    finn = _user(conn, "finn", timezone="UTC", push_token="ExponentPushToken[finn-unregistered]")

    emma = _child(conn, anna, "Emma")
    leo = _child(conn, ben, "Leo")
    calendar_ids = {}

    def synced(parent: Parent, title: str, start: datetime, calendar_id: str, child: str | None = None) -> str:
        event_id = _event(conn, parent, title, start, status="synced", child=child, calendar_id=calendar_id)
        calendar_ids[event_id] = calendar_id
        return event_id

    messages: dict[str, str] = {}
    row_tokens: dict[str, str | None] = {}

    def reminder(event_id: str, parent: Parent, at: datetime, message: str, **kw: Any) -> str:
        reminder_id = _reminder(conn, event_id, parent, at, message, **kw)
        messages[reminder_id] = message
        row_tokens[reminder_id] = kw.get("token")
        return reminder_id

    # Anna: a synced event whose 24 h reminder went out, whose 3 h one is due now and whose 30 min
    # one is still ahead. Her old phone's token is on the rows; her current one is in metadata.
    soccer_start = NOW + timedelta(hours=2, minutes=30)
    soccer = synced(anna, "Soccer practice", soccer_start, "legacysoccer00001", child=emma)
    old_phone = "ExponentPushToken[anna-old-phone]"
    sent = reminder(soccer, anna, soccer_start - timedelta(hours=24), "Soccer practice (Emma) tomorrow at 12:30",
                    status="sent", token=old_phone, sent_at=soccer_start - timedelta(hours=24, seconds=-3))
    due = reminder(soccer, anna, soccer_start - timedelta(hours=3),
                   "Soccer practice (Emma) in 3 hours at Field 4 - bring shin guards", token=old_phone)
    later = reminder(soccer, anna, soccer_start - timedelta(minutes=30), "Soccer practice (Emma) in 30 minutes",
                     token=old_phone)
    # A reminder the old system sent but never marked: 'pending' with sent_at_ts.
    piano_start = NOW + timedelta(hours=1)
    piano = synced(anna, "Piano lesson", piano_start, "legacypiano000001", child=emma)
    old_sent = reminder(piano, anna, piano_start - timedelta(hours=3), "Piano lesson (Emma) in 3 hours",
                        token=old_phone, sent_at=piano_start - timedelta(hours=3, seconds=-5))
    # Statuses the worker does not know.
    archived = _event(conn, anna, "Old swim meet", NOW + timedelta(days=3), status="archived",
                      calendar_id="legacyswim0000001")
    delivered = reminder(archived, anna, NOW - timedelta(hours=1), "Old swim meet in 3 days", status="delivered",
                         token=old_phone)

    # Ben: no profile at all; everything in metadata.
    ben_pending = _event(conn, ben, "Swimming", NOW + timedelta(days=2), child=leo, location="City pool",
                         prep=["towel", "goggles"])
    ben_synced = synced(ben, "Football", NOW + timedelta(hours=4), "legacyfootball001", child=leo)
    ben_due = reminder(ben_synced, ben, NOW - timedelta(minutes=10), "Football (Leo) in 4 hours")

    # Cara: push token (and time zone) only in metadata; a new event for the next pass.
    cara_pending = _event(conn, cara, "Dentist", NOW + timedelta(hours=5), location="Main St 5")

    # Dana: her profile's token (written after migrate) must win over the one in metadata.
    dana_synced = synced(dana, "Ballet", NOW + timedelta(hours=3), "legacyballet00001")
    dana_due = reminder(dana_synced, dana, NOW - timedelta(minutes=15), "Ballet in 3 hours",
                        token="ExponentPushToken[dana-row]")

    # Eve: no token anywhere but on her reminder's row; and an event the old system gave up on.
    eve_failed = _event(conn, eve, "Chess club", NOW + timedelta(days=1), status="failed",
                        error="Calendar API access denied")
    eve_synced = synced(eve, "Chess match", NOW + timedelta(hours=2), "legacychess000001")
    eve_due = reminder(eve_synced, eve, NOW - timedelta(minutes=20), "Chess match in 2 hours",
                       token="ExponentPushToken[eve-row]")

    # Finn: Expo answers DeviceNotRegistered for his metadata token.
    finn_synced = synced(finn, "Judo", NOW + timedelta(hours=2), "legacyjudo0000001")
    finn_due = reminder(finn_synced, finn, NOW - timedelta(minutes=5), "Judo in 2 hours")

    return App(anna=anna, ben=ben, cara=cara, dana=dana, eve=eve, finn=finn,
               dana_profile_token="ExponentPushToken[dana-profile]",
               soccer=soccer, piano=piano, archived=archived, ben_pending=ben_pending, ben_synced=ben_synced,
               cara_pending=cara_pending, dana_synced=dana_synced, eve_failed=eve_failed, eve_synced=eve_synced,
               finn_synced=finn_synced, calendar_ids=calendar_ids,
               sent=sent, due=due, later=later, old_sent=old_sent, delivered=delivered, ben_due=ben_due,
               dana_due=dana_due, eve_due=eve_due, finn_due=finn_due, messages=messages, row_tokens=row_tokens)


@contextlib.contextmanager
def app_database(admin_url: str) -> Iterator[AppDatabase]:
    """A new database holding the app as it stands (never migrated), dropped afterwards."""
    name = f"app_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        url = _with_db(admin_url, name)
        with psycopg.connect(url, autocommit=True) as conn:
            app = build_app_database(conn)
        yield AppDatabase(url=url, app=app)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- acting as the app's users ------------------------------------------------------------------


@contextlib.contextmanager
def as_role(conn: psycopg.Connection[Any], role: str, user_id: str | None = None) -> Iterator[None]:
    """Run as the Data API would for ``role`` (with ``user_id``'s JWT claims), then go back.

    ``conn`` must be in autocommit mode (as every test connection here is)."""
    claims = json.dumps({"sub": user_id, "role": role} if user_id else {"role": role})
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (claims,))
    try:
        yield
    finally:
        conn.execute("RESET ROLE")
        conn.execute("SELECT set_config('request.jwt.claims', '', false)")


def write_own_profile(conn: psycopg.Connection[Any], user_id: str, **columns: str | None) -> int:
    """What the app does for a signed-in parent: update their own profile row. Returns the row count."""
    assignments = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in columns)
    with as_role(conn, "authenticated", user_id):
        cur = conn.execute(sql.SQL("UPDATE public.profiles SET {} WHERE id = %s").format(assignments),
                           (*columns.values(), user_id))
        return cur.rowcount


def scalar(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the one row ``query`` returns."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]


def add_event(conn: psycopg.Connection[Any], parent: Parent, title: str, start: datetime) -> str:
    """A new one-hour event, as the app inserts it after the worker arrived (status from the default)."""
    return str(scalar(conn, "INSERT INTO public.events (user_id, title, start_ts, end_ts) VALUES (%s, %s, %s, %s) "
                            "RETURNING id", (parent.id, title, start, start + timedelta(hours=1))))


def metadata(conn: psycopg.Connection[Any], user_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT raw_user_meta_data FROM auth.users WHERE id = %s", (user_id,)).fetchone()
    assert row is not None
    return dict(row[0] or {})


# --- snapshots --------------------------------------------------------------------------------

#: table -> row id -> column -> value as text (NULL as None).
Snapshot = dict[str, dict[str, dict[str, str | None]]]


def _columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    return [str(name) for (name,) in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum", (table,)).fetchall()]


def snapshot_rows(conn: psycopg.Connection[Any], tables: tuple[str, ...] = APP_TABLES) -> Snapshot:
    """Every row of ``tables``, every column, as text."""
    snap: Snapshot = {}
    for table in tables:
        schema, name = table.split(".")
        columns = _columns(conn, table)
        query = sql.SQL("SELECT id::text, {} FROM {}.{}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
            sql.Identifier(schema), sql.Identifier(name))
        snap[table] = {str(row[0]): dict(zip(columns, row[1:], strict=True))
                       for row in conn.execute(query).fetchall()}
    return snap


def app_columns_only(after: Snapshot, before: Mapping[str, Mapping[str, Mapping[str, str | None]]]) -> Snapshot:
    """``after`` restricted to the tables, rows and columns ``before`` has (the worker adds columns;
    a row missing in ``after`` stays missing, so the comparison shows it)."""
    restricted: Snapshot = {}
    for table, rows in before.items():
        columns = next(iter(rows.values())).keys() if rows else ()
        restricted[table] = {row_id: {c: after.get(table, {}).get(row_id, {}).get(c, "<column gone>")
                                      for c in columns}
                             for row_id in after.get(table, {})}
    return restricted
