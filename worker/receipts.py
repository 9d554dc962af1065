"""The receipts step: what became of the messages Expo accepted.

An ok ticket only means Expo took the message; the receipt, ready about 15 minutes later and kept
for about 24 hours, says whether Apple or Google took it. This step runs after the push step, so
it never delays a due reminder, and is bounded (ids per pass, seconds per pass): a backlog of
receipts is worked off over several passes, never at the cost of the next pass's sends.

As in the push step, the worker decides here and the database stores: each claimed reminder gets
one outcome (see worker_record_receipts in sql/004) and a batch is recorded in one call.
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
from worker.db import Gateway, ReceiptRow
from worker.push import ExpoPusher, Receipt, ReceiptsUnavailable

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.passes import PassCounts

#: Expo keeps receipts about a day; a receipt still missing after this is never coming.
RECEIPT_HORIZON = timedelta(hours=24)
#: Backoff between checks of a receipt Expo does not have yet (doubling, jittered, capped).
MISSING_BASE_SECONDS = 600.0
MISSING_MAX_SECONDS = 4 * 3600.0
#: Errors that are the sender's configuration, not the message's: the operator must act.
CREDENTIAL_ERRORS = frozenset({"InvalidCredentials", "MismatchSenderId"})


def receipt_outcome(row: ReceiptRow, receipt: Receipt | None, settings: Settings, now: datetime,
                    rng: Any = None) -> dict[str, Any]:
    """The record for one claimed reminder given its receipt (None: Expo has none for it)."""
    out: dict[str, Any] = {"id": row.id, "outcome": "ok", "error": None, "next_attempt_at": None,
                           "next_check_at": None, "clear_token": False}
    if receipt is None:
        horizon = row.sent_at_ts + RECEIPT_HORIZON
        if now >= horizon:
            out.update(outcome="unknown",
                       error="receipt unknown: Expo had no receipt 24 hours after accepting the message")
        else:
            # The last check lands on the horizon, so a receipt is never given up on early.
            later = planner.next_attempt_at(now, row.receipt_checks + 1, MISSING_BASE_SECONDS,
                                            MISSING_MAX_SECONDS, rng)
            out.update(outcome="missing", next_check_at=min(later, horizon))
        return out
    if receipt.status == "ok":
        return out
    code = receipt.error or "error"
    reason = f"delivery failed: {code}" + (f": {receipt.message}" if receipt.message else "")
    out["error"] = reason
    if code == "MessageRateExceeded":
        # Not delivered, and the device will take a later message: send it again with backoff.
        out.update(outcome="resend", next_attempt_at=planner.next_attempt_at(
            now, row.retry_count + 1, settings.retry_base_seconds, settings.retry_max_seconds, rng))
    else:
        out.update(outcome="failed", clear_token=code == "DeviceNotRegistered")
    return out


def _later(row: ReceiptRow, settings: Settings, now: datetime, rng: Any = None) -> dict[str, Any]:
    """Expo could not be asked about this one: release it for a later pass, no check counted."""
    return {"id": row.id, "outcome": "later", "error": None, "next_attempt_at": None, "clear_token": False,
            "next_check_at": planner.next_attempt_at(now, 1, max(settings.retry_base_seconds, 1.0),
                                                     settings.retry_max_seconds, rng)}


def receipts_step(gateway: Gateway, pusher: ExpoPusher, settings: Settings, now: datetime, claim: uuid.UUID,
                  counts: PassCounts) -> None:
    """Claim due receipts, ask Expo, record the outcomes; batch after batch within the bounds.

    Raises PassAborted when Expo answered none of a batch's requests (the batch is released first).
    """
    from worker.passes import PassAborted

    remaining = settings.receipt_max_per_pass
    deadline = time.monotonic() + settings.receipt_time_budget_seconds
    credentials: Counter[str] = Counter()
    try:
        while remaining > 0 and time.monotonic() < deadline:
            limit = min(settings.batch_size, remaining)
            rows = gateway.claim_receipts(now, claim, limit, settings.lease_seconds, settings.receipt_delay_seconds)
            if not rows:
                return
            remaining -= len(rows)
            error = _check_batch(gateway, pusher, settings, now, claim, counts, rows, credentials)
            if error is not None:
                raise PassAborted(f"Expo receipts are unavailable: {error}")
            if len(rows) < limit:
                return
        if remaining <= 0 or time.monotonic() >= deadline:
            logs.event("receipts.bounded", remaining_budget=remaining,
                       reason="per-pass cap" if remaining <= 0 else "time budget")
    finally:
        if credentials:
            # One loud line per pass: every message to these apps fails until the operator fixes
            # the push credentials in Expo (FCM server key / APNs key), and no retry helps.
            logs.event("expo.credentials_invalid", logging.ERROR, counts=dict(credentials),
                       total=sum(credentials.values()),
                       action="fix the app's push credentials in Expo (expo.dev > credentials)")


def _check_batch(gateway: Gateway, pusher: ExpoPusher, settings: Settings, now: datetime, claim: uuid.UUID,
                 counts: PassCounts, rows: Sequence[ReceiptRow], credentials: Counter[str]) -> str | None:
    """One claimed batch: ask, classify, record. Returns an error when Expo answered none of it."""
    unanswered: set[str] = set()
    error: str | None = None
    try:
        receipts = pusher.check_receipts([r.ticket_id for r in rows])
    except ReceiptsUnavailable as exc:
        receipts, unanswered, error = exc.receipts, set(exc.unanswered), str(exc)
    outcomes = []
    for row in rows:
        if row.ticket_id in unanswered:
            outcomes.append(_later(row, settings, now))
            continue
        receipt = receipts.get(row.ticket_id)
        if receipt is not None and receipt.error in CREDENTIAL_ERRORS:
            credentials[receipt.error] += 1
        outcome = receipt_outcome(row, receipt, settings, now)
        if outcome["outcome"] == "failed":
            logs.event("reminder.delivery_failed", 30, reminder_id=row.id, reason=outcome["error"])
        outcomes.append(outcome)
    written = gateway.record_receipts(now, claim, settings.push_max_attempts, outcomes)
    counts.receipts_ok += written.get("ok", 0)
    counts.receipts_failed += written.get("failed", 0)
    counts.receipts_resent += written.get("resent", 0)
    counts.receipts_missing += written.get("missing", 0)
    counts.receipts_unknown += written.get("unknown", 0)
    counts.tokens_cleared += written.get("tokens_cleared", 0)
    logs.event("receipts.batch", claimed=len(rows), ok=written.get("ok", 0), failed=written.get("failed", 0),
               resent=written.get("resent", 0), missing=written.get("missing", 0),
               unknown=written.get("unknown", 0), unanswered=len(unanswered),
               requests=-(-len(rows) // 300))
    if error is not None and len(unanswered) == len(rows):
        return error
    if error is not None:
        logs.event("receipts.partial", 30, unanswered=len(unanswered), error=error)
    return None
