"""The database gateway: the pass's only way to the data, one SQL function per call.

Two transports stand behind one small interface: direct Postgres (``DATABASE_URL``) and the
Supabase Data API (PostgREST ``rpc``). Both call the same functions from ``sql/`` and read the same
JSON documents back, so the typed methods here are written once, over :meth:`Gateway._call`.
"""

from __future__ import annotations

import abc
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.config import Settings


class DatabaseUnavailable(Exception):
    """The database (or the Data API in front of it) could not be reached or failed the call."""


class DatabaseError(Exception):
    """The database refused a call: a bug or a schema that does not match (never retried)."""


def _ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _req_ts(value: Any) -> datetime:
    parsed = _ts(value)
    if parsed is None:
        raise DatabaseError("a required timestamp is missing from the database's answer")
    return parsed


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
    owner_calendar_id: str | None = None  # profiles.google_calendar_id (service-account calendars)

    def __repr__(self) -> str:  # the refresh token stays out of reprs and tracebacks
        return f"EventRow(id={self.id!r}, version={self.version}, status={self.status!r})"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EventRow:
        return cls(
            id=str(d["id"]), version=int(d["version"]), user_id=d.get("user_id"), status=str(d["status"]),
            title=str(d.get("title") or ""), start_ts=_req_ts(d["start_ts"]), end_ts=_req_ts(d["end_ts"]),
            location=d.get("location"),
            prep_items=tuple(d["prep_items"]) if d.get("prep_items") is not None else None,
            google_calendar_id=d.get("google_calendar_id"), attempts=int(d.get("attempts") or 0),
            child_name=d.get("child_name"), has_profile=bool(d.get("has_profile")),
            timezone=d.get("timezone"), google_refresh_token=d.get("google_refresh_token"),
            owner_calendar_id=d.get("owner_calendar_id"),
        )


@dataclass(frozen=True, slots=True)
class ReminderRow:
    """A claimed reminder with its event, child and the owner's current push token."""

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
    push_token: str | None
    timezone: str | None

    def __repr__(self) -> str:  # the push token stays out of reprs and tracebacks
        return f"ReminderRow(id={self.id!r}, event_id={self.event_id!r})"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ReminderRow:
        return cls(
            id=str(d["id"]), event_id=str(d["event_id"]), user_id=d.get("user_id"),
            notify_at_ts=_req_ts(d["notify_at_ts"]), retry_count=int(d.get("retry_count") or 0),
            title=str(d.get("title") or ""), start_ts=_req_ts(d["start_ts"]), location=d.get("location"),
            prep_items=tuple(d["prep_items"]) if d.get("prep_items") is not None else None,
            child_name=d.get("child_name"), has_profile=bool(d.get("has_profile")),
            push_token=d.get("push_token"), timezone=d.get("timezone"),
        )


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    """A sent reminder whose Expo receipt is due, claimed for checking."""

    id: str
    ticket_id: str
    sent_at_ts: datetime
    receipt_checks: int
    retry_count: int

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ReceiptRow:
        return cls(id=str(d["id"]), ticket_id=str(d["ticket_id"]), sent_at_ts=_req_ts(d["sent_at_ts"]),
                   receipt_checks=int(d.get("receipt_checks") or 0), retry_count=int(d.get("retry_count") or 0))


@dataclass(frozen=True, slots=True)
class ReminderClaim:
    rows: list[ReminderRow]
    cancelled: int
    expired: int


def to_wire(value: Any) -> Any:
    """A parameter as JSON-compatible data (what PostgREST receives)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [to_wire(v) for v in value]
    return value


def to_text(value: Any) -> str | None:
    """A parameter as text that Postgres casts to the function's declared parameter type."""
    wire = to_wire(value)
    if wire is None:
        return None
    if isinstance(wire, dict | list):
        return json.dumps(wire, separators=(",", ":"))
    if isinstance(wire, bool):
        return "true" if wire else "false"
    return str(wire)


