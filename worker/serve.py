"""``python worker/main.py serve``: the HTTP trigger that Supabase pg_cron + pg_net calls.

Why a server at all: on Supabase the natural clock is pg_cron, and the only way out of the database
is pg_net's fire-and-forget HTTP request. So a small long-lived process answers ``POST /run`` at once
(202, pg_net's 5 s timeout never matters) and runs the pass in a background thread.

Design points, each for a reason:

* Single flight per process: pg_cron fires every minute whether the last pass is done or not; a
  trigger that arrives while a pass runs answers 409 with that pass's id instead of piling up
  threads. (Passes in different pods may overlap; row claims with leases make that safe.)
* The bearer token is compared with :func:`hmac.compare_digest`, so response timing leaks nothing.
* SIGTERM: uvicorn stops listening and drains HTTP requests, but it knows nothing of our pass
  thread, so after uvicorn returns we wait for the pass ourselves (``WORKER_SHUTDOWN_GRACE``).
  A pass cut off anyway loses nothing (leases), but finishing is cheaper than a later takeover.
* starlette and uvicorn are imported lazily: ``run`` (a CronJob pod every minute) stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from worker import logs
from worker.config import ConfigError, Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from worker.passes import CalendarPort, PassResult

#: How many finished runs ``GET /runs/{id}`` can still answer for (oldest forgotten first).
REMEMBERED_RUNS = 100
#: Default seconds a SIGTERM waits for the pass in flight (env ``WORKER_SHUTDOWN_GRACE``).
DEFAULT_SHUTDOWN_GRACE = 60.0
#: Readiness must answer well within a probe's timeout (deploy/serve.yaml: 5 s).
READY_TIMEOUT = 3.0
#: uvicorn's own drain of open HTTP requests; ours answer in milliseconds.
HTTP_DRAIN_SECONDS = 5

CalendarFactory = Callable[[Settings], "CalendarPort | None"]


@dataclass
class RunRecord:
    """What ``GET /runs/{id}`` tells about one pass this process started."""

    run_id: str
    started_at: datetime
    status: str = "running"  # running | succeeded | failed
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
            record.status = "succeeded" if record.exit_code == 0 else "failed"
            self._current = None
        logs.event("serve.run_finished", 20 if record.exit_code == 0 else 40, run_id=record.run_id,
                   status=record.status, exit_code=record.exit_code)

    def _pass(self, trigger: str) -> PassResult:
        from worker.db import DatabaseUnavailable, open_gateway
        from worker.passes import PassResult, run_pass

        try:
            gateway = open_gateway(self.settings)
        except DatabaseUnavailable as exc:
            return PassResult(exit_code=1, error=f"database unavailable: {exc}")
        calendar = self.calendar_factory(self.settings) if self.calendar_factory is not None else None
        with gateway:
            return run_pass(self.settings, gateway, calendar=calendar, trigger=trigger)


class ReadinessProbe:
    """``gateway.schema_version()`` with a deadline, at most one check in flight.

    The call runs in a daemon thread (the gateway is synchronous). Not the loop's default executor:
    asyncio joins that at shutdown, so a check stuck on a black-holed database would hold up
    SIGTERM. And a probe that finds a check still in flight waits on that same check, so a hung
    database cannot make probes pile up threads.
    """

    def __init__(self, settings: Settings, timeout: float = READY_TIMEOUT) -> None:
        self._settings = settings
        self._timeout = timeout
        self._inflight: asyncio.Future[int] | None = None

    def _check(self) -> int:
        from worker.db import open_gateway

        with open_gateway(self._settings) as gateway:
            return int(gateway.schema_version(patience=0.0).get("version") or 0)

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[int]:
        future: asyncio.Future[int] = loop.create_future()

        def settle(value: int | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value or 0)

        def work() -> None:
            value: int | None = None
            error: BaseException | None = None
            try:
                value = self._check()
            except Exception as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: the server stopped meanwhile
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=work, name="readyz", daemon=True).start()
        return future

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, body)``; only the event loop's thread touches ``_inflight``, so no lock."""
        if self._inflight is None or self._inflight.done():
            self._inflight = self._start(asyncio.get_running_loop())
        try:
            version = await asyncio.wait_for(asyncio.shield(self._inflight), self._timeout)
        except TimeoutError:
            return False, {"status": "unavailable",
                           "error": f"database did not answer within {self._timeout:g} s"}
        except Exception as exc:  # DatabaseUnavailable, DatabaseError, anything: not ready, say why
            return False, {"status": "unavailable", "error": logs.scrub(str(exc)) or type(exc).__name__}
        return True, {"status": "ready", "schema_version": version}


