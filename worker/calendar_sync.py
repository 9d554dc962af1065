"""Contract step 1: put each claimed event into its owner's Google Calendar, exactly once.

The events step (``worker.steps.events``) hands a batch of claimed events to :meth:`CalendarSync.sync`
and gets one :class:`~worker.records.CalendarOutcome` per event back: ``synced``, ``failed`` (a
permanent error, with the reason the parent will read and its kind) or ``retry`` (transient; the
step computes the backoff). This module only talks to Google; the database outcome is written by the pass.

Why it is built the way it is:

* **Never two entries for one event.** The calendar entry's id is derived from ``events.id``
  (:func:`calendar_event_id`: the UUID's 32 lower-case hex digits are valid base32hex), so a crash
  after Google accepted an insert, a retry, or two overlapping passes can at worst meet the entry
  again: insert then answers ``409 duplicate`` and we update that entry instead. No insert
  without our id is ever sent.
* **Credentials.** A parent's ``profiles.google_refresh_token`` with the OAuth client
  (google-auth's ``google.oauth2.credentials.Credentials``) writes to their ``primary`` calendar.
  A parent without a refresh token who shared a calendar with the service account
  (``profiles.google_calendar_id``) is served through the service account. Neither: the calendar
  is skipped (``synced``, id unchanged) and reminders are still planned by the pass.
  Access tokens are refreshed explicitly once per user before their first request and kept for
  the life of the :class:`CalendarSync` (one per pass in the CLI), so a pass makes exactly one
  token request per user however many events and batches that user has; a ``401`` from the API
  refreshes once more and retries (``AuthorizedHttp(max_refresh_attempts=1)``).
* **Regional access boundary.** google-auth 2.62 starts a background thread after a
  service-account refresh that looks up ``iamcredentials.googleapis.com`` and shares the
  (not thread-safe) ``httplib2.Http``. The installed library has no switch for it: the
  ``GOOGLE_AUTH_TRUST_BOUNDARY_ENABLED`` variable is documented as deprecated with no effect.
  It asks ``_is_regional_access_boundary_lookup_required()`` first, and its own OAuth user
  credentials answer ``False`` there; :class:`_ServiceAccountCredentials` answers the same, so no
  thread and no unexpected network call happen.
* **Threads.** httplib2 is not thread-safe, so each pool thread owns a *lane*: its own
  ``httplib2.Http`` (with a timeout), the Calendar service built once on it with the bundled
  discovery document, and the service's ``events()`` resource. Measured with the installed
  googleapiclient 2.202: ``build()`` costs ~1-3 ms but every ``service.events()`` call ~1.3 ms
  (it builds the nested resource), while ``events.insert(...)`` costs ~15 us; so the resource is
  cached per lane and credentials are swapped per user with a cheap (~3 us)
  ``AuthorizedHttp(credentials, http=lane.http)`` passed to ``execute(http=...)``.
  Users run in parallel on ``calendar_concurrency`` threads; one user's events run in order on
  one thread, under a per-user limit of 600 requests a minute (Google's per-user quota).
* **Errors** follow Google's Calendar error guide; see :func:`classify_http_error` and
  :func:`classify_exception`. ``invalid_grant`` from the token endpoint fails all that user's
  events with :data:`REVOKED_REASON` and error kind ``google_revoked``; the database keeps them ``failed`` until
  the profile's refresh token changes, so a revoked grant is not retried every minute. One
  user's failure never touches another user's events.

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

import http.client
import json
import logging
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import google_auth_httplib2
import httplib2
from google.auth import exceptions as auth_exceptions
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from worker import logs, planner
from worker.config import ConfigError
from worker.records import CalendarOutcome, EventRow
from worker.vocabulary import ErrorKind, EventOutcome, EventStatus

if TYPE_CHECKING:
    from worker.config import Settings

__all__ = [
    "EVENT_ID_PROPERTY",
    "REVOKED_REASON",
    "CalendarSync",
    "Failure",
    "calendar_event_id",
    "calendar_from_settings",
    "classify_exception",
    "classify_http_error",
    "entry_body",
    "reminder_overrides",
]

SCOPES = ("https://www.googleapis.com/auth/calendar.events",)

EVENT_ID_PROPERTY = "reminderWorkerEventId"
"""Key in the entry's ``extendedProperties.private`` that names the ``events.id`` it mirrors."""

