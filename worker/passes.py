"""One pass: the events step, then the push step. This module ties the parts together.

The pass decides nothing the planner could decide and stores nothing itself: it claims a batch
through the gateway, asks the planner and the clients, and hands the whole batch's outcome back
in one call. A pass killed at any instant leaves claimed rows behind that a later pass takes over
once their lease runs out.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from worker import logs, planner
from worker.db import DatabaseError, DatabaseUnavailable, EventRow, Gateway, ReminderRow
from worker.push import Delivery, ExpoPusher, Outbound, PendingSend

if TYPE_CHECKING:
    from worker.config import Settings

# Room kept free in Expo's 4096 bytes for what our estimate of the payload may miss.
_PAYLOAD_MARGIN = 96


@dataclass
class PassCounts:
    """The summary line's counts."""

    events_synced: int = 0
    events_failed: int = 0
    events_retried: int = 0
    events_cancelled: int = 0
    events_superseded: int = 0
    reminders_planned: int = 0
    reminders_unplanned: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    deferred: int = 0
    tokens_cleared: int = 0
    receipts_ok: int = 0
    receipts_failed: int = 0
    receipts_resent: int = 0
    receipts_missing: int = 0
    receipts_unknown: int = 0


@dataclass
class PassResult:
    counts: PassCounts = field(default_factory=PassCounts)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration: float = 0.0
    exit_code: int = 0
    error: str | None = None
    db_round_trips: int = 0


@dataclass(frozen=True)
class CalendarOutcome:
    """What the calendar made of one event: outcome synced|failed|retry, the entry's id, why."""

    outcome: str
    google_calendar_id: str | None
    error: str | None = None


class CalendarPort(Protocol):
    """Puts a batch of claimed events into their owners' calendars (see worker.calendar_sync)."""

    def sync(self, events: Sequence[EventRow], now: datetime) -> Mapping[str, CalendarOutcome]: ...

    def close(self) -> None: ...


class PassAborted(Exception):
    """A dependency failed for the whole pass; exit 1. What could not be done is recorded."""


# --- the events step ----------------------------------------------------------------------------


def plan_event(row: EventRow, calendar: CalendarOutcome | None, settings: Settings, now: datetime,
               rng: Any = None) -> dict[str, Any]:
    """The completion record for one claimed event (see worker_complete_events in sql/)."""
    result: dict[str, Any] = {"id": row.id, "version": row.version, "outcome": "synced",
                              "google_calendar_id": row.google_calendar_id, "error": None,
                              "next_attempt_at": None, "reminders": []}
    if calendar is not None:
        result["outcome"] = calendar.outcome
        result["google_calendar_id"] = calendar.google_calendar_id
        result["error"] = calendar.error
        kind = getattr(calendar, "error_kind", None)
        result["error_kind"] = kind if kind == "auth" else None  # the one kind events remember
        if calendar.outcome == "retry":
            result["next_attempt_at"] = planner.next_attempt_at(
                now, row.attempts + 1, settings.retry_base_seconds, settings.retry_max_seconds, rng)
    if row.status == "cancelled":
        return result
    problem = planner.event_problem(row.title, row.start_ts, row.end_ts, row.location, row.prep_items)
    if problem is not None:
        result.update(outcome="failed", error=problem, next_attempt_at=None)
        return result
    tz, _ = planner.timezone_for(row.timezone)
    for at in planner.reminder_times(row.start_ts, settings.reminder_offsets, now, tz):
        preview = planner.render_message(
            title=row.title, child_name=row.child_name, start_ts=row.start_ts, location=row.location,
            prep_items=row.prep_items, now=at, zone_name=row.timezone,
            max_bytes=planner.EXPO_MAX_PAYLOAD_BYTES - 300)
        result["reminders"].append({"notify_at_ts": at, "message": preview.as_text()})
    return result


