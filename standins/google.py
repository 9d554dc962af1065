"""Local stand-in for Google's OAuth 2.0 token endpoint and the Calendar API v3 events resource.

Why this exists: the worker talks to Google only through the real ``google-auth`` and
``googleapiclient`` libraries, and most of its interesting behaviour (refreshing tokens,
giving up on revoked grants, backing off on rate limits, idempotent inserts with
client-chosen ids, treating 409/410 as "already done") is triggered by Google's *wire
format*: status codes, JSON error bodies and their ``reason`` strings. Mocking the
libraries would test our assumptions about them; speaking the wire format on 127.0.0.1
tests the real library code paths instead.

What the stand-in reproduces, and where it comes from:

* Token endpoint (``POST /token``, form-encoded, as ``google.oauth2._client`` sends it):
  ``refresh_token`` grant and the service-account ``urn:ietf:params:oauth:grant-type:jwt-bearer``
  grant. Success: ``{"access_token": "ya29...", "expires_in": 3599, "scope": ..., "token_type":
  "Bearer"}``. Errors: ``400 {"error": "invalid_grant", "error_description": "Token has been
  expired or revoked."}`` for revoked/unknown refresh tokens, ``401 invalid_client`` for a
  wrong client id/secret, ``400 invalid_grant`` with Google's texts for bad JWT assertions.
  With ``echo_token_requests=True`` every error answer's ``error_description`` quotes the whole
  request form instead (``"Bad Request: grant_type=...&client_secret=...&refresh_token=..."``), as
  some proxies and older Google endpoints do: secrets in error text the worker must scrub.
* Calendar errors use the documented shape
  ``{"error": {"errors": [{"domain", "reason", "message"}], "code", "message"}}`` with the
  reasons of https://developers.google.com/workspace/calendar/api/guides/errors.
* Event ids: base32hex (``[a-v0-9]``), 5..1024 characters (Event.id in the discovery
  document); a bad id answers ``400 invalid "Invalid resource id value."``.
* Deleting only marks an event ``cancelled``: ``get`` still returns it (the discovery
  document says "The get method always returns them"), ``insert`` with the same id answers
  ``409 duplicate``, a second ``delete`` answers ``410 deleted "Resource has been deleted"``,
  and ``update``/``patch`` that set ``status`` to ``confirmed``/``tentative`` restore it
  ("cancelled events continue to expose event details so that they can be restored").
* ``answer_delay`` holds each Calendar answer after the change is made, as a slow network does:
  a client that dies meanwhile never learns that Google made the change.
* Reminders: ``useDefault`` together with overrides is ``400
  cannotUseDefaultRemindersAndSpecifyOverride``; more than 5 overrides, minutes outside
  0..40320 or a method other than email/popup are ``400 invalid``.

Concurrency is recorded per account, as Google's per-user quota sees it: ``max_in_flight[email]``
is the most requests that were being answered at once for that account (Calendar calls by the
calendar's owner, token requests by the refresh token's account), ``max_in_flight_total`` the
most overall. That is how tests and the benchmark check the worker's per-parent cap from the
outside.

Run standalone (the events benchmark does, so the server has its own GIL)::

    python -m standins.google --port 0 --latency-ms 50

It prints its base URL on one line and serves until SIGTERM. A process outside can then drive it
through a small control API that Google does not have, under ``/_standin/``: ``POST
/_standin/users`` (``[{"email": ..., "refresh_token": ...}, ...]``) registers accounts, ``GET
/_standin/stats`` answers refreshes by refresh token, request counts by status and the in-flight
maxima, ``GET /_standin/events`` every stored entry (id, status, private extended properties) by
calendar.

The stand-in uses only the standard library so that it can run anywhere the tests run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import re
import secrets
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from types import FrameType
from typing import Any

from standins._server import HttpStandIn, StandInHandler, StandInServer

__all__ = ["GoogleStandIn", "RequestRecord"]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
"""Grant type google-auth's service-account credentials send (RFC 7523)."""

ACCESS_TOKEN_LIFETIME = 3599
"""Google answers ``expires_in: 3599`` for one-hour tokens."""

DEFAULT_SCOPE = "https://www.googleapis.com/auth/calendar.events"

# google-auth always puts Google's real token endpoint into the assertion's ``aud``, whatever
# token_uri the credentials were given (google/oauth2/service_account.py), so the stand-in must
# accept it as well as its own URL to let the real library through.
_GOOGLE_TOKEN_AUDIENCES = frozenset(
    {"https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token"}
)
_MAX_JWT_LIFETIME = 3600
_CLOCK_SKEW = 300

