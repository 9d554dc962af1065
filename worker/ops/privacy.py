"""``export-user UUID`` and ``forget-user UUID [--yes]``: one parent's data, shown or erased.

Both work through either gateway (each step is one SQL function, callable by the service role only):

* ``export-user`` prints ``worker_export_user``'s document: everything the worker holds about the
  parent, push tokens masked, the Google refresh token as present or absent (its value never
  leaves the database for this command).
* ``forget-user`` first asks ``worker_forget_user`` for a dry run (the parent exists; what there
  is; whether a pass holds one of their events right now). Without ``--yes`` it prints that and
  stops: no change, no Google call. With ``--yes`` it deletes the calendar entries the worker made
  in the parent's Google Calendar (best effort: Google failing never stops the erasure, the report
  says which entries stayed), then erases the worker's data in one transaction and says what it
  did. The grant needed for the deletions comes from ``worker_forget_user_calendar``, only when
  there is an entry to delete; it stays in this process's memory and is scrubbed from every log
  line.

Why the deletions are made here and not left to a later pass: the events are the app's and stay,
so nothing would make a pass delete their entries (a pass deletes entries of *cancelled* events
only), and once the grant is erased no pass could. Doing it here, before the erasure, is the last
moment it can be done, and the operator sees the outcome.

Exit codes: 0 done (or the dry run printed); 1 the user is unknown, the database could not be
reached, or a pass holds one of the parent's events right now (nothing changed); 2 configuration
(no database, a user id that is not a UUID, a schema older than this code).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from worker import logs
from worker.db import DatabaseError, DatabaseUnavailable, SchemaOutdated, open_gateway

if TYPE_CHECKING:
    from worker.clients.google import Access, GoogleCalendar, Session
    from worker.config import Settings
    from worker.steps.calendar import CalendarSync, Failure

__all__ = ["CalendarResult", "ForgetReport", "calendar_for", "delete_calendar_entries", "export_user",
           "forget_user", "parse_user_id", "render_forget", "run_export", "run_forget"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

#: A person at a terminal: say soon that the database cannot be reached.
PATIENCE = 5.0
#: Tries of one calendar deletion that failed transiently (429, 5xx, network), and the first wait.
DELETE_ATTEMPTS = 3
DELETE_RETRY_WAIT = 0.5

#: Builds the calendar client from the settings, or None when Google is not configured.
CalendarFactory = Callable[["Settings"], "CalendarSync | None"]

_TOP_LEVEL = ("user_id", "found", "exported_at", "profile", "tokens", "preferences", "events", "reminders",
              "deliveries")
# An Expo token that is not masked (masked ones read ExpoPushToken[***...]).
_UNMASKED_TOKEN = re.compile(r"Expo(?:nent)?PushToken\[(?!\*\*\*)[^\]]*\]")


def parse_user_id(text: str) -> str:
    """A user id as Supabase Auth writes it (a UUID); argparse turns the error into one line, exit 2."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a user id (a UUID like 123e4567-e89b-12d3-a456-426614174000)") from None


def calendar_for(settings: Settings) -> CalendarSync | None:
    """The calendar client the settings ask for, built as a pass builds it; None without Google."""
    from worker.steps.calendar import calendar_from_settings  # the Google stack only when needed

    return calendar_from_settings(settings.google, settings.passes.reminder_offsets, concurrency=1)


# --- export ------------------------------------------------------------------------------------


def export_user(settings: Settings, user_id: str) -> dict[str, Any]:
    """``worker_export_user``'s document (``found`` false for an unknown user)."""
    settings.require_database()
    with open_gateway(settings.database) as gateway:
        doc = gateway.call("worker_export_user", patience=PATIENCE, p_user=user_id)
    if not isinstance(doc, dict):
        raise DatabaseError(f"worker_export_user answered {type(doc).__name__}, not a document")
    ordered = {key: doc[key] for key in _TOP_LEVEL if key in doc}
    ordered.update((key, value) for key, value in doc.items() if key not in ordered)
    return ordered


