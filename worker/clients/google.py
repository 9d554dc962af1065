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
  (with a timeout) and google-auth's token ``Request`` on it. The Calendar service and its
  ``events()`` resource are built once per client with the bundled discovery document and shared
  by every lane: a method call only builds a new ``HttpRequest`` (~15 us), and every request is
  executed with ``http=`` the lane's connection, so nothing mutable is shared. (Measured with
  googleapiclient 2.202 on this code's first design, a service per lane: ~18 ms and ~1 MB per
  lane, 1.1 s and 62 MB for 64 lanes; ``service.events()`` alone ~1.3 ms.) Credentials are swapped
  per parent with a cheap (~3 us) ``AuthorizedHttp(credentials, http=lane.http)``.
* **Limits.** At most ``requests_per_minute`` requests per parent (Google's per-user quota is 600
  a minute) and, when ``requests_per_second`` is set, at most that many Calendar requests per
  second (the project's quota; token requests go to the OAuth endpoint and are not counted): with
  the worker's one rate limiter (:class:`worker.retry.RateLimiter`), or with ``project_pace`` when
  the events step shares the quota with every worker of the database.
* **Cost.** Measured against the local stand-in on this project's 2-core machine: ~250 us of CPU per
  Calendar request through googleapiclient + httplib2 (httplib2 alone ~150-230 us, ``requests``'
  ``AuthorizedSession`` ~630 us, httpx ~440 us), so the real client stack stays.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import threading
import time
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
from worker.retry import Pace, RateLimiter

__all__ = ["TRANSPORT_ERRORS", "Access", "GoogleCalendar", "HttpError", "RefreshError", "Session",
           "http_error_parts", "retry_after_seconds"]

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


class _OneWrite:
    """Writes a request's head and body with one ``send`` (http.client sends them apart).

    Two writes cost a second system call and wake-up per request (~10 % of the worker's CPU per
    Calendar request, measured), and on a kept-alive connection the body can wait for the peer's
    delayed ACK (Nagle), ~40 ms. Only for a body in memory (every Calendar and token request);
    anything else goes the library's way."""

    _buffer: list[bytes]
    send: Any  # http.client.HTTPConnection's

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked:
            self._buffer.extend((b"", b""))
            head = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(head + message_body)
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _HTTPConnection(_OneWrite, httplib2.HTTPConnectionWithTimeout):  # type: ignore[misc]
    pass


class _HTTPSConnection(_OneWrite, httplib2.HTTPSConnectionWithTimeout):  # type: ignore[misc]
    pass


_CONNECTIONS: dict[str, type[http.client.HTTPConnection]] = {"http": _HTTPConnection, "https": _HTTPSConnection}


class _LaneHttp(httplib2.Http):  # type: ignore[misc]
    """A lane's ``httplib2.Http``: its connections write each request at once (:class:`_OneWrite`)."""

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: Any = None,
                redirections: int = httplib2.DEFAULT_MAX_REDIRECTS, connection_type: Any = None) -> Any:
        if connection_type is None:
            connection_type = _CONNECTIONS.get(uri.partition(":")[0].lower())
        return super().request(uri, method, body, headers, redirections, connection_type)


@dataclass
class _Lane:
    """One thread's own HTTP connection (httplib2 is not thread-safe) and token request on it."""

    http: httplib2.Http
    auth_request: google_auth_httplib2.Request
    requests: int = 0  # Calendar requests sent on this lane (only its own thread counts them)


