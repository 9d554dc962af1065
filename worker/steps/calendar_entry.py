"""What a parent's calendar entry looks like: pure functions of the event row (no I/O).

The entry's id is a pure function of ``events.id`` (:func:`calendar_event_id`), which is what makes
every insert idempotent (see :mod:`worker.steps.calendar`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from worker import planner, timing
from worker.records import EventRow

EVENT_ID_PROPERTY = "reminderWorkerEventId"
"""Key in the entry's ``extendedProperties.private`` that names the ``events.id`` it mirrors."""

MAX_OVERRIDES = 5
MAX_REMINDER_MINUTES = 40320


def calendar_event_id(event_id: str) -> str:
    """The Google Calendar entry id for ``events.id``: its UUID as 32 lower-case hex digits.

    Google allows client-chosen ids of 5..1024 characters from base32hex (``a-v`` and ``0-9``);
    hex digits are a subset, and the id is a pure function of the event, which is what makes
    every insert idempotent.
    """
    return uuid.UUID(event_id).hex


def reminder_overrides(offsets: Iterable[timedelta]) -> list[dict[str, Any]]:
    """Popup reminders at the configured lead times, as Google accepts them.

    Google takes at most 5 overrides of 0..40320 minutes each. Lead times are rounded to whole
    minutes, clamped, de-duplicated; when more than 5 remain, the 5 closest to the start are kept
    (the last-minute nudges matter most on a phone). Earliest first.
    """
    minutes = {min(max(round(o.total_seconds() / 60), 0), MAX_REMINDER_MINUTES) for o in offsets}
    kept = sorted(minutes)[:MAX_OVERRIDES]
    return [{"method": "popup", "minutes": m} for m in sorted(kept, reverse=True)]


def _description(prep_items: Sequence[str | None] | None) -> str | None:
    items = [i.strip() for i in prep_items or () if i is not None and i.strip()]
    if not items:
        return None
    return "Bring:\n" + "\n".join(f"- {i}" for i in items)


def entry_body(row: EventRow, offsets: Iterable[timedelta], *, with_id: bool = False,
               restore: bool = False) -> dict[str, Any]:
    """The full Calendar event resource for ``row`` (insert body, or update's full replacement).

    Times are RFC 3339 with the offset in the owner's zone plus ``timeZone``, so the entry shows
    at the right wall-clock time and recurs correctly across daylight-saving changes if a parent
    ever edits it in Google. ``restore`` sets ``status: "confirmed"``, which is how Google undoes
    a deletion; without it an update leaves the entry's status as it is. The parent's own lead
    times (notification_preferences) replace ``offsets``; a recurring event carries its rule as
    the one ``RRULE:`` line Google takes (the step fails an event whose rule does not validate
    before it gets here), so the parent's calendar shows every occurrence.
    """
    tz, usable = planner.timezone_for(row.timezone)
    offsets = row.offsets or offsets
    zone = row.timezone if row.timezone and usable else "UTC"
    summary = f"{row.title} ({row.child_name})" if row.child_name else row.title
    body: dict[str, Any] = {
        "summary": summary,
        "start": {"dateTime": row.start_ts.astimezone(tz).isoformat(timespec="seconds"), "timeZone": zone},
        "end": {"dateTime": row.end_ts.astimezone(tz).isoformat(timespec="seconds"), "timeZone": zone},
        "extendedProperties": {"private": {EVENT_ID_PROPERTY: row.id}},
        "reminders": {"useDefault": False, "overrides": reminder_overrides(offsets)},
    }
    if row.location:
        body["location"] = row.location
    description = _description(row.prep_items)
    if description is not None:
        body["description"] = description
    if row.recurrence:
        body["recurrence"] = [timing.validate_rule(row.recurrence, first_start=row.start_ts, tz=tz)]
    if with_id:
        body["id"] = calendar_event_id(row.id)
    if restore:
        body["status"] = "confirmed"
    return body