def events_step(gateway: Gateway, settings: Settings, now: datetime, claim: uuid.UUID, counts: PassCounts,
                calendar: CalendarPort | None) -> str | None:
    """Sync, plan and complete claimed events, batch after batch.

    Returns why Google failed when every calendar call of the pass met an unreachable or failing
    Google (network, 5xx): the pass exits 1, after still sending the pushes. A user's rate limit
    is that user's weather, not Google's.
    """
    calendar_answered = False
    calendar_error: str | None = None
    while True:
        rows = gateway.claim_events(now, claim, settings.batch_size, settings.lease_seconds)
        if not rows:
            break
        outcomes = calendar.sync(rows, now) if calendar is not None else {}
        for outcome in outcomes.values():
            if getattr(outcome, "error_kind", None) == "unavailable":
                calendar_error = calendar_error or outcome.error
            else:
                calendar_answered = True
        results = [plan_event(r, outcomes.get(r.id), settings, now) for r in rows]
        for row, res in zip(rows, results, strict=True):
            if res["outcome"] == "failed":
                logs.event("event.failed", 30, event_id=row.id, reason=res["error"])
        done = gateway.complete_events(now, claim, results)
        by_id = {r.id: r for r in rows}
        for res in results:
            row = by_id[res["id"]]
            if row.status == "cancelled":
                counts.events_cancelled += res["outcome"] != "retry"
            elif res["outcome"] == "synced":
                counts.events_synced += 1
            elif res["outcome"] == "failed":
                counts.events_failed += 1
            else:
                counts.events_retried += 1
        stale = done.get("stale", 0)
        counts.events_superseded += stale
        counts.reminders_planned += done.get("reminders_planned", 0)
        counts.reminders_unplanned += done.get("reminders_unplanned", 0)
        logs.event("events.batch", claimed=len(rows), superseded=stale,
                   reminders_planned=done.get("reminders_planned", 0))
        if len(rows) < settings.batch_size:
            break
    return None if calendar_answered or calendar_error is None else calendar_error


# --- the push step ------------------------------------------------------------------------------


def build_message(row: ReminderRow, now: datetime) -> Outbound | dict[str, Any]:
    """The notification for a claimed reminder, or the failure outcome that stops it being sent."""
    if not row.has_profile:
        return {"id": row.id, "outcome": "failed", "error": "the event's owner has no profile"}
    if not row.push_token:
        return {"id": row.id, "outcome": "failed", "error": "the owner has no Expo push token"}
    if not planner.is_expo_push_token(row.push_token):
        return {"id": row.id, "outcome": "failed",
                "error": "the owner's push token is malformed (expected ExponentPushToken[...] or ExpoPushToken[...])"}
    data = {"event_id": row.event_id, "reminder_id": row.id}
    expiration = int(row.start_ts.timestamp())
    skeleton = Outbound(row.id, row.push_token, "", "", data, expiration).payload()
    overhead = len(_json_bytes(skeleton)) + _PAYLOAD_MARGIN
    msg = planner.render_message(
        title=row.title, child_name=row.child_name, start_ts=row.start_ts, location=row.location,
        prep_items=row.prep_items, now=now, zone_name=row.timezone,
        max_bytes=planner.EXPO_MAX_PAYLOAD_BYTES, overhead=overhead)
    return Outbound(row.id, row.push_token, msg.title, msg.body, data, expiration)


def _json_bytes(doc: Any) -> bytes:
    import json

    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def delivery_outcome(d: Delivery, out: Outbound, row: ReminderRow, settings: Settings, now: datetime,
                     rng: Any = None) -> dict[str, Any]:
    outcome: dict[str, Any] = {
        "id": d.reminder_id, "outcome": d.outcome, "error": d.error, "ticket_id": d.ticket_id,
        "message": f"{out.title}\n{out.body}", "push_token": out.token, "clear_token": d.clear_token,
        "next_attempt_at": None,
    }
    if d.outcome == "retry":
        outcome["next_attempt_at"] = planner.next_attempt_at(
            now, row.retry_count + 1, settings.retry_base_seconds, settings.retry_max_seconds, rng)
    elif d.outcome == "deferred":
        outcome["next_attempt_at"] = now + timedelta(seconds=max(settings.retry_base_seconds, 1.0))
    return outcome


@dataclass
class _Batch:
    """A claimed batch on its way: messages in flight, outcomes known without sending."""

    rows: dict[str, ReminderRow]
    outbound: dict[str, Outbound]
    outcomes: list[dict[str, Any]]
    pending: PendingSend
    expired: int
    cancelled: int


def _prepare(gateway: Gateway, pusher: ExpoPusher, settings: Settings, now: datetime, claim: uuid.UUID,
             counts: PassCounts) -> tuple[_Batch, int]:
    """Claim one batch and put its messages on the wire; returns it and how many rows it settled."""
    claimed = gateway.claim_reminders(now, claim, settings.batch_size, settings.lease_seconds)
    counts.expired += claimed.expired
    counts.cancelled += claimed.cancelled
    rows: dict[str, ReminderRow] = {}
    outbound: dict[str, Outbound] = {}
    outcomes: list[dict[str, Any]] = []
    for row in claimed.rows:
        rows[row.id] = row
        built = build_message(row, now)
        if isinstance(built, Outbound):
            outbound[row.id] = built
        else:
            outcomes.append(built)
            logs.event("reminder.failed", 30, reminder_id=row.id, reason=built["error"])
    batch = _Batch(rows, outbound, outcomes, pusher.start(list(outbound.values())), claimed.expired,
                   claimed.cancelled)
    return batch, len(claimed.rows) + claimed.expired + claimed.cancelled


