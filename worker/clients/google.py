"""Google Calendar's HTTP API for many parents at once: credentials, connections, per-user limit.

The events step's policy (:mod:`worker.steps.calendar`) decides what to send and what an answer
means; this module only gets the requests there and the answers back.

Why it is built the way it is:

* **Credentials.** A parent's refresh token with our OAuth client (google-auth's
  ``google.oauth2.credentials.Credentials``) writes to their ``primary`` calendar; a calendar the
  parent shared with the worker's service account is written with that account. Access tokens are
  refreshed explicitly (:meth:`GoogleCalendar.authorize`), once per parent for the life of the
  client (one client per pass), so a revoked grant shows before any Calendar call and the refresh
  is counted; a ``401`` from the API refreshes once more and retries
  (``AuthorizedHttp(max_refresh_attempts=1)``).
* **Regional access boundary.** google-auth 2.62 starts a background thread after a
  service-account refresh that looks up ``iamcredentials.googleapis.com`` and shares the (not
  thread-safe) ``httplib2.Http``. The installed library has no switch for it (the
  ``GOOGLE_AUTH_TRUST_BOUNDARY_ENABLED`` variable is documented as deprecated with no effect). It
  asks ``_is_regional_access_boundary_lookup_required()`` first, and its own OAuth user credentials
  answer ``False`` there; :class:`ServiceAccountCredentials` answers the same, so no thread and no
  unexpected network call happen.
* **Threads.** httplib2 is not thread-safe, so each thread owns a *lane*: its own ``httplib2.Http``
  (with a timeout), the Calendar service built once on it with the bundled discovery document, and
  the service's ``events()`` resource. Measured with googleapiclient 2.202: ``build()`` costs
  ~1-3 ms but every ``service.events()`` call ~1.3 ms (it builds the nested resource), while
  ``events.insert(...)`` costs ~15 us; so the resource is cached per lane and credentials are
  swapped per parent with a cheap (~3 us) ``AuthorizedHttp(credentials, http=lane.http)``.
* **Limits.** At most ``requests_per_minute`` requests per parent (Google's per-user quota is 600
  a minute), with the worker's one rate limiter (:class:`worker.retry.RateLimiter`).
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import google_auth_httplib2
import httplib2
from google.auth import exceptions as auth_exceptions
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from worker.config import ConfigError
from worker.retry import RateLimiter

__all__ = ["TRANSPORT_ERRORS", "Access", "GoogleCalendar", "HttpError", "RefreshError", "Session",
           "http_error_parts"]

SCOPES = ("https://www.googleapis.com/auth/calendar.events",)
REQUESTS_PER_MINUTE = 600
DEFAULT_TIMEOUT = 20.0
#: What failing to reach Google looks like, below an HTTP answer.
TRANSPORT_ERRORS = (OSError, httplib2.HttpLib2Error, http.client.HTTPException, auth_exceptions.TransportError)
RefreshError = auth_exceptions.RefreshError


class ServiceAccountCredentials(service_account.Credentials):
    """Service-account credentials without google-auth's regional access boundary lookup (see the
    module docstring): no background thread sharing our ``httplib2.Http``, no iamcredentials call."""

    def _is_regional_access_boundary_lookup_required(self) -> bool:
        return False


@dataclass
class Access:
    """How to reach one parent's calendar."""

    key: str  # limiter and refresh bookkeeping: the user id, or the service account's email
    credentials: Any
    calendar_id: str
    service_account: bool
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Lane:
    """One thread's own HTTP connection pool and Calendar service (httplib2 is not thread-safe)."""

    http: httplib2.Http
    service: Any
    events: Any
    auth_request: google_auth_httplib2.Request