_CONTROL_PREFIX = "/_standin/"
"""Path prefix of the stand-in's own control API (not Google's): see the module docstring."""

_EVENT_ID_RE = re.compile(r"[a-v0-9]{5,1024}")
_MAX_OVERRIDES = 5
_MAX_REMINDER_MINUTES = 40320
_REMINDER_METHODS = frozenset({"email", "popup"})
_READ_ONLY_FIELDS = frozenset(
    {"kind", "etag", "id", "htmlLink", "created", "updated", "creator", "organizer", "iCalUID"}
)

# reason -> (domain, message), as printed in Google's Calendar error guide.
_ERRORS: dict[str, tuple[str, str]] = {
    "badRequest": ("global", "Bad Request"),
    "invalid": ("global", "Invalid Value"),
    "required": ("global", "Required"),
    "timeRangeEmpty": ("calendar", "The specified time range is empty."),
    "cannotUseDefaultRemindersAndSpecifyOverride": (
        "calendar",
        "Cannot specify both default reminders and overrides at the same time.",
    ),
    "authError": ("global", "Invalid Credentials"),
    "forbidden": ("global", "Forbidden"),
    "forbiddenForNonOrganizer": (
        "calendar",
        "Shared properties can only be changed by the organizer of the event.",
    ),
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "quotaExceeded": ("usageLimits", "Calendar usage limits exceeded."),
    "notFound": ("global", "Not Found"),
    "duplicate": ("global", "The requested identifier already exists."),
    "deleted": ("global", "Resource has been deleted"),
    "conditionNotMet": ("global", "Precondition Failed"),
    "backendError": ("global", "Backend Error"),
}

_DEFAULT_REASONS: dict[int, str] = {
    400: "badRequest",
    401: "authError",
    403: "forbidden",
    404: "notFound",
    409: "duplicate",
    410: "deleted",
    412: "conditionNotMet",
    429: "rateLimitExceeded",
    500: "backendError",
    503: "backendError",
}


@dataclass(frozen=True)
class RequestRecord:
    """One Calendar API request as the stand-in saw it.

    ``owner`` is the email of the calendar's owner (the token's own account for ``primary``),
    ``principal`` the account the access token belongs to; both are ``None`` when the request
    failed authentication. ``time`` is ``time.monotonic()`` at arrival, for rate checks.
    """

    method: str
    path: str
    owner: str | None
    principal: str | None
    status: int
    time: float


@dataclass
class _FailureRule:
    remaining: int
    status: int
    reason: str
    user: str | None
    method: str | None
    message: str | None = None
    retry_after: int | None = None


@dataclass
class _Principal:
    """Who an access token speaks for: a Google account or a service account."""

    email: str
    service_account: bool


@dataclass
class _AccessToken:
    principal: _Principal
    expires_at: float


@dataclass
class _ServiceAccount:
    email: str
    public_key: tuple[int, int] | None  # (n, e); None means "signature not checked"
    calendars: set[str] = field(default_factory=set)


class _ApiError(Exception):
    """Raised inside request handling; turned into Google's error JSON by the handler."""

    def __init__(self, status: int, reason: str, message: str | None = None,
                 retry_after: int | None = None) -> None:
        domain, default_message = _ERRORS.get(reason, ("global", HTTPStatus(status).phrase))
        super().__init__(message or default_message)
        self.status = status
        self.reason = reason
        self.domain = domain
        self.message = message or default_message
        self.retry_after = retry_after


class _TokenError(Exception):
    """An OAuth error answer of the token endpoint (RFC 6749 section 5.2 shape)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description


def _now_rfc3339() -> str:
    """Google's timestamp format: UTC with milliseconds and a ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _der_read(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """Read one DER TLV at ``pos``; return (tag, value, next position)."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return tag, data[pos : pos + length], pos + length


