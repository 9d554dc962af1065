"""The seed's Python API: ``from worker.main import ReminderWorker``.

::

    worker = ReminderWorker()                      # reads the environment `run` reads
    await worker.process_events()                  # the events step of a pass
    await worker.process_push_notifications()      # the push step, then the receipts step
    await worker.run_once()                        # a whole pass, recorded in worker_runs
    events = await worker._get_pending_events()    # the seed's health check

Thin over the code ``python worker/main.py run`` runs: each call opens its own gateway (and
calendar client when Google is configured, Expo client for pushes) the way ``run`` does, runs the
same synchronous steps in a worker thread (:func:`asyncio.to_thread`), closes what it opened, and
returns a :class:`StepReport`. Cancelling the ``await`` does not stop the thread: the steps finish
what they claimed, as a pass does.

What a call may meet for the whole call is answered the way a pass answers it: Expo or Google
failing for the whole call gives ``exit_code`` 1 and the reason in ``error`` (what could not be done
is recorded for retry). ``run_once`` never raises for what a pass may meet (exit codes as ``run``).
``process_events``, ``process_push_notifications`` and ``_get_pending_events`` let the database's
exceptions through (:class:`worker.db.DatabaseUnavailable`, :class:`~worker.db.DatabaseError`,
:class:`~worker.db.SchemaOutdated`) and :class:`~worker.config.ConfigError` (e.g. the database
refused the credentials), so a caller sees what is wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from worker import logs
from worker.config import Settings
from worker.db import DEFAULT_PATIENCE, Gateway, open_gateway
from worker.steps.context import Degraded, PassAborted, PassClock, PassCounts, PassResult
from worker.vocabulary import ErrorKind

if TYPE_CHECKING:
    from typing import TypeAlias

    from worker.steps.events import CalendarPort

    #: The steps one call runs, given what they share: the gateway, the clock, the counts, and
    #: where whole-call problems that let the call go on are noted.
    _Steps: TypeAlias = Callable[[Gateway, PassClock, PassCounts, Degraded], None]

__all__ = ["ReminderWorker", "StepReport"]

EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(frozen=True, slots=True)
class StepReport:
    """What one call did.

    ``counts``: the pass's summary counts (every key of :class:`worker.steps.context.PassCounts`,
    0 where the call had nothing to do). ``exit_code``: what ``run`` would exit with (0 done,
    per-row failures live in the rows; 1 a dependency failed for the whole call; 2, ``run_once``
    only, the configuration or the schema). ``error`` and ``error_kind`` (a vocabulary word) say
    why when it is not 0; they never hold a secret.
    """

    counts: dict[str, int]
    exit_code: int = EXIT_OK
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    @classmethod
    def of(cls, result: PassResult) -> StepReport:
        return cls(asdict(result.counts), result.exit_code, result.error,
                   result.error_kind.value if result.error_kind else None)


class ReminderWorker:
    """The worker as the seed's scripts use it; see the module's documentation."""

    def __init__(self, env: Mapping[str, str] | None = None, *, configure_logging: bool = True) -> None:
        """Read and check the settings from ``env`` (default: ``os.environ``), as the CLI does.

        Raises :class:`worker.config.ConfigError` naming the variable that is invalid, or
        ``DATABASE_URL`` when no database is configured (never a local fallback). With
        ``configure_logging`` (the default) log lines go to stderr as ``LOG_LEVEL`` and
        ``LOG_FORMAT`` say, like the CLI's; the configured secrets are scrubbed from them either way.
        """
        settings = Settings.from_env(env)
        settings.require_database()
        if configure_logging:
            logs.setup(settings.log.level, settings.log.format)
        for secret in (settings.database.url, settings.database.supabase_key, settings.google.client_secret,
                       settings.expo.access_token, settings.serve.trigger_token):
            logs.register_secret(secret)
        self.settings = settings

    # --- the seed's API -------------------------------------------------------------------------

    async def run_once(self, now: datetime | None = None) -> StepReport:
        """One whole pass (events, pushes, receipts), recorded in worker_runs: ``run --now``."""
        return await asyncio.to_thread(self._run_once, _instant(now))

    async def process_events(self, now: datetime | None = None) -> StepReport:
        """The events step alone: calendar entries, reminders planned, events synced."""
        return await asyncio.to_thread(self._steps, "events", _instant(now), self._events)

    async def process_push_notifications(self, now: datetime | None = None) -> StepReport:
        """The push step, then the receipts step: due reminders sent, receipts checked."""
        return await asyncio.to_thread(self._steps, "push", _instant(now), self._push)

    async def _get_pending_events(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The events waiting for the events step, soonest first, at most ``limit``: ``id``,
        ``user_id``, ``title``, ``start_ts``, ``end_ts``, ``status``, ``attempts``,
        ``next_attempt_at``, ``error_message`` (times as ISO 8601 text). Read-only
        (sql/functions/public.worker_pending_events.sql)."""
        return await asyncio.to_thread(self._pending_events, limit)

    # --- in the worker thread -------------------------------------------------------------------

    def _run_once(self, now: datetime | None) -> StepReport:
        from worker.passes import run_pass  # lazy (the Expo SDK, Google): keeps cold start small

        with open_gateway(self.settings.database) as gateway:
            calendar = self._calendar()
            try:
                result = run_pass(self.settings, gateway, now=now, calendar=calendar,
                                  trigger=str(self.settings.passes.trigger or "manual"))
            finally:
                if calendar is not None:
                    calendar.close()
        return StepReport.of(result)

    def _steps(self, name: str, now: datetime | None, steps: _Steps) -> StepReport:
        """Run ``steps`` as a pass runs them, and answer whole-call failures as a pass does."""
        clock = PassClock(now, lease_seconds=self.settings.passes.lease_seconds)
        counts, degraded = PassCounts(), Degraded()
        logs.event("api.start", call=name, now=clock.start.isoformat())
        with open_gateway(self.settings.database) as gateway:
            # run_pass's first call: is the database there (briefly), and is its schema this code's?
            gateway.schema_version(patience=DEFAULT_PATIENCE)
            try:
                steps(gateway, clock, counts, degraded)
                problem = degraded.first()
            except PassAborted as exc:  # what stopped the call is its error, as in run_pass
                problem = exc.kind, str(exc)
        report = StepReport(asdict(counts), EXIT_OK if problem is None else EXIT_FAILED,
                            None if problem is None else logs.sanitize(problem[1]),
                            None if problem is None else problem[0].value)
        logs.event("api.summary", logging.INFO if report.ok else logging.ERROR, call=name,
                   exit_code=report.exit_code, error=report.error, error_kind=report.error_kind,
                   duration_s=round(clock.elapsed(), 3), **report.counts)
        return report

    def _events(self, gateway: Gateway, clock: PassClock, counts: PassCounts, degraded: Degraded) -> None:
        from worker.steps.events import events_step  # lazy: keeps cold start small

        calendar = self._calendar()
        try:
            calendar_error = events_step(gateway, self.settings.passes, clock, counts, calendar)
        finally:
            if calendar is not None:
                calendar.close()
        if calendar_error is not None:
            degraded.add(ErrorKind.GOOGLE_UNAVAILABLE,
                         f"Google Calendar unavailable for the whole pass: {calendar_error}")

    def _push(self, gateway: Gateway, clock: PassClock, counts: PassCounts, degraded: Degraded) -> None:
        from worker.clients.expo import pusher_from_settings  # lazy (the Expo SDK): keeps cold start small
        from worker.steps.push import push_step  # lazy: keeps cold start small
        from worker.steps.receipts import receipts_step  # lazy: keeps cold start small

        settings = self.settings
        pusher = pusher_from_settings(settings.expo)
        try:
            push_step(gateway, pusher, settings.passes, settings.expo, clock, counts, degraded)
            receipts_step(gateway, pusher, settings.passes, settings.expo, clock, counts, degraded)
        finally:
            pusher.close()

    def _pending_events(self, limit: int) -> list[dict[str, Any]]:
        with open_gateway(self.settings.database) as gateway:
            doc = gateway.call("worker_pending_events", patience=DEFAULT_PATIENCE, p_limit=limit)
        return [dict(event) for event in doc or []]

    def _calendar(self) -> CalendarPort | None:
        """The calendar client when Google is configured, else None (calendar sync off), as `run`."""
        from worker.steps.calendar import calendar_from_settings  # lazy (Google): keeps cold start small

        return calendar_from_settings(self.settings.google, self.settings.passes.reminder_offsets)


def _instant(now: datetime | None) -> datetime | None:
    """The pass's clock as ``run --now`` takes it: UTC where no offset is given."""
    if now is None:
        return None
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
