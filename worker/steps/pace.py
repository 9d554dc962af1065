"""One request rate for every worker of the database: Google Calendar's project quota.

Google counts a project's Calendar requests per minute whatever the number of workers sending them
(replicas of ``run --loop``, a CronJob pass overlapping a pg_cron one). A :class:`SharedPace` books
slots in blocks on the schedule all workers share (``worker_book_sends``, the same table the push
step books Expo's sends on) and hands them out one by one, ``1/rate`` s apart from the block's
first slot: a round trip per block (half a second of the rate), not per request.

Why blocks: a booking per request would cost as many round trips as Calendar requests. A block a
pass does not use up is lost (at most half a second of the rate); a block is booked only when a
request needs it.

Why it never fails a request: the database being away while the pass talks to Google must not turn
into calendar failures. The pace then falls back to this worker's own limiter at the same rate (the
limit as it was before it was shared) and says so once in the logs.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from worker import logs
from worker.db import DatabaseError, DatabaseUnavailable, Gateway
from worker.records import Booking
from worker.retry import RateLimiter

#: Seconds of the rate one booking takes.
BLOCK_SECONDS = 0.5
#: How far ahead the schedule may be booked before a booking waits instead (seconds).
LOOKAHEAD_SECONDS = 2.0
#: How long a booking may wait for a database that is away before the pace falls back (seconds).
PATIENCE = 5.0


class SharedPace:
    """At most ``rate`` requests a second under ``name``, over every worker that books there.

    Thread-safe: the calendar's threads call :meth:`acquire` before each request. The connection is
    opened (``open_gateway``) on the first booking, used under the lock only, and closed by
    :meth:`close`.
    """

    def __init__(self, open_gateway: Callable[[], Gateway], name: str, rate: float, *,
                 block_seconds: float = BLOCK_SECONDS, lookahead_seconds: float = LOOKAHEAD_SECONDS,
                 patience: float = PATIENCE) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.name = name
        self.rate = rate
        self.block = max(1, math.ceil(rate * block_seconds))
        self.lookahead_seconds = lookahead_seconds
        self.patience = patience
        self.bookings = 0
        self.round_trips = 0
        self._open = open_gateway
        self._gateway: Gateway | None = None
        self._fallback: RateLimiter | None = None
        self._lock = threading.Lock()
        self._start = 0.0  # time.monotonic() of the current block's first slot
        self._step = 1.0 / rate
        self._taken = 0  # slots of the current block handed out
        self._size = 0  # slots in the current block

    def acquire(self, n: float = 1) -> float:
        """Wait for this request's slot; returns the seconds waited (``n`` is one request)."""
        with self._lock:
            while self._fallback is None and self._taken >= self._size:
                self._book()
            fallback = self._fallback
            if fallback is None:
                slot = self._start + self._taken * self._step
                self._taken += 1
        if fallback is not None:
            return fallback.acquire()
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return max(delay, 0.0)

    def _book(self) -> None:
        """One booking (under the lock): a new block, a wait, or the fallback."""
        try:
            if self._gateway is None:
                self._gateway = self._open()
            booking: Booking = self._gateway.book_sends(self.name, self.block, self.rate,
                                                        lookahead_seconds=self.lookahead_seconds,
                                                        patience=self.patience)
        except (DatabaseError, DatabaseUnavailable) as exc:
            logs.event("pace.fallback", logging.WARNING, schedule=self.name, rate=self.rate,
                       reason=f"cannot book on the shared schedule: {exc}")
            self._fallback = RateLimiter(self.rate, window=1.0)
            return
        self.bookings += 1
        if booking.wait is not None or booking.send_in is None:
            time.sleep(min(max(booking.wait or 0.0, 0.01), 1.0))  # others wait on the lock meanwhile
            return
        self._start = booking.answered_at + booking.send_in
        self._step = 1.0 / (booking.rate or self.rate)
        self._taken, self._size = 0, self.block

    def close(self) -> None:
        """Close the connection; ``round_trips`` keeps what it cost."""
        with self._lock:
            if self._gateway is not None:
                self.round_trips = self._gateway.round_trips
                try:
                    self._gateway.close()
                finally:
                    self._gateway = None