REVOKED_REASON = "Google access was revoked; reconnect Google Calendar in the app"
"""The reason a parent reads when their grant is gone (the row's error_kind is ``google_revoked``)."""

MAX_OVERRIDES = 5
MAX_REMINDER_MINUTES = 40320
REQUESTS_PER_MINUTE = 600
DEFAULT_TIMEOUT = 20.0

_FAILED: Literal[EventOutcome.FAILED] = EventOutcome.FAILED
_RETRY: Literal[EventOutcome.RETRY] = EventOutcome.RETRY
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
_GONE = (404, 410)
_TRANSPORT_ERRORS = (OSError, httplib2.HttpLib2Error, http.client.HTTPException,
                     auth_exceptions.TransportError)


# --- pure parts ---------------------------------------------------------------------------------


def calendar_event_id(event_id: str) -> str:
    """The Google Calendar entry id for ``events.id``: its UUID as 32 lower-case hex digits.

    Google allows client-chosen ids of 5..1024 characters from base32hex (``a-v`` and ``0-9``);
    hex digits are a subset, and the id is a pure function of the event, which is what makes
    every insert idempotent.
    """
    return uuid.UUID(event_id).hex


def reminder_overrides(offsets: Iterable[timedelta]) -> list[dict[str, Any]]:
    """Popup reminders at the configured lead times, as Google accepts them.

    Google takes at most 5 overrides of 0..40320 minutes each. Lead times are rounded to whole
    minutes, clamped, de-duplicated; when more than 5 remain, the 5 closest to the start are kept
    (the last-minute nudges matter most on a phone). Earliest first.
    """
    minutes = {min(max(round(o.total_seconds() / 60), 0), MAX_REMINDER_MINUTES) for o in offsets}
    kept = sorted(minutes)[:MAX_OVERRIDES]
    return [{"method": "popup", "minutes": m} for m in sorted(kept, reverse=True)]


def _description(prep_items: Sequence[str | None] | None) -> str | None:
    items = [i.strip() for i in prep_items or () if i is not None and i.strip()]
    if not items:
        return None
    return "Bring:\n" + "\n".join(f"- {i}" for i in items)


def entry_body(row: EventRow, offsets: Iterable[timedelta], *, with_id: bool = False,
               restore: bool = False) -> dict[str, Any]:
    """The full Calendar event resource for ``row`` (insert body, or update's full replacement).

    Times are RFC 3339 with the offset in the owner's zone plus ``timeZone``, so the entry shows
    at the right wall-clock time and recurs correctly across daylight-saving changes if a parent
    ever edits it in Google. ``restore`` sets ``status: "confirmed"``, which is how Google undoes
    a deletion; without it an update leaves the entry's status as it is.
    """
    tz, usable = planner.timezone_for(row.timezone)
    zone = row.timezone if row.timezone and usable else "UTC"
    summary = f"{row.title} ({row.child_name})" if row.child_name else row.title
    body: dict[str, Any] = {
        "summary": summary,
        "start": {"dateTime": row.start_ts.astimezone(tz).isoformat(timespec="seconds"), "timeZone": zone},
        "end": {"dateTime": row.end_ts.astimezone(tz).isoformat(timespec="seconds"), "timeZone": zone},
        "extendedProperties": {"private": {EVENT_ID_PROPERTY: row.id}},
        "reminders": {"useDefault": False, "overrides": reminder_overrides(offsets)},
    }
    if row.location:
        body["location"] = row.location
    description = _description(row.prep_items)
    if description is not None:
        body["description"] = description
    if with_id:
        body["id"] = calendar_event_id(row.id)
    if restore:
        body["status"] = "confirmed"
    return body


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


