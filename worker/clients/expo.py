"""Expo's push API through exponent-server-sdk, fast and polite: transport only.

* 100 messages a request (Expo's limit), several requests in flight on one pooled
  ``requests.Session``, and a client-side rate limit (Expo allows 600 notifications/s per project).
* In-pass retries (tenacity, :mod:`worker.retry`) of network errors, 429 and 5xx only; a 4xx is
  never retried as it was.
* One request's answer is ready as soon as that request returns (:meth:`ExpoPusher.submit` gives a
  future per request), so the push step records it at once: a pass killed at any instant can only
  have sent twice what was in flight.
* Every message gets an :class:`Answer`: Expo's ticket (an id, or Expo's error code and text), or,
  when the request itself failed, one of the request-level codes :data:`REQUEST_REFUSED` (our access
  token), :data:`REQUEST_UNREACHABLE` (network, 429, 5xx after the retries) or
  :data:`REQUEST_REJECTED` (Expo refuses this message). What an answer means for the reminder is
  the push step's decision (:mod:`worker.steps.messages`).
* Whole-request refusals that concern only some of its messages are taken apart, not failed:
  ``PUSH_TOO_MANY_EXPERIENCE_IDS`` (tokens of several Expo projects) is split by project as its
  ``details`` say, and a 400 for a request of several messages is halved until the message Expo
  refuses is alone.

The SDK is used for what it does well (request shape, response validation, ticket parsing); two
of its habits are worked around: its token check refuses the newer ``ExpoPushToken[...]`` form, and
passing a session drops its default headers, so this module sets them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from exponent_server_sdk import PushClient, PushMessage, PushServerError, PushTicket

from worker import logs
from worker.config import ExpoSettings
from worker.logs import scrub
from worker.planner import is_expo_push_token
from worker.retry import RateLimiter, http_retrying

MAX_MESSAGES_PER_REQUEST = 100


@dataclass(frozen=True, slots=True)
class Outbound:
    """One notification to send, for one reminder."""

    reminder_id: str
    token: str
    title: str
    body: str
    data: dict[str, Any]
    expiration: int | None = None

    def payload(self) -> dict[str, Any]:
        """The message as Expo's /push/send takes it."""
        p: dict[str, Any] = {"to": self.token, "title": self.title, "body": self.body, "data": self.data,
                             "sound": "default", "priority": "high"}
        if self.expiration is not None:
            p["expiration"] = self.expiration
        return p


#: Request-level answers (ours, never Expo's codes): the request carrying the message failed.
REQUEST_REFUSED = "request_refused"  # 401/403: Expo refused our access token
REQUEST_UNREACHABLE = "request_unreachable"  # network, 429, 5xx, a malformed answer: after the retries
REQUEST_REJECTED = "request_rejected"  # a 4xx for this message alone