def _rsa_public_numbers(pem: str) -> tuple[int, int]:
    """Extract (n, e) from a PEM public key (SubjectPublicKeyInfo or PKCS#1).

    A tiny DER walk is enough here and keeps the stand-in free of crypto dependencies.
    """
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    der = base64.b64decode(body)
    _, outer, _ = _der_read(der, 0)
    tag, first, after = _der_read(outer, 0)
    if tag == 0x30:  # SubjectPublicKeyInfo: SEQUENCE{algorithm}, BIT STRING{RSAPublicKey}
        _, bits, _ = _der_read(outer, after)
        _, rsa_key, _ = _der_read(bits[1:], 0)
        _, n_bytes, pos = _der_read(rsa_key, 0)
        _, e_bytes, _ = _der_read(rsa_key, pos)
    else:  # PKCS#1 RSAPublicKey: SEQUENCE{INTEGER n, INTEGER e}
        n_bytes = first
        _, e_bytes, _ = _der_read(outer, after)
    return int.from_bytes(n_bytes, "big"), int.from_bytes(e_bytes, "big")


# DigestInfo prefix for SHA-256 (RFC 8017 section 9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _rs256_valid(signing_input: bytes, signature: bytes, key: tuple[int, int]) -> bool:
    """Verify an RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature with plain integers."""
    n, e = key
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    em = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")
    t = _SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return secrets.compare_digest(em, expected)


def _validate_reminders(reminders: Any) -> None:
    if reminders is None:
        return
    if not isinstance(reminders, dict):
        raise _ApiError(400, "invalid", "Invalid value for: reminders")
    overrides = reminders.get("overrides") or []
    if reminders.get("useDefault") and overrides:
        raise _ApiError(400, "cannotUseDefaultRemindersAndSpecifyOverride")
    if not isinstance(overrides, list):
        raise _ApiError(400, "invalid", "Invalid value for: reminders.overrides")
    if len(overrides) > _MAX_OVERRIDES:
        raise _ApiError(400, "invalid", "Too many reminders.")
    for override in overrides:
        if not isinstance(override, dict):
            raise _ApiError(400, "invalid", "Invalid value for: reminders.overrides")
        method = override.get("method")
        minutes = override.get("minutes")
        if method is None:
            raise _ApiError(400, "required", "Missing reminder method.")
        if method not in _REMINDER_METHODS:
            raise _ApiError(400, "invalid", f"Invalid reminder method: {method}")
        if minutes is None:
            raise _ApiError(400, "required", "Missing reminder minutes.")
        if (
            not isinstance(minutes, int)
            or isinstance(minutes, bool)
            or not 0 <= minutes <= _MAX_REMINDER_MINUTES
        ):
            raise _ApiError(400, "invalid", f"Invalid reminder minutes: {minutes}")


def _event_time(value: Any, name: str) -> datetime | None:
    """Validate an EventDateTime; return it as an aware datetime when it has ``dateTime``."""
    if not isinstance(value, dict) or not (value.get("dateTime") or value.get("date")):
        raise _ApiError(400, "required", f"Missing {name} time.")
    raw = value.get("dateTime")
    if raw is None:
        try:
            return datetime.fromisoformat(str(value["date"])).replace(tzinfo=UTC)
        except ValueError as exc:
            raise _ApiError(400, "invalid", f"Invalid {name} date.") from exc
    try:
        parsed = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError as exc:
        raise _ApiError(400, "invalid", f"Invalid value for: {name}.dateTime") from exc
    if parsed.tzinfo is None:
        if not value.get("timeZone"):
            raise _ApiError(400, "required", f"Missing time zone definition for {name} time.")
        return None  # a wall-clock time in a named zone; not compared
    return parsed


_RECURRENCE_LINE = re.compile(r"^(RRULE|EXRULE|RDATE|EXDATE)[:;]")


def _validate_recurrence(body: dict[str, Any]) -> None:
    """Google's checks of ``recurrence``: a list of RFC 5545 RRULE/EXRULE/RDATE/EXDATE lines (no
    DTSTART), a FREQ in every rule, and a recurring timed event must name its ``timeZone``."""
    lines = body.get("recurrence")
    if lines is None:
        return
    if not isinstance(lines, list) or not all(isinstance(line, str) and _RECURRENCE_LINE.match(line)
                                               for line in lines):
        raise _ApiError(400, "invalid", "Invalid recurrence rule.")
    for line in lines:
        if line.startswith(("RRULE", "EXRULE")) and "FREQ=" not in line.upper():
            raise _ApiError(400, "invalid", "Invalid recurrence rule.")
    for name in ("start", "end"):
        value = body.get(name)
        if isinstance(value, dict) and value.get("dateTime") and not value.get("timeZone"):
            raise _ApiError(400, "required", f"Missing time zone definition for {name} time.")


