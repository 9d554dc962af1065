"""The demo's simulated day: the real pass at chosen instants, each step narrated as tables.

Why a simulated clock: the 24 h, 3 h and 30 min reminders of tomorrow's events fire within seconds
instead of a day. Every pass is ``worker.passes.run_pass`` with ``now=`` set, SQL included, so what
the tables show is what the worker does in production at those instants. Beside planning and
sending, the day shows what makes the worker worth having: Expo failing and the retry with backoff,
a revoked Google grant, a pass killed (SIGKILL, a real process) after Google made a calendar entry
and the next pass meeting it again instead of making a second, and overdue reminders after an
outage expiring instead of arriving late.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from worker.ops.status import render
from worker.passes import PassResult, run_pass
from worker.steps.calendar import calendar_from_settings
from worker.steps.calendar_entry import calendar_event_id

if TYPE_CHECKING:
    import psycopg

    from demo.seed import Family, Story
    from standins.expo import ExpoStandIn
    from standins.google import GoogleStandIn
    from worker.clients.expo import ExpoPusher
    from worker.config import Settings
    from worker.db import Gateway

MAIN = Path(__file__).resolve().parents[1] / "worker" / "main.py"
NEW_YORK = ZoneInfo("America/New_York")
# The developer's own settings must not reach the demo's killed pass (it gets the demo's settings only).
_THEIRS = ("DATABASE_URL", "SUPABASE_", "EXPO_", "GOOGLE_", "REMINDER_", "PUSH_", "WORKER_", "RETRY_", "LOG_",
           "CALENDAR_", "RECEIPT_", "PROMETHEUS_", "RECURRENCE_")


def table(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write ``rows`` as an aligned plain-text table (cells cut at 100 characters), then a blank line."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [min(max(len(r[i]) for r in cells), 100) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        fitted = (c if len(c) <= w else c[: w - 1] + "…" for c, w in zip(r, widths, strict=True))
        return "  " + "  ".join(c.ljust(w) for c, w in zip(fitted, widths, strict=True))

    out.write(line(cells[0]).rstrip() + "\n")
    out.write("  " + "  ".join("-" * w for w in widths) + "\n")
    for r in cells[1:]:
        out.write(line(r).rstrip() + "\n")
    out.write("\n")


def lead_label(start: datetime, notify: datetime, zone: str, offsets: Sequence[timedelta]) -> str:
    """Which lead time a reminder is: '24 h', '3 h', '30 min'; or how early it ended up when quiet
    hours moved it. A lead time of whole days is a calendar day in the parent's zone."""
    tz = ZoneInfo(zone)
    for offset in offsets:
        if offset % timedelta(days=1) == timedelta(0):
            fits = notify.astimezone(tz).replace(tzinfo=None) == start.astimezone(tz).replace(tzinfo=None) - offset
        else:
            fits = start - notify == offset
        if fits:
            return _duration(offset)
    return f"{_duration(start - notify)}: moved, quiet hours"


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds()) // 60
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Day:
    """The story's moving parts: the passes at chosen instants and the tables that show them."""

    def __init__(self, out: TextIO, conn: psycopg.Connection[Any], gateway: Gateway, settings: Settings,
                 env: Mapping[str, str], pusher: ExpoPusher, expo: ExpoStandIn, google: GoogleStandIn,
                 story: Story) -> None:
        self.out, self.conn, self.gateway, self.settings, self.env = out, conn, gateway, settings, env
        self.pusher, self.expo, self.google, self.story = pusher, expo, google, story
        self.families: dict[str, Family] = {f.user_id: f for f in story.families}
        self.unexpected = 0

    # --- what the tables show ------------------------------------------------------------------

    @staticmethod
    def clock(t: datetime) -> str:
        return t.strftime("%a %H:%M:%S UTC" if t.second else "%a %H:%M UTC")

    def name(self, user_id: Any) -> str:
        return self.families[str(user_id)].name

    def lead(self, start: datetime, notify: datetime, user_id: Any) -> str:
        return lead_label(start, notify, self.families[str(user_id)].tz, self.settings.passes.reminder_offsets)

    def reminders(self, where: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """(family, event, lead, notify at, status, why, next try, tries) of the reminders ``where`` picks."""
        rows = self.conn.execute(
            "SELECT r.user_id, e.title, coalesce(r.occurs_at, e.start_ts), r.notify_at_ts, r.status, "
            "r.error_message, r.next_attempt_at, r.retry_count FROM reminders r JOIN events e ON e.id = r.event_id "
            f"WHERE {where} ORDER BY r.notify_at_ts, e.title", params).fetchall()
        return [(self.name(u), title, self.lead(start, at, u), at, status, why or "", nxt, tries)
                for u, title, start, at, status, why, nxt, tries in rows]

    # --- passes -----------------------------------------------------------------------------------

    def step(self, t: datetime, title: str, *, expect: int = 0) -> PassResult:
        """One real pass at ``t``, its counts, what Expo was given, and what was settled unsent."""
        self.out.write(f"== {self.clock(t)}  {title}\n")
        before = len(self.expo.messages)
        statuses = dict(self.conn.execute("SELECT id, status FROM reminders").fetchall())
        calendar = calendar_from_settings(self.settings.google, self.settings.passes.reminder_offsets)
        try:  # a calendar client per pass, as `run` makes one
            result = run_pass(self.settings, self.gateway, now=t, pusher=self.pusher, calendar=calendar)
        finally:
            if calendar is not None:
                calendar.close()
        c = result.counts
        outcome = f"exit {result.exit_code}" + (f" ({result.error})" if result.error else "")
        self.out.write(f"   pass: {outcome}; events synced {c.events_synced}, failed {c.events_failed}, "
                       f"cancelled {c.events_cancelled}; reminders planned {c.reminders_planned}, sent {c.sent}, "
                       f"retried {c.retried}, failed {c.failed}, expired {c.expired}, cancelled {c.cancelled}\n\n")
        if result.exit_code != expect:
            self.unexpected += 1
            self.out.write(f"   !! expected exit {expect}\n\n")
        sent = self.expo.messages[before:]
        if sent:
            by_token = {f.token: f.name for f in self.families.values()}
            by_token.update({f.second_token: f"{f.name} (2nd phone)" for f in self.families.values()
                             if f.second_token})
            leads = {str(rid): self.lead(start, at, u) for rid, u, start, at in self.conn.execute(
                "SELECT r.id, r.user_id, coalesce(r.occurs_at, e.start_ts), r.notify_at_ts FROM reminders r "
                "JOIN events e ON e.id = r.event_id WHERE r.id::text = ANY(%s)",
                ([str(m["data"]["reminder_id"]) for m in sent],))}
            table(self.out, ["sent to", "lead", "title", "body"],
                  [(by_token.get(m["to"], "?"), leads.get(str(m["data"]["reminder_id"]), ""), m["title"], m["body"])
                   for m in sent])
        settled_ids = [rid for rid, status in self.conn.execute("SELECT id, status FROM reminders")
                       if status in ("failed", "expired", "cancelled") and statuses.get(rid) != status]
        settled = self.reminders("r.id = ANY(%s)", (settled_ids,))
        if settled:
            table(self.out, ["not sent", "event", "lead", "due (UTC)", "status", "why"],
                  [(n, ev, lead, at.strftime("%a %H:%M"), status, why) for n, ev, lead, at, status, why, _, _
                   in settled])
        return result

    def killed_pass(self, t: datetime, entry_owner: str, entry_id: str) -> None:
        """``python worker/main.py run --now t`` as a real process, SIGKILLed once Google has made the
        calendar entry ``entry_id`` and before its answer (held by the stand-in) gets back."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_THEIRS)} | dict(self.env)
        self.google.answer_delay = 30.0
        proc = subprocess.Popen([sys.executable, str(MAIN), "run", "--now", t.isoformat()], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while entry_id not in self.google.events(entry_owner):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the pass to be killed never reached Google")
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            self.google.answer_delay = 0.0
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def tell_story(
    out: TextIO,
    conn: psycopg.Connection[Any],
    gateway: Gateway,
    settings: Settings,
    env: Mapping[str, str],
    pusher: ExpoPusher,
    expo: ExpoStandIn,
    google: GoogleStandIn,
    story: Story,
    now: datetime,
) -> int:
    """Walk through the day from ``now``; returns 1 when a pass did not exit as the story expects."""
    day = Day(out, conn, gateway, settings, env, pusher, expo, google, story)
    end = now + timedelta(days=2)  # the story's two days; the weekly practice is planned further
    _plan(day, now, end)
    _kill_and_revoke(day, now)
    _due(day, now, end)
    _where_it_ended(day, end)
    return 1 if day.unexpected else 0


def _plan(day: Day, now: datetime, end: datetime) -> None:
    out, conn, families = day.out, day.conn, day.families
    day.step(now, "first pass: new events are synced and their reminders planned")
    table(out, ["family", "event", "starts (local)", "status", "note"], [
        (day.name(u), title, start.astimezone(ZoneInfo(families[str(u)].tz)).strftime("%a %H:%M"), status, err or "")
        for u, title, start, status, err in conn.execute(
            "SELECT user_id, title, start_ts, status, error_message FROM events ORDER BY start_ts")])
    rows = []
    for f in families.values():
        if f.refresh_token:
            for entry in day.google.events(f.google_email).values():
                rows.append((f.name, entry.get("summary"), entry.get("start", {}).get("dateTime"),
                             entry.get("status"), entry.get("id")))
    out.write("   Google Calendar entries (families who connected Google):\n")
    table(out, ["family", "summary", "start", "status", "id"], rows)
    out.write("   planned reminders (the next two days), with their lead time:\n")
    table(out, ["family", "event", "lead", "notify at (UTC)", "status"],
          [(n, ev, lead, at.strftime("%a %H:%M"), status)
           for n, ev, lead, at, status, _, _, _ in day.reminders("r.notify_at_ts < %s", (end,))])
    swim = ", ".join(at.astimezone(NEW_YORK).strftime("%a %H:%M") for (at,) in conn.execute(
        "SELECT notify_at_ts FROM reminders WHERE event_id = %s ORDER BY 1", (day.story.events["early swim"],)))
    out.write(f"   Early swim reminders, New York time: {swim}\n")
    out.write("   Preferences at work: the Garcias' quiet hours (21:00-07:00 New York) move the Early swim's\n"
              "   3 h and 30 min reminders (03:45 and 06:15) to 20:59 the evening before, as one reminder; the\n"
              "   24 h one fell before the story began. Jonas Schmidt is muted: his Judo reminders are\n"
              "   cancelled as they come due. The Schmidts' reminders go to both of their phones.\n\n")

    t = now + timedelta(minutes=5)
    conn.execute("UPDATE events SET start_ts = start_ts + interval '1 hour', end_ts = end_ts + interval '1 hour' "
                 "WHERE id = %s", (day.story.events["dentist"],))
    conn.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (day.story.events["party"],))
    out.write("   The Garcias move the dentist one hour later; the Schmidts cancel the birthday party.\n\n")
    day.step(t, "edits: the moved event is re-planned, the cancelled one's reminders are cancelled")


def _kill_and_revoke(day: Day, now: datetime) -> None:
    """A duplicate prevented after a kill, then a revoked Google grant."""
    out, conn, google = day.out, day.conn, day.google
    garcia = next(f for f in day.story.families if f.refresh_token)
    leo = conn.execute("SELECT id FROM children WHERE name = 'Leo'").fetchone()
    start = (now.astimezone(NEW_YORK) + timedelta(days=3)).replace(hour=10, minute=0).astimezone(now.tzinfo)
    row = conn.execute(
        "INSERT INTO events (user_id, child_id, title, start_ts, end_ts, location) VALUES (%s, %s, 'Swim meet', %s, "
        "%s, 'Aquatic center') RETURNING id", (garcia.user_id, leo[0] if leo else None, start,
                                               start + timedelta(hours=2))).fetchone()
    assert row is not None
    event_id, entry_id = str(row[0]), calendar_event_id(str(row[0]))
    t = now + timedelta(minutes=10)
    lease = day.settings.passes.lease_seconds
    out.write(f"== {day.clock(t)}  a pass killed mid-flight: no second calendar entry\n")
    out.write("   The Garcias add a Swim meet. `python worker/main.py run` starts as a real process; it claims the\n"
              "   event (a lease of WORKER_LEASE_SECONDS), Google makes the calendar entry, and the process is\n"
              "   killed (SIGKILL) before Google's answer gets back: the database never hears of the entry.\n")
    seen = len(google.requests)
    day.killed_pass(t, garcia.google_email, entry_id)
    status, claimed, until = conn.execute("SELECT status, claim_id IS NOT NULL, lease_expires_at FROM events "
                                          "WHERE id = %s", (event_id,)).fetchone() or ("?", False, None)
    entries = [e for e in google.events(garcia.google_email).values() if e["id"] == entry_id]
    held = f"claimed by the dead pass until {until:%H:%M} UTC" if claimed and until else "not claimed"
    out.write(f"   after the kill: the event is {status}, {held}; Google Calendar entries for it: {len(entries)}\n\n")
    retake = t + timedelta(seconds=lease + 60)
    day.step(retake, "the lease ran out: the next pass takes the event over")
    entries = [e for e in google.events(garcia.google_email).values() if e["id"] == entry_id]
    asked = [r for r in google.requests[seen:] if r.owner == garcia.google_email]
    table(out, ["Google was asked", "answered", "by"],
          [(f"{r.method} {r.path.replace('/calendar/v3/calendars/', '')}", r.status,
            "the killed pass (its answer never arrived)" if i == 0 else "the pass that took over")
           for i, r in enumerate(asked)])
    out.write(f"   The entry's id is derived from the event's id ({entry_id}), so the insert met the entry\n"
              f"   the killed pass had made (409 duplicate) and updated it. Entries for the Swim meet: "
              f"{len(entries)}\n\n")

    t = retake + timedelta(minutes=4)
    assert garcia.refresh_token is not None
    google.revoke(garcia.refresh_token)
    conn.execute("UPDATE events SET location = 'Field 7' WHERE id = %s", (day.story.events["soccer"],))
    out.write("   The Garcias remove the app's access in their Google account, then move Soccer practice to\n"
              "   Field 7.\n\n")
    day.step(t, "a revoked Google grant: the calendar waits, the reminders do not")
    table(out, ["family", "event", "status", "error_kind", "why"], [
        (day.name(u), title, status, kind, why) for u, title, status, kind, why in conn.execute(
            "SELECT user_id, title, status, error_kind, error_message FROM events "
            "WHERE error_kind = 'google_revoked'")])
    out.write("   The event stays failed (not retried every minute) until the parent reconnects Google; its\n"
              "   reminders are planned anyway and will say Field 7 (`status` lists parents whose access was\n"
              "   revoked).\n\n")


def _due(day: Day, now: datetime, end: datetime) -> None:
    """Every instant a reminder comes due, with Expo failing at the first send and an outage on day two."""
    conn, out = day.conn, day.out
    ny_day2 = (now.astimezone(NEW_YORK) + timedelta(days=1)).date()
    down = datetime(ny_day2.year, ny_day2.month, ny_day2.day, 8, 45, tzinfo=NEW_YORK)
    back = datetime(ny_day2.year, ny_day2.month, ny_day2.day, 11, 40, tzinfo=NEW_YORK)
    first_send = conn.execute(
        "SELECT min(notify_at_ts) FROM reminders WHERE event_id = %s", (day.story.events["swim"],)).fetchone()
    expo_fails_at = first_send[0] if first_send else None
    times = [r[0] for r in conn.execute(
        "SELECT DISTINCT notify_at_ts FROM reminders WHERE status = 'pending' AND notify_at_ts < %s ORDER BY 1",
        (end,))]
    outage_told = False
    for at in times:
        if down <= at < back:
            if not outage_told:
                _outage(day, down, back)
                outage_told = True
            continue
        if at == expo_fails_at:
            _expo_fails(day, at + timedelta(minutes=1))
            continue
        day.step(at + timedelta(minutes=1), "reminders due")
    if not outage_told:
        _outage(day, down, back)
    out.write("\n")


def _expo_fails(day: Day, t: datetime) -> None:
    """Expo answers 503 to every request of two passes: retries within each, backoff between them."""
    out, attempts = day.out, day.settings.expo.request_attempts
    out.write(f"   Expo is having a bad minute: it answers 503 to every request for a while. Within a pass each\n"
              f"   request is tried {attempts} times (PUSH_REQUEST_ATTEMPTS, short waits); then the reminders wait\n"
              "   for a later pass, backing off as RETRY_BASE_SECONDS * 2^(tries - 1), with jitter.\n\n")
    for round_ in (1, 2):
        day.expo.fail_next(attempts, 503)
        before = len(day.expo.requests)
        day.step(t, "reminders due, Expo failing" if round_ == 1 else "the retry, Expo still failing", expect=1)
        tried = [r.status for r in day.expo.requests[before:]]
        out.write(f"   Expo was asked {len(tried)} times, answered {', '.join(map(str, tried))}\n")
        waiting = day.reminders("r.status = 'pending' AND r.next_attempt_at > %s", (t,))
        table(out, ["waiting", "event", "lead", "tries", "next try (UTC)", "why"],
              [(n, ev, lead, tries, nxt.strftime("%H:%M:%S"), why) for n, ev, lead, _, _, why, nxt, tries in waiting])
        t = max(nxt for *_, nxt, _ in waiting) + timedelta(seconds=1) if waiting else t + timedelta(minutes=1)
    day.step(t, "the next retry: Expo is back")


def _outage(day: Day, down: datetime, back: datetime) -> None:
    """No pass ran between ``down`` and ``back``: late reminders expire or are superseded, one is sent."""
    out = day.out
    out.write(f"   The worker is down from {down:%H:%M} to {back:%H:%M} New York time (a node restart, a bad deploy):\n"
              "   no pass runs. What came due meanwhile is not sent in a pile when it is back.\n\n")
    day.step(back.astimezone(UTC),
             "back after the outage: only the latest reminder of an event that has not started is sent")
    out.write("   A reminder whose event already started is expired (a late reminder is noise); of one event's\n"
              "   overdue reminders only the latest is sent, the older ones expire as superseded.\n\n")


def _where_it_ended(day: Day, end: datetime) -> None:
    out, conn = day.out, day.conn
    out.write("== where every reminder ended up\n")
    table(out, ["family", "event", "lead", "notify at (UTC)", "status", "why"],
          [(n, ev, lead, at.strftime("%a %H:%M"), status, why)
           for n, ev, lead, at, status, why, _, _ in day.reminders("r.notify_at_ts < %s", (end,))])
    rule, until = conn.execute("SELECT recurrence, planned_until FROM events WHERE id = %s",
                               (day.story.events["practice"],)).fetchone() or ("", None)
    berlin = ZoneInfo("Europe/Berlin")
    out.write(f"   the Schmidts' weekly practice ({rule}): reminders planned up to "
              f"{until:%a %d %b} (RECURRENCE_HORIZON_DAYS), every occurrence at 17:00 Berlin time:\n")
    table(out, ["occurrence (Berlin)", "reminders", "status"], [
        (occurs.astimezone(berlin).strftime("%a %d %b %H:%M"), count, statuses)
        for occurs, count, statuses in conn.execute(
            "SELECT occurs_at, count(*), string_agg(DISTINCT status, ', ') FROM reminders WHERE event_id = %s "
            "GROUP BY occurs_at ORDER BY occurs_at", (day.story.events["practice"],))])
    row = conn.execute("SELECT count(*) FROM profiles WHERE expo_push_token IS NULL").fetchone()
    cleared = row[0] if row is not None else 0
    out.write(f"   push tokens cleared after Expo said DeviceNotRegistered: {cleared}\n\n")
    status = render(day.gateway.status(datetime.now(UTC)), datetime.now(UTC))
    passes = status.split("Last passes", 1)[1].split("\n\n", 1)[0]
    out.write("== `python worker/main.py status` on the demo's database: the passes, newest first by when they\n"
              "   really ran, with the clock each simulated beside it (the last 10)\n")
    out.write("Last passes" + passes + "\n\n")
