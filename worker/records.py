"""Typed records: the rows a step claims, and what a step writes back.

Reading: the SQL functions answer JSON documents; each row is decoded by itself. A row Python
cannot turn into its types (a year-10000 start, 'infinity', a list that is not a list) becomes an
:class:`Undecodable` naming the column and the value, and the step records it as that row's
failure: one bad row never stops a batch.

Writing: every record has ``wire()``, the JSON the SQL function takes. All free text is made fit
to store there (the one place): NUL characters removed (Postgres text cannot hold them, and one would
make the whole batch's write fail) and, in error text, secrets scrubbed (:func:`worker.logs.sanitize`;
message text is the parent's own and only loses what Postgres cannot hold, :func:`worker.logs.storable`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, TypeVar

from worker.logs import sanitize, storable
from worker.vocabulary import ErrorKind, EventOutcome, PushOutcome, ReceiptOutcome

T = TypeVar("T")


class RowProblem(ValueError):
    """A value of a row the worker cannot use; the message names the column and says why."""


# --- decoding -----------------------------------------------------------------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def instant(doc: Mapping[str, Any], column: str, *, required: bool = True) -> datetime | None:
    """A timestamptz column as an aware datetime (years 1 to 9999, what Python can represent)."""
    value = doc.get(column)
    if value is None:
        if required:
            raise RowProblem(f"{column} is missing")
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            raise RowProblem(f"{column} {_show(value)} is not a time the worker can handle "
                             "(only years 1 to 9999 are)") from None
    if parsed.tzinfo is None:
        raise RowProblem(f"{column} {_show(value)} has no time zone")
    return parsed


def text(doc: Mapping[str, Any], column: str) -> str | None:
    value = doc.get(column)
    if value is None or isinstance(value, str):
        return value
    raise RowProblem(f"{column} {_show(value)} is not text")


def text_list(doc: Mapping[str, Any], column: str) -> tuple[str, ...] | None:
    value = doc.get(column)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) or v is None for v in value):
        raise RowProblem(f"{column} {_show(value)} is not a list of text")
    return tuple(v for v in value if v is not None)


def clock_time(doc: Mapping[str, Any], column: str) -> time | None:
    """A ``time`` column (``HH:MM[:SS]``)."""
    value = doc.get(column)
    if value is None:
        return None
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise RowProblem(f"{column} {_show(value)} is not a time of day") from None


def seconds_list(doc: Mapping[str, Any], column: str) -> tuple[timedelta, ...] | None:
    value = doc.get(column)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and v > 0 for v in value):
        raise RowProblem(f"{column} {_show(value)} is not a list of positive seconds")
    return tuple(timedelta(seconds=v) for v in value) or None


def integer(doc: Mapping[str, Any], column: str, default: int = 0) -> int:
    value = doc.get(column)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RowProblem(f"{column} {_show(value)} is not a whole number")
    return value


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A claimed row the worker cannot use, set aside with the reason. ``version``,
    ``google_calendar_id`` and ``token`` are kept where the row had them (an event's result, or a
    device ticket's, must carry them)."""

    id: str
    reason: str
    version: int = 0
    google_calendar_id: str | None = None
    token: str | None = None


def decode_each(docs: Any, decode: Callable[[Mapping[str, Any]], T]) -> list[T | Undecodable]:
    """Decode a claim's rows one by one; a row that fails becomes :class:`Undecodable`."""
    out: list[T | Undecodable] = []
    for doc in docs or []:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("id"), str):
            # Every claim function returns its rows' uuid: anything else is not our function answering.
            raise RowProblem(f"the database answered a row without an id: {_show(doc)}")
        try:
            out.append(decode(doc))
        except (RowProblem, KeyError, TypeError, ValueError, OverflowError) as exc:
            reason = str(exc) if isinstance(exc, RowProblem) else f"{type(exc).__name__}: {exc}"
            version, calendar_id, token = doc.get("version"), doc.get("google_calendar_id"), doc.get("token")
            out.append(Undecodable(doc["id"], sanitize(reason), version if isinstance(version, int) else 0,
                                   calendar_id if isinstance(calendar_id, str) else None,
                                   token if isinstance(token, str) else None))
    return out


