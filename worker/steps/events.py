"""The events step: put claimed events into their owners' Google Calendars and plan their reminders.

Batch after batch: claim, sync the batch through the calendar client (when Google is configured),
plan each event's reminders with the planner, and complete the batch in one call. Each event is
planned by itself: an event whose row cannot be read, whose times are impossible or whose owner's
time zone is unknown is completed ``failed`` with the reason, and the rest of the batch goes on.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from worker import logs, planner, timing
from worker.db import Gateway
from worker.records import CalendarOutcome, EventResult, EventRow, PlannedReminder, Undecodable
from worker.steps.context import PassClock, PassCounts
from worker.steps.pace import SharedPace
from worker.vocabulary import ErrorKind, EventOutcome, EventStatus

if TYPE_CHECKING:
    from worker.config import PassSettings
    from worker.retry import Pace

#: The name the project's Google Calendar quota is booked under (worker.send_schedule).
GOOGLE_SCHEDULE = "google"


class CalendarPort(Protocol):
    """Puts a batch of claimed events into their owners' calendars (see worker.steps.calendar)."""

    @property
    def requests_per_second(self) -> float:
        """The project's Calendar requests per second to keep to (0: no limit)."""

    def sync(self, events: Sequence[EventRow], now: datetime, *,
             pace: Pace | None = None) -> Mapping[str, CalendarOutcome]: ...

    def close(self) -> None: ...


def row_problem(row: EventRow) -> tuple[str, ErrorKind] | None:
    """Why a claimed live event cannot be synced or reminded of, or None."""
    problem = planner.event_problem(row.title, row.start_ts, row.end_ts, row.location, row.prep_items)
    if problem is not None:
        return problem, ErrorKind.INVALID_ROW
    tz, usable = planner.timezone_for(row.timezone)
    if not usable:
        return planner.timezone_problem(row.timezone or ""), ErrorKind.TIMEZONE
    if row.recurrence is not None:
        try:
            timing.validate_rule(row.recurrence, first_start=row.start_ts, tz=tz)
        except timing.RuleProblem as exc:
            return str(exc), ErrorKind.INVALID_ROW
    return None


def reaches_calendar(row: EventRow) -> bool:
    """Whether this pass has anything to tell the parent's Google Calendar about the event.

    Not when the parent turned calendar sync off (notification_preferences.calendar_sync_enabled:
    the worker then leaves their calendar as it is, entries it made earlier included), nor when a
    recurring event was claimed only to plan its reminders further ahead (``needs_sync`` false).
    """
    return row.needs_sync and row.calendar_sync_enabled


def planned_times(row: EventRow, passes: PassSettings, now: datetime) -> tuple[list[tuple[datetime, datetime]],
                                                                                datetime | None]:
    """(occurrence start, reminder instant) pairs to plan for a live event, and how far ahead they reach.

    The parent's own lead times and quiet hours (notification_preferences) apply when set. A one-off
    event is planned whole (``None``: no horizon). A recurring event is planned so that every reminder
    due before ``now`` + RECURRENCE_HORIZON_DAYS exists: occurrences are expanded up to the horizon
    plus the longest lead time plus a day (quiet hours may move a reminder up to a day earlier), and
    the claim takes the event again once less than half the horizon is left, so the reminders planned
    never run out between passes.
    """
    tz, _ = planner.timezone_for(row.timezone)
    offsets = row.offsets or passes.reminder_offsets
    if row.recurrence is None:
        return [(row.start_ts, at) for at in timing.plan_times(row.start_ts, offsets, now, tz, row.quiet_hours)], None
    horizon = timedelta(days=passes.recurrence_horizon_days)
    reach = horizon + max(offsets, default=timedelta(0)) + timedelta(days=1)
    pairs = timing.plan_recurring(row.start_ts, row.recurrence, offsets, now, tz, reach, row.quiet_hours)
    return pairs, now + horizon