@dataclass(frozen=True, slots=True)
class Answer:
    """What Expo said about one message: a ticket id (accepted), or an error code and its text
    (Expo's ``details.error``, e.g. ``DeviceNotRegistered``, or one of the ``REQUEST_*`` codes)."""

    reminder_id: str
    token: str  # the device the message went to
    ticket_id: str | None = None
    error: str | None = None
    message: str | None = None

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"Answer(reminder_id={self.reminder_id!r}, ticket_id={self.ticket_id!r}, error={self.error!r})"

    @property
    def accepted(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class RequestResult:
    """What one request (or the requests it was split into) answered for its messages.

    ``answered``: Expo answered (not only network errors and 5xx); ``refused``: Expo refused our
    access token (401/403), so no other request of this pass will fare better.
    """

    answers: list[Answer]
    answered: bool
    refused: bool = False


class PushUnavailable(Exception):
    """Expo could not be used at all in this pass (unreachable, failing, or refusing our token)."""


#: Receipt ids per getReceipts request: Expo's Node SDK uses 300 (Expo accepts up to 1000).
RECEIPT_IDS_PER_REQUEST = 300


@dataclass(frozen=True, slots=True)
class Receipt:
    """Expo's receipt for one ticket: ``ok``, or ``error`` with Expo's code (``details.error``)."""

    status: str
    error: str | None = None
    message: str | None = None


class ReceiptsUnavailable(PushUnavailable):
    """Some getReceipts requests failed for good: ``receipts`` holds what the others answered,
    ``unanswered`` the ids nobody was asked successfully (they are not "missing": ask again)."""

    def __init__(self, reason: str, receipts: dict[str, Receipt], unanswered: list[str]) -> None:
        super().__init__(reason)
        self.receipts = receipts
        self.unanswered = unanswered


class _Transient(Exception):
    """A request failure worth retrying (network, 429, 5xx, malformed answer)."""


class _Refused(Exception):
    """Expo refused our credentials (401/403): no retry helps within this pass."""


class _Message(PushMessage):  # type: ignore[misc]
    """The SDK's message with Expo's current token rule (both token forms), carrying our payload
    (the SDK's namedtuple has no field for expiration, priority or sound)."""

    def get_payload(self) -> dict[str, Any]:
        if not is_expo_push_token(self.to):
            raise ValueError("malformed Expo push token")
        payload: dict[str, Any] = self._payload
        return payload


class ExpoPusher:
    """Sends :class:`Outbound` messages and hands back Expo's :class:`Answer` for each. Thread-safe."""

    def __init__(
        self,
        api_url: str,
        *,
        access_token: str | None = None,
        concurrency: int = 6,
        rate_limit: float = 600.0,
        timeout: float = 15.0,
        request_attempts: int = 3,
        retry_wait: float = 0.5,
    ) -> None:
        parts = urlsplit(api_url)
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({
            "accept": "application/json",
            "accept-encoding": "gzip, deflate",
            "content-type": "application/json",
        })
        if access_token:
            self._session.headers["Authorization"] = f"Bearer {access_token}"
        self._client: PushClient = PushClient(
            host=f"{parts.scheme}://{parts.netloc}", api_url=parts.path.rstrip("/"),
            session=self._session, timeout=timeout,
        )
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="expo")
        # Expo counts arrivals: a window a little over a second keeps jitter from fitting 7 x 100 in one.
        self._limiter = RateLimiter(rate_limit, window=1.05)
        self._attempts = max(request_attempts, 1)
        self._retry_wait = retry_wait
        self.requests_made = 0
        self._count_lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._session.close()

    def send(self, messages: Sequence[Outbound]) -> tuple[list[Answer], bool]:
        """Send all messages and wait; returns every answer and whether Expo answered at least once."""
        chunks = [messages[i:i + MAX_MESSAGES_PER_REQUEST] for i in range(0, len(messages), MAX_MESSAGES_PER_REQUEST)]
        results = [f.result() for f in [self.submit(c) for c in chunks]]
        return [a for r in results for a in r.answers], not results or any(r.answered for r in results)

    def submit(self, messages: Sequence[Outbound], *, not_before: float | None = None) -> Future[RequestResult]:
        """Put one request (at most 100 messages) on the wire in the background, not before the
        ``time.monotonic()`` reading ``not_before`` (its slot on the shared schedule); its future is
        done when Expo answered it (or the in-pass retries gave up)."""
        if len(messages) > MAX_MESSAGES_PER_REQUEST:
            raise ValueError(f"at most {MAX_MESSAGES_PER_REQUEST} messages a request")
        return self._pool.submit(self._send_request, list(messages), not_before)

    def _send_request(self, chunk: list[Outbound], not_before: float | None = None) -> RequestResult:
        if not_before is not None:
            delay = not_before - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the thread waits, not the pass: the slot was booked for then
        self._limiter.acquire(len(chunk))
        try:
            tickets = self._publish_with_retries(chunk)
        except _Refused as exc:
            return RequestResult(_all(chunk, REQUEST_REFUSED, str(exc)), answered=False, refused=True)
        except _Transient as exc:
            return RequestResult(_all(chunk, REQUEST_UNREACHABLE, str(exc)), answered=False)
        except PushServerError as exc:  # a 4xx: the request itself is refused; retrying it as is cannot help
            return self._take_apart(chunk, exc)
        except Exception as exc:  # a bug must still give every message an answer, and stay in its request
            logs.get().exception("expo.request_crashed")
            reason = f"unexpected error sending to Expo: {type(exc).__name__}"
            return RequestResult(_all(chunk, REQUEST_UNREACHABLE, reason), answered=False)
        return RequestResult([_answer(m, t) for m, t in zip(chunk, tickets, strict=True)], answered=True)

    def _take_apart(self, chunk: list[Outbound], exc: Any) -> RequestResult:
        """A request refused as a whole, for what may be only some of its messages."""
        code = _server_error_code(exc)
        parts: list[list[Outbound]] = []
        if code == "PUSH_TOO_MANY_EXPERIENCE_IDS":
            parts = _split_by_project(chunk, _server_error_details(exc))
        elif len(chunk) > 1 and code not in _WHOLE_REQUEST_CODES:
            half = len(chunk) // 2
            parts = [chunk[:half], chunk[half:]]
        if len(parts) < 2:
            reason = f"Expo refused the request: {_server_error_text(exc)}"
            return RequestResult(_all(chunk, REQUEST_REJECTED, reason), answered=True)
        results = [self._send_request(part) for part in parts]
        return RequestResult([a for r in results for a in r.answers], answered=any(r.answered for r in results),
                             refused=any(r.refused for r in results))

    def _publish_with_retries(self, chunk: Sequence[Outbound]) -> list[Any]:
        for attempt in http_retrying(self._attempts, self._retry_wait, _Transient):
            with attempt:
                return self._publish_once(chunk)
        raise AssertionError("unreachable")

    def _publish_once(self, chunk: Sequence[Outbound]) -> list[Any]:
        sdk_messages = [self._to_sdk(m) for m in chunk]
        with self._count_lock:
            self.requests_made += 1
        with _classified_errors():
            return list(self._client.publish_multiple(sdk_messages))

    def _to_sdk(self, m: Outbound) -> Any:
        msg = _Message(to=m.token, title=m.title, body=m.body, data=m.data)
        msg._payload = m.payload()  # the SDK's namedtuple has no field for expiration/priority/sound
        return msg

    # --- receipts -------------------------------------------------------------------------------

    def check_receipts(self, ids: Sequence[str]) -> dict[str, Receipt]:
        """Receipts for ticket ids, by id; an id absent from the answer has no receipt (yet).

        Requests of :data:`RECEIPT_IDS_PER_REQUEST` ids go out in parallel through the SDK's
        ``check_receipts_multiple`` on our session (its ``check_receipts`` would drop the session's
        headers, Authorization included). Network errors, 429 and 5xx are retried within the pass
        as for sends; when a request still fails, :class:`ReceiptsUnavailable` carries the rest.
        """
        chunks = [list(ids[i:i + RECEIPT_IDS_PER_REQUEST]) for i in range(0, len(ids), RECEIPT_IDS_PER_REQUEST)]
        futures = [self._pool.submit(self._receipts_chunk, c) for c in chunks]
        receipts: dict[str, Receipt] = {}
        unanswered: list[str] = []
        first_error: str | None = None
        for chunk, future in zip(chunks, futures, strict=True):
            answer, error = future.result()
            if error is not None:
                unanswered.extend(chunk)
                first_error = first_error or error
            else:
                receipts.update(answer)
        if first_error is not None:
            raise ReceiptsUnavailable(first_error, receipts, unanswered)
        return receipts

    def _receipts_chunk(self, ids: list[str]) -> tuple[dict[str, Receipt], str | None]:
        try:
            for attempt in http_retrying(self._attempts, self._retry_wait, _Transient):
                with attempt:
                    return self._receipts_once(ids), None
        except (_Refused, _Transient) as exc:
            return {}, str(exc)
        except PushServerError as exc:  # a 400: our request is wrong; asking again cannot help
            return {}, f"Expo refused the receipts request: {_server_error_text(exc)}"
        raise AssertionError("unreachable")

    def _receipts_once(self, ids: list[str]) -> dict[str, Receipt]:
        tickets = [PushTicket(push_message=None, status="ok", message="", details=None, id=i) for i in ids]
        with self._count_lock:
            self.requests_made += 1
        try:
            with _classified_errors():
                answer = self._client.check_receipts_multiple(tickets)
        except (AttributeError, TypeError, ValueError) as exc:  # an answer not shaped like Expo's
            raise _Transient(f"Expo answered malformed receipts: {type(exc).__name__}") from None
        out: dict[str, Receipt] = {}
        for r in answer:
            details = r.details if isinstance(r.details, dict) else {}
            error = details.get("error")
            out[str(r.id)] = Receipt(
                status=str(r.status), error=str(error) if error else None,
                message=scrub(str(r.message)) if r.message else None)
        return out