# --- rows the steps claim -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventRow:
    """A claimed event with what the events step needs of its owner and child."""

    id: str
    version: int
    user_id: str | None
    status: str
    title: str
    start_ts: datetime
    end_ts: datetime
    location: str | None
    prep_items: tuple[str, ...] | None
    google_calendar_id: str | None
    attempts: int
    child_name: str | None
    has_profile: bool
    timezone: str | None
    google_refresh_token: str | None
    owner_calendar_id: str | None = None  # a calendar shared with the service account
    needs_sync: bool = True  # False: a recurring event claimed only to plan further ahead
    recurrence: str | None = None  # an RFC 5545 RRULE (None: a one-off event)
    planned_until: datetime | None = None
    child_id: str | None = None
    # The parent's notification preferences (public.notification_preferences; None: the defaults).
    calendar_sync_enabled: bool = True
    offsets: tuple[timedelta, ...] | None = None
    quiet_hours: tuple[time, time] | None = None

    def __repr__(self) -> str:  # the refresh token stays out of reprs and tracebacks
        return f"EventRow(id={self.id!r}, version={self.version}, status={self.status!r})"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EventRow:
        start, end = instant(d, "start_ts"), instant(d, "end_ts")
        assert start is not None and end is not None
        return cls(
            id=d["id"], version=integer(d, "version", 1), user_id=text(d, "user_id"),
            status=text(d, "status") or "", title=text(d, "title") or "", start_ts=start, end_ts=end,
            location=text(d, "location"), prep_items=text_list(d, "prep_items"),
            google_calendar_id=text(d, "google_calendar_id"), attempts=integer(d, "attempts"),
            child_name=text(d, "child_name"), has_profile=bool(d.get("has_profile")),
            timezone=text(d, "timezone"), google_refresh_token=text(d, "google_refresh_token"),
            owner_calendar_id=text(d, "owner_calendar_id"), needs_sync=d.get("needs_sync") is not False,
            recurrence=text(d, "recurrence"), planned_until=instant(d, "planned_until", required=False),
            child_id=text(d, "child_id"), calendar_sync_enabled=d.get("calendar_sync_enabled") is not False,
            offsets=seconds_list(d, "offsets_seconds"), quiet_hours=_quiet_hours(d),
        )


@dataclass(frozen=True, slots=True)
class Device:
    """One of a parent's push tokens, and where it is kept (profile, metadata or device), so that a
    token Expo says is gone is cleared there."""

    token: str
    source: str

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"Device(source={self.source!r})"


def devices(doc: Mapping[str, Any], column: str) -> tuple[Device, ...]:
    value = doc.get(column) or []
    if not isinstance(value, list) or not all(
            isinstance(d, dict) and isinstance(d.get("token"), str) and isinstance(d.get("source"), str)
            for d in value):
        raise RowProblem(f"{column} is not a list of devices")
    return tuple(Device(d["token"], d["source"]) for d in value)


def _quiet_hours(d: Mapping[str, Any]) -> tuple[time, time] | None:
    start, end = clock_time(d, "quiet_hours_start"), clock_time(d, "quiet_hours_end")
    return (start, end) if start is not None and end is not None and start != end else None


@dataclass(frozen=True, slots=True)
class ReminderRow:
    """A claimed reminder with its event (the occurrence it is for), child and the owner's devices."""

    id: str
    event_id: str
    user_id: str | None
    notify_at_ts: datetime
    retry_count: int
    title: str
    start_ts: datetime
    location: str | None
    prep_items: tuple[str, ...] | None
    child_name: str | None
    has_profile: bool
    devices: tuple[Device, ...]  # every token of the owner (profile or metadata, and public.push_tokens)
    timezone: str | None
    planned_by_worker: bool = True
    stored_message: str | None = None  # reminders.message; for a row the app wrote before the worker, the text sent
    row_push_token: str | None = None  # ... and its own token, the fallback when the owner has none

    def __repr__(self) -> str:  # the push token stays out of reprs and tracebacks
        return f"ReminderRow(id={self.id!r}, event_id={self.event_id!r})"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ReminderRow:
        event_id = text(d, "event_id")
        if event_id is None or d.get("start_ts") is None:
            raise RowProblem("the reminder's event does not exist (event_id is empty or points nowhere)")
        notify, start = instant(d, "notify_at_ts"), instant(d, "start_ts")
        assert notify is not None and start is not None
        return cls(
            id=d["id"], event_id=event_id, user_id=text(d, "user_id"), notify_at_ts=notify,
            retry_count=integer(d, "retry_count"), title=text(d, "title") or "", start_ts=start,
            location=text(d, "location"), prep_items=text_list(d, "prep_items"),
            child_name=text(d, "child_name"), has_profile=bool(d.get("has_profile")),
            devices=devices(d, "devices"), timezone=text(d, "timezone"),
            planned_by_worker=d.get("planned_by_worker") is not False, stored_message=text(d, "stored_message"),
            row_push_token=text(d, "row_push_token"),
        )


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    """A sent reminder whose Expo receipt is due, claimed for checking."""

    id: str  # the reminder
    token: str  # the device the ticket is for
    ticket_id: str
    sent_at_ts: datetime
    receipt_checks: int
    retry_count: int

    def __repr__(self) -> str:
        return f"ReceiptRow(id={self.id!r}, ticket_id={self.ticket_id!r})"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ReceiptRow:
        sent = instant(d, "sent_at_ts")
        ticket = text(d, "ticket_id")
        if not ticket:
            raise RowProblem("the ticket id is empty")
        assert sent is not None
        return cls(id=d["id"], token=text(d, "token") or "", ticket_id=ticket, sent_at_ts=sent,
                   receipt_checks=integer(d, "receipt_checks"), retry_count=integer(d, "retry_count"))