class Session:
    """One parent's calendar on this thread's lane: the three calls the worker makes."""

    def __init__(self, client: GoogleCalendar, access: Access, lane: _Lane) -> None:
        self._client = client
        self.access = access
        self._lane = lane
        self._authed = google_auth_httplib2.AuthorizedHttp(access.credentials, http=lane.http, max_refresh_attempts=1)

    def insert(self, body: Mapping[str, Any]) -> Any:
        return self._execute(self._lane.events.insert(calendarId=self.access.calendar_id, body=dict(body)))

    def update(self, entry_id: str, body: Mapping[str, Any]) -> Any:
        return self._execute(self._lane.events.update(calendarId=self.access.calendar_id, eventId=entry_id,
                                                      body=dict(body)))

    def delete(self, entry_id: str) -> Any:
        return self._execute(self._lane.events.delete(calendarId=self.access.calendar_id, eventId=entry_id))

    def _execute(self, request: Any) -> Any:
        self._client._limiter(self.access.key).acquire()
        self._client._count_request()
        return request.execute(http=self._authed, num_retries=0)


class GoogleCalendar:
    """The Calendar API for the parents of one pass. Thread-safe; close it to release connections."""

    def __init__(
        self,
        *,
        api_url: str,
        token_uri: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        service_account_info: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        requests_per_minute: int = REQUESTS_PER_MINUTE,
    ) -> None:
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.token_uri = token_uri
        self.timeout = timeout
        self.requests_per_minute = requests_per_minute
        self._client_id = client_id
        self._client_secret = client_secret
        self._service_account: Access | None = None
        if service_account_info is not None:
            info = {"type": "service_account", "token_uri": token_uri, **service_account_info}
            try:
                creds = ServiceAccountCredentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=list(SCOPES))
            except (ValueError, KeyError) as exc:
                raise ConfigError("GOOGLE_PRIVATE_KEY", f"is not a usable service-account key ({exc})") from None
            self._service_account = Access(str(info["client_email"]), creds, "", service_account=True)
        self._lock = threading.Lock()
        self._user_creds: dict[tuple[str, str], Any] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._local = threading.local()
        self._lanes: list[_Lane] = []
        #: Token requests made, by user id (or service-account email): for logs, tests and bench.
        self.refreshes: Counter[str] = Counter()
        #: Calendar API requests made (not counting google-auth's own 401 retries).
        self.requests = 0

    @property
    def oauth_configured(self) -> bool:
        return bool(self._client_id and self._client_secret)

    def access(self, user_id: str, refresh_token: str | None, shared_calendar_id: str | None) -> Access | None:
        """How to reach a parent's calendar, or None when the worker cannot (no grant, no share)."""
        if refresh_token and self.oauth_configured:
            key = (user_id, refresh_token)
            with self._lock:
                creds = self._user_creds.get(key)
                if creds is None:
                    creds = user_credentials.Credentials(  # type: ignore[no-untyped-call]
                        token=None, refresh_token=refresh_token, client_id=self._client_id,
                        client_secret=self._client_secret, token_uri=self.token_uri)
                    self._user_creds[key] = creds
            return Access(user_id, creds, "primary", service_account=False)
        if shared_calendar_id and self._service_account is not None:
            sa = self._service_account
            return Access(sa.key, sa.credentials, shared_calendar_id, service_account=True, lock=sa.lock)
        return None

    def authorize(self, access: Access) -> Session:
        """A session on this thread's lane, with a valid access token (refreshed if this client
        holds none yet for the parent: raises google-auth's RefreshError when Google refuses)."""
        lane = self._lane()
        with access.lock:
            if not access.credentials.valid:
                with self._lock:
                    self.refreshes[access.key] += 1
                access.credentials.refresh(lane.auth_request)
        return Session(self, access, lane)

    def close(self) -> None:
        """Close every lane's connections. Call it after the threads that used the client are done."""
        with self._lock:
            lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.service.close()  # closes lane.http, which every AuthorizedHttp of the lane wraps

    def _count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def _limiter(self, key: str) -> RateLimiter:
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = self._limiters[key] = RateLimiter(self.requests_per_minute, window=60.0)
            return limiter

    def _lane(self) -> _Lane:
        lane: _Lane | None = getattr(self._local, "lane", None)
        if lane is None:
            http = httplib2.Http(timeout=self.timeout)
            service = build("calendar", "v3", http=http, cache_discovery=False, static_discovery=True,
                            client_options={"api_endpoint": self.api_url + "calendar/v3/"})
            lane = _Lane(http, service, service.events(), google_auth_httplib2.Request(http))
            self._local.lane = lane
            with self._lock:
                self._lanes.append(lane)
        return lane


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