def _bearer_ok(header: str | None, expected: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


def create_app(settings: Settings, runner: PassRunner, readiness: ReadinessProbe | None = None) -> Starlette:
    """The ASGI app: POST /run, GET /runs/{id}, GET /healthz, GET /readyz."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    if settings.trigger_token is None:
        raise ConfigError("WORKER_TRIGGER_TOKEN", "is not set; serve refuses to start without it")
    token = str(settings.trigger_token)
    probe = readiness or ReadinessProbe(settings)

    def unauthorized() -> Response:
        return JSONResponse({"error": "unauthorized: send Authorization: Bearer <WORKER_TRIGGER_TOKEN>"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})

    async def run(request: Request) -> Response:
        if not _bearer_ok(request.headers.get("authorization"), token):
            logs.event("serve.unauthorized", 30, path="/run",
                       client=request.client.host if request.client else None)
            return unauthorized()
        started, record = runner.trigger("http")
        if record is None:
            return JSONResponse({"error": "shutting down"}, status_code=503)
        if not started:
            logs.event("serve.run_busy", run_id=record.run_id)
            return JSONResponse({"run_id": record.run_id, "status": "running",
                                 "error": "a pass is already running in this process"}, status_code=409)
        return JSONResponse({"run_id": record.run_id, "status": "running"}, status_code=202,
                            headers={"Location": f"/runs/{record.run_id}"})

    async def run_status(request: Request) -> Response:
        if not _bearer_ok(request.headers.get("authorization"), token):
            return unauthorized()
        record = runner.get(str(request.path_params["run_id"]))
        if record is None:
            return JSONResponse({"error": "no such run in this process (only the last "
                                 f"{runner.remembered} are remembered)"}, status_code=404)
        return JSONResponse(record.as_json())

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        ready, doc = await probe.check()
        return JSONResponse(doc, status_code=200 if ready else 503)

    return Starlette(routes=[
        Route("/run", run, methods=["POST"]),
        Route("/runs/{run_id}", run_status, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ])


def shutdown_grace(env: dict[str, str] | None = None) -> float:
    """``WORKER_SHUTDOWN_GRACE``: seconds a SIGTERM waits for the pass in flight."""
    raw = (os.environ if env is None else env).get("WORKER_SHUTDOWN_GRACE", "").strip()
    if not raw:
        return DEFAULT_SHUTDOWN_GRACE
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError("WORKER_SHUTDOWN_GRACE", f"{raw!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise ConfigError("WORKER_SHUTDOWN_GRACE", f"{value:g} is outside 0..3600")
    return value


class _ToOurLog(logging.Handler):
    """uvicorn's own messages (startup, errors) as our JSON lines; its access log stays off."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
            if record.exc_info:
                fields["exception"] = logging.Formatter().formatException(record.exc_info)
            logs.event("uvicorn", record.levelno, **fields)
        except Exception:  # a log line must never take the server down
            self.handleError(record)


def _route_uvicorn_logs() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = False
        if name == "uvicorn":
            logger.addHandler(_ToOurLog())
            logger.setLevel(logging.INFO)
        elif name != "uvicorn.access":
            logger.propagate = True  # up to "uvicorn", whose handler forwards to ours


def run_server(settings: Settings, host: str, port: int,
               calendar_factory: CalendarFactory | None = None) -> int:
    """Serve until SIGTERM/SIGINT, then let the pass in flight finish; 0 when it did."""
    if settings.trigger_token is None:
        raise ConfigError("WORKER_TRIGGER_TOKEN",
                          "is not set; serve refuses to start without the bearer secret POST /run demands")
    settings.require_database()
    grace = shutdown_grace()

    import uvicorn

    runner = PassRunner(settings, calendar_factory=calendar_factory)
    app = create_app(settings, runner)
    signals_seen: list[int] = []

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Refuse new passes from the first signal on, before uvicorn even closes its sockets.
            runner.stop_accepting()
            if not self.should_exit:
                logs.event("serve.stopping", signal=signal.Signals(sig).name,
                           running=getattr(runner.running, "run_id", None), grace_s=grace)
            super().handle_exit(sig, frame)

    def _after_uvicorn(sig: int, _frame: FrameType | None) -> None:
        # uvicorn re-raises the signal it caught once it has stopped; this handler takes that (and
        # any later one) so the process is not killed while we wait for the pass thread.
        signals_seen.append(sig)

    previous = {s: signal.signal(s, _after_uvicorn) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        _route_uvicorn_logs()
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off", server_header=False,
                                timeout_graceful_shutdown=HTTP_DRAIN_SECONDS)
        server = _Server(config)
        logs.event("serve.start", host=host, port=port, grace_s=grace)
        server.run()
        if not server.started:
            logs.event("serve.failed_to_start", 40, host=host, port=port)
            return 1
        runner.stop_accepting()
        running = runner.running
        if running is not None:
            logs.event("serve.waiting_for_pass", run_id=running.run_id, grace_s=grace)
        if not runner.wait_idle(grace):
            logs.event("serve.grace_exceeded", 40, run_id=getattr(runner.running, "run_id", None),
                       grace_s=grace)
            return 1
        logs.event("serve.stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
