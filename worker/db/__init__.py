"""The database gateway: the pass's only way to the data, one SQL function per call.

Two transports stand behind one small interface: direct Postgres (``DATABASE_URL``) and the
Supabase Data API (PostgREST ``rpc``). Both call the same functions from ``sql/functions/`` and
read the same JSON documents back, so the typed methods here are written once, over
:meth:`Gateway._call`, which makes exactly one attempt.

Retrying is decided here, once, with one policy (:func:`worker.retry.database_retrying`): every
worker function is safe to call again (claims are per call and answer a retried call with the rows
they already hold; writes are guarded by the claim), so a call that meets an unreachable database
is tried again with backoff for as long as the caller's *patience* allows. An outcome write's
patience is what is left of its claim's lease: outcomes that Expo accepted are kept trying to be
written while the database is away, and given up only when another pass could take the rows over.
"""

from __future__ import annotations

import abc
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker.records import (
    Booking,
    EventResult,
    EventRow,
    PushResult,
    ReceiptResult,
    ReceiptRow,
    ReminderClaim,
    ReminderRow,
    Undecodable,
    decode_each,
    wire_all,
)
from worker.retry import database_retrying
from worker.vocabulary import CONSTRAINED_COLUMNS, EventStatus, ReminderStatus, constraint_name

if TYPE_CHECKING:
    from worker.config import DatabaseSettings

#: How long a call with nothing at stake (a claim, a read) keeps trying an unreachable database.
DEFAULT_PATIENCE = 10.0

__all__ = [
    "DEFAULT_PATIENCE",
    "DatabaseError",
    "DatabaseUnavailable",
    "EventRow",
    "Gateway",
    "ReceiptRow",
    "ReminderClaim",
    "ReminderRow",
    "SchemaOutdated",
    "Undecodable",
    "open_gateway",
]


class DatabaseUnavailable(Exception):
    """The database (or the Data API in front of it) could not be reached or failed the call."""


class DatabaseError(Exception):
    """The database refused a call: a bug or a schema that does not match (never retried)."""


