"""The push step: claim due reminders, send them through Expo, record each request's outcome as
soon as it returns.

Why it is shaped like this:

* **Duplicates are bounded by what was in flight.** A request holds one of ``PUSH_CONCURRENCY``
  slots from the moment it is put on the wire until its outcome is *written*. So at any instant at
  most ``PUSH_CONCURRENCY`` requests (of up to 100 messages) have been sent without their outcome in the
  database, and a pass killed then can only make a later pass send those again. Outcomes that are
  ready together are written in one call (at most one per request, fewer when answers arrive
  together), so a thousand reminders still cost only a handful of round trips.
* **The database never waits for Expo, nor Expo for the database.** Three things overlap: the
  requests on the wire (Expo's latency is the bound: ``PUSH_CONCURRENCY`` x 100 messages per round
  trip), writing the outcomes of the last ones (the step's own connection, one call at a time), and
  claiming and rendering the next thousand (a second connection, in the background, while fewer
  than ``PUSH_CONCURRENCY`` requests are ready). The main thread only hands work between them.
* **One Expo limit for every worker.** With ``PUSH_RATE_LIMIT`` the claim books the claimed
  messages' sends on a schedule in the database that all workers share (one slot of 1/limit s a
  message, at 95% of the limit: arrivals jitter by some milliseconds), and each request goes out
  at its slot; when the schedule is booked more than a couple of seconds ahead, the claim says when
  to come back instead of claiming rows that would only sit leased.
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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker import logs
from worker.clients.expo import MAX_MESSAGES_PER_REQUEST, Answer, ExpoPusher, Outbound, RequestResult
from worker.db import DatabaseUnavailable, Gateway
from worker.records import PushResult, ReminderClaim, ReminderRow, Undecodable
from worker.steps.context import LEASE_MARGIN, Degraded, PassAborted, PassClock, PassCounts
from worker.steps.messages import CREDENTIAL_ERRORS, build_messages, push_result
from worker.vocabulary import ErrorKind, PushOutcome

if TYPE_CHECKING:
    from worker.config import ExpoSettings, PassSettings

#: Share of PUSH_RATE_LIMIT booked on the shared schedule: requests reach Expo some milliseconds
#: after their slot (a thread wakes, a request is encoded), and 4% of a second absorbs that jitter so
#: no one-second window at Expo holds more than the limit.
SCHEDULE_HEADROOM = 0.95
#: How far ahead the shared schedule may be booked before a claim waits instead (seconds).
SCHEDULE_LOOKAHEAD = 2.0
#: The earliest slot a claim books: time enough to decode and render a thousand rows after the
#: answer, so the first request is never late for its slot (late, it would reach Expo together with
#: the next one).
SCHEDULE_LEAD = 0.15
#: Outcomes wait at most this long to be written together with the next request's (a request whose
#: slot is free anyway loses nothing by it; under the rate limit, requests come a sixth of a second
#: apart and would otherwise cost a round trip each).
WRITE_DELAY = 0.25
#: A request is handed to its sending thread this long before its slot (the thread waits out the
#: rest): the pass's own loop is never what makes a request late.
_EARLY = 0.25


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
    not_before: float | None = None  # time.monotonic() of its slot on the shared schedule


@dataclass
class _Written:
    """Outcomes waiting to be written, and the slots they free once written."""

    results: list[PushResult] = field(default_factory=list)
    claims: set[uuid.UUID] = field(default_factory=set)
    slots: int = 0
    deadline: float = float("inf")
    since: float = 0.0  # time.monotonic() of the oldest outcome waiting

    def add(self, claim: _Claim, results: Iterable[PushResult], slots: int = 0) -> None:
        batch = list(results)
        if not batch and not slots:
            return
        if not self.results:
            self.since = time.monotonic()
        self.results.extend(batch)
        self.claims.add(claim.id)
        self.slots += slots
        self.deadline = min(self.deadline, claim.deadline)


@dataclass
class _Claimed:
    """What a claim call brought: its rows as requests ready to send, and the rows that failed."""

    claim: _Claim
    answer: ReminderClaim
    requests: list[_Request]
    failures: list[PushResult]


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
        self.rate = expo.rate_limit * SCHEDULE_HEADROOM
        self._ready: deque[_Request] = deque()
        self._in_flight: dict[Future[RequestResult], _Request] = {}
        self._unwritten = _Written()
        self._writing: tuple[Future[dict[str, int]], _Written] | None = None
        self._claiming: Future[_Claimed] | None = None
        self._claim_after = 0.0  # time.monotonic() before which the schedule asks not to claim
        self._more = True  # the last claim was full: more may be due
        self._stop: PassAborted | None = None
        self._unanswered_in_a_row = 0
        self._answered = 0
        self._last_error: str | None = None
        self.requests = 0
        # Claims after the first run on a second connection, writes on the step's own, each in a
        # thread of its own: one claim and one write at a time, overlapping each other and the sends.
        self._claimer: Gateway | None = None
        self._claims = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-claim")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-write")

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            try:
                self._take(self._claim(self.gateway))  # the first claim: most passes have nothing due
            except DatabaseUnavailable as exc:
                raise PassAborted(f"database unavailable: {exc}", ErrorKind.DATABASE_UNAVAILABLE) from None
            while True:
                self._reap()
                if self._stop is not None:
                    self._release_ready()
                else:
                    self._send_ready()
                self._start_write()
                self._start_claim()
                if self._done():
                    break
                self._wait()
        except DatabaseUnavailable as exc:
            self._abandon()
            raise PassAborted(f"database unavailable while recording pushes: {exc}",
                              ErrorKind.DATABASE_UNAVAILABLE) from None
        except BaseException:
            self._abandon()
            raise
        finally:
            self._close()
        if self._stop is not None:
            raise self._stop
        if self.requests and not self._answered:
            raise PassAborted(f"Expo is unavailable: {self._last_error}", ErrorKind.EXPO_UNAVAILABLE)

    def _done(self) -> bool:
        if self._in_flight or self._ready or self._unwritten.results or self._writing or self._claiming:
            return False
        return not self._more or self._stop is not None

    def _wait(self) -> None:
        """Until a request, the write or the claim returns, or the next slot or claim time comes."""
        futures: list[Future[Any]] = list(self._in_flight)
        futures += [f for f in (self._writing[0] if self._writing else None, self._claiming) if f is not None]
        now = time.monotonic()
        wake = [now + 1.0]
        if self._more and self._stop is None and not self._claiming and len(self._ready) < self.slots:
            wake.append(self._claim_after)
        if self._ready and self._ready[0].not_before is not None and self._slots_used() < self.slots:
            wake.append(self._ready[0].not_before - _EARLY)
        if self._unwritten.results and self._writing is None:
            wake.append(self._unwritten.since + WRITE_DELAY)
        timeout = min(t for t in wake if t > now) - now  # a time already past is not waited for
        if futures:
            wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        elif timeout > 0:
            time.sleep(timeout)

    def _reap(self) -> None:
        if self._writing is not None and self._writing[0].done():
            write, written = self._writing
            self._writing = None
            self._count(write.result(), written)  # raises DatabaseUnavailable when the lease ran out
        if self._claiming is not None and self._claiming.done():
            claim, self._claiming = self._claiming, None
            try:
                self._take(claim.result())
            except DatabaseUnavailable as exc:
                # Nothing new can be claimed; what is on the wire still gets written.
                self._more = False
                self._stop = self._stop or PassAborted(f"database unavailable: {exc}", ErrorKind.DATABASE_UNAVAILABLE)
        for future in [f for f in self._in_flight if f.done()]:
            self._collect(future)

    def _abandon(self) -> None:
        """The pass is ending badly: wait for what is on the wire, so nothing is cut off mid-request.
        Its outcomes cannot be written; the rows' lease brings them back to a later pass."""
        pending: list[Future[Any]] = [*self._in_flight, *(f for f in (self._claiming,) if f is not None)]
        for future in pending:
            with contextlib.suppress(Exception):
                future.result()
        if self._writing is not None:
            with contextlib.suppress(Exception):
                self._writing[0].result()
        self._in_flight.clear()
        self._claiming = self._writing = None

    def _close(self) -> None:
        self._claims.shutdown(wait=True)
        self._writes.shutdown(wait=True)
        if self._claimer is not None:
            self.gateway.round_trips += self._claimer.round_trips
            with contextlib.suppress(Exception):
                self._claimer.close()

    # --- claiming -------------------------------------------------------------------------------

    def _start_claim(self) -> None:
        if (not self._more or self._stop is not None or self._claiming is not None
                or len(self._ready) >= self.slots or time.monotonic() < self._claim_after):
            return
        if self._claimer is None:
            self._claimer = self.gateway.sibling()
        self._claiming = self._claims.submit(self._claim, self._claimer)

    def _claim(self, gateway: Gateway) -> _Claimed:
        """One claim call and the messages of its rows (in the claim thread, but for the first)."""
        now = self.clock.now()
        claim_id = uuid.uuid4()
        # The lease runs from `now` (the claim's p_now), however long the call takes to get through.
        claim = _Claim(claim_id, time.monotonic() + self.passes.lease_seconds * (1 - LEASE_MARGIN))
        answer = gateway.claim_reminders(now, claim_id, self.passes.batch_size, self.passes.lease_seconds,
                                         rate=self.rate, lookahead_seconds=SCHEDULE_LOOKAHEAD,
                                         lead_seconds=SCHEDULE_LEAD,
                                         patience=self.clock.patience)
        failures: list[PushResult] = []
        requests: list[_Request] = []
        request = _Request(claim, [], {})
        for row in answer.rows:
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
                requests.append(request)
                request = _Request(claim, [], {})
            request.messages.extend(built)
            request.rows[row.id] = row
        if request.messages:
            requests.append(request)
        if answer.send_in is not None and answer.rate:
            # Each request at the slot of its first message on the schedule this claim booked.
            start, booked = answer.answered_at + answer.send_in, 0
            for r in requests:
                r.not_before = start + booked / answer.rate
                booked += len(r.messages)
        return _Claimed(claim, answer, requests, failures)

    def _take(self, claimed: _Claimed) -> None:
        answer = claimed.answer
        handled = len(answer.rows) + answer.expired + answer.cancelled + answer.superseded
        self._more = handled >= self.passes.batch_size or answer.wait is not None
        if answer.wait is not None:
            self._claim_after = answer.answered_at + answer.wait
        self.counts.expired += answer.expired
        self.counts.cancelled += answer.cancelled
        self.counts.superseded += answer.superseded
        self._ready.extend(claimed.requests)
        self._unwritten.add(claimed.claim, claimed.failures)
        if answer.rows or handled:
            logs.event("push.claimed", claimed=len(answer.rows), expired=answer.expired,
                       superseded=answer.superseded, cancelled=answer.cancelled,
                       failed_before_sending=len(claimed.failures))

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

    # --- sending --------------------------------------------------------------------------------

    def _slots_used(self) -> int:
        writing = self._writing[1].slots if self._writing else 0
        return len(self._in_flight) + self._unwritten.slots + writing

    def _send_ready(self) -> None:
        while self._ready and self._slots_used() < self.slots:
            request = self._ready[0]
            now = time.monotonic()
            if request.not_before is not None and request.not_before - _EARLY > now:
                return  # its slot on the schedule has not come
            self._ready.popleft()
            if now >= request.claim.deadline:
                # Too late to be sure the outcome can be written before the lease runs out.
                self._unwritten.add(request.claim, self._released(request))
                continue
            self._in_flight[self.pusher.submit(request.messages, not_before=request.not_before)] = request
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

    def _start_write(self) -> None:
        """Hand what is ready to the writing thread, when it is free: one call for all of it.

        At once when a request waits for the slot these outcomes hold (or the step is ending or
        stopping); otherwise once two requests' outcomes are in or the oldest has waited
        WRITE_DELAY, so that requests paced by the rate limit share their round trips.
        """
        if self._writing is not None or not self._unwritten.results:
            return
        pending = self._unwritten
        waiting = bool(self._ready) and self._slots_used() >= self.slots
        ending = self._stop is not None or not (self._ready or self._in_flight or self._claiming)
        if not (waiting or ending or pending.slots >= 2 or time.monotonic() - pending.since >= WRITE_DELAY):
            return
        pending, self._unwritten = self._unwritten, _Written()
        self._writing = (self._writes.submit(self._write, pending), pending)

    def _write(self, pending: _Written) -> dict[str, int]:
        patience = max(pending.deadline - time.monotonic(), 0.0)
        return self.gateway.record_push_outcomes(self.clock.now(), sorted(pending.claims, key=str),
                                                 self.expo.max_attempts, pending.results, patience=patience)

    def _count(self, written: dict[str, int], pending: _Written) -> None:
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
