"""What the push step sends, and what Expo's answer means for a reminder.

:func:`build_message` turns a claimed reminder into the notification (or into the failure that
stops it from being sent); :func:`classify` reads Expo's answer (:class:`worker.clients.expo.Answer`)
as a :class:`~worker.vocabulary.PushOutcome` with an :class:`~worker.vocabulary.ErrorKind`:

* ``sent``: Expo accepted it (a ticket id).
* ``retry`` (counts an attempt, backs off): ``MessageRateExceeded``, Expo unreachable or failing
  (network, 429, 5xx after the in-pass retries), an error Expo has not documented.
* ``failed``: ``DeviceNotRegistered`` (and the token is cleared), ``MessageTooBig``, a message Expo
  refuses on its own (a 400 narrowed down to it).
* ``deferred`` (no attempt counted): what concerns the Expo project, not the reminder: our access
  token refused (401/403), ``InvalidCredentials``, ``MismatchSenderId``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker import planner
from worker.clients.expo import REQUEST_REFUSED, REQUEST_REJECTED, REQUEST_UNREACHABLE, Answer, Outbound
from worker.records import PushResult, ReminderRow
from worker.vocabulary import ErrorKind, PushOutcome

if TYPE_CHECKING:
    from worker.config import PassSettings

#: Ticket and receipt errors that are the project's, not the message's: Expo's FCM/APNs credentials.
CREDENTIAL_ERRORS = frozenset({"InvalidCredentials", "MismatchSenderId"})
# Room kept free in Expo's 4096 bytes for what our estimate of the payload may miss.
_PAYLOAD_MARGIN = 96

_MEANING: dict[str, tuple[PushOutcome, ErrorKind]] = {
    REQUEST_REFUSED: (PushOutcome.DEFERRED, ErrorKind.EXPO_CREDENTIALS),
    REQUEST_UNREACHABLE: (PushOutcome.RETRY, ErrorKind.EXPO_UNAVAILABLE),
    REQUEST_REJECTED: (PushOutcome.FAILED, ErrorKind.EXPO_REJECTED),
    "DeviceNotRegistered": (PushOutcome.FAILED, ErrorKind.DEVICE_NOT_REGISTERED),
    "MessageTooBig": (PushOutcome.FAILED, ErrorKind.EXPO_REJECTED),
    "InvalidCredentials": (PushOutcome.DEFERRED, ErrorKind.EXPO_CREDENTIALS),
    "MismatchSenderId": (PushOutcome.DEFERRED, ErrorKind.EXPO_CREDENTIALS),
    "MessageRateExceeded": (PushOutcome.RETRY, ErrorKind.EXPO_RATE_EXCEEDED),
}


def classify(answer: Answer) -> tuple[PushOutcome, ErrorKind | None]:
    """What Expo's answer about one message means for its reminder."""
    if answer.accepted:
        return PushOutcome.SENT, None
    return _MEANING.get(answer.error or "", (PushOutcome.RETRY, ErrorKind.EXPO_UNAVAILABLE))


#: A reminder goes to at most this many of its parent's devices (all in one request of Expo's 100).
MAX_DEVICES = 20
# When a reminder reached no device, the outcome that wins among its devices' answers: one worth
# another try beats one held for the operator beats a permanent failure.
_PRIORITY = {PushOutcome.RETRY: 0, PushOutcome.DEFERRED: 1, PushOutcome.FAILED: 2}


def push_result(answers: Sequence[Answer], sent: Sequence[Outbound], row: ReminderRow, passes: PassSettings,
                now: datetime, rng: Any = None) -> PushResult:
    """The record of what became of one reminder, from Expo's answers for each of its devices.

    ``sent`` when at least one device took it (each such device's ticket is kept for its receipt);
    otherwise the most hopeful answer decides (retry, then deferred, then failed). Devices Expo says
    are gone are cleared whatever the outcome.
    """
    meanings = [(a, *classify(a)) for a in answers]
    dead = tuple(a.token for a, _, kind in meanings if kind is ErrorKind.DEVICE_NOT_REGISTERED)
    first = sent[0] if sent else None
    text = f"{first.title}\n{first.body}" if first else None
    if text == row.stored_message:
        text = None  # the row holds it already
    tickets = tuple((a.token, a.ticket_id) for a, outcome, _ in meanings
                    if outcome is PushOutcome.SENT and a.ticket_id)
    if any(outcome is PushOutcome.SENT for _, outcome, _ in meanings):
        return PushResult(row.id, PushOutcome.SENT, message=text, tickets=tickets, dead_tokens=dead)
    answer, outcome, kind = min(meanings, key=lambda m: _PRIORITY.get(m[1], 3))
    next_at: datetime | None = None
    if outcome is PushOutcome.RETRY:
        next_at = planner.next_attempt_at(now, row.retry_count + 1, passes.retry_base_seconds,
                                          passes.retry_max_seconds, rng)
    elif outcome is PushOutcome.DEFERRED:
        next_at = planner.next_attempt_at(now, 1, max(passes.retry_base_seconds, 1.0),
                                          passes.retry_max_seconds, rng)
    return PushResult(row.id, outcome, answer.message, kind, next_at, message=text, dead_tokens=dead)


def build_messages(row: ReminderRow, now: datetime) -> list[Outbound] | PushResult:
    """The notification for a claimed reminder, one per device of its parent, or the failure that
    stops it being sent.

    The devices are the owner's tokens (profile or user metadata, and public.push_tokens); a row the
    app wrote before the worker arrived falls back to its own push_token and is sent with its own
    stored text. A malformed token is left out; only when no token is left does the reminder fail.
    """
    tokens = [d.token for d in row.devices]
    if not tokens and not row.planned_by_worker and row.row_push_token:
        tokens = [row.row_push_token]
    if not tokens:
        return PushResult(row.id, PushOutcome.FAILED, "the owner has no Expo push token (neither "
                          "profiles.expo_push_token nor expo_push_token in the user's metadata, nor a device "
                          "in push_tokens)", ErrorKind.NO_TOKEN)
    usable = [t for t in tokens if planner.is_expo_push_token(t)][:MAX_DEVICES]
    if not usable:
        return PushResult(row.id, PushOutcome.FAILED, "the owner's push token is malformed (expected "
                          "ExponentPushToken[...] or ExpoPushToken[...])", ErrorKind.BAD_TOKEN)
    _, zone_known = planner.timezone_for(row.timezone)
    if not zone_known:
        return PushResult(row.id, PushOutcome.FAILED, planner.timezone_problem(row.timezone or ""),
                          ErrorKind.TIMEZONE)
    data = {"event_id": row.event_id, "reminder_id": row.id}
    expiration = int(row.start_ts.timestamp())
    longest = max(usable, key=len)
    skeleton = Outbound(row.id, longest, "", "", data, expiration).payload()
    overhead = len(json.dumps(skeleton, ensure_ascii=False, separators=(",", ":")).encode()) + _PAYLOAD_MARGIN
    if not row.planned_by_worker and row.stored_message and row.stored_message.strip():
        msg = planner.stored_message(title=row.title, child_name=row.child_name, text=row.stored_message,
                                     max_bytes=planner.EXPO_MAX_PAYLOAD_BYTES, overhead=overhead)
    else:
        msg = planner.render_message(
            title=row.title, child_name=row.child_name, start_ts=row.start_ts, location=row.location,
            prep_items=row.prep_items, now=now, zone_name=row.timezone,
            max_bytes=planner.EXPO_MAX_PAYLOAD_BYTES, overhead=overhead)
    return [Outbound(row.id, token, msg.title, msg.body, data, expiration) for token in usable]