class Gateway(abc.ABC):
    """The pass's view of the database. Each method is one call of one SQL function."""

    #: Calls made so far (each is one round trip); benchmarks report it.
    round_trips: int = 0

    @abc.abstractmethod
    def _call(self, function: str, params: Mapping[str, Any]) -> Any:
        """Call ``public.<function>`` with named parameters and return its JSON result."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, function: str, **params: Any) -> Any:
        self.round_trips += 1
        return self._call(function, params)

    def claim_events(self, now: datetime, claim: uuid.UUID, limit: int, lease_seconds: int) -> list[EventRow]:
        doc = self.call("worker_claim_events", p_now=now, p_claim=claim, p_limit=limit,
                        p_lease_seconds=lease_seconds)
        return [EventRow.from_json(d) for d in doc or []]

    def complete_events(self, now: datetime, claim: uuid.UUID, results: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        doc = self.call("worker_complete_events", p_now=now, p_claim=claim, p_results=list(results))
        return {k: int(v) for k, v in (doc or {}).items()}

    def claim_reminders(self, now: datetime, claim: uuid.UUID, limit: int, lease_seconds: int) -> ReminderClaim:
        doc = self.call("worker_claim_reminders", p_now=now, p_claim=claim, p_limit=limit,
                        p_lease_seconds=lease_seconds) or {}
        return ReminderClaim(
            rows=[ReminderRow.from_json(d) for d in doc.get("claimed") or []],
            cancelled=int(doc.get("cancelled") or 0), expired=int(doc.get("expired") or 0),
        )

    def record_push_outcomes(self, now: datetime, claim: uuid.UUID, max_attempts: int,
                             outcomes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        doc = self.call("worker_record_push_outcomes", p_now=now, p_claim=claim, p_max_attempts=max_attempts,
                        p_outcomes=list(outcomes))
        return {k: int(v) for k, v in (doc or {}).items()}

    def claim_receipts(self, now: datetime, claim: uuid.UUID, limit: int, lease_seconds: int,
                       delay_seconds: int) -> list[ReceiptRow]:
        doc = self.call("worker_claim_receipts", p_now=now, p_claim=claim, p_limit=limit,
                        p_lease_seconds=lease_seconds, p_delay_seconds=delay_seconds)
        return [ReceiptRow.from_json(d) for d in doc or []]

    def record_receipts(self, now: datetime, claim: uuid.UUID, max_attempts: int,
                        outcomes: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        doc = self.call("worker_record_receipts", p_now=now, p_claim=claim, p_max_attempts=max_attempts,
                        p_outcomes=list(outcomes))
        return {k: int(v) for k, v in (doc or {}).items()}

    def record_run(self, now: datetime, *, started_at: datetime, finished_at: datetime, trigger: str,
                   counts: Mapping[str, Any], exit_code: int, error: str | None,
                   runs_retention_days: int | None, reminder_retention_days: int | None,
                   prune_limit: int = 1000) -> dict[str, int]:
        """Store one pass in worker_runs and prune what is past retention (None: no pruning)."""
        doc = self.call("worker_record_run", p_now=now, p_started_at=started_at, p_finished_at=finished_at,
                        p_trigger=trigger, p_counts=dict(counts), p_exit_code=exit_code, p_error=error,
                        p_runs_retention_days=runs_retention_days,
                        p_reminder_retention_days=reminder_retention_days, p_prune_limit=prune_limit)
        return {k: int(v) for k, v in (doc or {}).items()}

    def status(self, now: datetime) -> dict[str, Any]:
        """The status view's document (see worker_status in sql/004)."""
        doc = self.call("worker_status", p_now=now)
        return dict(doc or {})

    def schema_version(self) -> int:
        doc = self.call("worker_schema_version") or {}
        return int(doc.get("version") or 0)


def open_gateway(settings: Settings) -> Gateway:
    """The gateway the settings ask for: ``DATABASE_URL`` wins over the Data API."""
    settings.require_database()
    if settings.database_url is not None:
        from worker.db.postgres import PostgresGateway

        return PostgresGateway(settings.database_url)
    from worker.db.supabase import SupabaseGateway

    assert settings.supabase_url is not None
    assert settings.supabase_key is not None
    return SupabaseGateway(settings.supabase_url, settings.supabase_key)