def run_export(settings: Settings, user_id: str, *, out: TextIO | None = None) -> int:
    """Print the document; returns the exit code."""
    try:
        doc = export_user(settings, user_id)
    except SchemaOutdated as exc:
        print(f"export-user: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (DatabaseUnavailable, DatabaseError) as exc:
        print(f"export-user: cannot read the database: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not doc.get("found"):
        print(f"export-user: no user {user_id}", file=sys.stderr)
        return EXIT_FAILED
    text = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
    # The SQL masks every token it returns; should one ever slip through a new column, it goes here.
    text = _UNMASKED_TOKEN.sub("ExpoPushToken[***]", text)
    (out or sys.stdout).write(text + "\n")
    logs.event("export_user.done", user_id=user_id, events=len(doc.get("events") or []),
               reminders=len(doc.get("reminders") or []))
    return EXIT_OK


# --- forget ------------------------------------------------------------------------------------


@dataclass
class CalendarResult:
    """What became of the parent's calendar entries."""

    entries: int = 0  # entries the database knew of
    unrecorded: int = 0  # events whose entry may exist although no id was recorded: looked for
    deleted: int = 0
    found_unrecorded: int = 0  # of those, entries that did exist and were deleted
    gone: int = 0  # Google had deleted them already (404/410)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (event id, why not)
    skipped: str | None = None  # why no deletion was tried

    @property
    def requests_made(self) -> bool:
        return self.skipped is None and (self.entries + self.unrecorded) > 0


@dataclass
class ForgetReport:
    """One forget-user: the database's document (counts) and what Google answered."""

    user_id: str
    dry_run: bool
    database: dict[str, Any]
    calendar: CalendarResult

    @property
    def found(self) -> bool:
        return bool(self.database.get("found"))

    @property
    def busy(self) -> dict[str, Any]:
        """What a pass holds of the parent's right now (events under a live lease)."""
        return dict(self.database.get("in_flight") or {})


class UserBusy(Exception):
    """A pass holds one of the parent's events: erasing now could leave an entry it makes behind."""

    def __init__(self, events: int, until: Any) -> None:
        super().__init__(f"a pass is working on {_n(events, 'event')} of this parent right now"
                         + (f" (its lease ends at {until})" if until else "")
                         + "; nothing was changed: try again after that")


def forget_user(settings: Settings, user_id: str, *, yes: bool, calendar_factory: CalendarFactory) -> ForgetReport:
    """Erase the parent's worker-side data (``yes``), or say what would be erased.

    Raises :class:`UserBusy` (nothing changed) when a pass holds one of their events, and the
    gateway's errors when the database cannot be asked.
    """
    settings.require_database()
    calendar = calendar_factory(settings)  # a bad Google setting stops us before anything changes
    try:
        with open_gateway(settings.database) as gateway:
            plan = dict(gateway.call("worker_forget_user", patience=PATIENCE, p_user=user_id, p_dry_run=True) or {})
            known = dict(plan.get("calendar") or {})
            result = CalendarResult(entries=int(known.get("entries") or 0), unrecorded=int(known.get("maybe") or 0))
            if result.entries + result.unrecorded > 0:
                if calendar is None:
                    result.skipped = ("Google is not configured here (GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET, "
                                      "or the service account)")
                elif not known.get("grant"):
                    result.skipped = "the parent has no Google grant left"
            if not plan.get("found") or not yes:
                return ForgetReport(user_id, True, plan, result)
            busy = dict(plan.get("in_flight") or {})
            if int(busy.get("events") or 0) > 0:
                raise UserBusy(int(busy["events"]), busy.get("until"))
            if calendar is not None and result.requests_made:
                grant = dict(gateway.call("worker_forget_user_calendar", patience=PATIENCE, p_user=user_id) or {})
                delete_calendar_entries(calendar.client, user_id, grant, result)
            done = dict(gateway.call("worker_forget_user", patience=PATIENCE, p_user=user_id, p_dry_run=False) or {})
    finally:
        if calendar is not None:
            calendar.close()
    report = ForgetReport(user_id, False, done, result)
    logs.event("forget_user.done", user_id=user_id, deleted=done.get("deleted"), cleared=done.get("cleared"),
               calendar_deleted=result.deleted, calendar_gone=result.gone, calendar_failed=len(result.failed),
               calendar_skipped=result.skipped)
    return report


def run_forget(settings: Settings, user_id: str, *, yes: bool, calendar_factory: CalendarFactory,
               out: TextIO | None = None) -> int:
    """Print what was (or would be) erased; returns the exit code."""
    try:
        report = forget_user(settings, user_id, yes=yes, calendar_factory=calendar_factory)
    except SchemaOutdated as exc:
        print(f"forget-user: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (DatabaseUnavailable, DatabaseError) as exc:
        print(f"forget-user: cannot reach the database: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except UserBusy as exc:
        print(f"forget-user: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not report.found:
        print(f"forget-user: no user {user_id}", file=sys.stderr)
        return EXIT_FAILED
    (out or sys.stdout).write(render_forget(report))
    return EXIT_OK


# --- the calendar entries ----------------------------------------------------------------------


class _NotDeleted(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def delete_calendar_entries(client: GoogleCalendar, user_id: str, grant: Mapping[str, Any],
                            result: CalendarResult) -> None:
    """Delete each entry of ``grant["entries"]`` in the parent's calendar, into ``result``.

    Every calendar the worker may have written for the parent is tried: their primary calendar
    (refresh token) and the calendar they shared with the service account. 404/410 in all of them:
    gone already. A transient failure is tried again a few times; one that concerns the whole grant
    (revoked, Google unreachable, rate limited) is not asked again for the remaining entries. No
    failure stops the others or the erasure.
    """
    from worker.steps.calendar import calendar_event_id  # the Google stack only when needed

    refresh_token = grant.get("refresh_token") or None
    logs.register_secret(refresh_token)
    accesses = [a for a in (client.access(user_id, refresh_token, None),
                            client.access(user_id, None, grant.get("calendar_id") or None)) if a is not None]
    if not accesses:
        result.skipped = "the parent has no Google grant this configuration can use"
        return
    sessions: dict[int, Session] = {}
    dead: dict[int, Failure] = {}
    for entry in grant.get("entries") or []:
        event_id = str(entry.get("event_id"))
        target = str(entry.get("entry_id") or calendar_event_id(event_id))
        reasons: list[str] = []
        outcome = "gone"
        for index, access in enumerate(accesses):
            if index in dead:
                reasons.append(dead[index].message)
                continue
            try:
                outcome = _delete(client, access, sessions, index, target)
            except _NotDeleted as exc:
                reasons.append(exc.failure.message)
                if exc.failure.stop_user:
                    dead[index] = exc.failure
                continue
            if outcome == "deleted":
                break
        if outcome == "deleted":
            if entry.get("known", True):
                result.deleted += 1
            else:
                result.found_unrecorded += 1
        elif reasons:
            reason = _clean(reasons[0], refresh_token)
            result.failed.append((event_id, reason))
            logs.event("forget_user.calendar_error", logging.WARNING, user_id=user_id, event_id=event_id,
                       reason=reason)
        elif entry.get("known", True):
            result.gone += 1


def _delete(client: GoogleCalendar, access: Access, sessions: dict[int, Session], index: int, target: str) -> str:
    """'deleted' or 'gone' (404/410), else :class:`_NotDeleted`; transient failures tried again."""
    from worker.clients.google import HttpError
    from worker.steps.calendar import Failure, classify_exception
    from worker.vocabulary import ErrorKind, EventOutcome

    for attempt in range(1, DELETE_ATTEMPTS + 1):
        try:
            session = sessions.get(index)
            if session is None:
                session = sessions[index] = client.authorize(access)
            session.delete(target)
            return "deleted"
        except HttpError as err:
            if err.resp.status in (404, 410):
                return "gone"
            failure = classify_exception(err)
        except Exception as exc:  # best effort: every failure is reported, none stops the erasure
            failure = classify_exception(exc, service_account_used=access.service_account)
            if failure is None:
                logs.get().exception("forget_user.calendar_crashed")
                failure = Failure(EventOutcome.FAILED, f"{type(exc).__name__}: {exc}", ErrorKind.GOOGLE_UNAVAILABLE)
        assert failure is not None
        if failure.outcome != EventOutcome.RETRY or attempt == DELETE_ATTEMPTS:
            raise _NotDeleted(failure)
        time.sleep(DELETE_RETRY_WAIT * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _clean(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return logs.scrub(text)


# --- the report --------------------------------------------------------------------------------


def _n(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def render_forget(report: ForgetReport) -> str:
    """A few lines a person reads: what was (would be) deleted, cleared and kept."""
    doc = report.database
    deleted = dict(doc.get("deleted") or {})
    cleared = dict(doc.get("cleared") or {})
    kept = dict(doc.get("kept") or {})
    would = "would " if report.dry_run else ""
    lines = [f"forget-user {report.user_id}: "
             + ("dry run, nothing changed (add --yes to erase)" if report.dry_run else "erased")]
    lines.append("Google Calendar: " + _calendar_line(report))
    lines.extend(f"  not deleted: event {event_id}: {reason}" for event_id, reason in report.calendar.failed)

    gone: list[str] = []
    reminders = int(deleted.get("reminders") or 0)
    if reminders:
        tickets = int(deleted.get("push_tickets") or 0)
        gone.append(_n(reminders, "reminder") + (f" (with {_n(tickets, 'delivery ticket')})" if tickets else ""))
    if deleted.get("devices"):
        gone.append(_n(int(deleted["devices"]), "device") + " (push_tokens)")
    if deleted.get("preferences"):
        gone.append("the notification preferences")
    if deleted.get("stored_refresh_tokens"):
        gone.append("the Google refresh token in the worker's store")
    if deleted.get("refused_grants"):
        gone.append("the record of a Google grant that was refused")
    lines.append(f"{would}delete: " + (", ".join(gone) or "nothing"))

    emptied: list[str] = []
    if cleared.get("profile"):
        emptied.append("profile " + ", ".join(cleared["profile"]))
    if cleared.get("metadata"):
        emptied.append("user metadata " + ", ".join(cleared["metadata"]))
    if cleared.get("event_calendar_ids"):
        emptied.append(f"the calendar entry id of {_n(int(cleared['event_calendar_ids']), 'event')}")
    if cleared.get("event_retries"):
        emptied.append(f"the retry state of {_n(int(cleared['event_retries']), 'event')}")
    lines.append(f"{would}clear: " + ("; ".join(emptied) or "nothing"))

    lines.append(f"kept: {_n(int(kept.get('events') or 0), 'event')} (the app's data: passes still plan their "
                 "reminders, which reach no one without a device; deleting the user in Supabase Auth removes them "
                 "and everything else of theirs)")
    busy = report.busy
    if int(busy.get("reminders") or 0) or (not report.dry_run and int(busy.get("events") or 0)):
        lines.append(f"note: a pass was working on {_n(int(busy.get('events') or 0), 'event')} and "
                     f"{_n(int(busy.get('reminders') or 0), 'reminder')} of theirs; what it writes back when it "
                     "finishes is erased by running forget-user again after its lease"
                     + (f" ({busy['until']})" if busy.get("until") else ""))
    elif report.dry_run and int(busy.get("events") or 0):
        lines.append(f"note: a pass is working on {_n(int(busy['events']), 'event')} of theirs right now; "
                     "--yes waits for it to finish (it refuses until then)")
    return "\n".join(lines) + "\n"


def _calendar_line(report: ForgetReport) -> str:
    cal = report.calendar
    entries = _n(cal.entries, "entry", "entries")
    unrecorded = (f" (and {_n(cal.unrecorded, 'event')} whose entry may exist without a recorded id"
                  " would be checked)" if cal.unrecorded else "")
    if cal.entries + cal.unrecorded == 0:
        return "no entries made by the worker"
    if cal.skipped is not None and cal.entries == 0:
        return (f"no recorded entries; {_n(cal.unrecorded, 'event')} whose entry may exist without a recorded id "
                f"cannot be looked for: {cal.skipped}")
    if cal.skipped is not None:
        return f"{entries} cannot be deleted: {cal.skipped}; they stay in the parent's calendar"
    if report.dry_run:
        return f"{entries} would be deleted{unrecorded}"
    done = [f"{cal.deleted} deleted"]
    if cal.gone:
        done.append(f"{cal.gone} already gone")
    if cal.failed:
        done.append(f"{len(cal.failed)} not deleted (they stay in the parent's calendar)")
    found = f"{cal.found_unrecorded} found and deleted" if cal.found_unrecorded else "none found"
    checked = f"; {_n(cal.unrecorded, 'event')} without a recorded id looked for, {found}" if cal.unrecorded else ""
    return f"{entries}: " + ", ".join(done) + checked
