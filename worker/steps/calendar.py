"""The events step's calendar policy: put each claimed event into its owner's Google Calendar,
exactly once, and say what became of it.

The events step (:mod:`worker.steps.events`) hands a batch of claimed events to
:meth:`CalendarSync.sync` and gets one :class:`~worker.records.CalendarOutcome` per event back:
``synced``, ``failed`` (a permanent error, with the reason the parent will read and its kind) or
``retry`` (transient; the step computes the backoff). Google's API is reached through
:mod:`worker.clients.google`; this module decides what to send and what each answer means.

* **Never two entries for one event.** The calendar entry's id is derived from ``events.id``
  (:func:`calendar_event_id`: the UUID's 32 lower-case hex digits are valid base32hex), so a crash
  after Google accepted an insert, a retry, or two overlapping passes can at worst meet the entry
  again: insert then answers ``409 duplicate`` and we update that entry instead. No insert without
  our id is ever sent.
* **Who is synced.** A parent with a refresh token (our OAuth client), or one who shared a
  calendar with the service account. Neither: the calendar is skipped (``synced``, id unchanged)
  and reminders are still planned by the step.
* **At Google's pace** (see :class:`CalendarSync`): up to ``concurrency`` requests in flight over
  all parents (``CALENDAR_CONCURRENCY``), at most ``per_parent`` of them for one parent
  (``CALENDAR_CONCURRENCY_PER_PARENT``, 2), the first request of a parent alone until Google has
  answered it, busiest parents first; per-user (600/min) and per-project
  (``GOOGLE_MAX_REQUESTS_PER_SECOND``) rate limits in :mod:`worker.clients.google`.
* **A rate limit is that parent's** (429, ``rateLimitExceeded``, ``userRateLimitExceeded``,
  ``quotaExceeded``): their other events are not sent in this pass (not in this batch, nor in a
  later batch of the pass), they are retried in a later pass with the events step's backoff, and
  never sooner than Google's ``Retry-After`` when it gave one. Other parents go on at full speed.
* **Errors** follow Google's Calendar error guide; see :func:`classify_http_error` and
  :func:`classify_exception`. ``invalid_grant`` from the token endpoint fails all that user's
  events with :data:`REVOKED_REASON` and error kind ``google_revoked``; they stay ``failed`` until
  the parent's refresh token is another one (the events claim checks), so a revoked grant is not
  retried every minute. One user's failure never touches another user's events.

Entries deleted by hand in Google (a deliberate choice, tested in
tests/integration/test_calendar_sync.py):

* An **edit in the app** (a new version, first attempt: ``attempts == 0``) brings the entry back:
  the update carries ``status: "confirmed"``, and an entry Google no longer has at all (update
  answers 404/410) is inserted again under the derived id. The parent changed the event after
  deleting it in Google; keeping the calendar in step with the app is what an edit means.
* A **retry of the same version** (``attempts > 0``: an earlier try of this version failed
  transiently) does not resurrect: the update is sent without ``status``, so an entry the parent
  deleted meanwhile stays deleted (Google keeps deleted entries as ``cancelled`` and an update
  without ``status`` leaves them so), and a 404/410 leaves the event synced with no calendar id.
  The deletion in Google is the parent's newer word on that version.
* An insert that meets ``409 duplicate`` always restores (``status: "confirmed"``): the entry is
  ours (same derived id), either from a try that crashed before the database recorded it, or
  from an earlier cancellation in the app that has since been undone.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from worker import logs, planner
from worker.config import ConfigError
from worker.records import CalendarOutcome, EventRow
from worker.steps.calendar_entry import EVENT_ID_PROPERTY, calendar_event_id, entry_body, reminder_overrides
from worker.vocabulary import ErrorKind, EventOutcome, EventStatus

if TYPE_CHECKING:
    # The Google client stack (googleapiclient, google-auth, httplib2: ~0.2 s and ~16 MiB to
    # import) is loaded only when a batch has something to tell Google: see GoogleClientSpec.
    from worker.clients.google import Access, GoogleCalendar, Session
    from worker.config import GoogleSettings
    from worker.retry import Pace

__all__ = [
    "EVENT_ID_PROPERTY",
    "REVOKED_REASON",
    "CalendarSync",
    "Failure",
    "GoogleClientSpec",
    "calendar_event_id",
    "calendar_from_settings",
    "classify_exception",
    "classify_http_error",
    "entry_body",
    "reminder_overrides",
]

REVOKED_REASON = "Google access was revoked; reconnect Google Calendar in the app"
"""The reason a parent reads when their grant is gone (the row's error_kind is ``google_revoked``)."""

_FAILED: Literal[EventOutcome.FAILED] = EventOutcome.FAILED
_RETRY: Literal[EventOutcome.RETRY] = EventOutcome.RETRY
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
_GONE = (404, 410)


# --- what an answer means -----------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """What one failed call means for the event and for the rest of its owner's events.

    ``stop_user``: the cause is the user's, not the event's (revoked grant, rate limit, Google
    unreachable), so the user's remaining events in this batch get the same outcome without
    another call.
    """

    outcome: Literal[EventOutcome.FAILED, EventOutcome.RETRY]
    message: str
    kind: ErrorKind
    stop_user: bool = False
    #: Seconds Google asked to wait (``Retry-After``), for a rate limit that said so.
    retry_after: float | None = None


def classify_http_error(status: int, reason: str | None, message: str | None,
                        retry_after: float | None = None) -> Failure:
    """Map a Calendar API error answer to an outcome (Google's Calendar error guide).

    Transient, tried again in a later pass with backoff: 429, 403 ``rateLimitExceeded`` /
    ``userRateLimitExceeded`` / ``quotaExceeded`` (usage limits), 5xx, 401 left after the one
    refresh-and-retry, 409/412 races. Permanent: 400 (bad request: retrying sends the same
    body), 403 ``forbidden`` and any other 403, 404/410 where an answer was needed, other 4xx.
    """
    what = f"{status} {reason}" if reason else str(status)
    detail = f"{what}: {message}" if message else what
    if status == 429 or (status == 403 and reason in _RATE_REASONS):
        return Failure(_RETRY, f"Google Calendar rate limit ({detail}); trying again later",
                       ErrorKind.GOOGLE_RATE_LIMITED, stop_user=True, retry_after=retry_after)
    if status >= 500:
        return Failure(_RETRY, f"Google Calendar is unavailable ({detail}); trying again later",
                       ErrorKind.GOOGLE_UNAVAILABLE)
    if status == 401:
        return Failure(_RETRY, f"Google Calendar did not accept a fresh access token ({detail})",
                       ErrorKind.GOOGLE_UNAVAILABLE, stop_user=True)
    if status in (409, 412):
        return Failure(_RETRY, f"Google Calendar reported a conflict ({detail}); trying again later",
                       ErrorKind.GOOGLE_UNAVAILABLE)
    if status == 400:
        return Failure(_FAILED, f"Google Calendar rejected the event ({detail})", ErrorKind.GOOGLE_REFUSED)
    if status == 403:
        return Failure(_FAILED, f"Google Calendar refused the change ({detail})", ErrorKind.GOOGLE_REFUSED)
    if status in _GONE:
        return Failure(_FAILED, f"Google Calendar has no such calendar or entry ({detail})",
                       ErrorKind.GOOGLE_REFUSED)
    return Failure(_FAILED, f"Google Calendar answered {detail}", ErrorKind.GOOGLE_REFUSED)


def classify_exception(exc: BaseException, *, service_account_used: bool = False) -> Failure | None:
    """The outcome for an exception from a token refresh or an API call; None if unexpected.

    ``invalid_grant`` from the token endpoint on a parent's refresh token means the grant was
    revoked or expired (``RefreshError.args[0]`` starts with the OAuth error code): permanent,
    kind ``auth``. For the service account the same answer means *our* key is wrong, which no
    parent can fix: retried, with the reason in the row. ``invalid_client`` (our OAuth client id
    or secret) likewise. Network errors and the token endpoint's retryable errors: retried.
    """
    # Loaded already when there is a Google exception to classify.
    from worker.clients.google import TRANSPORT_ERRORS, HttpError, RefreshError, http_error_parts, retry_after_seconds

    if isinstance(exc, HttpError):
        status, reason, message = http_error_parts(exc)
        return classify_http_error(status, reason, message, retry_after_seconds(exc))
    if isinstance(exc, RefreshError):
        text = str(exc.args[0]) if exc.args else str(exc)
        if text.startswith("invalid_grant"):
            if service_account_used:
                return Failure(_RETRY, f"Google refused the service account's key ({text}); "
                               "check GOOGLE_CLIENT_EMAIL and GOOGLE_PRIVATE_KEY", ErrorKind.GOOGLE_CONFIG,
                               stop_user=True)
            return Failure(_FAILED, REVOKED_REASON, ErrorKind.GOOGLE_REVOKED, stop_user=True)
        if text.startswith(("invalid_client", "unauthorized_client")):
            return Failure(_RETRY, f"Google refused the OAuth client ({text}); "
                           "check GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET", ErrorKind.GOOGLE_CONFIG, stop_user=True)
        return Failure(_RETRY, f"could not get a Google access token ({text}); trying again later",
                       ErrorKind.GOOGLE_UNAVAILABLE, stop_user=True)
    if isinstance(exc, TRANSPORT_ERRORS):
        return Failure(_RETRY, f"could not reach Google ({type(exc).__name__}: {exc}); trying again later",
                       ErrorKind.GOOGLE_UNAVAILABLE, stop_user=True)
    return None


# --- outcomes -----------------------------------------------------------------------------------


def _synced(calendar_id: str | None) -> CalendarOutcome:
    return CalendarOutcome(EventOutcome.SYNCED, calendar_id)


def _from_failure(failure: Failure, row: EventRow) -> CalendarOutcome:
    """The outcome of a failure: the entry id stays what the database has. The parent's refresh
    token is taken out of the reason whatever shape a library's message gave it."""
    message = failure.message
    if row.google_refresh_token:
        message = message.replace(row.google_refresh_token, "***")
    return CalendarOutcome(failure.outcome, row.google_calendar_id, logs.scrub(message), failure.kind,
                           failure.retry_after)


# --- what it takes to build the Google client ----------------------------------------------------


@dataclass(frozen=True)
class GoogleClientSpec:
    """The Google client's settings, without the Google client stack: :meth:`build` imports it.

    Every pass builds its calendar from the settings, most of them with nothing to tell Google;
    :class:`CalendarSync` builds the client (and imports googleapiclient, google-auth and httplib2
    with it) on the first batch that has a request to make. Secrets are left out of the repr.
    """

    api_url: str
    token_uri: str
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    service_account_info: Mapping[str, str] | None = field(default=None, repr=False)
    requests_per_second: float = 0.0
    #: Further keyword arguments of :class:`~worker.clients.google.GoogleCalendar` (timeout, ...).
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def oauth_configured(self) -> bool:
        return bool(self.client_id and self.client_secret)

    @property
    def service_account_configured(self) -> bool:
        return self.service_account_info is not None

    def build(self) -> GoogleCalendar:
        from worker.clients.google import GoogleCalendar

        return GoogleCalendar(api_url=self.api_url, token_uri=self.token_uri, client_id=self.client_id,
                              client_secret=self.client_secret, service_account_info=self.service_account_info,
                              requests_per_second=self.requests_per_second, **dict(self.options))


# --- one batch, parent by parent -----------------------------------------------------------------


class _Plan:
    """One batch's events, parent by parent, shared by the pool's threads.

    A parent is *ready* while they have events left, fewer requests in flight than their width and
    no failure that stopped them. Threads take ready parents busiest first (most events left), so
    the longest chains start early and the batch does not end waiting on one late parent. A
    parent's width is 1 until Google answered their first call (their token refresh happens
    there: a revoked grant or a rate limit costs one request, not ``per_parent``), then
    ``per_parent``. A failure that concerns the parent (``stop_user``) gives their events not yet
    sent the same outcome without a request; the one still in flight finishes on its own.
    """

    def __init__(self, queues: Mapping[str, Sequence[EventRow]], accesses: Mapping[str, Access],
                 per_parent: int) -> None:
        self._cond = threading.Condition()
        self._queues = {user: deque(rows) for user, rows in queues.items()}
        self._accesses = accesses
        self._per_parent = per_parent
        self._width = dict.fromkeys(self._queues, 1)
        self._in_flight: Counter[str] = Counter()
        self._heap: list[tuple[int, int, str]] = []
        self._seq = 0
        self._left = sum(len(q) for q in self._queues.values())
        self.total = self._left
        self.outcomes: dict[str, CalendarOutcome] = {}
        #: The most requests that were in flight at once for each parent (logs, tests).
        self.max_in_flight: Counter[str] = Counter()
        for user in sorted(self._queues, key=lambda u: len(self._queues[u]), reverse=True):
            self._push(user)

    def _push(self, user: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (-len(self._queues[user]), self._seq, user))

    def _ready(self, user: str) -> bool:
        return bool(self._queues[user]) and self._in_flight[user] < self._width[user]

    def take(self) -> tuple[EventRow, Access] | None:
        """The next event to send and how to reach its parent; None when nothing is left to send.
        Waits while every parent with events left has all their requests in flight."""
        with self._cond:
            while True:
                while self._heap:
                    user = heapq.heappop(self._heap)[2]
                    if not self._ready(user):
                        continue  # a stale entry: the parent is at their width or done
                    row = self._queues[user].popleft()
                    self._in_flight[user] += 1
                    self.max_in_flight[user] = max(self.max_in_flight[user], self._in_flight[user])
                    self._left -= 1
                    if self._ready(user):
                        self._push(user)
                        self._cond.notify()
                    if self._left == 0:
                        self._cond.notify_all()  # nothing more to take: waiting threads may go
                    return row, self._accesses[user]
                if self._left == 0:
                    return None
                self._cond.wait()

    def done(self, row: EventRow, outcome: CalendarOutcome | None, failure: Failure | None) -> None:
        """Record what became of ``row``; free its parent's slot (or stop the parent)."""
        user = str(row.user_id)
        with self._cond:
            self._in_flight[user] -= 1
            if outcome is not None:
                self.outcomes[row.id] = outcome
            queue = self._queues[user]
            if failure is not None and failure.stop_user:
                for other in queue:
                    self.outcomes[other.id] = _from_failure(failure, other)
                self._left -= len(queue)
                queue.clear()
            else:
                self._width[user] = self._per_parent
            if self._ready(user):
                self._push(user)
                self._cond.notify(min(self._width[user] - self._in_flight[user], len(queue)))
            if self._left == 0:
                self._cond.notify_all()

    def finish(self, rows: Sequence[EventRow]) -> dict[str, CalendarOutcome]:
        """The outcomes; an event that got none (a thread died of a bug) is tried again later."""
        failure = Failure(_RETRY, "unexpected error while syncing the calendar; trying again later",
                          ErrorKind.GOOGLE_UNAVAILABLE)
        for row in rows:
            if row.id not in self.outcomes:
                self.outcomes[row.id] = _from_failure(failure, row)
        return self.outcomes


# --- the port -----------------------------------------------------------------------------------


@dataclass
class _Held:
    """What a CalendarSync may hold, built on first use, released by its finalizer."""

    client: GoogleCalendar | None = None
    executor: ThreadPoolExecutor | None = None


class CalendarSync:
    """The events step's calendar (``worker.steps.events.CalendarPort``).

    One instance per pass is the intended use (the CLI's wiring): the client caches access tokens
    (one refresh per parent per pass) and per-user rate windows, this keeps the grants refused and
    the parents rate-limited in the pass. Nothing of Google is loaded or started before a batch has
    a request to make: the client is built from its :class:`GoogleClientSpec`, and the pool
    started, on the first such batch. Close it (or use ``with``) to release the pool threads and
    their connections; an instance dropped unclosed is closed when it is garbage-collected.

    How a batch goes (``sync``): events are grouped by parent; ``concurrency`` threads share a
    :class:`_Plan` and each keeps one request in flight, so up to ``concurrency`` requests are in
    flight over all parents and at most ``per_parent`` for any one parent. Why 2 per parent by
    default: Google's per-user quota is 600 requests a minute, 10 a second, which one request in
    flight at 50 ms already exceeds in the long run (the per-user limiter holds a parent to it), and
    Google answers bursts of writes to one calendar with ``rateLimitExceeded`` ("operational
    limits"); a second request halves the time of a parent with many events (the batch's tail) and
    costs at most one wasted request when the parent is rate limited. Throughput comes from many
    parents at once, which is where Google's quota is.
    """

    def __init__(self, client: GoogleClientSpec | GoogleCalendar, *, offsets: Sequence[timedelta],
                 concurrency: int = 64, per_parent: int = 2) -> None:
        self.offsets = tuple(offsets)
        self.concurrency = max(1, concurrency)
        self.per_parent = max(1, per_parent)
        self._held = _Held()
        if isinstance(client, GoogleClientSpec):
            self._spec: GoogleClientSpec | None = client
            self._service_account = client.service_account_configured
        else:
            self._spec = None
            self._held.client = client
            self._service_account = client.service_account_configured
        self._oauth = client.oauth_configured
        self._lock = threading.Lock()
        self._revoked: set[tuple[str, str]] = set()
        self._benched: dict[str, Failure] = {}  # parents rate-limited earlier in this pass
        self._pace: Pace | None = None
        self._finalizer = weakref.finalize(self, _release, self._held)

    @property
    def client(self) -> GoogleCalendar:
        """The Google client, built (and the Google client stack imported) on first use."""
        client = self._held.client
        if client is not None:
            return client
        with self._lock:
            if self._held.client is None:
                assert self._spec is not None
                self._held.client = self._spec.build()
            return self._held.client

    @property
    def started(self) -> bool:
        """Whether the Google client was built: whether this pass had anything to tell Google."""
        return self._held.client is not None

    @property
    def refreshes(self) -> Counter[str]:
        client = self._held.client
        return client.refreshes if client is not None else Counter()

    @property
    def requests(self) -> int:
        client = self._held.client
        return client.requests if client is not None else 0

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> CalendarSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the port --------------------------------------------------------------------------------

    @property
    def requests_per_second(self) -> float:
        """The project's Calendar requests per second this calendar keeps to (0: no limit)."""
        if self._spec is not None:
            return self._spec.requests_per_second
        client = self._held.client
        return client.requests_per_second if client is not None else 0.0

    def sync(self, events: Sequence[EventRow], now: datetime, *,
             pace: Pace | None = None) -> dict[str, CalendarOutcome]:
        """Outcomes by event id. Events with a content problem are left out (the step fails them).
        ``pace``: what spaces the project's requests instead of the client's own limiter (the
        events step's :class:`~worker.steps.pace.SharedPace`)."""
        if pace is not None:
            self._pace = pace
        started = time.monotonic()
        outcomes: dict[str, CalendarOutcome] = {}
        queues: dict[str, list[EventRow]] = {}
        for row in events:
            if row.status != EventStatus.CANCELLED and planner.event_problem(
                    row.title, row.start_ts, row.end_ts, row.location, row.prep_items) is not None:
                continue
            if not self._reachable(row):
                outcomes[row.id] = _synced(row.google_calendar_id)  # no credentials: skipped
                continue
            user = str(row.user_id)
            with self._lock:
                benched = self._benched.get(user)
            if benched is not None:  # rate limited earlier in this pass: a later pass tries again
                outcomes[row.id] = _from_failure(benched, row)
                continue
            queues.setdefault(user, []).append(row)
        widest = 0
        if queues:
            plan = self._run(queues)
            outcomes.update(plan.finish([r for rows in queues.values() for r in rows]))
            widest = max(plan.max_in_flight.values(), default=0)
        logs.event("calendar.sync", events=len(events), users=len(queues), requests=self.requests,
                   refreshes=sum(self.refreshes.values()), max_in_flight_per_parent=widest,
                   duration_s=round(time.monotonic() - started, 3), now=now.isoformat())
        return outcomes

    # -- parents and their events ----------------------------------------------------------------

    def _reachable(self, row: EventRow) -> bool:
        """Whether the worker can reach the parent's calendar (what ``GoogleCalendar.access`` decides,
        asked without building the client)."""
        if row.user_id is None:
            return False
        return bool((row.google_refresh_token and self._oauth) or (row.owner_calendar_id and self._service_account))

    def _run(self, queues: Mapping[str, Sequence[EventRow]]) -> _Plan:
        client = self.client  # the first batch with a request to make builds it
        if self._pace is not None:
            client.project_pace = self._pace
        accesses: dict[str, Access] = {}
        for user, rows in queues.items():
            access = client.access(user, rows[0].google_refresh_token, rows[0].owner_calendar_id)
            assert access is not None  # _reachable said so
            accesses[user] = access
        plan = _Plan(queues, accesses, self.per_parent)
        with self._lock:
            if self._held.executor is None:
                self._held.executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="calendar")
            executor = self._held.executor
        drains = [executor.submit(self._drain, plan) for _ in range(min(self.concurrency, plan.total))]
        for drain in drains:
            try:
                drain.result()
            except Exception:  # a bug must not cost other parents their sync (finish() retries its event)
                logs.get().exception("calendar.thread_crashed")
        return plan

    def _drain(self, plan: _Plan) -> None:
        """One thread's share of the batch: an event at a time, until none is left to send."""
        while (task := plan.take()) is not None:
            row, access = task
            outcome: CalendarOutcome | None = None
            failure: Failure | None = None
            try:
                outcome, failure = self._sync_one(row, access)
            finally:
                plan.done(row, outcome, failure)

    def _sync_one(self, row: EventRow, access: Access) -> tuple[CalendarOutcome, Failure | None]:
        try:
            self._refused_earlier(access, row)
            return self._sync_event(row, self.client.authorize(access)), None
        except Exception as exc:
            failure = classify_exception(exc, service_account_used=access.service_account)
            if failure is None:  # not Google's answer: something about this event; it fails alone
                logs.get().exception("calendar.event_crashed", extra={"fields": {"event_id": row.id}})
                failure = Failure(_FAILED, f"cannot put this event into Google Calendar: {type(exc).__name__}: "
                                  f"{exc}", ErrorKind.INVALID_ROW)
            if failure.kind is ErrorKind.GOOGLE_REVOKED and row.google_refresh_token:
                with self._lock:
                    self._revoked.add((str(row.user_id), row.google_refresh_token))
            if failure.kind is ErrorKind.GOOGLE_RATE_LIMITED:
                with self._lock:
                    self._benched.setdefault(str(row.user_id), failure)
            logs.event("calendar.error", logging.WARNING, event_id=row.id, user_id=row.user_id,
                       outcome=failure.outcome, kind=failure.kind, reason=failure.message)
            return _from_failure(failure, row), failure

    def _refused_earlier(self, access: Access, row: EventRow) -> None:
        """A grant Google refused in an earlier batch of this pass is not asked about again."""
        if not access.service_account and row.google_refresh_token:
            with self._lock:
                revoked = (str(row.user_id), row.google_refresh_token) in self._revoked
            if revoked:
                from worker.clients.google import RefreshError

                raise RefreshError("invalid_grant: refused earlier in this pass")  # type: ignore[no-untyped-call]

    def _sync_event(self, row: EventRow, session: Session) -> CalendarOutcome:
        from worker.clients.google import HttpError

        ours = calendar_event_id(row.id)
        if row.status == EventStatus.CANCELLED:
            target = row.google_calendar_id or ours  # NULL id: a crash may still have left ours behind
            try:
                session.delete(target)
            except HttpError as err:
                if err.resp.status not in _GONE:
                    raise
            return _synced(None)
        if row.google_calendar_id is None:
            return self._insert_or_restore(row, session)
        edit = row.attempts == 0
        try:
            answer = session.update(row.google_calendar_id, entry_body(row, self.offsets, restore=edit))
        except HttpError as err:
            if err.resp.status not in _GONE:
                raise
            if edit:
                return self._insert_or_restore(row, session)
            logs.event("calendar.entry_gone", event_id=row.id, user_id=row.user_id)
            return _synced(None)
        if isinstance(answer, dict) and answer.get("status") == "cancelled":  # Google's word for deleted
            logs.event("calendar.entry_left_deleted", event_id=row.id, user_id=row.user_id)
        return _synced(row.google_calendar_id)

    def _insert_or_restore(self, row: EventRow, session: Session) -> CalendarOutcome:
        from worker.clients.google import HttpError

        ours = calendar_event_id(row.id)
        try:
            session.insert(entry_body(row, self.offsets, with_id=True))
        except HttpError as err:
            if err.resp.status != 409:
                raise
            # Ours already: created by a try whose outcome was lost, or deleted by a cancellation
            # since undone. Update it to this version and make sure it is not left deleted.
            session.update(ours, entry_body(row, self.offsets, restore=True))
        return _synced(ours)


def _release(held: _Held) -> None:
    """Stop the pool, then close the client's connections (also run if close() was forgotten)."""
    if held.executor is not None:
        held.executor.shutdown(wait=True)
    if held.client is not None:
        held.client.close()


def _check_private_key(pem: str) -> None:
    """Refuse a service-account key google-auth could not sign with when the pass starts, not per
    parent: parsed as google-auth parses it (``cryptography``), without the Google client stack."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError("GOOGLE_PRIVATE_KEY", "is not a usable service-account key "
                          "(not an unencrypted private key in PEM format)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("GOOGLE_PRIVATE_KEY", "is not a usable service-account key (not an RSA key)")


def calendar_from_settings(google: GoogleSettings, offsets: Sequence[timedelta],
                           **overrides: Any) -> CalendarSync | None:
    """The calendar the settings ask for; None when no Google credentials are configured.

    Cheap: nothing of Google is imported until a batch has a request to make (see
    :class:`CalendarSync`). Raises :class:`~worker.config.ConfigError` (exit 2) for a
    service-account key that cannot be loaded, so a bad key is caught when the pass starts, not per
    user. ``overrides``: ``concurrency``, ``per_parent``, ``requests_per_second``, or further
    arguments of the client.
    """
    sa_info: dict[str, str] | None = None
    if google.client_email and google.private_key:
        sa_info = {"client_email": google.client_email,
                   "private_key": str(google.private_key)}
        if google.project_id:
            sa_info["project_id"] = google.project_id
    if not google.oauth_configured and sa_info is None:
        return None
    if sa_info is not None:
        _check_private_key(sa_info["private_key"])
    concurrency = overrides.pop("concurrency", google.concurrency)
    per_parent = overrides.pop("per_parent", google.concurrency_per_parent)
    spec = GoogleClientSpec(
        api_url=google.api_url,
        token_uri=google.token_uri,
        client_id=google.client_id,
        client_secret=str(google.client_secret) if google.client_secret else None,
        service_account_info=sa_info,
        requests_per_second=overrides.pop("requests_per_second", google.max_requests_per_second),
        options=overrides,
    )
    return CalendarSync(spec, offsets=offsets, concurrency=concurrency, per_parent=per_parent)
