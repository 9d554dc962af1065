"""The demo's simulated day: the real pass at chosen instants, each step narrated as tables.

Why a simulated clock: the 24 h, 3 h and 30 min reminders of tomorrow's events fire within seconds
instead of a day. Every pass is ``worker.passes.run_pass`` with ``now=`` set, SQL included, so what
the tables show is what the worker does in production at those instants.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from worker.passes import run_pass

if TYPE_CHECKING:
    import psycopg

    from demo.seed import Family, Story
    from standins.expo import ExpoStandIn
    from standins.google import GoogleStandIn
    from worker.clients.expo import ExpoPusher
    from worker.config import Settings
    from worker.db import Gateway
    from worker.passes import CalendarPort


def table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write ``rows`` as an aligned plain-text table (cells cut at 80 characters), then a blank line."""
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


def tell_story(
    out: TextIO,
    conn: psycopg.Connection[Any],
    gateway: Gateway,
    settings: Settings,
    pusher: ExpoPusher,
    calendar: CalendarPort | None,
    expo: ExpoStandIn,
    google: GoogleStandIn,
    story: Story,
    now: datetime,
) -> int:
    """Walk through the day from ``now``; returns 1 when a pass did not exit 0, else 0."""
    families: dict[str, Family] = {f.user_id: f for f in story.families}
    failures = 0

    def clock(t: datetime) -> str:
        return t.strftime("%a %H:%M UTC")

    def step(t: datetime, title: str) -> None:
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
            by_token.update({f.second_token: f"{f.name} (2nd phone)" for f in families.values() if f.second_token})
            table(out, ["sent to", "title", "body"], [(by_token.get(m["to"], "?"), m["title"], m["body"])
                                                      for m in sent])
        settled = conn.execute(
            "SELECT r.user_id, e.title, r.status, r.error_message FROM reminders r JOIN events e ON e.id = r.event_id "
            "WHERE r.updated_at = %s AND r.status IN ('failed', 'expired', 'cancelled') ORDER BY e.title",
            (t,)).fetchall()
        if settled:
            table(out, ["not sent", "event", "status", "why"],
                  [(families[str(u)].name, title, status, err) for u, title, status, err in settled])

    step(now, "first pass: new events are synced and their reminders planned")
    table(out, ["family", "event", "starts (local)", "status", "note"], [
        (families[str(u)].name, title, start.astimezone(ZoneInfo(families[str(u)].tz)).strftime("%a %H:%M"),
         status, err or "")
        for u, title, start, status, err in conn.execute(
            "SELECT user_id, title, start_ts, status, error_message FROM events ORDER BY start_ts")])
    rows = []
    for f in families.values():
        if f.refresh_token:
            for entry in google.events(f.google_email).values():
                rows.append((f.name, entry.get("summary"), entry.get("start", {}).get("dateTime"),
                             entry.get("status"), entry.get("id")))
    out.write("   Google Calendar entries (families who connected Google):\n")
    table(out, ["family", "summary", "start", "status", "id"], rows)
    end = now + timedelta(days=2)  # the story's two days; the weekly practice is planned further
    out.write("   planned reminders (the next two days):\n")
    table(out, ["family", "event", "notify at (UTC)", "status"], [
        (families[str(u)].name, title, at.strftime("%a %H:%M"), status)
        for u, title, at, status in conn.execute(
            "SELECT r.user_id, e.title, r.notify_at_ts, r.status FROM reminders r JOIN events e ON e.id = r.event_id "
            "WHERE r.notify_at_ts < %s ORDER BY r.notify_at_ts, e.title", (end,))])
    ny = ZoneInfo("America/New_York")
    swim = ", ".join(at.astimezone(ny).strftime("%a %H:%M") for (at,) in conn.execute(
        "SELECT notify_at_ts FROM reminders WHERE event_id = %s ORDER BY 1", (story.events["early swim"],)))
    out.write(f"   Early swim reminders, New York time: {swim}\n")
    out.write("   Preferences at work: the Garcias' quiet hours (21:00-07:00 New York) move the Early swim's\n"
              "   3 h and 30 min reminders (03:45 and 06:15) to 20:59 the evening before, as one reminder; the\n"
              "   24 h one fell before the story began. Jonas Schmidt is muted: his Judo reminders are\n"
              "   cancelled as they come due. The Schmidts' reminders go to both of their phones.\n\n")

    t = now + timedelta(minutes=5)
    conn.execute("UPDATE events SET start_ts = start_ts + interval '1 hour', end_ts = end_ts + interval '1 hour' "
                 "WHERE id = %s", (story.events["dentist"],))
    conn.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (story.events["party"],))
    out.write("   The Garcias move the dentist one hour later; the Schmidts cancel the birthday party.\n\n")
    step(t, "edits: the moved event is re-planned, the cancelled one's reminders are cancelled")

    times = [r[0] for r in conn.execute(
        "SELECT DISTINCT notify_at_ts FROM reminders WHERE status = 'pending' AND notify_at_ts < %s ORDER BY 1",
        (end,))]
    for at in times:
        step(at + timedelta(minutes=1), "reminders due")

    out.write("== where every reminder ended up\n")
    table(out, ["family", "event", "notify at (UTC)", "status", "why"], [
        (families[str(u)].name, title, at.strftime("%a %H:%M"), status, err or "")
        for u, title, at, status, err in conn.execute(
            "SELECT r.user_id, e.title, r.notify_at_ts, r.status, r.error_message FROM reminders r "
            "JOIN events e ON e.id = r.event_id WHERE r.notify_at_ts < %s ORDER BY r.notify_at_ts, e.title",
            (end,))])
    rule, until = conn.execute("SELECT recurrence, planned_until FROM events WHERE id = %s",
                               (story.events["practice"],)).fetchone() or ("", None)
    berlin = ZoneInfo("Europe/Berlin")
    out.write(f"   the Schmidts' weekly practice ({rule}): reminders planned up to "
              f"{until:%a %d %b} (RECURRENCE_HORIZON_DAYS), every occurrence at 17:00 Berlin time:\n")
    table(out, ["occurrence (Berlin)", "reminders", "status"], [
        (occurs.astimezone(berlin).strftime("%a %d %b %H:%M"), count, statuses)
        for occurs, count, statuses in conn.execute(
            "SELECT occurs_at, count(*), string_agg(DISTINCT status, ', ') FROM reminders WHERE event_id = %s "
            "GROUP BY occurs_at ORDER BY occurs_at", (story.events["practice"],))])
    row = conn.execute("SELECT count(*) FROM profiles WHERE expo_push_token IS NULL").fetchone()
    cleared = row[0] if row is not None else 0
    out.write(f"   push tokens cleared after Expo said DeviceNotRegistered: {cleared}\n\n")
    return 1 if failures else 0
