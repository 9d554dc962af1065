"""Helpers that put rows in a test database the way the app would."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg


def add_parent(db: psycopg.Connection[Any], *, token: str | None = "auto", timezone: str = "UTC",
               refresh_token: str | None = None, profile: bool = True) -> str:
    user_id = str(uuid.uuid4())
    db.execute("INSERT INTO auth.users (id) VALUES (%s)", (user_id,))
    if profile:
        if token == "auto":
            token = f"ExponentPushToken[{user_id[:18]}]"
        db.execute(
            "INSERT INTO public.profiles (id, expo_push_token, timezone, google_refresh_token) VALUES (%s, %s, %s, %s)",
            (user_id, token, timezone, refresh_token),
        )
    return user_id


def add_child(db: psycopg.Connection[Any], user_id: str, name: str = "Emma") -> str:
    row = db.execute("INSERT INTO public.children (user_id, name) VALUES (%s, %s) RETURNING id",
                     (user_id, name)).fetchone()
    assert row is not None
    return str(row[0])


def add_event(db: psycopg.Connection[Any], user_id: str, start: datetime, *, title: str = "Soccer practice",
              minutes: int = 60, child_id: str | None = None, location: str | None = "Field 4",
              prep_items: Sequence[str] | None = ("shin guards", "water"), end: datetime | None = None) -> str:
    row = db.execute(
        "INSERT INTO public.events (user_id, child_id, title, start_ts, end_ts, location, prep_items) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (user_id, child_id, title, start, end or start + timedelta(minutes=minutes), location,
         list(prep_items) if prep_items is not None else None),
    ).fetchone()
    assert row is not None
    return str(row[0])


def add_due_reminders(db: psycopg.Connection[Any], count: int, now: datetime, *, users: int = 50) -> None:
    """``count`` reminders due at ``now`` for events an hour later, spread over ``users`` parents (set-based)."""
    db.execute(
        """
        WITH u AS (
            INSERT INTO auth.users (id) SELECT gen_random_uuid() FROM generate_series(1, %(users)s) RETURNING id
        ), p AS (
            INSERT INTO public.profiles (id, expo_push_token, timezone)
            SELECT id, 'ExponentPushToken[' || left(id::text, 18) || ']', 'Europe/Berlin' FROM u RETURNING id
        ), numbered AS (
            SELECT id, row_number() OVER () - 1 AS n FROM p
        ), e AS (
            INSERT INTO public.events (user_id, title, start_ts, end_ts, location, prep_items, status,
                                       synced_version)
            SELECT nb.id, 'Event ' || g, %(now)s::timestamptz + interval '1 hour',
                   %(now)s::timestamptz + interval '2 hours', 'Gym', ARRAY['water'], 'synced', 1
            FROM generate_series(1, %(count)s) g
            JOIN numbered nb ON nb.n = g %% %(users)s
            RETURNING id, user_id
        )
        INSERT INTO public.reminders (event_id, user_id, notify_at_ts, message)
        SELECT id, user_id, %(now)s::timestamptz - interval '1 minute', 'planned' FROM e
        """,
        {"users": users, "count": count, "now": now},
    )


def statuses(db: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(db.execute("SELECT status, count(*) FROM public.reminders GROUP BY status").fetchall())
