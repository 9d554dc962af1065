"""Run history and retention: one ``public.worker_runs`` row per pass, pruning on the way.

Why in the database: the status view, operators with the service role and Supabase's dashboard
can all read it, with no log pipeline needed to answer "did the worker run, and how did it go?".
Recording is best effort: a pass that could not reach the database cannot record itself, and a
failure to record never changes the pass's exit code or hides its own error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from worker import logs
from worker.config import TRIGGERS, ConfigError, DatabaseSettings, PassSettings
from worker.db import Gateway, open_gateway
from worker.vocabulary import ErrorKind

if TYPE_CHECKING:
    from worker.steps.context import PassResult

#: Rows each retention delete may take per pass (oldest first): bounded work, quick catch-up.
PRUNE_LIMIT = 1000


def record_pass(gateway: Gateway, passes: PassSettings, result: PassResult, clock: datetime, trigger: str, *,
                patience: float = 10.0) -> None:
    """Record a finished pass (one call, which also prunes); log, never raise, on failure."""
    try:
        done = gateway.record_run(
            clock, started_at=clock, finished_at=clock + timedelta(seconds=result.duration), trigger=trigger,
            counts=asdict(result.counts), exit_code=result.exit_code,
            error=logs.sanitize(result.error) if result.error else None,
            error_kind=result.error_kind.value if result.error_kind else None, patience=patience,
            runs_retention_days=passes.worker_runs_retention_days,
            reminder_retention_days=passes.reminder_retention_days, prune_limit=PRUNE_LIMIT)
    except Exception as exc:  # the pass is over; its history must not change its outcome
        logs.event("history.record_failed", 30, error=f"{type(exc).__name__}: {exc}")
        return
    if done.get("runs_pruned") or done.get("reminders_pruned"):
        logs.event("history.pruned", runs=done.get("runs_pruned", 0), reminders=done.get("reminders_pruned", 0))


def record_config_failure(env: Mapping[str, str], error: str, trigger: str, now: datetime | None = None) -> bool:
    """Record a pass that exited 2 (invalid configuration), if the database can still be found.

    Only the database settings are read, so an invalid REMINDER_OFFSETS does not stop us from
    recording that it was invalid. Nothing is pruned: the retention settings may be what is wrong.
    Returns whether a row was written; never raises.
    """
    try:
        database: DatabaseSettings = DatabaseSettings.from_env(env)
    except ConfigError:
        return False
    if not database.configured:
        return False
    clock = now or datetime.now(UTC)
    try:
        with open_gateway(database) as gateway:
            gateway.record_run(clock, started_at=clock, finished_at=clock,
                               trigger=trigger if trigger in TRIGGERS else "manual", counts={}, exit_code=2,
                               error=logs.sanitize(error), error_kind=ErrorKind.CONFIG.value,
                               runs_retention_days=None, reminder_retention_days=None, patience=2.0)
    except Exception:  # best effort: the configuration error is what the operator must see
        return False
    return True
