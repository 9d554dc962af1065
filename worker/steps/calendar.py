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
  and reminders are still planned by the step. Users run in parallel on ``concurrency`` threads;
  one user's events run in order on one thread.
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

import logging
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from worker import logs, planner
from worker.clients.google import (
    TRANSPORT_ERRORS,
    Access,
    GoogleCalendar,
    HttpError,
    RefreshError,
    Session,
    http_error_parts,
)
from worker.records import CalendarOutcome, EventRow
from worker.steps.calendar_entry import EVENT_ID_PROPERTY, calendar_event_id, entry_body, reminder_overrides
from worker.vocabulary import ErrorKind, EventOutcome, EventStatus

if TYPE_CHECKING:
    from worker.config import GoogleSettings

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
    return CalendarOutcome(failure.outcome, row.google_calendar_id, logs.scrub(message), failure.kind)


# --- the port -----------------------------------------------------------------------------------


class CalendarSync:
    """The events step's calendar (``worker.steps.events.CalendarPort``).

    One instance per pass is the intended use (the CLI's wiring): the client caches access tokens
    and per-user rate windows, this keeps the grants refused in the pass. Close it (or use
    ``with``) to release the pool threads and their connections; an instance dropped unclosed is
    closed when it is garbage-collected.
    """

    def __init__(self, client: GoogleCalendar, *, offsets: Sequence[timedelta], concurrency: int = 8) -> None:
        self.client = client
        self.offsets = tuple(offsets)
        self.concurrency = max(1, concurrency)
        self._lock = threading.Lock()
        self._revoked: set[tuple[str, str]] = set()
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="calendar")
        self._finalizer = weakref.finalize(self, _release, self._executor, client)

    @property
    def refreshes(self) -> Any:
        return self.client.refreshes

    @property
    def requests(self) -> int:
        return self.client.requests

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> CalendarSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the port --------------------------------------------------------------------------------

    def sync(self, events: Sequence[EventRow], now: datetime) -> dict[str, CalendarOutcome]:
        """Outcomes by event id. Events with a content problem are left out (the step fails them)."""
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
        logs.event("calendar.sync", events=len(events), users=len(by_user), requests=self.client.requests,
                   refreshes=sum(self.client.refreshes.values()),
                   duration_s=round(time.monotonic() - started, 3), now=now.isoformat())
        return outcomes

    # -- one user --------------------------------------------------------------------------------

    def _access_for(self, row: EventRow) -> Access | None:
        if row.user_id is None:
            return None
        return self.client.access(str(row.user_id), row.google_refresh_token, row.owner_calendar_id)

    def _sync_user(self, rows: Sequence[EventRow]) -> dict[str, CalendarOutcome]:
        """One user's events, in order, on this thread."""
        access = self._access_for(rows[0])
        assert access is not None  # sync() grouped only users with access
        out: dict[str, CalendarOutcome] = {}
        stop: Failure | None = None
        session: Session | None = None
        for row in rows:
            if stop is not None:
                out[row.id] = _from_failure(stop, row)
                continue
            try:
                if session is None:
                    self._refused_earlier(access, row)
                    session = self.client.authorize(access)
                out[row.id] = self._sync_event(row, session)
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

    def _refused_earlier(self, access: Access, row: EventRow) -> None:
        """A grant Google refused in an earlier batch of this pass is not asked about again."""
        if not access.service_account and row.google_refresh_token:
            with self._lock:
                revoked = (str(row.user_id), row.google_refresh_token) in self._revoked
            if revoked:
                raise RefreshError("invalid_grant: refused earlier in this pass")  # type: ignore[no-untyped-call]

    def _sync_event(self, row: EventRow, session: Session) -> CalendarOutcome:
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


def _release(executor: ThreadPoolExecutor, client: GoogleCalendar) -> None:
    """Stop the pool, then close the client's connections (also run if close() was forgotten)."""
    executor.shutdown(wait=True)
    client.close()


def calendar_from_settings(google: GoogleSettings, offsets: Sequence[timedelta],
                           **overrides: Any) -> CalendarSync | None:
    """The calendar the settings ask for; None when no Google credentials are configured.

    Raises :class:`~worker.config.ConfigError` (exit 2) for a service-account key google-auth
    cannot load, so a bad key is caught when the pass starts, not per user.
    """
    sa_info: dict[str, str] | None = None
    if google.client_email and google.private_key:
        sa_info = {"client_email": google.client_email,
                   "private_key": str(google.private_key)}
        if google.project_id:
            sa_info["project_id"] = google.project_id
    if not google.oauth_configured and sa_info is None:
        return None
    client_args: dict[str, Any] = {
        "api_url": google.api_url,
        "token_uri": google.token_uri,
        "client_id": google.client_id,
        "client_secret": str(google.client_secret) if google.client_secret else None,
        "service_account_info": sa_info,
    }
    concurrency = overrides.pop("concurrency", google.concurrency)
    client_args.update(overrides)
    return CalendarSync(GoogleCalendar(**client_args), offsets=offsets, concurrency=concurrency)
