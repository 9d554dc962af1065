"""One pass: the events step, then the push step, then the receipts step. This module ties them
together and decides the pass's exit code; it decides nothing a step or the planner could decide.

A pass killed at any instant leaves claimed rows behind that a later pass takes over once their
lease runs out; only what was in flight at that instant can be sent twice (see worker.steps.push).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING

from worker import logs
from worker.clients.expo import ExpoPusher, pusher_from_settings
from worker.config import ConfigError
from worker.db import DEFAULT_PATIENCE, DatabaseError, DatabaseUnavailable, Gateway, SchemaOutdated
from worker.ops.history import record_pass
from worker.ops.metrics import push_pass_metrics
from worker.steps.context import Degraded, PassAborted, PassClock, PassResult
from worker.steps.events import CalendarPort, events_step
from worker.steps.push import push_step
from worker.steps.receipts import receipts_step
from worker.vocabulary import ErrorKind

if TYPE_CHECKING:
    from worker.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

__all__ = ["CalendarPort", "PassResult", "run_pass"]


def run_pass(
    settings: Settings,
    gateway: Gateway,
    *,
    now: datetime | None = None,
    pusher: ExpoPusher | None = None,
    calendar: CalendarPort | None = None,
    on_finish: Callable[[PassResult], None] | None = None,
    trigger: str = "manual",
) -> PassResult:
    """Run the events step, the push step, then the receipts step; never raises for what a pass may
    meet. The pass is recorded in worker_runs (``trigger``: cron|http|manual|loop) at the end."""
    clock = PassClock(now, lease_seconds=settings.passes.lease_seconds)
    result = PassResult(started_at=clock.start)
    trips_before = gateway.round_trips
    own_pusher = pusher is None
    degraded = Degraded()
    logs.event("pass.start", now=clock.start.isoformat(), trigger=trigger)
    try:
        # The first call: is the database there, and does its schema match this code?
        gateway.schema_version(patience=DEFAULT_PATIENCE)
        calendar_error = events_step(gateway, settings.passes, clock, result.counts, calendar)
        if pusher is None:
            pusher = pusher_from_settings(settings.expo)
        push_step(gateway, pusher, settings.passes, settings.expo, clock, result.counts, degraded)
        receipts_step(gateway, pusher, settings.passes, settings.expo, clock, result.counts,
                      degraded)  # after the sends: never delays one
        if calendar_error is not None:
            degraded.add(ErrorKind.GOOGLE_UNAVAILABLE,
                         f"Google Calendar unavailable for the whole pass: {calendar_error}")
        problem = degraded.first()
        if problem is not None:
            result.exit_code, result.error_kind, result.error = EXIT_FAILED, problem[0], problem[1]
    except ConfigError as exc:
        result.exit_code, result.error_kind, result.error = EXIT_CONFIG, ErrorKind.CONFIG, f"configuration error: {exc}"
    except SchemaOutdated as exc:
        result.exit_code, result.error_kind, result.error = EXIT_CONFIG, ErrorKind.SCHEMA, str(exc)
    except DatabaseUnavailable as exc:
        result.exit_code, result.error_kind = EXIT_FAILED, ErrorKind.DATABASE_UNAVAILABLE
        result.error = f"database unavailable: {exc}"
    except DatabaseError as exc:
        result.exit_code, result.error_kind, result.error = EXIT_FAILED, ErrorKind.CRASH, f"database error: {exc}"
    except PassAborted as exc:
        result.exit_code, result.error_kind, result.error = EXIT_FAILED, exc.kind, str(exc)
    except Exception as exc:  # the summary line must still be written
        logs.get().exception("pass.crashed")
        result.exit_code, result.error_kind = EXIT_FAILED, ErrorKind.CRASH
        result.error = f"unexpected error: {type(exc).__name__}: {exc}"
    finally:
        if own_pusher and pusher is not None:
            with contextlib.suppress(Exception):
                pusher.close()
    if result.error is not None:
        result.error = logs.sanitize(result.error)
    result.duration = clock.elapsed()
    result.db_round_trips = gateway.round_trips - trips_before
    level = logging.INFO if result.exit_code == EXIT_OK else logging.ERROR
    logs.event("pass.summary", level, exit_code=result.exit_code, error=result.error,
               error_kind=result.error_kind, duration_s=round(result.duration, 3),
               db_round_trips=result.db_round_trips, **asdict(result.counts))
    # Best effort, one call, prunes too; briefly only when the database was what failed.
    record_pass(gateway, settings.passes, result, clock.start, trigger,
                patience=1.0 if result.error_kind is ErrorKind.DATABASE_UNAVAILABLE else DEFAULT_PATIENCE)
    push_pass_metrics(settings.passes.pushgateway_url, result, trigger)
    if on_finish is not None:
        on_finish(result)
    return result
