"""The push step: claim due reminders, send them through Expo, record each request's outcome as
soon as it returns.

Why it is shaped like this:

* **Duplicates are bounded by what was in flight.** A request holds one of ``PUSH_CONCURRENCY``
  slots from the moment it is put on the wire until its outcome is *written*. So at any instant at
  most ``PUSH_CONCURRENCY`` requests (of up to 100 messages) have been sent without their outcome in the
  database, and a pass killed then can only make a later pass send those again. Outcomes that are
  ready together are written in one call (at most one per request, fewer when answers arrive
  together), so a thousand reminders still cost only a handful of round trips.
* **A database outage loses no accepted message.** Writing an outcome keeps trying while the
  database is away (one retry policy, :mod:`worker.retry`) for as long as the rows' claim lasts,
  minus a margin; meanwhile no slot is freed, so nothing new is sent. Only when the lease is about
  to run out does the pass give up (exit 1): then another pass may take the rows over.
* **No message goes out on a lapsing claim.** A request whose claim is too old to be sure its
  outcome can still be written is not sent; its rows are released.
* **A bad row fails alone.** A row that cannot be decoded or rendered is recorded ``failed`` with
  the reason; the rest of the batch goes on.
* **Expo's project-wide answers stop what cannot succeed.** A refused access token (401) stops the
  sending at once (the rows not yet sent are released unharmed, the sent ones deferred); a run of
  requests that Expo never answered stops it too. ``InvalidCredentials`` tickets defer only their
  reminders; the others of the pass still go out.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from worker import logs
from worker.clients.expo import MAX_MESSAGES_PER_REQUEST, Answer, ExpoPusher, Outbound, RequestResult
from worker.db import DatabaseUnavailable, Gateway
from worker.records import PushResult, ReminderRow, Undecodable
from worker.steps.context import LEASE_MARGIN, Degraded, PassAborted, PassClock, PassCounts
from worker.steps.messages import CREDENTIAL_ERRORS, build_messages, push_result
from worker.vocabulary import ErrorKind, PushOutcome

if TYPE_CHECKING:
    from worker.config import ExpoSettings, PassSettings



@dataclass(eq=False)
class _Claim:
    """One claim call's rows: the claim id guards every write of their outcomes."""

    id: uuid.UUID
    deadline: float  # time.monotonic() after which the lease may have run out (minus the margin)


@dataclass(eq=False)
class _Request:
    claim: _Claim
    messages: list[Outbound]
    rows: dict[str, ReminderRow]


@dataclass
class _Written:
    """Outcomes waiting to be written, and the slots they free once written."""

    results: list[PushResult] = field(default_factory=list)
    claims: set[uuid.UUID] = field(default_factory=set)
    slots: int = 0
    deadline: float = float("inf")

    def add(self, claim: _Claim, results: Iterable[PushResult], slots: int = 0) -> None:
        batch = list(results)
        if not batch and not slots:
            return
        self.results.extend(batch)
        self.claims.add(claim.id)
        self.slots += slots
        self.deadline = min(self.deadline, claim.deadline)