def classify_http_error(status: int, reason: str | None, message: str | None) -> Failure:
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
                       ErrorKind.GOOGLE_RATE_LIMITED, stop_user=True)
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
    if isinstance(exc, HttpError):
        status, reason, message = http_error_parts(exc)
        return classify_http_error(status, reason, message)
    if isinstance(exc, auth_exceptions.RefreshError):
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
    if isinstance(exc, _TRANSPORT_ERRORS):
        return Failure(_RETRY, f"could not reach Google ({type(exc).__name__}: {exc}); trying again later",
                       ErrorKind.GOOGLE_UNAVAILABLE, stop_user=True)
    return None


def http_error_parts(err: HttpError) -> tuple[int, str | None, str | None]:
    """(status, first error reason, message) of a Calendar error answer."""
    status = int(err.resp.status)
    reason: str | None = None
    message: str | None = str(err.reason) if err.reason else None
    try:
        doc = json.loads(err.content.decode("utf-8"))
        error = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(error, dict):
            errors = error.get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                reason = errors[0].get("reason") or None
            if reason is None:  # newer APIs put an ErrorInfo into details, or only a status
                for detail in error.get("details") or []:
                    if isinstance(detail, dict) and detail.get("reason"):
                        reason = str(detail["reason"])
                        break
            message = str(error.get("message") or message or "") or None
    except (ValueError, AttributeError):
        pass
    return status, reason, message


# --- outcomes -----------------------------------------------------------------------------------


def _synced(calendar_id: str | None) -> CalendarOutcome:
    return CalendarOutcome(EventOutcome.SYNCED, calendar_id)


def _from_failure(failure: Failure, row: EventRow) -> CalendarOutcome:
    """The outcome of a failure: the entry id stays what the database has. The parent's refresh
    token is taken out of the reason whatever shape a library's message gave it."""
    message = failure.message
    if row.google_refresh_token:
        message = message.replace(row.google_refresh_token, "***")
    return CalendarOutcome(failure.outcome, row.google_calendar_id, logs.scrub(message), failure.kind)


# --- plumbing -----------------------------------------------------------------------------------


class _ServiceAccountCredentials(service_account.Credentials):
    """Service-account credentials without google-auth's regional access boundary lookup.

    Same answer as google-auth's own OAuth user credentials give (see the module docstring):
    no background thread sharing our ``httplib2.Http`` and no call to iamcredentials.
    """

    def _is_regional_access_boundary_lookup_required(self) -> bool:
        return False