@dataclass(frozen=True, slots=True)
class Booking:
    """Slots booked on a schedule all workers share (``worker_book_sends``): ``send_in`` seconds
    after ``answered_at`` (``time.monotonic()``), one every 1/``rate`` s; or, booked too far
    ahead, nothing: ask again in ``wait`` seconds."""

    send_in: float | None
    rate: float | None
    wait: float | None
    answered_at: float


@dataclass(frozen=True, slots=True)
class ReminderClaim:
    rows: list[ReminderRow | Undecodable]
    cancelled: int
    expired: int
    superseded: int = 0
    # The shared Expo schedule (PUSH_RATE_LIMIT), in durations from when the database answered
    # (``answered_at``, time.monotonic()): the claim's sends are booked from ``send_in`` seconds on,
    # one message every 1/rate s (None: no limit). ``wait`` seconds: the schedule is booked too far
    # ahead, nothing was claimed; ask again then.
    send_in: float | None = None
    rate: float | None = None
    wait: float | None = None
    answered_at: float = 0.0


# --- what the steps write -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CalendarOutcome:
    """What the calendar made of one event (``worker.steps.calendar``): the entry's id after it, and
    for a failure or a retry the reason and its kind."""

    outcome: EventOutcome
    google_calendar_id: str | None
    error: str | None = None
    kind: ErrorKind | None = None
    #: For a retry: seconds Google asked to wait first (``Retry-After``), if it said.
    retry_after: float | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _clean(value: str | None) -> str | None:
    return sanitize(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class PlannedReminder:
    notify_at_ts: datetime
    message: str  # a preview; the text sent is rendered at send time
    occurs_at: datetime | None = None  # the occurrence of a recurring event it is for


@dataclass(frozen=True, slots=True)
class EventResult:
    """The completion record of one claimed event (``worker_complete_events``)."""

    id: str
    version: int
    outcome: EventOutcome
    google_calendar_id: str | None
    error: str | None = None
    error_kind: ErrorKind | None = None
    next_attempt_at: datetime | None = None
    reminders: tuple[PlannedReminder, ...] = ()
    planned_until: datetime | None = None  # a recurring event: how far ahead its reminders are planned

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "outcome": self.outcome.value,
                "google_calendar_id": self.google_calendar_id, "error": _clean(self.error),
                "error_kind": self.error_kind.value if self.error_kind else None,
                "next_attempt_at": _iso(self.next_attempt_at), "planned_until": _iso(self.planned_until),
                "reminders": [{"notify_at_ts": r.notify_at_ts.isoformat(), "occurs_at": _iso(r.occurs_at),
                               "message": storable(r.message)} for r in self.reminders]}


@dataclass(frozen=True, slots=True)
class PushResult:
    """What became of one claimed reminder (``worker_record_push_outcomes``)."""

    id: str
    outcome: PushOutcome
    error: str | None = None
    error_kind: ErrorKind | None = None
    next_attempt_at: datetime | None = None
    message: str | None = None  # the text sent (title and body) when it differs from reminders.message
    tickets: tuple[tuple[str, str], ...] = ()  # (device token, Expo ticket id) of each device that took it
    dead_tokens: tuple[str, ...] = ()  # devices Expo says are gone (DeviceNotRegistered)

    def __repr__(self) -> str:
        return f"PushResult(id={self.id!r}, outcome={self.outcome.value!r}, error_kind={self.error_kind})"

    def wire(self) -> dict[str, Any]:
        """Only what the database does not know, and no key for an empty value (it reads them as
        null): a thousand outcomes are a few dozen kilobytes, not a few hundred."""
        doc: dict[str, Any] = {"id": self.id, "outcome": self.outcome.value}
        if self.error:
            doc["error"] = _clean(self.error)
        if self.error_kind is not None:
            doc["error_kind"] = self.error_kind.value
        if self.next_attempt_at is not None:
            doc["next_attempt_at"] = self.next_attempt_at.isoformat()
        if self.message is not None:
            doc["message"] = storable(self.message)
        if self.tickets:
            doc["tickets"] = [[token, ticket] for token, ticket in self.tickets]
        if self.dead_tokens:
            doc["dead_tokens"] = list(self.dead_tokens)
        return doc


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    """What a receipt said about one sent reminder (``worker_record_receipts``)."""

    id: str  # the reminder
    token: str  # the device
    outcome: ReceiptOutcome
    error: str | None = None
    error_kind: ErrorKind | None = None  # device_not_registered: the device is forgotten
    next_attempt_at: datetime | None = None
    next_check_at: datetime | None = None

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "token": self.token, "outcome": self.outcome.value, "error": _clean(self.error),
                "error_kind": self.error_kind.value if self.error_kind else None,
                "next_attempt_at": _iso(self.next_attempt_at), "next_check_at": _iso(self.next_check_at)}


def wire_all(records: Sequence[EventResult | PushResult | ReceiptResult]) -> list[dict[str, Any]]:
    return [r.wire() for r in records]
