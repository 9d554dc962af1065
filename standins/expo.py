"""A local stand-in for Expo's push API (``/push/send`` and ``/push/getReceipts``).

Why it exists: integration/acceptance tests, a benchmark and a demo must exercise the
worker's real HTTP client against Expo's *real* wire format and error shapes, without
internet access and without a fake that quietly agrees with whatever the client does.
So this speaks exactly what https://docs.expo.dev/push-notifications/sending-notifications/
documents (and what the official SDKs parse), and outcomes are scripted through the token
text so a test needs no extra setup calls:

* token contains ``ticket-badcreds`` -> error ticket ``InvalidCredentials`` (the project's push
  credentials; Expo answers this in the ticket as well as in receipts)
* token contains ``ticket-mismatch`` -> error ticket ``MismatchSenderId``
* token contains ``ticket-nul``      -> error ticket ``MessageRateExceeded`` whose ``message`` holds a
  NUL character and echoes the token (to prove the worker sanitises what it stores)
* token contains ``unregistered``  -> error ticket ``DeviceNotRegistered``
* token contains ``ratelimited``   -> error ticket ``MessageRateExceeded``
* otherwise an ok ticket with a uuid4 id whose receipt is decided by ``receipt-unregistered``,
  ``receipt-toobig``, ``receipt-ratelimited``, ``receipt-badcreds``, ``receipt-mismatch``,
  ``receipt-missing`` (never gets a receipt), or ok.
  (The ``receipt-*`` markers win over the bare ticket markers they contain; the ``ticket-*`` markers
  are checked first and share no text with any other marker.)

Projects (Expo "experience ids"): a token containing ``project-<name>`` (``[a-z0-9]+``) belongs to
``@family/<name>``, every other token to ``@family/parentpal`` (:func:`experience_id_for`). A send
whose recipients span several projects is refused as a whole with Expo's 400
``PUSH_TOO_MANY_EXPERIENCE_IDS``, whose ``details`` map each experience id to its tokens.

Request-level failures are scripted with :meth:`ExpoStandIn.fail_next` /
:meth:`ExpoStandIn.fail_next_receipts`. Everything binds to 127.0.0.1 only.

Run standalone (the benchmark does, so the server has its own GIL)::

    python -m standins.expo --port 0 --latency-ms 50
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import re
import signal
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from types import FrameType
from typing import Any, Final

from standins._server import HttpStandIn, StandInHandler, StandInServer

__all__ = [
    "API_PATH",
    "DEFAULT_EXPERIENCE_ID",
    "MAX_MESSAGES_PER_REQUEST",
    "MAX_PAYLOAD_BYTES",
    "MAX_RECEIPT_IDS_PER_REQUEST",
    "ExpoStandIn",
    "RequestRecord",
    "experience_id_for",
    "is_expo_push_token",
]

#: Path prefix of Expo's v2 API; ``EXPO_API_URL`` is ``http://host:port`` + this.
API_PATH: Final = "/--/api/v2"
SEND_PATH: Final = API_PATH + "/push/send"
RECEIPTS_PATH: Final = API_PATH + "/push/getReceipts"

#: Expo refuses a request carrying more than 100 notifications (recipients, not objects).
MAX_MESSAGES_PER_REQUEST: Final = 100
#: Expo refuses a getReceipts request asking for more than 1000 ids.
MAX_RECEIPT_IDS_PER_REQUEST: Final = 1000
#: APNs/FCM payload limit Expo enforces ("MessageTooBig").
MAX_PAYLOAD_BYTES: Final = 4096

# Same rule as expo-server-sdk-node's Expo.isExpoPushToken: bracketed Exponent/Expo tokens,
# or the bare UUID form the official SDK also accepts.
_TOKEN_RE: Final = re.compile(
    r"^(?:(?:ExponentPushToken|ExpoPushToken)\[.+\]"
    r"|[a-z\d]{8}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{12})$",
    re.IGNORECASE | re.DOTALL,
)

# Default request-level error code and message per HTTP status, shaped like Expo's
# {"errors":[{"code","message"}]}. TOO_MANY_REQUESTS and UNAUTHORIZED are the codes Expo documents.
_DEFAULT_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("VALIDATION_ERROR", "The request is invalid."),
    401: ("UNAUTHORIZED", "The bearer token is invalid or missing; enhanced push security is enabled."),
    403: ("FORBIDDEN", "You are not allowed to send notifications for this project."),
    404: ("NOT_FOUND", "Not found."),
    408: ("REQUEST_TIMEOUT", "The request timed out."),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large."),
    429: (
        "TOO_MANY_REQUESTS",
        "You are exceeding the request limit of 600 notifications per second per project.",
    ),
    500: ("INTERNAL_SERVER_ERROR", "An unknown error occurred."),
    502: ("BAD_GATEWAY", "The push service received an invalid response from an upstream server."),
    503: ("SERVICE_UNAVAILABLE", "The push service is temporarily unavailable. Try again later."),
    504: ("GATEWAY_TIMEOUT", "The push service timed out."),
}

# Receipt outcomes keyed by token marker. Order matters only for readability; markers are distinct.
_RECEIPT_OUTCOMES: Final[tuple[tuple[str, str, str], ...]] = (
    ("receipt-unregistered", "DeviceNotRegistered", "The recipient device is not registered with FCM."),
    (
        "receipt-toobig",
        "MessageTooBig",
        "The notification payload was too large; the total payload must be at most 4096 bytes.",
    ),
    (
        "receipt-ratelimited",
        "MessageRateExceeded",
        "Messages are being sent too frequently to the recipient device.",
    ),
    (
        "receipt-badcreds",
        "InvalidCredentials",
        "The push notification credentials for this app are invalid or were revoked.",
    ),
    (
        "receipt-mismatch",
        "MismatchSenderId",
        "The FCM server key is not associated with the sender ID of the recipient's google-services.json.",
    ),
)
_RECEIPT_MISSING: Final = "receipt-missing"
_RECEIPT_OK: Final[dict[str, Any]] = {"status": "ok"}

# Ticket-level errors about the project's credentials, keyed by token marker. None of these markers
# is a substring of a receipt marker or of another ticket marker (a unit test pins that).
_TICKET_BADCREDS: Final = "ticket-badcreds"
_TICKET_MISMATCH: Final = "ticket-mismatch"
_TICKET_NUL: Final = "ticket-nul"

#: The experience id (``@owner/slug``) of every token that names no ``project-<name>``.
DEFAULT_EXPERIENCE_ID: Final = "@family/parentpal"
_PROJECT_RE: Final = re.compile(r"project-([a-z0-9]+)")
_TOO_MANY_EXPERIENCE_IDS_MESSAGE: Final = (
    "All push notification messages in the same request must be for the same project; "
    "separate your push notifications by project."
)


def is_expo_push_token(token: object) -> bool:
    """Whether ``token`` looks like an Expo push token (the official Node SDK's rule)."""
    return isinstance(token, str) and _TOKEN_RE.match(token) is not None


def experience_id_for(token: str) -> str:
    """The Expo project (experience id) a token belongs to in the stand-in.

    ``...project-<name>...`` (name ``[a-z0-9]+``) -> ``@family/<name>``; anything else ->
    ``@family/parentpal``.
    """
    match = _PROJECT_RE.search(token)
    return f"@family/{match.group(1)}" if match else DEFAULT_EXPERIENCE_ID


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One ``/push/send`` request as the stand-in saw it, so tests can assert on the client's behaviour.

    ``headers`` has lower-case keys. ``message_count`` counts recipients (what Expo's 100 limit
    counts); it is 0 when the body could not be parsed. ``status`` is the HTTP status answered.
    ``client_port`` identifies the client's TCP connection, so keep-alive reuse can be checked.
    """

    headers: dict[str, str]
    message_count: int
    status: int
    received_at: float = field(default=0.0, compare=False)  # time.monotonic() at arrival
    client_port: int = field(default=0, compare=False)


@dataclass(slots=True)
class _ScriptedFailure:
    status: int
    code: str
    message: str
    retry_after: int


class _RequestError(Exception):
    """A request-level Expo error: rendered as ``{"errors":[{"code","message"}]}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"errors": [error]}