class Session:
    """One parent's calendar on this thread's lane: the three calls the worker makes."""

    def __init__(self, client: GoogleCalendar, access: Access, lane: _Lane) -> None:
        self._client = client
        self.access = access
        self._lane = lane
        self._authed = google_auth_httplib2.AuthorizedHttp(access.credentials, http=lane.http, max_refresh_attempts=1)

    def insert(self, body: Mapping[str, Any]) -> Any:
        return self._execute(self._client._events.insert(calendarId=self.access.calendar_id, body=dict(body)))

    def update(self, entry_id: str, body: Mapping[str, Any]) -> Any:
        return self._execute(self._client._events.update(calendarId=self.access.calendar_id, eventId=entry_id,
                                                         body=dict(body)))

    def delete(self, entry_id: str) -> Any:
        return self._execute(self._client._events.delete(calendarId=self.access.calendar_id, eventId=entry_id))

    def _execute(self, request: Any) -> Any:
        self._client._limiter(self.access.key).acquire()
        if self._client.project_pace is not None:
            self._client.project_pace.acquire()
        self._lane.requests += 1
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
        requests_per_second: float = 0.0,
    ) -> None:
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.token_uri = token_uri
        self.timeout = timeout
        self.requests_per_minute = requests_per_minute
        #: Calendar requests per second for the whole client, at most (0: no limit).
        self.requests_per_second = requests_per_second
        #: What spaces the project's Calendar requests: this client's own limiter, or one shared by
        #: every worker of the database (``worker.steps.pace.SharedPace``, set by the events step).
        self.project_pace: Pace | None = (RateLimiter(requests_per_second, window=1.0)
                                          if requests_per_second > 0 else None)
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
        self._user_access: dict[tuple[str, str], Access] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._local = threading.local()
        self._lanes: list[_Lane] = []
        # The Calendar service, shared by every lane (see the module docstring); its own http is
        # never used for a request: each one is executed with a lane's.
        self._service_http = httplib2.Http(timeout=timeout)
        self._service = build("calendar", "v3", http=self._service_http, cache_discovery=False,
                              static_discovery=True, client_options={"api_endpoint": self.api_url + "calendar/v3/"})
        self._events = self._service.events()
        #: Token requests made, by user id (or service-account email): for logs, tests and bench.
        self.refreshes: Counter[str] = Counter()
        self._closed_requests = 0

    @property
    def oauth_configured(self) -> bool:
        return bool(self._client_id and self._client_secret)

    @property
    def service_account_configured(self) -> bool:
        return self._service_account is not None

    def access(self, user_id: str, refresh_token: str | None, shared_calendar_id: str | None) -> Access | None:
        """How to reach a parent's calendar, or None when the worker cannot (no grant, no share).

        A parent's grant gets one :class:`Access` for the life of the client: its lock is what
        makes threads working for the same parent wait for one token refresh instead of each
        asking for its own."""
        if refresh_token and self.oauth_configured:
            key = (user_id, refresh_token)
            with self._lock:
                access = self._user_access.get(key)
                if access is None:
                    creds = user_credentials.Credentials(  # type: ignore[no-untyped-call]
                        token=None, refresh_token=refresh_token, client_id=self._client_id,
                        client_secret=self._client_secret, token_uri=self.token_uri)
                    access = self._user_access[key] = Access(user_id, creds, "primary", service_account=False)
            return access
        if shared_calendar_id and self._service_account is not None:
            sa = self._service_account
            return Access(sa.key, sa.credentials, shared_calendar_id, service_account=True, lock=sa.lock)
        return None

    def authorize(self, access: Access) -> Session:
        """A session on this thread's lane, with a valid access token (refreshed if this client
        holds none yet for the parent: raises google-auth's RefreshError when Google refuses)."""
        lane = self._lane()
        if not access.credentials.valid:  # checked again under the lock: one refresh per parent
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
            self._closed_requests += sum(lane.requests for lane in lanes)
        for lane in lanes:
            lane.http.close()  # every AuthorizedHttp of the lane wraps it
        self._service.close()

    @property
    def requests(self) -> int:
        """Calendar API requests made (not counting google-auth's own 401 retries)."""
        with self._lock:
            return self._closed_requests + sum(lane.requests for lane in self._lanes)

    def _limiter(self, key: str) -> RateLimiter:
        limiter = self._limiters.get(key)  # no lock on the way of every request once it exists
        if limiter is None:
            with self._lock:
                limiter = self._limiters.get(key)
                if limiter is None:
                    limiter = self._limiters[key] = RateLimiter(self.requests_per_minute, window=60.0)
        return limiter

    def _lane(self) -> _Lane:
        lane: _Lane | None = getattr(self._local, "lane", None)
        if lane is None:
            http = _LaneHttp(timeout=self.timeout)
            lane = _Lane(http, google_auth_httplib2.Request(http))
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


def retry_after_seconds(err: HttpError, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header of an error answer asks to wait (delay or HTTP date), or None."""
    value = err.resp.get("retry-after") if hasattr(err.resp, "get") else None
    if not value:
        return None
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)