def _validate_event(body: dict[str, Any]) -> None:
    """Checks Google applies to a full event body (insert, update, merged patch)."""
    start = _event_time(body.get("start"), "start")
    end = _event_time(body.get("end"), "end")
    if start is not None and end is not None and end < start:
        raise _ApiError(400, "timeRangeEmpty")
    if body.get("status") not in (None, "confirmed", "tentative", "cancelled"):
        raise _ApiError(400, "invalid", f"Invalid value for: status: {body.get('status')}")
    _validate_reminders(body.get("reminders"))
    _validate_recurrence(body)
    ext = body.get("extendedProperties")
    if ext is not None and not isinstance(ext, dict):
        raise _ApiError(400, "invalid", "Invalid value for: extendedProperties")


def _merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Patch semantics: nested objects merge, arrays and scalars replace, ``null`` clears."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge_patch(result[key], value)
        else:
            result[key] = value
    return result


class _Handler(StandInHandler):
    """Dispatches one HTTP/1.1 connection; keep-alive so httplib2 can reuse it like Google's.

    An idle keep-alive connection is dropped after ``timeout`` seconds, so a client that never
    closes one cannot hold a handler thread for the rest of the test run.
    """

    server: StandInServer[GoogleStandIn]
    timeout = 60

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload, indent=1).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Vary", "Origin, X-Origin, Referer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _handle(self) -> None:
        standin = self.server.standin
        body = self._body()
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith(_CONTROL_PREFIX):
            status, payload = standin._control_request(self.command, url.path, body)
            self._send(status, payload)
            return
        if url.path == "/token":
            account = standin._token_account(self.headers.get("Content-Type"), body)
            with standin._in_flight(account):
                if standin.latency:
                    time.sleep(standin.latency)
                status, payload = standin._token_request(self.command, self.headers.get("Content-Type"), body)
            self._send(status, payload, {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"})
            return
        authorization = self.headers.get("Authorization")
        with standin._in_flight(standin._owner_hint(url.path, authorization)):
            if standin.latency:
                time.sleep(standin.latency)
            status, payload, headers = standin._api_request(
                self.command, url.path, authorization, self.headers.get("If-Match"), body
            )
        if standin.answer_delay:
            time.sleep(standin.answer_delay)  # the change is made; only the answer is late
        self._send(status, payload, headers)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class GoogleStandIn(HttpStandIn):
    """Google's token endpoint and Calendar v3 events on 127.0.0.1, for driving real clients.

    All state is guarded by one lock because ThreadingHTTPServer answers each connection on
    its own thread and the tests read the state concurrently. Lifecycle (``start``/``stop``,
    context manager, ``port``) comes from :class:`~standins._server.HttpStandIn`; ``stop`` also
    ends idle keep-alive connections, which httplib2 would otherwise keep open.
    """

    handler_class = _Handler
    thread_name = "google-standin"

    def __init__(
        self,
        *,
        latency: float = 0.0,
        client_id: str = "test-client-id",
        client_secret: str = "test-client-secret",  # noqa: S107 - a test credential by design
        echo_token_requests: bool = False,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.latency = latency
        self.client_id = client_id
        self.client_secret = client_secret
        #: When true, token endpoint errors quote the whole request form in ``error_description``.
        self.echo_token_requests = echo_token_requests
        #: Seconds a Calendar answer is held after the change was made: a client killed meanwhile
        #: never learns that Google made it (the demo's kill, fault tests).
        self.answer_delay = 0.0
        self.refreshes: Counter[str] = Counter()
        self.requests: list[RequestRecord] = []
        #: Most requests answered at once per account (the calendar's owner, or the account of a
        #: refresh token), and overall: what the worker's per-parent and total caps look like here.
        self.max_in_flight: Counter[str] = Counter()
        self.max_in_flight_total = 0
        self._in_flight_now: Counter[str] = Counter()
        self._in_flight_total = 0
        self._lock = threading.RLock()
        self._refresh_tokens: dict[str, str] = {}  # refresh token -> account email
        self._revoked: set[str] = set()
        self._service_accounts: dict[str, _ServiceAccount] = {}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._calendars: dict[str, dict[str, dict[str, Any]]] = {}
        self._failures: list[_FailureRule] = []
        self._etag_counter = int(time.time() * 1000) * 1000

    # -- endpoints ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """Base URL to use instead of ``https://www.googleapis.com/`` (ends with ``/``)."""
        return f"{self.base_url}/"

    @property
    def token_uri(self) -> str:
        """URL to use instead of ``https://oauth2.googleapis.com/token``."""
        return f"{self.base_url}/token"

    # -- setup and inspection ----------------------------------------------------------------

    def add_user(self, email: str, refresh_token: str) -> None:
        """Register a Google account (its primary calendar is ``email``) and its refresh token."""
        with self._lock:
            self._refresh_tokens[refresh_token] = email
            self._revoked.discard(refresh_token)
            self._calendars.setdefault(email, {})

    def revoke(self, refresh_token: str) -> None:
        """Revoke a grant: later refreshes answer ``invalid_grant`` and its access tokens die.

        Google also invalidates access tokens issued from a revoked grant, so they are dropped.
        """
        with self._lock:
            self._revoked.add(refresh_token)
            email = self._refresh_tokens.get(refresh_token)
            for token, issued in list(self._access_tokens.items()):
                if not issued.principal.service_account and issued.principal.email == email:
                    del self._access_tokens[token]

    def add_service_account(self, client_email: str, public_key_pem: str | None = None) -> None:
        """Accept the JWT-bearer grant for ``client_email``.

        ``iss``, ``aud``, ``iat``/``exp`` are always checked. The RS256 signature is checked
        only when ``public_key_pem`` is given (PEM of the key pair whose private half is in the
        service account JSON), because the stand-in cannot know the key otherwise.
        """
        key = _rsa_public_numbers(public_key_pem) if public_key_pem else None
        with self._lock:
            self._service_accounts[client_email] = _ServiceAccount(client_email, key)
            self._calendars.setdefault(client_email, {})

    def share_calendar(self, calendar_id: str, client_email: str) -> None:
        """Let the service account write ``calendar_id`` (as if shared with 'make changes')."""
        with self._lock:
            self._service_accounts[client_email].calendars.add(calendar_id)
            self._calendars.setdefault(calendar_id, {})

    def events(self, calendar_id: str) -> dict[str, dict[str, Any]]:
        """Snapshot of the stored events of a calendar by id (deleted ones are ``cancelled``)."""
        with self._lock:
            return copy.deepcopy(self._calendars.get(calendar_id, {}))

    def fail_next(
        self,
        n: int,
        status: int,
        reason: str | None = None,
        *,
        user: str | None = None,
        method: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``n`` matching Calendar requests answer ``status`` with Google's error.

        Matching happens after the token is authenticated, as with Google's own quota and
        backend errors; ``user`` matches the calendar owner or the token's account. ``message``
        replaces the reason's standard text (in ``error.message`` and ``errors[0].message``); it
        may hold anything, a NUL character included (sent as JSON's ``\u0000``). ``retry_after``
        adds a ``Retry-After: <seconds>`` header, as Google's front end may on a 429 or 503.
        """
        chosen = reason or _DEFAULT_REASONS.get(status)
        if chosen is None:
            raise ValueError(f"no default reason for status {status}; pass reason=")
        with self._lock:
            self._failures.append(
                _FailureRule(n, status, chosen, user, method.upper() if method else None, message, retry_after)
            )

    def expire_access_tokens(self) -> None:
        """Invalidate every issued access token so the next API call answers 401 authError."""
        with self._lock:
            self._access_tokens.clear()

    # -- concurrency, as Google's quota sees it --------------------------------------------------

    @contextlib.contextmanager
    def _in_flight(self, account: str | None) -> Iterator[None]:
        """Count one request as being answered for ``account`` (None: overall only)."""
        with self._lock:
            self._in_flight_total += 1
            self.max_in_flight_total = max(self.max_in_flight_total, self._in_flight_total)
            if account is not None:
                self._in_flight_now[account] += 1
                self.max_in_flight[account] = max(self.max_in_flight[account], self._in_flight_now[account])
        try:
            yield
        finally:
            with self._lock:
                self._in_flight_total -= 1
                if account is not None:
                    self._in_flight_now[account] -= 1

    def _owner_hint(self, path: str, authorization: str | None) -> str | None:
        """The calendar owner a Calendar request is for, before it is answered (None if unknown)."""
        scheme, _, token = (authorization or "").partition(" ")
        segments = [urllib.parse.unquote(s) for s in path.split("/") if s]
        with self._lock:
            issued = self._access_tokens.get(token) if scheme.lower() == "bearer" else None
        if issued is None or len(segments) < 4:
            return None
        calendar_id = segments[3]
        return issued.principal.email if calendar_id == "primary" else calendar_id

    def _token_account(self, content_type: str | None, body: bytes) -> str | None:
        """The account a refresh-token grant is for (None for other grants or unknown tokens)."""
        if content_type and content_type.startswith("application/json"):
            return None
        params = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
        with self._lock:
            return self._refresh_tokens.get(params.get("refresh_token") or "")

    # -- control API (the stand-in's own, for a process outside: see the module docstring) ---------

    def stats(self) -> dict[str, Any]:
        """Refreshes by refresh token, Calendar requests by status, in-flight maxima."""
        with self._lock:
            return {
                "refreshes": dict(self.refreshes),
                "requests": len(self.requests),
                "statuses": {str(k): v for k, v in Counter(r.status for r in self.requests).items()},
                "max_in_flight": dict(self.max_in_flight),
                "max_in_flight_total": self.max_in_flight_total,
            }

    def _control_request(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        name = path[len(_CONTROL_PREFIX):]
        if method == "POST" and name == "users":
            try:
                accounts = json.loads(body or b"[]")
                for account in accounts:
                    self.add_user(str(account["email"]), str(account["refresh_token"]))
            except (ValueError, TypeError, KeyError) as exc:
                return 400, {"error": f"expected [{{email, refresh_token}}, ...]: {exc}"}
            return 200, {"added": len(accounts)}
        if method == "GET" and name == "stats":
            return 200, self.stats()
        if method == "GET" and name == "events":
            with self._lock:
                return 200, {
                    calendar: {
                        entry_id: {
                            "status": entry.get("status"),
                            "private": (entry.get("extendedProperties") or {}).get("private") or {},
                        }
                        for entry_id, entry in entries.items()
                    }
                    for calendar, entries in self._calendars.items()
                }
        return 404, {"error": f"no such control call: {method} {path}"}

    # -- token endpoint -------------------------------------------------------------------------

    def _issue(self, principal: _Principal) -> str:
        prefix = "ya29.c." if principal.service_account else "ya29.a0"
        token = prefix + secrets.token_urlsafe(48)
        self._access_tokens[token] = _AccessToken(principal, time.monotonic() + ACCESS_TOKEN_LIFETIME)
        return token

    def _token_request(
        self, method: str, content_type: str | None, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        if method != "POST":
            return 405, {"error": "invalid_request", "error_description": "Method not allowed"}
        if content_type and content_type.startswith("application/json"):
            raw = json.loads(body or b"{}")
            params = {str(k): str(v) for k, v in raw.items()}
            form = urllib.parse.urlencode(params)
        else:
            form = body.decode()
            params = dict(urllib.parse.parse_qsl(form, keep_blank_values=True))
        try:
            with self._lock:
                return 200, self._grant(params)
        except _TokenError as err:
            description = f"Bad Request: {form}" if self.echo_token_requests else err.description
            return err.status, {"error": err.error, "error_description": description}

    def _grant(self, params: dict[str, str]) -> dict[str, Any]:
        grant = params.get("grant_type")
        if grant == "refresh_token":
            return self._refresh_grant(params)
        if grant == JWT_BEARER_GRANT:
            return self._jwt_grant(params.get("assertion", ""))
        raise _TokenError(400, "unsupported_grant_type", f"Invalid grant_type: {grant or ''}")

    def _refresh_grant(self, params: dict[str, str]) -> dict[str, Any]:
        refresh_token = params.get("refresh_token")
        if not refresh_token:
            raise _TokenError(400, "invalid_request", "Missing required parameter: refresh_token")
        self.refreshes[refresh_token] += 1
        if params.get("client_id") != self.client_id:
            raise _TokenError(401, "invalid_client", "The OAuth client was not found.")
        if params.get("client_secret") != self.client_secret:
            raise _TokenError(401, "invalid_client", "Unauthorized")
        email = self._refresh_tokens.get(refresh_token)
        if email is None or refresh_token in self._revoked:
            raise _TokenError(400, "invalid_grant", "Token has been expired or revoked.")
        return {
            "access_token": self._issue(_Principal(email, service_account=False)),
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "scope": params.get("scope") or DEFAULT_SCOPE,
            "token_type": "Bearer",
        }

    def _jwt_grant(self, assertion: str) -> dict[str, Any]:
        parts = assertion.split(".")
        if len(parts) != 3:
            raise _TokenError(400, "invalid_grant", "Invalid JWT: Malformed.")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except ValueError as exc:
            raise _TokenError(400, "invalid_grant", "Invalid JWT: Malformed.") from exc
        iss = claims.get("iss")
        if iss is not None:
            self.refreshes[iss] += 1
        account = self._service_accounts.get(iss or "")
        if account is None:
            raise _TokenError(400, "invalid_grant", "Invalid grant: account not found")
        if claims.get("aud") not in _GOOGLE_TOKEN_AUDIENCES | {self.token_uri}:
            raise _TokenError(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int | float)
            or not isinstance(exp, int | float)
            or exp - iat > _MAX_JWT_LIFETIME
            or iat > now + _CLOCK_SKEW
            or exp < now - _CLOCK_SKEW
        ):
            raise _TokenError(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.",
            )
        if account.public_key is not None and (
            header.get("alg") != "RS256"
            or not _rs256_valid(f"{parts[0]}.{parts[1]}".encode(), signature, account.public_key)
        ):
            raise _TokenError(400, "invalid_grant", "Invalid JWT Signature.")
        return {
            "access_token": self._issue(_Principal(account.email, service_account=True)),
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "token_type": "Bearer",
        }

    # -- Calendar API ---------------------------------------------------------------------------

    def _api_request(
        self,
        method: str,
        path: str,
        authorization: str | None,
        if_match: str | None,
        body: bytes,
    ) -> tuple[int, Any, dict[str, str]]:
        owner: str | None = None
        principal: _Principal | None = None
        headers: dict[str, str] = {}
        try:
            with self._lock:
                principal = self._authenticate(authorization)
                calendar_id, event_id = self._route(path)
                owner = self._resolve_calendar(principal, calendar_id)
                self._injected_failure(method, owner, principal)
                status, payload = self._dispatch(method, owner, event_id, if_match, body)
                payload = copy.deepcopy(payload)  # serialised after the lock is released
        except _ApiError as err:
            status = err.status
            payload = {
                "error": {
                    "errors": [{"domain": err.domain, "reason": err.reason, "message": err.message}],
                    "code": err.status,
                    "message": err.message,
                }
            }
            if err.retry_after is not None:
                headers["Retry-After"] = str(err.retry_after)
            if err.reason == "authError":
                payload["error"]["errors"][0].update(locationType="header", location="Authorization")
                headers["WWW-Authenticate"] = (
                    'Bearer realm="https://accounts.google.com/", error="invalid_token"'
                )
        with self._lock:
            self.requests.append(
                RequestRecord(
                    method=method,
                    path=path,
                    owner=owner,
                    principal=principal.email if principal else None,
                    status=status,
                    time=time.monotonic(),
                )
            )
        return status, payload, headers

    @staticmethod
    def _route(path: str) -> tuple[str, str | None]:
        """Split ``/calendar/v3/calendars/{calendarId}/events[/{eventId}]`` (ids are %-encoded)."""
        segments = [urllib.parse.unquote(s) for s in path.split("/") if s]
        if segments[:3] != ["calendar", "v3", "calendars"] or len(segments) not in (5, 6):
            raise _ApiError(404, "notFound")
        if segments[4] != "events":
            raise _ApiError(404, "notFound")
        return segments[3], segments[5] if len(segments) == 6 else None

    def _authenticate(self, authorization: str | None) -> _Principal:
        scheme, _, token = (authorization or "").partition(" ")
        issued = self._access_tokens.get(token) if scheme.lower() == "bearer" else None
        if issued is None or issued.expires_at < time.monotonic():
            raise _ApiError(401, "authError")
        return issued.principal

    def _resolve_calendar(self, principal: _Principal, calendar_id: str) -> str:
        if calendar_id in ("primary", principal.email):
            self._calendars.setdefault(principal.email, {})
            return principal.email
        account = self._service_accounts.get(principal.email) if principal.service_account else None
        if account is not None and calendar_id in account.calendars:
            return calendar_id
        raise _ApiError(404, "notFound")

    def _injected_failure(self, method: str, owner: str, principal: _Principal) -> None:
        for rule in self._failures:
            if rule.method is not None and rule.method != method:
                continue
            if rule.user is not None and rule.user not in (owner, principal.email):
                continue
            rule.remaining -= 1
            if rule.remaining <= 0:
                self._failures.remove(rule)
            raise _ApiError(rule.status, rule.reason, rule.message, rule.retry_after)

    def _dispatch(
        self, method: str, calendar: str, event_id: str | None, if_match: str | None, body: bytes
    ) -> tuple[int, Any]:
        events = self._calendars[calendar]
        if event_id is None:
            if method != "POST":
                raise _ApiError(405, "badRequest", "Method Not Allowed")
            return 200, self._insert(calendar, events, self._json(body))
        stored = events.get(event_id)
        if stored is None:
            raise _ApiError(404, "notFound")
        if if_match and if_match != "*" and if_match != stored["etag"] and method != "GET":
            raise _ApiError(412, "conditionNotMet")
        if method == "GET":
            return 200, stored
        if method == "DELETE":
            if stored["status"] == "cancelled":
                raise _ApiError(410, "deleted")
            stored["status"] = "cancelled"
            self._touch(stored)
            return 204, None
        if method in ("PUT", "PATCH"):
            patch = self._json(body)
            merged = _merge_patch(stored, patch) if method == "PATCH" else dict(patch)
            return 200, self._replace(calendar, stored, merged, patch)
        raise _ApiError(405, "badRequest", "Method Not Allowed")

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            parsed = json.loads(body or b"{}")
        except ValueError as exc:
            raise _ApiError(400, "parseError", "Parse Error") from exc
        if not isinstance(parsed, dict):
            raise _ApiError(400, "badRequest", "Bad Request")
        return parsed

    def _next_etag(self) -> str:
        self._etag_counter += 1
        return f'"{self._etag_counter}"'

    def _touch(self, event: dict[str, Any]) -> None:
        event["updated"] = _now_rfc3339()
        event["etag"] = self._next_etag()

    def _insert(
        self, calendar: str, events: dict[str, dict[str, Any]], body: dict[str, Any]
    ) -> dict[str, Any]:
        event_id = body.get("id")
        if event_id is None:
            event_id = base64.b32hexencode(secrets.token_bytes(15)).decode().lower()
        elif not isinstance(event_id, str) or not _EVENT_ID_RE.fullmatch(event_id):
            raise _ApiError(400, "invalid", "Invalid resource id value.")
        _validate_event(body)
        if event_id in events:  # deleted (cancelled) events keep their id
            raise _ApiError(409, "duplicate")
        now = _now_rfc3339()
        eid = base64.urlsafe_b64encode(f"{event_id} {calendar}".encode()).decode().rstrip("=")
        event: dict[str, Any] = {key: value for key, value in body.items() if key not in _READ_ONLY_FIELDS}
        event.update(
            kind="calendar#event",
            etag=self._next_etag(),
            id=event_id,
            status=body.get("status") or "confirmed",
            htmlLink=f"https://www.google.com/calendar/event?eid={eid}",
            created=now,
            updated=now,
            creator={"email": calendar, "self": True},
            organizer={"email": calendar, "self": True},
            iCalUID=f"{event_id}@google.com",
            sequence=body.get("sequence", 0),
            reminders=body.get("reminders") or {"useDefault": True},
            eventType=body.get("eventType", "default"),
        )
        events[event_id] = event
        return event

    def _replace(
        self, calendar: str, stored: dict[str, Any], new: dict[str, Any], sent: dict[str, Any]
    ) -> dict[str, Any]:
        """Apply update/patch. A cancelled event stays cancelled unless ``status`` is set.

        Restoring needs an explicit ``confirmed``/``tentative``: that is what Google documents
        for undeleting, and it keeps a worker that always sends a full body from silently
        resurrecting events a parent deleted by hand unless it means to.
        """
        if "id" in sent and sent["id"] != stored["id"]:
            raise _ApiError(400, "invalid", "Invalid resource id value.")
        _validate_event(new)
        status = sent.get("status") or ("cancelled" if stored["status"] == "cancelled" else "confirmed")
        kept = {key: stored[key] for key in _READ_ONLY_FIELDS if key in stored}
        replacement = {key: value for key, value in new.items() if key not in _READ_ONLY_FIELDS}
        replacement.update(kept)
        replacement["status"] = status
        replacement.setdefault("reminders", {"useDefault": True})
        replacement["sequence"] = int(stored.get("sequence", 0))
        stored.clear()
        stored.update(replacement)
        self._touch(stored)
        return stored


def main(argv: list[str] | None = None) -> int:
    """CLI: print the base URL on one line, then serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m standins.google",
        description="Local stand-in of Google's OAuth token endpoint and Calendar v3 events.",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sleep per request, milliseconds")
    parser.add_argument("--client-id", default="test-client-id", help="the OAuth client id accepted")
    parser.add_argument("--client-secret", default="test-client-secret", help="that client's secret")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    standin = GoogleStandIn(latency=args.latency_ms / 1000.0, client_id=args.client_id,
                            client_secret=args.client_secret, port=args.port)
    with standin:
        print(standin.base_url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