def _payload_size(message: dict[str, Any]) -> int:
    """Approximate the APNs/FCM payload size: the message minus its recipients, compact UTF-8 JSON.

    Expo computes the size of the payload it builds for Apple/Google, which we cannot reproduce
    byte for byte; this errs on the side of the fields the caller controls.
    """
    rest = {k: v for k, v in message.items() if k != "to"}
    return len(json.dumps(rest, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _receipt_for(token: str) -> dict[str, Any] | None:
    """The receipt a ticket for ``token`` will have; ``None`` means it never gets one."""
    if _RECEIPT_MISSING in token:
        return None
    for marker, error, message in _RECEIPT_OUTCOMES:
        if marker in token:
            details: dict[str, Any] = {"error": error}
            if error == "DeviceNotRegistered":
                details["expoPushToken"] = token
            return {"status": "error", "message": message, "details": details}
    return _RECEIPT_OK


def _has_receipt_marker(token: str) -> bool:
    return _RECEIPT_MISSING in token or any(marker in token for marker, _, _ in _RECEIPT_OUTCOMES)


class _Handler(StandInHandler):
    """Parses one HTTP/1.1 request at a time on a keep-alive connection and delegates to the stand-in.

    Headers and body go out in one write (:meth:`_respond`); the base turns Nagle off as well.
    """

    server_version = "ExpoStandIn/1.0"
    server: StandInServer[ExpoStandIn]

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            raw = self._read_body(headers)
        except _RequestError as err:
            self.close_connection = True  # the body framing is unknown; don't reuse the socket
            self._respond(err.status, err.body())
            return
        standin = self.server.standin
        if path == SEND_PATH:
            status, body, extra = standin._handle_send(headers, raw, client_port=self.client_address[1])
        elif path == RECEIPTS_PATH:
            status, body, extra = standin._handle_receipts(headers, raw)
        else:
            status, body, extra = 404, _RequestError(404, *_DEFAULT_ERRORS[404]).body(), {}
        self._respond(status, body, extra)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in (SEND_PATH, RECEIPTS_PATH):
            err = _RequestError(405, "METHOD_NOT_ALLOWED", "Use POST.")
            self._respond(405, err.body(), {"Allow": "POST"})
        else:
            self._respond(404, _RequestError(404, *_DEFAULT_ERRORS[404]).body())

    def _read_body(self, headers: dict[str, str]) -> bytes | None:
        """Read exactly the request body (Content-Length or chunked) and undo gzip/deflate.

        Returns None when the body was read but cannot be decompressed: the connection is still in
        sync, and the endpoint (not the transport) should answer, so the request is recorded.
        """
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _RequestError(400, "VALIDATION_ERROR", "Malformed chunked body.") from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            raw = b"".join(parts)
        else:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _RequestError(400, "VALIDATION_ERROR", "Invalid Content-Length.") from None
            raw = self.rfile.read(length) if length > 0 else b""
        encoding = headers.get("content-encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
        except (OSError, EOFError, zlib.error):
            return None
        return raw

    def _respond(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
        """Write status line, headers and JSON body in a single send (always with Content-Length)."""
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(payload)}",
        ]
        if extra:
            lines.extend(f"{k}: {v}" for k, v in extra.items())
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + payload)


class ExpoStandIn(HttpStandIn):
    """Expo push API stand-in on 127.0.0.1, served from daemon threads.

    State (``messages``, ``requests``, ``receipt_requests``) is appended under a short lock and may be
    read by tests at any time; take a ``list(...)`` copy if you iterate while requests are in flight.
    ``message_times[i]`` is the ``time.monotonic()`` arrival of the request that carried
    ``messages[i]`` (for rate checks: :meth:`messages_per_second`, :meth:`max_messages_in_any_window`).
    Lifecycle (``start``/``stop``, context manager, ``port``, ``base_url``) comes from
    :class:`~standins._server.HttpStandIn`; ``base_url`` is what exponent-server-sdk's
    ``PushClient(host=...)`` wants.
    """

    handler_class = _Handler
    thread_name = "expo-standin"

    def __init__(self, *, latency: float = 0.0, access_token: str | None = None, port: int = 0) -> None:
        super().__init__(port=port)
        self.latency = latency
        self.access_token = access_token
        self.messages: list[dict[str, Any]] = []
        self.message_times: list[float] = []
        self.requests: list[RequestRecord] = []
        self.receipt_requests: list[list[str]] = []
        self._lock = threading.Lock()
        self._receipts: dict[str, dict[str, Any] | None] = {}
        self._send_failures: list[_ScriptedFailure] = []
        self._receipt_failures: list[_ScriptedFailure] = []
        self._first_request_at: float | None = None

    @property
    def url(self) -> str:
        """The ``EXPO_API_URL`` value; POST ``{url}/push/send`` and ``{url}/push/getReceipts``."""
        return self.base_url + API_PATH

    # ------------------------------------------------------------------ scripting & inspection

    def fail_next(
        self,
        n: int,
        status: int = 500,
        code: str | None = None,
        message: str | None = None,
        *,
        retry_after: int = 1,
    ) -> None:
        """Make the next ``n`` ``/push/send`` requests answer ``status`` with Expo's error body.

        429 answers also carry ``Retry-After: <retry_after>`` seconds.
        """
        self._script(
            self._send_failures, n, status=status, code=code, message=message, retry_after=retry_after
        )

    def fail_next_receipts(
        self,
        n: int,
        status: int = 500,
        code: str | None = None,
        message: str | None = None,
        *,
        retry_after: int = 1,
    ) -> None:
        """Same as :meth:`fail_next`, for ``/push/getReceipts``."""
        self._script(
            self._receipt_failures, n, status=status, code=code, message=message, retry_after=retry_after
        )

    def sent_to(self, token: str) -> list[dict[str, Any]]:
        """Messages accepted (ok ticket) for one recipient token, in order."""
        with self._lock:
            return [m for m in self.messages if m.get("to") == token]

    def receipt_for(self, ticket_id: str) -> dict[str, Any] | None:
        """The receipt getReceipts would return for ``ticket_id`` (None: absent)."""
        with self._lock:
            return self._receipts.get(ticket_id)

    def messages_per_second(self) -> dict[int, int]:
        """Accepted messages (ok tickets) by whole second of arrival, counted from the first send.

        Second 0 starts at the arrival of the first ``/push/send`` request (whatever its outcome);
        every second up to the last one with a message is present, with 0 where none arrived.
        """
        with self._lock:
            first, times = self._first_request_at, list(self.message_times)
        if first is None or not times:
            return {}
        counts = dict.fromkeys(range(int(max(times) - first) + 1), 0)
        for arrived in times:
            counts[int(arrived - first)] += 1
        return counts

    def max_messages_in_any_window(self, seconds: float = 1.0) -> int:
        """The most accepted messages whose arrivals fit in any window ``[t, t + seconds)``."""
        if seconds <= 0:
            raise ValueError("seconds must be > 0")
        with self._lock:
            times = sorted(self.message_times)
        best = start = 0
        for end, arrived in enumerate(times):
            while arrived - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def reset(self) -> None:
        """Forget everything seen and every scripted failure (the server keeps running)."""
        with self._lock:
            self.messages.clear()
            self.message_times.clear()
            self._first_request_at = None
            self.requests.clear()
            self.receipt_requests.clear()
            self._receipts.clear()
            self._send_failures.clear()
            self._receipt_failures.clear()

    def _script(
        self,
        queue: list[_ScriptedFailure],
        n: int,
        *,
        status: int,
        code: str | None,
        message: str | None,
        retry_after: int,
    ) -> None:
        if n < 0 or not 400 <= status <= 599:
            raise ValueError("n must be >= 0 and status a 4xx/5xx code")
        default_code, default_message = _DEFAULT_ERRORS.get(
            status, ("INTERNAL_SERVER_ERROR" if status >= 500 else "API_ERROR", HTTPStatus(status).phrase)
        )
        failure = _ScriptedFailure(status, code or default_code, message or default_message, retry_after)
        with self._lock:
            queue.extend([failure] * n)

    # ------------------------------------------------------------------ request handling (handler threads)

    def _take_failure(self, queue: list[_ScriptedFailure]) -> _ScriptedFailure | None:
        with self._lock:
            return queue.pop(0) if queue else None

    def _check_auth(self, headers: dict[str, str]) -> None:
        if self.access_token is None:
            return
        if headers.get("authorization", "") != f"Bearer {self.access_token}":
            raise _RequestError(401, *_DEFAULT_ERRORS[401])

    @staticmethod
    def _parse_json(raw: bytes | None) -> Any:
        if raw is None:
            raise _RequestError(400, "VALIDATION_ERROR", "The request body could not be decompressed.")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _RequestError(400, "VALIDATION_ERROR", "The request body must be valid JSON.") from None

    def _handle_send(
        self, headers: dict[str, str], raw: bytes | None, *, client_port: int = 0
    ) -> tuple[int, Any, dict[str, str]]:
        """Answer one /push/send request and record it, whatever the outcome."""
        received_at = time.monotonic()
        with self._lock:
            if self._first_request_at is None:
                self._first_request_at = received_at
        if self.latency > 0:
            time.sleep(self.latency)
        extra: dict[str, str] = {}
        counted = [0]
        try:
            status, response = 200, self._send(headers, raw, extra, counted, received_at=received_at)
        except _RequestError as err:
            status, response = err.status, err.body()
        record = RequestRecord(
            headers=headers,
            message_count=counted[0],
            status=status,
            received_at=received_at,
            client_port=client_port,
        )
        with self._lock:
            self.requests.append(record)
        return status, response, extra

    def _send(
        self,
        headers: dict[str, str],
        raw: bytes | None,
        extra: dict[str, str],
        counted: list[int],
        *,
        received_at: float = 0.0,
    ) -> dict[str, Any]:
        """Validate like Expo does, in Expo's order; raise _RequestError for request-level errors."""
        failure = self._take_failure(self._send_failures)
        if failure is not None:
            with contextlib.suppress(_RequestError):
                counted[0] = _count_recipients(self._parse_json(raw))
            _raise_scripted(failure, extra)
        self._check_auth(headers)
        messages, single = _validate_messages(self._parse_json(raw))
        counted[0] = count = sum(len(to) for _, to in messages)
        if count > MAX_MESSAGES_PER_REQUEST:
            raise _RequestError(
                400,
                "PUSH_TOO_MANY_NOTIFICATIONS",
                f"You can send a maximum of {MAX_MESSAGES_PER_REQUEST} notifications per request "
                f"(received {count}); divide your requests.",
            )
        _check_one_project(messages)
        return self._tickets(messages, single, received_at)

    def _tickets(
        self, messages: list[tuple[dict[str, Any], list[str]]], single: bool, received_at: float = 0.0
    ) -> dict[str, Any]:
        """Build one ticket per recipient, in request order; remember receipts for ok tickets."""
        tickets: list[dict[str, Any]] = []
        accepted: list[dict[str, Any]] = []
        receipts: dict[str, dict[str, Any] | None] = {}
        for message, recipients in messages:
            size = _payload_size(message) if len(message) > 1 else 0
            for token in recipients:
                ticket = _ticket_error(token, size)
                if ticket is None:
                    ticket_id = str(uuid.uuid4())
                    ticket = {"status": "ok", "id": ticket_id}
                    receipts[ticket_id] = _receipt_for(token)
                    accepted.append(message if message.get("to") == token else {**message, "to": token})
                tickets.append(ticket)
        with self._lock:
            self.messages.extend(accepted)
            self.message_times.extend([received_at] * len(accepted))
            self._receipts.update(receipts)
        # Expo: "data" is an array of tickets, or one ticket object for one message to one recipient.
        return {"data": tickets[0] if single and len(tickets) == 1 else tickets}

    def _handle_receipts(self, headers: dict[str, str], raw: bytes | None) -> tuple[int, Any, dict[str, str]]:
        """Answer one /push/getReceipts request: known ids map to receipts, unknown ids are absent."""
        if self.latency > 0:
            time.sleep(self.latency)
        extra: dict[str, str] = {}
        try:
            return 200, self._receipts_for(headers, raw, extra), extra
        except _RequestError as err:
            return err.status, err.body(), extra

    def _receipts_for(
        self, headers: dict[str, str], raw: bytes | None, extra: dict[str, str]
    ) -> dict[str, Any]:
        failure = self._take_failure(self._receipt_failures)
        if failure is not None:
            with contextlib.suppress(_RequestError):
                self._record_receipt_request(_validate_ids(self._parse_json(raw)))
            _raise_scripted(failure, extra)
        self._check_auth(headers)
        ids = _validate_ids(self._parse_json(raw))
        self._record_receipt_request(ids)
        if len(ids) > MAX_RECEIPT_IDS_PER_REQUEST:
            raise _RequestError(
                400,
                "PUSH_TOO_MANY_RECEIPTS",
                f"You can request a maximum of {MAX_RECEIPT_IDS_PER_REQUEST} receipts per request "
                f"(received {len(ids)}); divide your requests.",
            )
        data: dict[str, Any] = {}
        with self._lock:
            for ticket_id in ids:
                receipt = self._receipts.get(ticket_id)
                if receipt is not None:
                    data[ticket_id] = receipt
        return {"data": data}

    def _record_receipt_request(self, ids: list[str]) -> None:
        with self._lock:
            self.receipt_requests.append(ids)


def _raise_scripted(failure: _ScriptedFailure, extra: dict[str, str]) -> None:
    """Raise a scripted request-level failure; a 429 also tells the client when to come back."""
    if failure.status == 429:
        extra["Retry-After"] = str(failure.retry_after)
    raise _RequestError(failure.status, failure.code, failure.message)


def _check_one_project(messages: list[tuple[dict[str, Any], list[str]]]) -> None:
    """Refuse a request whose recipients belong to more than one Expo project, as Expo does."""
    by_project: dict[str, list[str]] = {}
    for _, recipients in messages:
        for token in recipients:
            tokens = by_project.setdefault(experience_id_for(token), [])
            if token not in tokens:
                tokens.append(token)
    if len(by_project) > 1:
        raise _RequestError(400, "PUSH_TOO_MANY_EXPERIENCE_IDS", _TOO_MANY_EXPERIENCE_IDS_MESSAGE, by_project)


def _credentials_ticket_error(token: str) -> dict[str, Any] | None:
    """Error tickets scripted by the ``ticket-*`` markers (checked before every other marker)."""
    if _TICKET_BADCREDS in token:
        return {
            "status": "error",
            "message": (
                f"Could not find valid push notification credentials for {experience_id_for(token)}: "
                "the credentials are invalid or were revoked. Upload new credentials for the project."
            ),
            "details": {"error": "InvalidCredentials"},
        }
    if _TICKET_MISMATCH in token:
        return {
            "status": "error",
            "message": (
                f"The FCM server key of {experience_id_for(token)} is not associated with the sender ID "
                f'of "{token}"; check the google-services.json the app was built with.'
            ),
            "details": {"error": "MismatchSenderId"},
        }
    if _TICKET_NUL in token:
        return {
            "status": "error",
            "message": f'"{token}" is receiving messages too frequently\u0000; retry with exponential backoff.',
            "details": {"error": "MessageRateExceeded", "expoPushToken": token},
        }
    return None


def _ticket_error(token: str, payload_size: int) -> dict[str, Any] | None:
    """The error ticket Expo would give this recipient, or None for an ok ticket."""
    if is_expo_push_token(token):
        scripted = _credentials_ticket_error(token)
        if scripted is not None:
            return scripted
    if not is_expo_push_token(token) or ("unregistered" in token and not _has_receipt_marker(token)):
        return {
            "status": "error",
            "message": f'"{token}" is not a registered push notification recipient',
            "details": {"error": "DeviceNotRegistered", "expoPushToken": token},
        }
    if "ratelimited" in token and not _has_receipt_marker(token):
        return {
            "status": "error",
            "message": f'"{token}" is receiving messages too frequently; retry with exponential backoff.',
            "details": {"error": "MessageRateExceeded", "expoPushToken": token},
        }
    if payload_size > MAX_PAYLOAD_BYTES:
        return {
            "status": "error",
            "message": (
                f"Message too big: the notification payload is {payload_size} bytes; "
                f"the total payload must be at most {MAX_PAYLOAD_BYTES} bytes."
            ),
            "details": {"error": "MessageTooBig"},
        }
    return None


def _validate_messages(body: Any) -> tuple[list[tuple[dict[str, Any], list[str]]], bool]:
    """Check the /push/send body; return (message, recipients) pairs and whether it was one object."""
    single = isinstance(body, dict)
    items = [body] if single else body
    if not isinstance(items, list):
        raise _RequestError(400, "VALIDATION_ERROR", '"value" must be an object or an array of objects.')
    if not items:
        raise _RequestError(400, "VALIDATION_ERROR", '"value" must contain at least 1 message.')
    out: list[tuple[dict[str, Any], list[str]]] = []
    for index, message in enumerate(items):
        where = "value" if single else f"[{index}]"
        if not isinstance(message, dict):
            raise _RequestError(400, "VALIDATION_ERROR", f'"{where}" must be of type object.')
        to = message.get("to")
        if isinstance(to, str):
            recipients = [to]
        elif isinstance(to, list) and to and all(isinstance(t, str) for t in to):
            recipients = to
        else:
            problem = "is required" if to is None else "must be a string or a non-empty array of strings"
            raise _RequestError(400, "VALIDATION_ERROR", f'"{where}.to" {problem}.')
        if "data" in message and message["data"] is not None and not isinstance(message["data"], dict):
            raise _RequestError(400, "VALIDATION_ERROR", f'"{where}.data" must be of type object.')
        out.append((message, recipients))
    return out, single and not isinstance(items[0].get("to"), list)


def _count_recipients(body: Any) -> int:
    """Best-effort recipient count for the request record, never raising on odd shapes."""
    items = [body] if isinstance(body, dict) else body if isinstance(body, list) else []
    count = 0
    for message in items:
        to = message.get("to") if isinstance(message, dict) else None
        count += len(to) if isinstance(to, list) else 1
    return count


def _validate_ids(body: Any) -> list[str]:
    if not isinstance(body, dict) or not isinstance(body.get("ids"), list):
        raise _RequestError(400, "VALIDATION_ERROR", '"ids" is required and must be an array of strings.')
    ids: list[Any] = body["ids"]
    if not all(isinstance(i, str) for i in ids):
        raise _RequestError(400, "VALIDATION_ERROR", '"ids" must be an array of strings.')
    return ids


def main(argv: list[str] | None = None) -> int:
    """CLI: print the URL on one line, then serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m standins.expo", description="Local stand-in of Expo's push API."
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sleep per request, milliseconds")
    parser.add_argument("--access-token", default=None, help="require 'Authorization: Bearer <token>'")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    standin = ExpoStandIn(latency=args.latency_ms / 1000.0, access_token=args.access_token, port=args.port)
    with standin:
        print(standin.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