class _RateLimiter:
    """At most ``limit`` requests in any ``window`` seconds: a sliding window, blocking."""

    def __init__(self, limit: int, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait until one more request fits; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self.window:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return waited
                delay = self._sent[0] + self.window - now
            self._sleep(delay)
            waited += delay


@dataclass
class _Lane:
    """One pool thread's own HTTP connection pool and Calendar service (httplib2 is not thread-safe)."""

    http: httplib2.Http
    service: Any
    events: Any
    auth_request: google_auth_httplib2.Request


@dataclass
class _Access:
    """How to reach one user's calendar."""

    key: str  # limiter and refresh bookkeeping: the user id, or the service account's email
    credentials: Any
    calendar_id: str
    service_account: bool
    lock: threading.Lock = field(default_factory=threading.Lock)


def _release(executor: ThreadPoolExecutor, lanes: list[_Lane], lock: threading.Lock) -> None:
    """Stop the pool and close every lane's connections (also run if close() was forgotten)."""
    executor.shutdown(wait=True)
    with lock:
        taken = list(lanes)
        lanes.clear()
    for lane in taken:
        lane.service.close()  # closes lane.http, which every AuthorizedHttp of the lane wraps


class CalendarSync:
    """The calendar client of the events step (``worker.passes.CalendarPort``).

    One instance per pass is the intended use (the CLI's wiring): it caches access tokens, the
    revoked grants and the per-user rate windows for its lifetime. Close it (or use ``with``) to
    release the pool threads and their connections; an instance that is dropped unclosed is
    closed when it is garbage-collected.
    """

    def __init__(
        self,
        *,
        api_url: str,
        token_uri: str,
        offsets: Sequence[timedelta],
        client_id: str | None = None,
        client_secret: str | None = None,
        service_account_info: Mapping[str, str] | None = None,
        concurrency: int = 8,
        timeout: float = DEFAULT_TIMEOUT,
        requests_per_minute: int = REQUESTS_PER_MINUTE,
    ) -> None:
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.token_uri = token_uri
        self.offsets = tuple(offsets)
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.requests_per_minute = requests_per_minute
        self._client_id = client_id
        self._client_secret = client_secret
        self._sa: _Access | None = None
        if service_account_info is not None:
            info = {"type": "service_account", "token_uri": token_uri, **service_account_info}
            try:
                creds = _ServiceAccountCredentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=list(SCOPES))
            except (ValueError, KeyError) as exc:
                raise ConfigError("GOOGLE_PRIVATE_KEY", f"is not a usable service-account key ({exc})") from None
            self._sa = _Access(str(info["client_email"]), creds, "", service_account=True)
        self._lock = threading.Lock()
        self._user_creds: dict[tuple[str, str], Any] = {}
        self._revoked: set[tuple[str, str]] = set()
        self._limiters: dict[str, _RateLimiter] = {}
        #: Token requests made, by user id (or service-account email): for logs, tests and bench.
        self.refreshes: Counter[str] = Counter()
        #: Calendar API requests made (not counting google-auth's own 401 retries).
        self.requests = 0
        self._local = threading.local()
        self._lanes: list[_Lane] = []
        self._lanes_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="calendar")
        self._finalizer = weakref.finalize(self, _release, self._executor, self._lanes, self._lanes_lock)

    @property
    def oauth_configured(self) -> bool:
        return bool(self._client_id and self._client_secret)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> CalendarSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the port --------------------------------------------------------------------------------

    def sync(self, events: Sequence[EventRow], now: datetime) -> dict[str, CalendarOutcome]:
        """Outcomes by event id. Events with a content problem are left out (the pass fails them)."""
        started = time.monotonic()
        outcomes: dict[str, CalendarOutcome] = {}
        by_user: dict[str, list[EventRow]] = {}
        for row in events:
            if row.status != EventStatus.CANCELLED and planner.event_problem(
                    row.title, row.start_ts, row.end_ts, row.location, row.prep_items) is not None:
                continue
            if self._access_for(row) is None:
                outcomes[row.id] = _synced(row.google_calendar_id)  # no credentials: skipped
                continue
            by_user.setdefault(str(row.user_id), []).append(row)
        # Busiest users first: each user's events are sequential, so starting the longest queues
        # early keeps the pool busy to the end of the batch instead of waiting on one late user.
        busiest = sorted(by_user, key=lambda user: len(by_user[user]), reverse=True)
        futures: dict[str, Future[dict[str, CalendarOutcome]]] = {
            user: self._executor.submit(self._sync_user, by_user[user]) for user in busiest}
        for user, future in futures.items():
            try:
                outcomes.update(future.result())
            except Exception:  # a bug must not cost other users their sync
                logs.get().exception("calendar.user_crashed")
                failure = Failure(_RETRY, "unexpected error while syncing the calendar; trying again later",
                                  ErrorKind.GOOGLE_UNAVAILABLE)
                outcomes.update((r.id, _from_failure(failure, r)) for r in by_user[user])
        logs.event("calendar.sync", events=len(events), users=len(by_user), requests=self.requests,
                   refreshes=sum(self.refreshes.values()), duration_s=round(time.monotonic() - started, 3),
                   now=now.isoformat())
        return outcomes

    # -- one user --------------------------------------------------------------------------------

    def _access_for(self, row: EventRow) -> _Access | None:
        """The user's credentials and calendar, or None when the calendar is to be skipped."""
        if row.user_id is None:
            return None
        if row.google_refresh_token and self.oauth_configured:
            key = (str(row.user_id), row.google_refresh_token)
            with self._lock:
                creds = self._user_creds.get(key)
                if creds is None:
                    creds = user_credentials.Credentials(  # type: ignore[no-untyped-call]
                        token=None, refresh_token=row.google_refresh_token, client_id=self._client_id,
                        client_secret=self._client_secret, token_uri=self.token_uri)
                    self._user_creds[key] = creds
            return _Access(str(row.user_id), creds, "primary", service_account=False)
        if row.owner_calendar_id and self._sa is not None:
            return _Access(self._sa.key, self._sa.credentials, row.owner_calendar_id,
                           service_account=True, lock=self._sa.lock)
        return None

    def _sync_user(self, rows: Sequence[EventRow]) -> dict[str, CalendarOutcome]:
        """One user's events, in order, on this thread's lane."""
        lane = self._lane()
        access = self._access_for(rows[0])
        assert access is not None  # sync() grouped only users with access
        out: dict[str, CalendarOutcome] = {}
        stop: Failure | None = None
        authed: google_auth_httplib2.AuthorizedHttp | None = None
        for row in rows:
            if stop is not None:
                out[row.id] = _from_failure(stop, row)
                continue
            try:
                if authed is None:
                    self._ensure_token(access, row, lane)
                    authed = google_auth_httplib2.AuthorizedHttp(
                        access.credentials, http=lane.http, max_refresh_attempts=1)
                out[row.id] = self._sync_event(row, access, lane, authed)
            except Exception as exc:
                failure = classify_exception(exc, service_account_used=access.service_account)
                if failure is None:  # not Google's answer: something about this event; it fails alone
                    logs.get().exception("calendar.event_crashed", extra={"fields": {"event_id": row.id}})
                    failure = Failure(_FAILED, f"cannot put this event into Google Calendar: {type(exc).__name__}: "
                                      f"{exc}", ErrorKind.INVALID_ROW)
                if failure.kind is ErrorKind.GOOGLE_REVOKED and row.google_refresh_token:
                    with self._lock:
                        self._revoked.add((str(row.user_id), row.google_refresh_token))
                out[row.id] = _from_failure(failure, row)
                if failure.stop_user:
                    stop = failure
                logs.event("calendar.error", logging.WARNING, event_id=row.id, user_id=row.user_id,
                           outcome=failure.outcome, kind=failure.kind, reason=failure.message)
        return out

    def _ensure_token(self, access: _Access, row: EventRow, lane: _Lane) -> None:
        """Refresh the access token unless this instance already holds a valid one for the user.

        Explicit, so that a revoked grant shows up before any Calendar call and the refresh is
        counted; the service account's credentials are shared by its users, hence the lock.
        """
        if not access.service_account and row.google_refresh_token:
            with self._lock:
                revoked = (str(row.user_id), row.google_refresh_token) in self._revoked
            if revoked:  # already refused in an earlier batch of this pass: don't ask again
                raise auth_exceptions.RefreshError(  # type: ignore[no-untyped-call]
                    "invalid_grant: refused earlier in this pass")
        with access.lock:
            if access.credentials.valid:
                return
            with self._lock:
                self.refreshes[access.key] += 1
            access.credentials.refresh(lane.auth_request)

    def _sync_event(self, row: EventRow, access: _Access, lane: _Lane,
                    authed: google_auth_httplib2.AuthorizedHttp) -> CalendarOutcome:
        ours = calendar_event_id(row.id)
        if row.status == EventStatus.CANCELLED:
            target = row.google_calendar_id or ours  # NULL id: a crash may still have left ours behind
            try:
                self._call(access, authed, lane.events.delete(calendarId=access.calendar_id, eventId=target))
            except HttpError as err:
                if err.resp.status not in _GONE:
                    raise
            return _synced(None)
        if row.google_calendar_id is None:
            return self._insert_or_restore(row, access, lane, authed)
        edit = row.attempts == 0
        body = entry_body(row, self.offsets, restore=edit)
        try:
            answer = self._call(access, authed, lane.events.update(
                calendarId=access.calendar_id, eventId=row.google_calendar_id, body=body))
        except HttpError as err:
            if err.resp.status not in _GONE:
                raise
            if edit:
                return self._insert_or_restore(row, access, lane, authed)
            logs.event("calendar.entry_gone", event_id=row.id, user_id=row.user_id)
            return _synced(None)
        if isinstance(answer, dict) and answer.get("status") == "cancelled":
            logs.event("calendar.entry_left_deleted", event_id=row.id, user_id=row.user_id)
        return _synced(row.google_calendar_id)

    def _insert_or_restore(self, row: EventRow, access: _Access, lane: _Lane,
                           authed: google_auth_httplib2.AuthorizedHttp) -> CalendarOutcome:
        ours = calendar_event_id(row.id)
        try:
            self._call(access, authed, lane.events.insert(
                calendarId=access.calendar_id, body=entry_body(row, self.offsets, with_id=True)))
        except HttpError as err:
            if err.resp.status != 409:
                raise
            # Ours already: created by a try whose outcome was lost, or deleted by a cancellation
            # since undone. Update it to this version and make sure it is not left deleted.
            self._call(access, authed, lane.events.update(
                calendarId=access.calendar_id, eventId=ours, body=entry_body(row, self.offsets, restore=True)))
        return _synced(ours)

    def _call(self, access: _Access, authed: google_auth_httplib2.AuthorizedHttp, request: Any) -> Any:
        self._limiter(access.key).acquire()
        with self._lock:
            self.requests += 1
        return request.execute(http=authed, num_retries=0)

    def _limiter(self, key: str) -> _RateLimiter:
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = self._limiters[key] = _RateLimiter(self.requests_per_minute)
            return limiter

    def _lane(self) -> _Lane:
        lane: _Lane | None = getattr(self._local, "lane", None)
        if lane is None:
            http = httplib2.Http(timeout=self.timeout)
            service = build("calendar", "v3", http=http, cache_discovery=False, static_discovery=True,
                            client_options={"api_endpoint": self.api_url + "calendar/v3/"})
            lane = _Lane(http, service, service.events(), google_auth_httplib2.Request(http))
            self._local.lane = lane
            with self._lanes_lock:
                self._lanes.append(lane)
        return lane


def calendar_from_settings(settings: Settings, **overrides: Any) -> CalendarSync | None:
    """The calendar client the settings ask for; None when no Google credentials are configured.

    Raises :class:`~worker.config.ConfigError` (exit 2) for a service-account key google-auth
    cannot load, so a bad key is caught when the pass starts, not per user.
    """
    sa_info: dict[str, str] | None = None
    if settings.google_client_email and settings.google_private_key:
        sa_info = {"client_email": settings.google_client_email,
                   "private_key": str(settings.google_private_key)}
        if settings.google_project_id:
            sa_info["project_id"] = settings.google_project_id
    if not settings.google_oauth_configured and sa_info is None:
        return None
    kwargs: dict[str, Any] = {
        "api_url": settings.google_api_url,
        "token_uri": settings.google_token_uri,
        "offsets": settings.reminder_offsets,
        "client_id": settings.google_client_id,
        "client_secret": str(settings.google_client_secret) if settings.google_client_secret else None,
        "service_account_info": sa_info,
        "concurrency": settings.calendar_concurrency,
    }
    kwargs.update(overrides)
    return CalendarSync(**kwargs)
