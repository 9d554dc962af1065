"""What the steps of one pass share: the clock, the counts, and the ways a pass can stop short."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from worker.vocabulary import ErrorKind

#: Share of a claim's lease kept back: a step stops trying to write, and sends nothing more, when
#: less than this is left of the lease.
LEASE_MARGIN = 0.2


class PassClock:
    """The pass's "now": the instant it started (``run --now`` sets it), moving on in real time.

    Every write of a pass uses this clock, so leases taken late in a long pass still last their full
    length in the database's eyes, and a simulated pass behaves like a real one that started then.
    """

    def __init__(self, start: datetime | None = None, *, lease_seconds: float = 300.0) -> None:
        self.start = start or datetime.now(UTC)
        self._t0 = time.monotonic()
        #: How long a call of a step keeps trying an unreachable database: what a claim's lease
        #: allows, less a margin (the outage must be over before another pass may take rows over).
        self.patience = lease_seconds * (1 - LEASE_MARGIN)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._t0)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0


@dataclass
class PassCounts:
    """The summary line's counts."""

    events_synced: int = 0
    events_failed: int = 0
    events_retried: int = 0
    events_cancelled: int = 0
    events_superseded: int = 0
    events_extended: int = 0  # recurring events whose reminders were planned further ahead, nothing else
    # Of those, what Google made of the events the pass took to it (the calendar alert's ratio):
    calendar_synced: int = 0  # written, moved or deleted in the parent's calendar
    calendar_failed: int = 0  # refused for good (a revoked grant, a calendar that is gone)
    calendar_retried: int = 0  # to try again (Google unreachable, 429, 5xx)
    reminders_planned: int = 0
    reminders_unplanned: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    expired: int = 0
    superseded: int = 0
    cancelled: int = 0
    deferred: int = 0
    released: int = 0
    tokens_cleared: int = 0
    receipts_ok: int = 0
    receipts_failed: int = 0
    receipts_resent: int = 0
    receipts_deferred: int = 0
    receipts_missing: int = 0
    receipts_unknown: int = 0


@dataclass
class PassResult:
    counts: PassCounts = field(default_factory=PassCounts)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration: float = 0.0
    exit_code: int = 0
    error: str | None = None
    error_kind: ErrorKind | None = None
    db_round_trips: int = 0


class PassAborted(Exception):
    """A dependency failed for the whole pass: exit 1. What could not be done is recorded."""

    def __init__(self, reason: str, kind: ErrorKind) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass
class Degraded:
    """Something went wrong for the whole project but the pass carried on (exit 1 at the end),
    e.g. Expo refusing the project's push credentials while other messages still went out."""

    reasons: dict[ErrorKind, str] = field(default_factory=dict)

    def add(self, kind: ErrorKind, reason: str) -> None:
        self.reasons.setdefault(kind, reason)

    def first(self) -> tuple[ErrorKind, str] | None:
        return next(iter(self.reasons.items()), None)