def plan_event(row: EventRow, calendar: CalendarOutcome | None, passes: PassSettings, now: datetime,
               rng: random.Random | None = None) -> EventResult:
    """The completion record of one claimed, readable event."""
    outcome, calendar_id = EventOutcome.SYNCED, row.google_calendar_id
    error: str | None = None
    kind: ErrorKind | None = None
    next_at: datetime | None = None
    if calendar is not None:
        outcome, calendar_id, error, kind = calendar.outcome, calendar.google_calendar_id, calendar.error, calendar.kind
        if outcome is EventOutcome.RETRY:
            next_at = planner.next_attempt_at(now, row.attempts + 1, passes.retry_base_seconds,
                                              passes.retry_max_seconds, rng)
            if calendar.retry_after:  # Google said when: not sooner (and not past our longest backoff)
                next_at = max(next_at, now + timedelta(seconds=min(calendar.retry_after, passes.retry_max_seconds)))
    if row.status == EventStatus.CANCELLED:
        return EventResult(row.id, row.version, outcome, calendar_id, error, kind, next_at)
    problem = row_problem(row)
    if problem is not None:
        return EventResult(row.id, row.version, EventOutcome.FAILED, calendar_id, problem[0], problem[1])
    pairs, planned_until = planned_times(row, passes, now)
    recurring = row.recurrence is not None
    reminders = tuple(
        PlannedReminder(at, planner.render_message(
            title=row.title, child_name=row.child_name, start_ts=start, location=row.location,
            prep_items=row.prep_items, now=at, zone_name=row.timezone,
            max_bytes=planner.EXPO_MAX_PAYLOAD_BYTES - 300).as_text(), start if recurring else None)
        for start, at in pairs)
    return EventResult(row.id, row.version, outcome, calendar_id, error, kind, next_at, reminders, planned_until)


def _result(row: EventRow | Undecodable, calendar: CalendarOutcome | None, passes: PassSettings,
            now: datetime) -> EventResult:
    """:func:`plan_event`, or the failure of a row that cannot be planned: never raises."""
    if isinstance(row, Undecodable):
        return EventResult(row.id, row.version, EventOutcome.FAILED, row.google_calendar_id,
                           f"cannot read this event: {row.reason}", ErrorKind.INVALID_ROW)
    try:
        return plan_event(row, calendar, passes, now)
    except Exception as exc:  # one row's surprise (an overflow near year 1 or 9999) must not cost the batch
        logs.get().exception("event.plan_crashed", extra={"fields": {"event_id": row.id}})
        return EventResult(row.id, row.version, EventOutcome.FAILED, row.google_calendar_id,
                           f"cannot plan this event: {type(exc).__name__}: {exc}", ErrorKind.INVALID_ROW)


class _Batch:
    """One claim of the events step, and its calendar sync, running or done."""

    def __init__(self, claim: uuid.UUID, rows: list[EventRow | Undecodable], now: datetime) -> None:
        self.claim = claim
        self.rows = rows
        self.now = now
        self.readable = [r for r in rows if isinstance(r, EventRow) and reaches_calendar(r) and
                         (r.status == EventStatus.CANCELLED or row_problem(r) is None)]
        self.sync: Future[Mapping[str, CalendarOutcome]] = Future()


def events_step(gateway: Gateway, passes: PassSettings, clock: PassClock, counts: PassCounts,
                calendar: CalendarPort | None) -> str | None:
    """Sync, plan and complete claimed events, batch after batch.

    Pipelined when a batch needs Google: while Google works on batch *n* (on a helper thread,
    :meth:`CalendarPort.sync`), this thread claims batch *n+1*, then plans and completes batch *n-1*
    as soon as batch *n*'s sync has started; so Google waits neither for the database nor for the
    planner, and at most two batches are claimed at once (each with its own claim id and lease;
    the database is only ever used from this thread). Calendar syncs never overlap each other.

    Returns why Google failed when every calendar call of the pass met an unreachable or failing
    Google (network, 5xx): the pass exits 1, after still sending the pushes. A user's rate limit
    is that user's weather, not Google's.
    """
    health = _CalendarHealth()
    with _Syncer(calendar, gateway) as syncer:
        batch = _claim(gateway, passes, clock)
        if batch is not None:
            syncer.start(batch)
        while batch is not None:
            following = _claim(gateway, passes, clock) if len(batch.rows) >= passes.batch_size else None
            outcomes = batch.sync.result()
            if following is not None:
                syncer.start(following)  # Google works on the next batch while this one is completed
            health.note(outcomes)
            _complete(gateway, passes, clock, counts, batch, outcomes)
            batch = following
    return health.error()


