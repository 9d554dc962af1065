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
* ``GET /metrics`` (Prometheus text format) carries counters of the passes this process ran
  (:class:`worker.ops.metrics.PassMetrics`); serve is scraped and never pushes to a Pushgateway. It
  needs no bearer, like the probes: it holds counts and timestamps only.
* starlette and uvicorn are imported by this module only, which the CLI imports for ``serve`` only:
  ``run`` (a CronJob pod every minute) stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import threading
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker import logs
from worker.config import ConfigError, Settings
from worker.db import open_gateway
from worker.serve.runner import CalendarFactory, PassRunner

#: Readiness must answer well within a probe's timeout (deploy/serve.yaml: 5 s).
READY_TIMEOUT = 3.0
#: uvicorn's own drain of open HTTP requests; ours answer in milliseconds.
HTTP_DRAIN_SECONDS = 5

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
        with open_gateway(self._settings.database) as gateway:
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
    """The ASGI app: POST /run, GET /runs/{id}, GET /healthz, GET /readyz, GET /metrics."""
    if settings.serve.trigger_token is None:
        raise ConfigError("WORKER_TRIGGER_TOKEN", "is not set; serve refuses to start without it")
    token = str(settings.serve.trigger_token)
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

    async def metrics(request: Request) -> Response:
        # No bearer: counts and timestamps only, no secret and nothing about a parent. Giving the
        # scraper WORKER_TRIGGER_TOKEN would let whatever reads its configuration start passes.
        body, content_type = runner.metrics.exposition(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    return Starlette(routes=[
        Route("/run", run, methods=["POST"]),
        Route("/runs/{run_id}", run_status, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ])


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
    if settings.serve.trigger_token is None:
        raise ConfigError("WORKER_TRIGGER_TOKEN",
                          "is not set; serve refuses to start without the bearer secret POST /run demands")
    settings.require_database()
    grace = settings.serve.shutdown_grace

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
