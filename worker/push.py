"""The push client: Expo's push API through exponent-server-sdk, fast and polite.

* 100 messages a request (Expo's limit), several requests in flight on one pooled
  ``requests.Session``, and a client-side rate limit (Expo allows 600 notifications/s per project).
* In-pass retries (tenacity) of network errors, 429 and 5xx only; a 400 is never retried.
* Each outcome is classified for the database: ``sent``, ``retry`` (transient: counts an attempt,
  backs off), ``failed`` (permanent), or ``deferred`` (our credentials were refused: the reminder is
  not at fault, so no attempt is counted).

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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from worker.logs import scrub
from worker.planner import is_expo_push_token

if TYPE_CHECKING:
    from exponent_server_sdk import PushClient

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


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one message."""

    reminder_id: str
    outcome: str  # sent | retry | failed | deferred
    error: str | None = None
    ticket_id: str | None = None
    clear_token: bool = False


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


class PendingSend:
    """Requests of one batch in flight; :meth:`result` waits for all of them."""

    def __init__(self, futures: list[Future[tuple[list[Delivery], bool]]]) -> None:
        self._futures = futures

    def result(self) -> tuple[list[Delivery], bool]:
        deliveries: list[Delivery] = []
        answered = not self._futures
        for f in self._futures:
            chunk_deliveries, chunk_answered = f.result()
            deliveries.extend(chunk_deliveries)
            answered = answered or chunk_answered
        return deliveries, answered


class _RateLimiter:
    """At most ``rate`` messages a second across threads, with one second of burst."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._burst = rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, n: int) -> None:
        if self._interval == 0.0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now - self._burst * self._interval)
            self._next = start + n * self._interval
            wait = self._next - now - self._burst * self._interval
        if wait > 0:
            time.sleep(wait)


class _Transient(Exception):
    """A request failure worth retrying (network, 429, 5xx, malformed answer)."""


class _Refused(Exception):
    """Expo refused our credentials (401/403): no retry helps within this pass."""


def _sdk_message_class() -> type:
    from exponent_server_sdk import PushMessage

    class _Message(PushMessage):  # type: ignore[misc]
        """The SDK's message with Expo's current token rule (both token forms)."""

        def get_payload(self) -> dict[str, Any]:
            if not is_expo_push_token(self.to):
                raise ValueError("malformed Expo push token")
            payload: dict[str, Any] = self._payload
            return payload

    return _Message


class ExpoPusher:
    """Sends batches of :class:`Outbound` and classifies every result. Thread-safe."""

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
        import requests
        from exponent_server_sdk import PushClient

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
        self._message_cls = _sdk_message_class()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="expo")
        self._limiter = _RateLimiter(rate_limit)
        self._attempts = max(request_attempts, 1)
        self._retry_wait = retry_wait
        self.requests_made = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._session.close()

    def send(self, messages: Sequence[Outbound]) -> tuple[list[Delivery], bool]:
        """Send all messages; returns every delivery and whether Expo answered at least once."""
        return self.start(messages).result()

    def start(self, messages: Sequence[Outbound]) -> PendingSend:
        """Put all messages on the wire (in the background) and return at once.

        The pass claims and prepares its next batch while this one is in flight, so Expo's
        latency and the database's never add up.
        """
        chunks = [messages[i:i + MAX_MESSAGES_PER_REQUEST] for i in range(0, len(messages), MAX_MESSAGES_PER_REQUEST)]
        return PendingSend([self._pool.submit(self._send_chunk, c) for c in chunks])

    def _send_chunk(self, chunk: Sequence[Outbound]) -> tuple[list[Delivery], bool]:
        from exponent_server_sdk import PushServerError

        self._limiter.acquire(len(chunk))
        try:
            tickets = self._publish_with_retries(chunk)
        except _Refused as exc:
            return [Delivery(m.reminder_id, "deferred", str(exc)) for m in chunk], False
        except _Transient as exc:
            return [Delivery(m.reminder_id, "retry", str(exc)) for m in chunk], False
        except PushServerError as exc:  # a 400: the request itself is wrong; retrying cannot help
            reason = f"Expo refused the request: {_server_error_text(exc)}"
            return [Delivery(m.reminder_id, "failed", reason) for m in chunk], True
        return [_classify(m, t) for m, t in zip(chunk, tickets, strict=True)], True

    def _publish_with_retries(self, chunk: Sequence[Outbound]) -> list[Any]:
        from tenacity import (
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential_jitter,
        )

        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=self._retry_wait, max=5.0, jitter=self._retry_wait),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._publish_once(chunk)
        raise AssertionError("unreachable")

    def _publish_once(self, chunk: Sequence[Outbound]) -> list[Any]:
        sdk_messages = [self._to_sdk(m) for m in chunk]
        self.requests_made += 1
        with _classified_errors():
            return list(self._client.publish_multiple(sdk_messages))

    def _to_sdk(self, m: Outbound) -> Any:
        msg = self._message_cls(to=m.token, title=m.title, body=m.body, data=m.data)
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
        from exponent_server_sdk import PushServerError
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=self._retry_wait, max=5.0, jitter=self._retry_wait),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._receipts_once(ids), None
        except (_Refused, _Transient) as exc:
            return {}, str(exc)
        except PushServerError as exc:  # a 400: our request is wrong; asking again cannot help
            return {}, f"Expo refused the receipts request: {_server_error_text(exc)}"
        raise AssertionError("unreachable")

    def _receipts_once(self, ids: list[str]) -> dict[str, Receipt]:
        from exponent_server_sdk import PushTicket

        tickets = [PushTicket(push_message=None, status="ok", message="", details=None, id=i) for i in ids]
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
    import requests
    from exponent_server_sdk import PushServerError

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


def _classify(message: Outbound, ticket: Any) -> Delivery:
    if ticket.status == "ok":
        return Delivery(message.reminder_id, "sent", ticket_id=ticket.id or None)
    details = ticket.details or {}
    error = details.get("error") if isinstance(details, dict) else None
    # Expo's texts quote the token; error_message must not carry it.
    text = scrub(f"{error or 'error'}: {ticket.message}".strip() if ticket.message else (error or "error"))
    if error == "DeviceNotRegistered":
        return Delivery(message.reminder_id, "failed", text, clear_token=True)
    if error in ("MessageTooBig", "InvalidCredentials", "MismatchSenderId"):
        return Delivery(message.reminder_id, "failed", text)
    return Delivery(message.reminder_id, "retry", text)


def pusher_from_settings(settings: Any, **overrides: Any) -> ExpoPusher:
    kwargs: dict[str, Any] = {
        "access_token": settings.expo_access_token,
        "concurrency": settings.push_concurrency,
        "rate_limit": settings.push_rate_limit,
        "timeout": settings.push_timeout,
        "request_attempts": settings.push_request_attempts,
        "retry_wait": settings.push_retry_wait,
    }
    kwargs.update(overrides)
    return ExpoPusher(settings.expo_api_url, **kwargs)