class _CalendarHealth:
    """Whether Google answered at all in the pass, or only failed (network, 5xx)."""

    def __init__(self) -> None:
        self.answered = False
        self.error_text: str | None = None

    def note(self, outcomes: Mapping[str, CalendarOutcome]) -> None:
        for outcome in outcomes.values():
            if outcome.kind is ErrorKind.GOOGLE_UNAVAILABLE:
                self.error_text = self.error_text or outcome.error
            else:
                self.answered = True

    def error(self) -> str | None:
        return None if self.answered or self.error_text is None else self.error_text


class _Syncer:
    """Runs a batch's calendar sync: on a helper thread when it has anything for Google, inline
    (no thread) when not; the thread is started on the first batch that needs it."""

    def __init__(self, calendar: CalendarPort | None, gateway: Gateway) -> None:
        self._calendar = calendar
        self._thread: ThreadPoolExecutor | None = None
        # The project's quota (GOOGLE_MAX_REQUESTS_PER_SECOND) is shared by every worker of the
        # database: booked on the schedule they share, on a connection of its own (opened only
        # when a request needs a slot).
        rate = calendar.requests_per_second if calendar is not None else 0.0
        self._gateway = gateway
        self._pace = SharedPace(gateway.sibling, GOOGLE_SCHEDULE, rate) if rate > 0 else None

    def start(self, batch: _Batch) -> None:
        if self._calendar is None or not batch.readable:
            batch.sync.set_result({})
            return
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="events-sync")
        calendar = self._calendar
        batch.sync = self._thread.submit(calendar.sync, batch.readable, batch.now, pace=self._pace)

    def __enter__(self) -> _Syncer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)  # a sync still running finishes (its batch is leased)
        if self._pace is not None:
            self._pace.close()
            self._gateway.round_trips += self._pace.round_trips


def _claim(gateway: Gateway, passes: PassSettings, clock: PassClock) -> _Batch | None:
    now = clock.now()
    claim = uuid.uuid4()
    rows = gateway.claim_events(now, claim, passes.batch_size, passes.lease_seconds,
                                horizon_seconds=passes.recurrence_horizon_days * 86400, patience=clock.patience)
    return _Batch(claim, rows, now) if rows else None


def _complete(gateway: Gateway, passes: PassSettings, clock: PassClock, counts: PassCounts, batch: _Batch,
              outcomes: Mapping[str, CalendarOutcome]) -> None:
    """Plan the batch's events and complete it in one call (guarded by its claim and versions)."""
    rows = batch.rows
    now = clock.now()
    results = [_result(r, outcomes.get(r.id), passes, now) for r in rows]
    for res in results:
        if res.outcome is EventOutcome.FAILED:
            logs.event("event.failed", logging.WARNING, event_id=res.id, reason=res.error, kind=res.error_kind)
    done = gateway.complete_events(clock.now(), batch.claim, results, patience=clock.patience)
    cancelled = {r.id for r in rows if isinstance(r, EventRow) and r.status == EventStatus.CANCELLED}
    extended = {r.id for r in rows if isinstance(r, EventRow) and not r.needs_sync}
    for res in results:
        if res.id in cancelled:
            counts.events_cancelled += res.outcome is not EventOutcome.RETRY
        elif res.id in extended and res.outcome is EventOutcome.SYNCED:
            counts.events_extended += 1
        elif res.outcome is EventOutcome.SYNCED:
            counts.events_synced += 1
        elif res.outcome is EventOutcome.FAILED:
            counts.events_failed += 1
        else:
            counts.events_retried += 1
    google = Counter(outcome.outcome for outcome in outcomes.values())
    counts.calendar_synced += google[EventOutcome.SYNCED]
    counts.calendar_failed += google[EventOutcome.FAILED]
    counts.calendar_retried += google[EventOutcome.RETRY]
    stale = done.get("stale", 0)
    counts.events_superseded += stale
    counts.reminders_planned += done.get("reminders_planned", 0)
    counts.reminders_unplanned += done.get("reminders_unplanned", 0)
    logs.event("events.batch", claimed=len(rows), superseded=stale,
               reminders_planned=done.get("reminders_planned", 0))
