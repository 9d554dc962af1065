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


def push_result(answer: Answer, out: Outbound, row: ReminderRow, passes: PassSettings, now: datetime,
                rng: Any = None) -> PushResult:
    """The record of what became of one sent message."""
    outcome, kind = classify(answer)
    next_at: datetime | None = None
    if outcome is PushOutcome.RETRY:
        next_at = planner.next_attempt_at(now, row.retry_count + 1, passes.retry_base_seconds,
                                          passes.retry_max_seconds, rng)
    elif outcome is PushOutcome.DEFERRED:
        next_at = planner.next_attempt_at(now, 1, max(passes.retry_base_seconds, 1.0),
                                          passes.retry_max_seconds, rng)
    return PushResult(answer.reminder_id, outcome, answer.message, kind, answer.ticket_id, next_at,
                      message=f"{out.title}\n{out.body}", push_token=out.token,
                      clear_token=kind is ErrorKind.DEVICE_NOT_REGISTERED)


def build_message(row: ReminderRow, now: datetime) -> Outbound | PushResult:
    """The notification for a claimed reminder, or the failure that stops it being sent.

    The token is the owner's current one (profile, else user metadata); a row the app wrote before
    the worker arrived falls back to its own push_token and is sent with its own stored text.
    """
    token = row.push_token or (row.row_push_token if not row.planned_by_worker else None)
    if not token:
        return PushResult(row.id, PushOutcome.FAILED, "the owner has no Expo push token (neither "
                          "profiles.expo_push_token nor expo_push_token in the user's metadata)", ErrorKind.NO_TOKEN)
    if not planner.is_expo_push_token(token):
        return PushResult(row.id, PushOutcome.FAILED, "the owner's push token is malformed (expected "
                          "ExponentPushToken[...] or ExpoPushToken[...])", ErrorKind.BAD_TOKEN)
    _, usable = planner.timezone_for(row.timezone)
    if not usable:
        return PushResult(row.id, PushOutcome.FAILED, planner.timezone_problem(row.timezone or ""),
                          ErrorKind.TIMEZONE)
    data = {"event_id": row.event_id, "reminder_id": row.id}
    expiration = int(row.start_ts.timestamp())
    skeleton = Outbound(row.id, token, "", "", data, expiration).payload()
    overhead = len(json.dumps(skeleton, ensure_ascii=False, separators=(",", ":")).encode()) + _PAYLOAD_MARGIN
    if not row.planned_by_worker and row.stored_message and row.stored_message.strip():
        msg = planner.stored_message(title=row.title, child_name=row.child_name, text=row.stored_message,
                                     max_bytes=planner.EXPO_MAX_PAYLOAD_BYTES, overhead=overhead)
    else:
        msg = planner.render_message(
            title=row.title, child_name=row.child_name, start_ts=row.start_ts, location=row.location,
            prep_items=row.prep_items, now=now, zone_name=row.timezone,
            max_bytes=planner.EXPO_MAX_PAYLOAD_BYTES, overhead=overhead)
    return Outbound(row.id, token, msg.title, msg.body, data, expiration)
