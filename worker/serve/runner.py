"""The passes ``serve`` starts: one at a time, in a background thread, remembered for a while.

pg_cron fires every minute whether the last pass is done or not; a trigger that arrives while a
pass runs gets that pass's id instead of piling up threads (single flight per process; passes in
different pods may overlap, and row claims with leases make that safe). ``GET /runs/{id}`` reads
what :class:`PassRunner` remembers.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from worker import logs
from worker.config import Settings
from worker.db import open_gateway
from worker.ops.metrics import PassMetrics
from worker.passes import CalendarPort, PassResult, run_pass
from worker.vocabulary import RunState

#: How many finished runs ``GET /runs/{id}`` can still answer for (oldest forgotten first).
REMEMBERED_RUNS = 100

CalendarFactory = Callable[[Settings], CalendarPort | None]


@dataclass
class RunRecord:
    """What ``GET /runs/{id}`` tells about one pass this process started."""

    run_id: str
    started_at: datetime
    status: RunState = RunState.RUNNING
    exit_code: int | None = None
    error: str | None = None
    counts: dict[str, int] | None = None
    duration: float | None = None
    trigger: str = "http"

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "status": self.status, "exit_code": self.exit_code, "error": self.error,
            "counts": self.counts, "started_at": self.started_at.isoformat(),
            "duration": None if self.duration is None else round(self.duration, 3), "trigger": self.trigger,
        }


@dataclass
class PassRunner:
    """Starts passes in a background thread, one at a time, and remembers the last few outcomes.

    ``run_pass_fn`` opens its own gateway per pass: a pass is minutes apart from the next, so a
    connection held open in between would only be one more thing to go stale.
    """

    settings: Settings
    calendar_factory: CalendarFactory | None = None
    remembered: int = REMEMBERED_RUNS
    #: Counters of the passes this process ran, for ``GET /metrics``.
    metrics: PassMetrics = field(default_factory=PassMetrics)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _runs: OrderedDict[str, RunRecord] = field(default_factory=OrderedDict)
    _current: RunRecord | None = None
    _thread: threading.Thread | None = None
    _accepting: bool = True

    def trigger(self, trigger: str = "http") -> tuple[bool, RunRecord | None]:
        """Start a pass unless one is running: ``(True, new)``, ``(False, running)`` or ``(False, None)``.

        ``(False, None)`` means the server is shutting down and takes no new work.
        """
        with self._lock:
            if self._current is not None:
                return False, self._current
            if not self._accepting:
                return False, None
            record = RunRecord(run_id=str(uuid.uuid4()), started_at=datetime.now(UTC), trigger=trigger)
            self._runs[record.run_id] = record
            while len(self._runs) > self.remembered:
                self._runs.popitem(last=False)
            self._current = record
            # daemon: the grace period, not the interpreter's exit, decides how long we wait for it.
            self._thread = threading.Thread(target=self._run, args=(record,),
                                            name=f"pass-{record.run_id[:8]}", daemon=True)
            self._thread.start()
        logs.event("serve.run_started", run_id=record.run_id, trigger=trigger)
        return True, record

    def get(self, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._runs.get(run_id)

    def stop_accepting(self) -> None:
        with self._lock:
            self._accepting = False

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the pass in flight; True when none is left running."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            return self._current is None

    @property
    def running(self) -> RunRecord | None:
        with self._lock:
            return self._current

    def _run(self, record: RunRecord) -> None:
        result: PassResult | None = None
        error: str | None = None
        try:
            result = self._pass(record.trigger)
        except BaseException as exc:  # the record must settle whatever happens in the thread
            logs.get().exception("serve.run_crashed", extra={"fields": {"run_id": record.run_id}})
            error = f"unexpected error: {type(exc).__name__}: {exc}"
        with self._lock:
            if result is not None:
                record.exit_code, record.error = result.exit_code, result.error
                record.counts = asdict(result.counts)
                record.duration = result.duration
            else:
                record.exit_code, record.error = 1, error
                record.duration = (datetime.now(UTC) - record.started_at).total_seconds()
            # Counted before the run reads as settled: whoever saw it settle finds it in /metrics.
            try:
                self.metrics.observe(result or PassResult(started_at=record.started_at, exit_code=1,
                                                          duration=record.duration or 0.0, error=error), record.trigger)
            except Exception:  # metrics are a convenience; the pass's outcome stands
                logs.get().exception("serve.metrics_failed", extra={"fields": {"run_id": record.run_id}})
            record.status = RunState.SUCCEEDED if record.exit_code == 0 else RunState.FAILED
            self._current = None
        logs.event("serve.run_finished", 20 if record.exit_code == 0 else 40, run_id=record.run_id,
                   status=record.status, exit_code=record.exit_code)

    def _pass(self, trigger: str) -> PassResult:
        calendar = self.calendar_factory(self.settings) if self.calendar_factory is not None else None
        try:
            with open_gateway(self.settings.database) as gateway:
                return run_pass(self.settings, gateway, calendar=calendar, trigger=trigger)
        finally:
            if calendar is not None:
                calendar.close()
