"""The worker's words: every state and outcome a row or a pass can be in, typed once.

The same words are the values of the database's status columns (``sql/vocabulary.sql`` holds the
CHECK constraints, and ``tests/unit/test_vocabulary.py`` proves both sides agree), the outcome
words the pass hands to the SQL functions, and what ``status`` counts. Nothing else in the code or
the SQL spells a state as a bare string.
"""

from __future__ import annotations

from enum import StrEnum


class EventStatus(StrEnum):
    """``events.status``: seed 004's words. The app writes ``pending`` and ``cancelled``."""

    PENDING = "pending"  # new, or edited (a trigger puts an edited event back here)
    SYNCED = "synced"
    FAILED = "failed"  # a permanent error, in error_message (kind in error_kind)
    CANCELLED = "cancelled"  # set by the app: the calendar entry goes, unsent reminders are cancelled


class ReminderStatus(StrEnum):
    """``reminders.status``. ``sending`` is the worker's in-flight state (held by a claim)."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"  # Expo accepted the message (sent_at_ts)
    FAILED = "failed"
    EXPIRED = "expired"  # not sent: the event had started, or a later reminder superseded it
    CANCELLED = "cancelled"


class ReceiptStatus(StrEnum):
    """``reminders.receipt_status``: what Expo's receipt said about a sent reminder."""

    OK = "ok"
    ERROR = "error"
    UNKNOWN = "unknown"  # Expo had no receipt 24 hours after accepting the message


class RunTrigger(StrEnum):
    """``worker_runs.trigger``: what started a pass."""

    CRON = "cron"
    HTTP = "http"
    MANUAL = "manual"
    LOOP = "loop"


class RunState(StrEnum):
    """Where a pass that ``serve`` started stands (``GET /runs/{id}``)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ErrorKind(StrEnum):
    """Why something did not go through: ``events.error_kind``, ``reminders.error_kind`` and
    ``worker_runs.error_kind``. ``error_message`` says it for people; this says it for code,
    triggers and ``status``."""

    # A row the worker cannot use: values Python cannot represent, times out of order, text too long.
    INVALID_ROW = "invalid_row"
    TIMEZONE = "timezone"  # the owner's time zone is not one the worker knows
    # Google Calendar.
    GOOGLE_REVOKED = "google_revoked"  # the parent's grant is gone: waits until they reconnect
    GOOGLE_REFUSED = "google_refused"  # 400/403/404: Google will not take this change
    GOOGLE_RATE_LIMITED = "google_rate_limited"
    GOOGLE_UNAVAILABLE = "google_unavailable"  # network, 5xx, token endpoint trouble
    GOOGLE_CONFIG = "google_config"  # our OAuth client or service-account key was refused
    # Expo push.
    NO_TOKEN = "no_token"  # the owner has no push token  # noqa: S105 - a word, not a secret
    BAD_TOKEN = "bad_token"  # the token is not an Expo push token  # noqa: S105
    DEVICE_NOT_REGISTERED = "device_not_registered"
    EXPO_CREDENTIALS = "expo_credentials"  # 401, InvalidCredentials, MismatchSenderId: the operator's
    EXPO_UNAVAILABLE = "expo_unavailable"  # network, 429, 5xx
    EXPO_REJECTED = "expo_rejected"  # a 400, MessageTooBig: the message itself is refused
    EXPO_RATE_EXCEEDED = "expo_rate_exceeded"  # MessageRateExceeded: too many to this device
    RECEIPT_UNKNOWN = "receipt_unknown"
    # Settled without sending.
    PUSH_DISABLED = "push_disabled"  # the parent turned push reminders off (notification_preferences)
    CHILD_MUTED = "child_muted"  # the parent muted the event's child
    SUPERSEDED = "superseded"  # a later reminder of the same occurrence was due as well
    EVENT_STARTED = "event_started"
    EVENT_CANCELLED = "event_cancelled"
    # A whole pass (worker_runs.error_kind).
    DATABASE_UNAVAILABLE = "database_unavailable"
    SCHEMA = "schema"  # the database's schema is missing or older than the code
    CONFIG = "config"
    CRASH = "crash"  # an unexpected error: a bug


class EventOutcome(StrEnum):
    """What the events step tells ``worker_complete_events`` about one claimed event."""

    SYNCED = "synced"  # done (or nothing to do in Google)
    FAILED = "failed"  # permanent: error says why
    RETRY = "retry"  # transient: try again at next_attempt_at


class PushOutcome(StrEnum):
    """What the push step tells ``worker_record_push_outcomes`` about one claimed reminder."""

    SENT = "sent"  # Expo accepted the message
    RETRY = "retry"  # transient: counts an attempt, backs off
    FAILED = "failed"  # permanent
    DEFERRED = "deferred"  # not the reminder's fault (Expo credentials): later, no attempt counted
    RELEASED = "released"  # claimed but never sent (the pass stopped early): back to pending as is


class ReceiptOutcome(StrEnum):
    """What the receipts step tells ``worker_record_receipts`` about one sent reminder."""

    OK = "ok"
    FAILED = "failed"  # not delivered, for good
    RESEND = "resend"  # not delivered, worth another send (counts an attempt)
    DEFERRED = "deferred"  # not delivered because of our credentials: send again later, no attempt
    MISSING = "missing"  # Expo has no receipt yet: ask again later (counts a check)
    LATER = "later"  # Expo could not be asked: ask again later (no check counted)
    UNKNOWN = "unknown"  # never coming: settle


def constraint_name(table: str, column: str) -> str:
    """The CHECK constraint sql/vocabulary.sql puts on a vocabulary column."""
    return f"{table}_{column}_check"


#: The columns whose values the database constrains to a vocabulary, and the words of each.
CONSTRAINED_COLUMNS: dict[tuple[str, str], type[StrEnum]] = {
    ("events", "status"): EventStatus,
    ("events", "error_kind"): ErrorKind,
    ("reminders", "status"): ReminderStatus,
    ("reminders", "error_kind"): ErrorKind,
    ("reminders", "receipt_status"): ReceiptStatus,
    ("worker_runs", "trigger"): RunTrigger,
    ("worker_runs", "error_kind"): ErrorKind,
}