def _finish(gateway: Gateway, batch: _Batch, settings: Settings, now: datetime, claim: uuid.UUID,
            counts: PassCounts) -> bool:
    """Wait for a batch's sends, record every outcome in one call; False when Expo never answered."""
    deliveries, answered = batch.pending.result()
    outcomes = batch.outcomes + [
        delivery_outcome(d, batch.outbound[d.reminder_id], batch.rows[d.reminder_id], settings, now)
        for d in deliveries]
    if not outcomes:
        return True
    written = gateway.record_push_outcomes(now, claim, settings.push_max_attempts, outcomes)
    deferred = sum(1 for d in deliveries if d.outcome == "deferred")
    counts.sent += written.get("sent", 0)
    counts.failed += written.get("failed", 0)
    counts.tokens_cleared += written.get("tokens_cleared", 0)
    counts.deferred += deferred
    counts.retried += written.get("retried", 0) - deferred
    logs.event("push.batch", claimed=len(batch.rows), sent=written.get("sent", 0),
               retried=written.get("retried", 0) - deferred, failed=written.get("failed", 0),
               expired=batch.expired, cancelled=batch.cancelled, requests=-(-len(batch.outbound) // 100))
    if batch.outbound and not answered:
        first_error = next((d.error for d in deliveries if d.error), "no answer")
        raise PassAborted(f"Expo is unavailable: {first_error}")
    return True


def push_step(gateway: Gateway, pusher: ExpoPusher, settings: Settings, now: datetime, claim: uuid.UUID,
              counts: PassCounts) -> None:
    """Claim, send and record due reminders, batch after batch, until none are due.

    Two batches overlap: while one batch's requests are in flight, the next is claimed and put on
    the wire, and the first one's outcomes are recorded when its answers are in. A batch smaller
    than the batch size means nothing more was due.
    """
    in_flight: _Batch | None = None
    more = True
    try:
        while more or in_flight is not None:
            done, in_flight = in_flight, None
            if more:
                in_flight, handled = _prepare(gateway, pusher, settings, now, claim, counts)
                more = handled >= settings.batch_size
            if done is not None:
                _finish(gateway, done, settings, now, claim, counts)
    except PassAborted:
        if in_flight is not None:  # record what the last claimed batch met before giving up
            with contextlib.suppress(PassAborted):
                _finish(gateway, in_flight, settings, now, claim, counts)
        raise


# --- the pass -----------------------------------------------------------------------------------


def run_pass(
    settings: Settings,
    gateway: Gateway,
    *,
    now: datetime | None = None,
    pusher: ExpoPusher | None = None,
    calendar: CalendarPort | None = None,
    on_finish: Callable[[PassResult], None] | None = None,
    trigger: str = "manual",
) -> PassResult:
    """Run the events step, the push step, then the receipts step; never raises for what a pass
    may meet. The pass is recorded in worker_runs (``trigger``: cron|http|manual|loop) at the end."""
    result = PassResult()
    started = time.monotonic()
    clock = now or datetime.now(UTC)
    claim = uuid.uuid4()
    own_pusher = pusher is None
    logs.event("pass.start", now=clock.isoformat(), claim=str(claim), trigger=trigger)
    try:
        calendar_error = events_step(gateway, settings, clock, claim, result.counts, calendar)
        if pusher is None:
            from worker.push import pusher_from_settings

            pusher = pusher_from_settings(settings)
        push_step(gateway, pusher, settings, clock, claim, result.counts)
        from worker.receipts import receipts_step  # after the sends: it never delays a due push

        receipts_step(gateway, pusher, settings, clock, claim, result.counts)
        if calendar_error is not None:
            result.exit_code, result.error = 1, f"Google Calendar unavailable for the whole pass: {calendar_error}"
    except DatabaseUnavailable as exc:
        result.exit_code, result.error = 1, f"database unavailable: {exc}"
    except DatabaseError as exc:
        result.exit_code, result.error = 1, f"database error: {exc}"
    except PassAborted as exc:
        result.exit_code, result.error = 1, str(exc)
    except Exception as exc:  # the summary line must still be written
        logs.get().exception("pass.crashed")
        result.exit_code, result.error = 1, f"unexpected error: {type(exc).__name__}: {exc}"
    finally:
        if own_pusher and pusher is not None:
            pusher.close()
    result.duration = time.monotonic() - started
    result.db_round_trips = gateway.round_trips
    level = 20 if result.exit_code == 0 else 40
    logs.event("pass.summary", level, exit_code=result.exit_code, error=result.error,
               duration_s=round(result.duration, 3), db_round_trips=result.db_round_trips,
               **asdict(result.counts))
    from worker.history import record_pass
    from worker.metrics import push_pass_metrics

    record_pass(gateway, settings, result, clock, trigger)  # best effort, one call, prunes too
    push_pass_metrics(settings, result, trigger)  # only with PROMETHEUS_PUSHGATEWAY_URL
    if on_finish is not None:
        on_finish(result)
    return result
