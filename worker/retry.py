"""One retry policy, built on tenacity, for everything the worker retries within a pass.

Backoff grows as a power of the attempt with jitter, capped, and a caller's *patience* bounds the
whole: a retry never starts after the patience is spent (``stop_before_delay``), so a pass can
promise that an outcome write gives up before its claim's lease runs out.

Retries *between* passes (a reminder's next try, an event's next sync) are rows' business and
live in :mod:`worker.planner` (``next_attempt_at``); this module is for one call within a pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    stop_before_delay,
    wait_exponential_jitter,
)

from worker import logs

#: First wait and the cap between two tries of a database call.
DATABASE_FIRST_WAIT = 0.1
DATABASE_MAX_WAIT = 5.0


def database_retrying(patience: float, retry_on: type[BaseException], function: str = "") -> Retrying:
    """Retry ``retry_on`` (the gateway's "database unavailable") with backoff for up to ``patience``
    seconds."""
    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logs.event("database.retry", logging.WARNING, function=function, attempt=state.attempt_number,
                   wait_s=round(wait, 2), error=str(exc) if exc else None)

    return Retrying(
        retry=retry_if_exception_type(retry_on),
        wait=wait_exponential_jitter(multiplier=DATABASE_FIRST_WAIT, max=DATABASE_MAX_WAIT, jitter=DATABASE_FIRST_WAIT),
        stop=stop_before_delay(max(patience, 0.0)),
        before_sleep=log,
        reraise=True,
    )


def http_retrying(attempts: int, first_wait: float, retry_on: type[BaseException] | tuple[type[BaseException], ...],
                  max_wait: float = 5.0, patience: float | None = None) -> Retrying:
    """Retry a request that failed transiently: at most ``attempts`` tries (and ``patience`` seconds)."""
    stop: Any = stop_after_attempt(max(attempts, 1))
    if patience is not None:
        stop = stop_any(stop, stop_before_delay(patience))
    return Retrying(
        retry=retry_if_exception_type(retry_on),
        wait=wait_exponential_jitter(multiplier=first_wait, max=max_wait, jitter=first_wait),
        stop=stop,
        reraise=True,
    )


class Pace(Protocol):
    """Something that spaces requests out: :meth:`acquire` returns when the next one may go (the
    seconds it waited). :class:`RateLimiter` is one (a worker's own); ``worker.steps.pace.SharedPace``
    another (one limit for every worker of the database)."""

    def acquire(self, n: float = 1) -> float: ...


class RateLimiter:
    """At most ``limit`` units in any ``window`` seconds: a sliding window, blocking, thread-safe.

    It starts empty (no burst beyond the limit at the start of a pass), and a caller asking for
    more than ``limit`` at once is let through alone in a window. The one limiter of the worker:
    Expo's notifications per second, Google's requests per user per minute.
    """

    def __init__(self, limit: float, window: float = 1.0, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._taken: deque[tuple[float, float]] = deque()
        self._used = 0.0
        self._lock = threading.Lock()

    def acquire(self, n: float = 1) -> float:
        """Wait until ``n`` more fit in the window; return the seconds waited."""
        if self.limit <= 0:
            return 0.0
        n = min(n, self.limit)
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._taken and self._taken[0][0] <= now - self.window:
                    self._used -= self._taken.popleft()[1]
                if self._used + n <= self.limit:
                    self._taken.append((now, n))
                    self._used += n
                    return waited
                freed, delay = 0.0, 0.0
                for at, size in self._taken:
                    freed += size
                    delay = at + self.window - now
                    if self._used - freed + n <= self.limit:
                        break
            self._sleep(max(delay, 0.0))
            waited += max(delay, 0.0)