class SchemaOutdated(DatabaseError):
    """The worker's functions are missing or older than this code: ``migrate`` fixes it."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the database's worker schema is missing or older than this code ({detail}): "
            "run `python worker/main.py migrate`")


def _counts(doc: Any) -> dict[str, int]:
    return {k: int(v) for k, v in (doc or {}).items() if isinstance(v, int | float)}


class Gateway(abc.ABC):
    """The pass's view of the database. Each method is one call of one SQL function."""

    #: Calls made so far (each is one round trip, retries included); benchmarks report it.
    round_trips: int = 0

    @abc.abstractmethod
    def _call(self, function: str, params: Mapping[str, Any]) -> Any:
        """Call ``public.<function>`` once with named JSON-ready parameters; return its JSON result."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def sibling(self) -> Gateway:
        """Another gateway to the same database on its own connection, for work that overlaps this
        one's (the push step claims on one while it records on the other). The caller closes it."""

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, function: str, *, patience: float = DEFAULT_PATIENCE, **params: Any) -> Any:
        """Call a worker function, trying again while the database is unreachable, up to ``patience``
        seconds; then :class:`DatabaseUnavailable`."""
        wire = {k: _param(v) for k, v in params.items()}
        for attempt in database_retrying(patience, DatabaseUnavailable, function):
            with attempt:
                self.round_trips += 1
                return self._call(function, wire)
        raise AssertionError("unreachable")

    # --- the events step ------------------------------------------------------------------------

    def claim_events(self, now: datetime, claim: uuid.UUID, limit: int, lease_seconds: int, *,
                     horizon_seconds: int = 14 * 86400,
                     patience: float = DEFAULT_PATIENCE) -> list[EventRow | Undecodable]:
        doc = self.call("worker_claim_events", patience=patience, p_now=now, p_claim=claim, p_limit=limit,
                        p_lease_seconds=lease_seconds, p_horizon_seconds=horizon_seconds)
        return decode_each(doc, EventRow.from_json)

    def complete_events(self, now: datetime, claim: uuid.UUID, results: Sequence[EventResult], *,
                        patience: float = DEFAULT_PATIENCE) -> dict[str, int]:
        return _counts(self.call("worker_complete_events", patience=patience, p_now=now, p_claim=claim,
                                 p_results=wire_all(results)))

    def book_sends(self, name: str, count: int, rate: float, *, lookahead_seconds: float = 2.0,
                   patience: float = DEFAULT_PATIENCE) -> Booking:
        """Book ``count`` requests at ``rate`` a second on the schedule ``name`` every worker shares
        (see sql/functions/public.worker_book_sends.sql)."""
        doc = self.call("worker_book_sends", patience=patience, p_name=name, p_count=count, p_rate=rate,
                        p_lookahead_seconds=lookahead_seconds) or {}
        return Booking(send_in=_seconds(doc.get("send_in")), rate=_seconds(doc.get("rate")),
                       wait=_seconds(doc.get("wait_seconds")), answered_at=time.monotonic())

    # --- the push step --------------------------------------------------------------------------

    def claim_reminders(self, now: datetime, claim: uuid.UUID, limit: int, lease_seconds: int, *,
                        rate: float = 0.0, lookahead_seconds: float = 2.0, lead_seconds: float = 0.0,
                        patience: float = DEFAULT_PATIENCE) -> ReminderClaim:
        """Claim due reminders; with ``rate`` (messages a second, 0: none) book their sends on the
        schedule all workers share (see sql/functions/public.worker_claim_reminders.sql)."""
        doc = self.call("worker_claim_reminders", patience=patience, p_now=now, p_claim=claim, p_limit=limit,
                        p_lease_seconds=lease_seconds, p_rate=rate, p_lookahead_seconds=lookahead_seconds,
                        p_lead_seconds=lead_seconds) or {}
        answered_at = time.monotonic()
        return ReminderClaim(rows=decode_each(doc.get("claimed"), ReminderRow.from_json),
                             cancelled=int(doc.get("cancelled") or 0), expired=int(doc.get("expired") or 0),
                             superseded=int(doc.get("superseded") or 0), send_in=_seconds(doc.get("send_in")),
                             rate=_seconds(doc.get("rate")), wait=_seconds(doc.get("wait_seconds")),
                             answered_at=answered_at)

    def record_push_outcomes(self, now: datetime, claims: Sequence[uuid.UUID], max_attempts: int,
                             outcomes: Sequence[PushResult], *, patience: float = DEFAULT_PATIENCE) -> dict[str, int]:
        return _counts(self.call("worker_record_push_outcomes", patience=patience, p_now=now, p_claims=list(claims),
                                 p_max_attempts=max_attempts, p_outcomes=wire_all(outcomes)))

    # --- the receipts step ----------------------------------------------------------------------

    def claim_receipts(self, now: datetime, claim: uuid.UUID, limit: int, lease_seconds: int,
                       delay_seconds: int, *, patience: float = DEFAULT_PATIENCE) -> list[ReceiptRow | Undecodable]:
        doc = self.call("worker_claim_receipts", patience=patience, p_now=now, p_claim=claim, p_limit=limit,
                        p_lease_seconds=lease_seconds, p_delay_seconds=delay_seconds)
        return decode_each(doc, ReceiptRow.from_json)

    def record_receipts(self, now: datetime, claims: Sequence[uuid.UUID], max_attempts: int,
                        outcomes: Sequence[ReceiptResult], *, patience: float = DEFAULT_PATIENCE) -> dict[str, int]:
        return _counts(self.call("worker_record_receipts", patience=patience, p_now=now, p_claims=list(claims),
                                 p_max_attempts=max_attempts, p_outcomes=wire_all(outcomes)))

    # --- operations -----------------------------------------------------------------------------

    def record_run(self, now: datetime, *, started_at: datetime, finished_at: datetime, trigger: str,
                   counts: Mapping[str, Any], exit_code: int, error: str | None, error_kind: str | None,
                   runs_retention_days: int | None, reminder_retention_days: int | None,
                   prune_limit: int = 1000, patience: float = DEFAULT_PATIENCE) -> dict[str, int]:
        """Store one pass in worker_runs and prune what is past retention (None: no pruning)."""
        return _counts(self.call(
            "worker_record_run", patience=patience, p_now=now, p_started_at=started_at,
            p_finished_at=finished_at, p_trigger=trigger, p_counts=dict(counts), p_exit_code=exit_code,
            p_error=error, p_error_kind=error_kind, p_runs_retention_days=runs_retention_days,
            p_reminder_retention_days=reminder_retention_days, p_prune_limit=prune_limit))

    def status(self, now: datetime, *, patience: float = DEFAULT_PATIENCE) -> dict[str, Any]:
        """The status view's document (see sql/functions/public.worker_status.sql)."""
        return dict(self.call("worker_status", patience=patience, p_now=now) or {})

    def audit(self, *, patience: float = DEFAULT_PATIENCE) -> dict[str, Any]:
        """What `check` reports about the live database (sql/functions/public.worker_audit.sql)."""
        return dict(self.call("worker_audit", patience=patience, p_event_statuses=[s.value for s in EventStatus],
                              p_reminder_statuses=[s.value for s in ReminderStatus],
                              p_constraints=[constraint_name(t, c) for t, c in CONSTRAINED_COLUMNS]) or {})

    def secure_tokens(self, *, dry_run: bool) -> dict[str, Any]:
        """Move Google refresh tokens from user metadata into the worker's private store."""
        return dict(self.call("worker_secure_tokens", p_dry_run=dry_run) or {})

    def schema_version(self, *, patience: float = DEFAULT_PATIENCE) -> dict[str, Any]:
        """``{"version": newest applied migration, "definitions": checksum of the definitions}``."""
        return dict(self.call("worker_schema_version", patience=patience) or {})


def _seconds(value: Any) -> float | None:
    """A number of a function's JSON answer (Postgres' numeric may come as text through the Data API)."""
    return None if value is None else float(value)


def _param(value: Any) -> Any:
    """A parameter as JSON-ready data: what both transports send (PostgREST's rpc body is JSON)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_param(v) for v in value]
    return value


def open_gateway(database: DatabaseSettings) -> Gateway:
    """The gateway the settings ask for: ``DATABASE_URL`` wins over the Data API."""
    database.require()
    if database.url is not None:
        from worker.db.postgres import PostgresGateway  # each transport only when used (supabase-py is heavy)

        return PostgresGateway(database.url)
    from worker.db.supabase import SupabaseGateway  # each transport only when used (supabase-py is heavy)

    assert database.supabase_url is not None
    assert database.supabase_key is not None
    return SupabaseGateway(database.supabase_url, database.supabase_key)