@contextlib.contextmanager
def _classified_errors() -> Iterator[None]:
    """Turn what the SDK and requests raise into our three kinds, for sends and receipts alike.

    401/403: :class:`_Refused` (our access token). Network errors, 429, 5xx and answers that are
    not Expo's: :class:`_Transient`. Other 4xx stay a ``PushServerError`` (the request is wrong).
    """
    try:
        yield
    except PushServerError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise _Refused(f"Expo refused the access token (HTTP {status}): {_server_error_text(exc)}") from None
        if status is None or status == 429 or status >= 500 or status < 400:
            raise _Transient(f"Expo answered HTTP {status}: {_server_error_text(exc)}") from None
        raise
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise _Refused(f"Expo refused the access token (HTTP {status})") from None
        if status is not None and 400 <= status < 500 and status != 429:
            raise PushServerError(f"HTTP {status}", exc.response) from None
        raise _Transient(f"Expo answered HTTP {status}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(f"cannot reach Expo: {type(exc).__name__}") from None
    except requests.RequestException as exc:
        raise _Transient(f"Expo request failed: {type(exc).__name__}") from None


def _server_error_text(exc: Any) -> str:
    errors = getattr(exc, "errors", None) or []
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        return scrub(f"{first.get('code', 'ERROR')}: {first.get('message', '')}".strip())
    return scrub(str(getattr(exc, "message", None) or exc))


# 400 codes that refuse a request for what it is as a whole: halving it cannot help.
_WHOLE_REQUEST_CODES = frozenset({"PUSH_TOO_MANY_NOTIFICATIONS", "PUSH_TOO_MANY_RECEIPTS", "UNAUTHORIZED"})


def _all(chunk: Sequence[Outbound], code: str, reason: str) -> list[Answer]:
    return [Answer(m.reminder_id, m.token, error=code, message=reason) for m in chunk]


def _server_error_code(exc: Any) -> str | None:
    errors = getattr(exc, "errors", None) or []
    if errors and isinstance(errors[0], dict):
        code = errors[0].get("code")
        return str(code) if code else None
    return None


def _server_error_details(exc: Any) -> Any:
    errors = getattr(exc, "errors", None) or []
    return errors[0].get("details") if errors and isinstance(errors[0], dict) else None


def _split_by_project(chunk: list[Outbound], details: Any) -> list[list[Outbound]]:
    """The messages of a request refused with PUSH_TOO_MANY_EXPERIENCE_IDS, one part per project.

    ``details`` maps each experience id to its tokens in the request. A token it does not name goes
    alone: it may belong to yet another project.
    """
    project: dict[str, str] = {}
    if isinstance(details, dict):
        for experience, tokens in details.items():
            for token in tokens if isinstance(tokens, list) else []:
                project[str(token)] = str(experience)
    parts: dict[str, list[Outbound]] = {}
    for m in chunk:
        parts.setdefault(project.get(m.token, f"unknown:{m.token}"), []).append(m)
    return list(parts.values())


def _answer(message: Outbound, ticket: Any) -> Answer:
    """One ticket as an :class:`Answer`. Expo's texts quote the token: it is scrubbed here."""
    if ticket.status == "ok":
        return Answer(message.reminder_id, message.token, ticket_id=ticket.id or None)
    details = ticket.details or {}
    error = details.get("error") if isinstance(details, dict) else None
    text = scrub(f"{error or 'error'}: {ticket.message}".strip() if ticket.message else (error or "error"))
    return Answer(message.reminder_id, message.token, error=str(error or "error"), message=text)


def pusher_from_settings(expo: ExpoSettings, **overrides: Any) -> ExpoPusher:
    kwargs: dict[str, Any] = {
        "access_token": expo.access_token,
        "concurrency": expo.concurrency,
        # PUSH_RATE_LIMIT is kept by the schedule every worker books in the claim (worker.steps.push
        # sends each request at its slot); a second, local limit would only add waits.
        "rate_limit": 0.0,
        "timeout": expo.timeout,
        "request_attempts": expo.request_attempts,
        "retry_wait": expo.retry_wait,
    }
    kwargs.update(overrides)
    return ExpoPusher(expo.api_url, **kwargs)
