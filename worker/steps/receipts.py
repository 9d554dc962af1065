"""The receipts step: what became of the messages Expo accepted.

An ok ticket only means Expo took the message; the receipt, ready about 15 minutes later and kept
for about 24 hours, says whether Apple or Google took it. This step runs after the push step, so
it never delays a due reminder, and is bounded (ids per pass, seconds per pass): a backlog of
receipts is worked off over several passes, never at the cost of the next pass's sends.

As in the push step, the worker decides here and the database stores: each claimed reminder gets
one outcome (see sql/functions/public.worker_record_receipts.sql) and a batch is recorded in one
call. A row that cannot be read is settled ``unknown`` with the reason; a receipt saying the
project's push credentials are wrong defers the reminder (the operator must act, the parent still
gets it once they have) and marks the pass degraded.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from worker import logs, planner
from worker.clients.expo import ExpoPusher, Receipt, ReceiptsUnavailable
from worker.db import Gateway
from worker.records import ReceiptResult, ReceiptRow, Undecodable
from worker.steps.context import Degraded, PassAborted, PassClock, PassCounts
from worker.steps.messages import CREDENTIAL_ERRORS
from worker.vocabulary import ErrorKind, ReceiptOutcome

if TYPE_CHECKING:
    from worker.config import ExpoSettings, PassSettings

#: Expo keeps receipts about a day; a receipt still missing after this is never coming.
RECEIPT_HORIZON = timedelta(hours=24)
#: Backoff between checks of a receipt Expo does not have yet (doubling, jittered, capped).
MISSING_BASE_SECONDS = 600.0
MISSING_MAX_SECONDS = 4 * 3600.0


def receipt_outcome(row: ReceiptRow, receipt: Receipt | None, passes: PassSettings, now: datetime,
                    rng: Any = None) -> ReceiptResult:
    """The record for one claimed reminder given its receipt (None: Expo has none for it)."""
    if receipt is None:
        horizon = row.sent_at_ts + RECEIPT_HORIZON
        if now >= horizon:
            return ReceiptResult(row.id, row.token, ReceiptOutcome.UNKNOWN, "receipt unknown: Expo had no receipt "
                                 "24 hours after accepting the message", ErrorKind.RECEIPT_UNKNOWN)
        # The last check lands on the horizon, so a receipt is never given up on early.
        later = planner.next_attempt_at(now, row.receipt_checks + 1, MISSING_BASE_SECONDS, MISSING_MAX_SECONDS, rng)
        return ReceiptResult(row.id, row.token, ReceiptOutcome.MISSING, next_check_at=min(later, horizon))
    if receipt.status == "ok":
        return ReceiptResult(row.id, row.token, ReceiptOutcome.OK)
    code = receipt.error or "error"
    reason = f"delivery failed: {code}" + (f": {receipt.message}" if receipt.message else "")
    if code == "MessageRateExceeded":
        # Not delivered, and the device will take a later message: send it again with backoff.
        return ReceiptResult(row.id, row.token, ReceiptOutcome.RESEND, reason, ErrorKind.EXPO_RATE_EXCEEDED,
                             next_attempt_at=planner.next_attempt_at(
                                 now, row.retry_count + 1, passes.retry_base_seconds, passes.retry_max_seconds,
                                 rng))
    if code in CREDENTIAL_ERRORS:
        # The project's FCM/APNs credentials: not the reminder's fault. Send again once fixed.
        return ReceiptResult(row.id, row.token, ReceiptOutcome.DEFERRED, reason, ErrorKind.EXPO_CREDENTIALS,
                             next_attempt_at=planner.next_attempt_at(
                                 now, 1, max(passes.retry_base_seconds, 1.0), passes.retry_max_seconds, rng))
    if code == "DeviceNotRegistered":
        return ReceiptResult(row.id, row.token, ReceiptOutcome.FAILED, reason, ErrorKind.DEVICE_NOT_REGISTERED)
    return ReceiptResult(row.id, row.token, ReceiptOutcome.FAILED, reason, ErrorKind.EXPO_REJECTED)


def _later(row: ReceiptRow, passes: PassSettings, now: datetime, rng: Any = None) -> ReceiptResult:
    """Expo could not be asked about this one: release it for a later pass, no check counted."""
    return ReceiptResult(row.id, row.token, ReceiptOutcome.LATER, next_check_at=planner.next_attempt_at(
        now, 1, max(passes.retry_base_seconds, 1.0), passes.retry_max_seconds, rng))


def receipts_step(gateway: Gateway, pusher: ExpoPusher, passes: PassSettings, expo: ExpoSettings, clock: PassClock,
                  counts: PassCounts, degraded: Degraded) -> None:
    """Claim due receipts, ask Expo, record the outcomes; batch after batch within the bounds.

    Raises PassAborted when Expo answered none of a batch's requests (the batch is released first).
    """
    remaining = expo.receipt_max_per_pass
    deadline = time.monotonic() + expo.receipt_time_budget_seconds
    credentials: Counter[str] = Counter()
    try:
        while remaining > 0 and time.monotonic() < deadline:
            limit = min(passes.batch_size, remaining)
            claim = uuid.uuid4()
            rows = gateway.claim_receipts(clock.now(), claim, limit, passes.lease_seconds,
                                          expo.receipt_delay_seconds, patience=clock.patience)
            if not rows:
                return
            remaining -= len(rows)
            error = _check_batch(gateway, pusher, passes, expo, clock, claim, counts, rows, credentials)
            if error is not None:
                raise PassAborted(f"Expo receipts are unavailable: {error}", ErrorKind.EXPO_UNAVAILABLE)
            if len(rows) < limit:
                return
        if remaining <= 0 or time.monotonic() >= deadline:
            logs.event("receipts.bounded", remaining_budget=remaining,
                       reason="per-pass cap" if remaining <= 0 else "time budget")
    finally:
        if credentials:
            # One loud line per pass: every message to these apps fails until the operator fixes
            # the push credentials in Expo (FCM server key / APNs key); the reminders wait.
            logs.event("expo.credentials_invalid", logging.ERROR, counts=dict(credentials),
                       total=sum(credentials.values()),
                       action="fix the app's push credentials in Expo (expo.dev > credentials)")
            degraded.add(ErrorKind.EXPO_CREDENTIALS, "Expo's receipts say the project's push credentials are "
                         f"invalid ({', '.join(sorted(credentials))}): fix them in Expo; the reminders wait")


def _check_batch(gateway: Gateway, pusher: ExpoPusher, passes: PassSettings, expo: ExpoSettings, clock: PassClock,
                 claim: uuid.UUID,
                 counts: PassCounts, rows: Sequence[ReceiptRow | Undecodable], credentials: Counter[str]) -> str | None:
    """One claimed batch: ask, classify, record. Returns an error when Expo answered none of it."""
    readable = [r for r in rows if isinstance(r, ReceiptRow)]
    unanswered: set[str] = set()
    error: str | None = None
    try:
        receipts = pusher.check_receipts([r.ticket_id for r in readable]) if readable else {}
    except ReceiptsUnavailable as exc:
        receipts, unanswered, error = exc.receipts, set(exc.unanswered), str(exc)
    now = clock.now()
    outcomes: list[ReceiptResult] = []
    for row in rows:
        if isinstance(row, Undecodable):
            outcomes.append(ReceiptResult(row.id, row.token or "", ReceiptOutcome.UNKNOWN,
                                          f"cannot read this reminder's receipt columns: {row.reason}",
                                          ErrorKind.INVALID_ROW))
            continue
        if row.ticket_id in unanswered:
            outcomes.append(_later(row, passes, now))
            continue
        receipt = receipts.get(row.ticket_id)
        if receipt is not None and receipt.error in CREDENTIAL_ERRORS:
            credentials[receipt.error] += 1
        outcome = receipt_outcome(row, receipt, passes, now)
        if outcome.outcome is ReceiptOutcome.FAILED:
            logs.event("reminder.delivery_failed", logging.WARNING, reminder_id=row.id, reason=outcome.error)
        outcomes.append(outcome)
    written = gateway.record_receipts(clock.now(), [claim], expo.max_attempts, outcomes,
                                      patience=clock.patience)
    counts.receipts_ok += written.get("ok", 0)
    counts.receipts_failed += written.get("failed", 0)
    counts.receipts_resent += written.get("resent", 0)
    counts.receipts_deferred += written.get("deferred", 0)
    counts.receipts_missing += written.get("missing", 0)
    counts.receipts_unknown += written.get("unknown", 0)
    counts.tokens_cleared += written.get("tokens_cleared", 0)
    logs.event("receipts.batch", claimed=len(rows), unanswered=len(unanswered), requests=-(-len(readable) // 300),
               **written)
    if error is not None and readable and len(unanswered) == len(readable):
        return error
    if error is not None:
        logs.event("receipts.partial", logging.WARNING, unanswered=len(unanswered), error=error)
    return None