class PushStep:
    """One pass's push step. :meth:`run` returns when nothing more is due or the step must stop."""

    def __init__(self, gateway: Gateway, pusher: ExpoPusher, passes: PassSettings, expo: ExpoSettings, clock: PassClock,
                 counts: PassCounts, degraded: Degraded) -> None:
        self.gateway = gateway
        self.pusher = pusher
        self.passes = passes
        self.expo = expo
        self.clock = clock
        self.counts = counts
        self.degraded = degraded
        self.slots = max(expo.concurrency, 1)
        self._ready: deque[_Request] = deque()
        self._in_flight: dict[Future[RequestResult], _Request] = {}
        self._unwritten = _Written()
        self._more = True  # the last claim was full: more may be due
        self._stop: PassAborted | None = None
        self._unanswered_in_a_row = 0
        self._answered = 0
        self._last_error: str | None = None
        self.requests = 0

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while True:
                self._write()
                if self._stop is not None:
                    self._release_ready()
                else:
                    self._send_ready()
                    if self._more and len(self._ready) < self.slots:
                        try:
                            self._claim()
                        except DatabaseUnavailable as exc:
                            # Nothing new can be claimed; what is on the wire still gets written.
                            self._more = False
                            self._stop = PassAborted(f"database unavailable: {exc}", ErrorKind.DATABASE_UNAVAILABLE)
                        self._send_ready()
                if not self._in_flight and not self._ready and not self._unwritten.results:
                    if not self._more or self._stop is not None:
                        break
                    continue
                if self._in_flight:
                    done, _ = wait(list(self._in_flight), timeout=1.0, return_when=FIRST_COMPLETED)
                    for future in done:
                        self._collect(future)
        except DatabaseUnavailable as exc:
            self._abandon()
            raise PassAborted(f"database unavailable while recording pushes: {exc}",
                              ErrorKind.DATABASE_UNAVAILABLE) from None
        except BaseException:
            self._abandon()
            raise
        if self._stop is not None:
            raise self._stop
        if self.requests and not self._answered:
            raise PassAborted(f"Expo is unavailable: {self._last_error}", ErrorKind.EXPO_UNAVAILABLE)

    def _abandon(self) -> None:
        """The pass is ending badly: wait for what is on the wire, so nothing is cut off mid-request.
        Its outcomes cannot be written; the rows' lease brings them back to a later pass."""
        for future in list(self._in_flight):
            with contextlib.suppress(Exception):
                future.result()
        self._in_flight.clear()

    # --- claiming and sending -------------------------------------------------------------------

    def _claim(self) -> None:
        now = self.clock.now()
        claim_id = uuid.uuid4()
        # The lease runs from `now` (the claim's p_now), however long the call takes to get through.
        claim = _Claim(claim_id, time.monotonic() + self.passes.lease_seconds * (1 - LEASE_MARGIN))
        claimed = self.gateway.claim_reminders(now, claim_id, self.passes.batch_size, self.passes.lease_seconds,
                                               patience=self.clock.patience)
        handled = len(claimed.rows) + claimed.expired + claimed.cancelled + claimed.superseded
        self._more = handled >= self.passes.batch_size
        self.counts.expired += claimed.expired
        self.counts.cancelled += claimed.cancelled
        self.counts.superseded += claimed.superseded
        failures: list[PushResult] = []
        request = _Request(claim, [], {})
        for row in claimed.rows:
            built = self._build(row, now)
            if isinstance(built, PushResult):
                failures.append(built)
                logs.event("reminder.failed", logging.WARNING, reminder_id=built.id, reason=built.error,
                           kind=built.error_kind)
                continue
            assert isinstance(row, ReminderRow)
            # A reminder's messages (one per device) travel in one request, so its outcome is
            # known when that request returns.
            if len(request.messages) + len(built) > MAX_MESSAGES_PER_REQUEST:
                self._ready.append(request)
                request = _Request(claim, [], {})
            request.messages.extend(built)
            request.rows[row.id] = row
        if request.messages:
            self._ready.append(request)
        self._unwritten.add(claim, failures)
        if claimed.rows or handled:
            logs.event("push.claimed", claimed=len(claimed.rows), expired=claimed.expired,
                       superseded=claimed.superseded, cancelled=claimed.cancelled, failed_before_sending=len(failures))

    @staticmethod
    def _build(row: ReminderRow | Undecodable, now: datetime) -> list[Outbound] | PushResult:
        if isinstance(row, Undecodable):
            return PushResult(row.id, PushOutcome.FAILED, f"cannot read this reminder: {row.reason}",
                              ErrorKind.INVALID_ROW)
        try:
            return build_messages(row, now)
        except Exception as exc:  # one row's surprise must not cost the batch
            return PushResult(row.id, PushOutcome.FAILED,
                              f"cannot render this reminder: {type(exc).__name__}: {exc}", ErrorKind.INVALID_ROW)

    def _send_ready(self) -> None:
        while self._ready and len(self._in_flight) + self._unwritten.slots < self.slots:
            request = self._ready.popleft()
            if time.monotonic() >= request.claim.deadline:
                # Too late to be sure the outcome can be written before the lease runs out.
                self._unwritten.add(request.claim, self._released(request))
                continue
            self._in_flight[self.pusher.submit(request.messages)] = request
            self.requests += 1

    def _release_ready(self) -> None:
        while self._ready:
            request = self._ready.popleft()
            self._unwritten.add(request.claim, self._released(request))

    @staticmethod
    def _released(request: _Request) -> list[PushResult]:
        return [PushResult(reminder_id, PushOutcome.RELEASED) for reminder_id in request.rows]

    def _collect(self, future: Future[RequestResult]) -> None:
        request = self._in_flight.pop(future)
        result = future.result()  # the client always answers (it never raises for a request)
        now = self.clock.now()
        answers: dict[str, list[Answer]] = {}
        for answer in result.answers:
            answers.setdefault(answer.reminder_id, []).append(answer)
        sent: dict[str, list[Outbound]] = {}
        for message in request.messages:
            sent.setdefault(message.reminder_id, []).append(message)
        results = [push_result(answers[rid], sent[rid], row, self.passes, now)
                   for rid, row in request.rows.items() if rid in answers]
        self._unwritten.add(request.claim, results, slots=1)
        self._notice(result)

    def _notice(self, result: RequestResult) -> None:
        """What one request's answer says about the rest of the pass."""
        credentials = next((a for a in result.answers if a.error in CREDENTIAL_ERRORS), None)
        if credentials is not None:
            reason = f"Expo refused the project's push credentials: {credentials.message}"
            self.degraded.add(ErrorKind.EXPO_CREDENTIALS, reason)
        if result.refused:
            self._stop = self._stop or PassAborted(
                f"Expo refused the access token (EXPO_ACCESS_TOKEN): {result.answers[0].message}",
                ErrorKind.EXPO_CREDENTIALS)
            return
        if result.answered:
            self._answered += 1
            self._unanswered_in_a_row = 0
            return
        self._unanswered_in_a_row += 1
        self._last_error = next((a.message for a in result.answers if a.message), "no answer")
        if self._unanswered_in_a_row >= self.slots:  # Expo is down: stop before every row burns an attempt
            self._stop = self._stop or PassAborted(f"Expo is unavailable: {self._last_error}",
                                                   ErrorKind.EXPO_UNAVAILABLE)

    # --- writing --------------------------------------------------------------------------------

    def _write(self) -> None:
        pending, self._unwritten = self._unwritten, _Written()
        if not pending.results:
            return
        patience = max(pending.deadline - time.monotonic(), 0.0)
        written = self.gateway.record_push_outcomes(self.clock.now(), sorted(pending.claims, key=str),
                                                    self.expo.max_attempts, pending.results,
                                                    patience=patience)
        c = self.counts
        c.sent += written.get("sent", 0)
        c.failed += written.get("failed", 0)
        c.retried += written.get("retried", 0)
        c.deferred += written.get("deferred", 0)
        c.released += written.get("released", 0)
        c.tokens_cleared += written.get("tokens_cleared", 0)
        logs.event("push.recorded", outcomes=len(pending.results), requests=pending.slots, **written)


def push_step(gateway: Gateway, pusher: ExpoPusher, passes: PassSettings, expo: ExpoSettings, clock: PassClock,
              counts: PassCounts,
              degraded: Degraded) -> int:
    """Run the push step; returns the number of Expo requests it made."""
    step = PushStep(gateway, pusher, passes, expo, clock, counts, degraded)
    step.run()
    return step.requests
