"""Prometheus metrics of the passes, in the two shapes a pass can run in.

* **One pass per process** (the CronJob's ``run``, a ``run`` by hand): a batch job is gone before the
  scraper comes, so each pass pushes *gauges of the last pass* to a Pushgateway
  (``PROMETHEUS_PUSHGATEWAY_URL``; off when unset), as one group ``job="reminder_worker"``.
  ``pushadd`` (POST) rather than ``push`` (PUT): it replaces only the metrics this push carries, so
  ``..._last_success_timestamp_seconds`` of the last good pass survives a failing one.
* **A long-lived process** (``serve``, ``run --loop``): *counters* of the passes it ran
  (:class:`PassMetrics`), plus the same last-pass gauges. ``serve`` exposes them at ``GET /metrics``
  and never pushes (its passes would be counted twice); ``run --loop`` pushes them to the Pushgateway
  under its own group, ``instance=<hostname>`` (the pod's name), so replicas do not overwrite
  each other.

What the alert rules read (``monitoring/alerts.rules.yaml``), the same expressions for every shape:

=====================================================  =======  ==============================================
``reminder_worker_items_total{kind}``                   counter  items of each kind (the summary line's counts)
``reminder_worker_passes_total{exit_code}``             counter  passes by exit code (0 ok, 1 failed, 2 config)
``reminder_worker_pass_items{kind}``                    gauge    what the last pass did
``reminder_worker_pass_last_run_timestamp_seconds``     gauge    when the last pass ended (Unix time)
``reminder_worker_pass_last_success_timestamp_seconds`` gauge    when the last pass with exit 0 ended; absent
                                                                 until one did
=====================================================  =======  ==============================================

The rules count items over a window as ``increase()`` of the counters where they exist and, for a
group that has only gauges (the CronJob's), as the sum of the last-pass gauges sampled once a minute
while they are fresh (their last run less than 5 minutes ago). ``kind`` takes the names of
:class:`worker.steps.context.PassCounts`' fields. A failure to push is logged and never fails the pass.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from dataclasses import asdict, fields
from typing import TYPE_CHECKING

from worker import logs
from worker.steps.context import PassCounts
from worker.vocabulary import RunTrigger

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge

    from worker.steps.context import PassResult

JOB = "reminder_worker"
PUSH_TIMEOUT_SECONDS = 5.0
#: The values of the ``kind`` label: the summary line's counts.
KINDS: tuple[str, ...] = tuple(f.name for f in fields(PassCounts))
#: The values of the ``exit_code`` label (see worker.passes).
EXIT_CODES = ("0", "1", "2")

# One help text per name: a Pushgateway refuses a push whose metric has another help or type than the
# same name in another group.
_HELP = {
    "reminder_worker_pass_items": "What the last pass did, by kind (the summary line's counts)",
    "reminder_worker_pass_duration_seconds": "How long the last pass took",
    "reminder_worker_pass_exit_code": "The last pass's exit code (0 ok, 1 failed, 2 configuration)",
    "reminder_worker_pass_trigger": "What started the last pass",
    "reminder_worker_pass_last_run_timestamp_seconds": "When the last pass ended (Unix time)",
    "reminder_worker_pass_last_success_timestamp_seconds": "When the last successful pass ended",
    "reminder_worker_items": "Items the passes of this process handled, by kind (the summary line's counts)",
    "reminder_worker_passes": "Passes this process ran, by exit code (0 ok, 1 failed, 2 configuration)",
}


class _LastPass:
    """The last-pass gauges, on a registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Gauge

        self._registry = registry
        self.items = Gauge("reminder_worker_pass_items", _HELP["reminder_worker_pass_items"], ["kind"],
                           registry=registry)
        self.duration = Gauge("reminder_worker_pass_duration_seconds",
                              _HELP["reminder_worker_pass_duration_seconds"], registry=registry)
        self.exit_code = Gauge("reminder_worker_pass_exit_code", _HELP["reminder_worker_pass_exit_code"],
                               registry=registry)
        self.trigger = Gauge("reminder_worker_pass_trigger", _HELP["reminder_worker_pass_trigger"], ["trigger"],
                             registry=registry)
        self.last_run = Gauge("reminder_worker_pass_last_run_timestamp_seconds",
                              _HELP["reminder_worker_pass_last_run_timestamp_seconds"], registry=registry)
        # Registered at the first successful pass only: before one, the series is absent (not 0, which
        # would read as "the last success was in 1970").
        self.last_success: Gauge | None = None

    def set(self, result: PassResult, trigger: str, now: float) -> None:
        for kind, value in asdict(result.counts).items():
            self.items.labels(kind=kind).set(value)
        self.duration.set(result.duration)
        self.exit_code.set(result.exit_code)
        self.trigger.clear()
        self.trigger.labels(trigger=trigger).set(1)
        self.last_run.set(now)
        if result.exit_code == 0:
            if self.last_success is None:
                from prometheus_client import Gauge

                self.last_success = Gauge("reminder_worker_pass_last_success_timestamp_seconds",
                                          _HELP["reminder_worker_pass_last_success_timestamp_seconds"],
                                          registry=self._registry)
            self.last_success.set(now)


def last_pass_registry(result: PassResult, trigger: str, now: float | None = None) -> CollectorRegistry:
    """One pass's gauges on a registry of their own: what a one-pass process pushes."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    _LastPass(registry).set(result, trigger, time.time() if now is None else now)
    return registry


class PassMetrics:
    """Counters of the passes one long-lived process ran, with the last pass's gauges.

    Every kind and exit code starts at 0, so ``increase()`` counts the first pass too; the gauges
    appear with the first pass, ``..._last_success_timestamp_seconds`` with the first good one. Thread-safe:
    ``serve`` observes from its pass thread while ``/metrics`` is read from the event loop.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self.items = Counter("reminder_worker_items", _HELP["reminder_worker_items"], ["kind"],
                             registry=self.registry)
        self.passes = Counter("reminder_worker_passes", _HELP["reminder_worker_passes"], ["exit_code"],
                              registry=self.registry)
        for kind in KINDS:
            self.items.labels(kind=kind)
        for code in EXIT_CODES:
            self.passes.labels(exit_code=code)
        # The last-pass gauges appear with the first pass: before it there is no last pass to tell of.
        self._last: _LastPass | None = None

    def observe(self, result: PassResult, trigger: str, now: float | None = None) -> None:
        with self._lock:
            for kind, value in asdict(result.counts).items():
                if value:
                    self.items.labels(kind=kind).inc(value)
            self.passes.labels(exit_code=str(result.exit_code)).inc()
            if self._last is None:
                self._last = _LastPass(self.registry)
            self._last.set(result, trigger, time.time() if now is None else now)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """``(body, content type)`` of ``GET /metrics``: the format the scraper's ``Accept`` asks for
        (Prometheus' text format 0.0.4 by default, OpenMetrics when asked)."""
        from prometheus_client.exposition import choose_encoder

        encode, content_type = choose_encoder(accept or "")
        with self._lock:
            return encode(self.registry), content_type


@functools.cache
def _loop() -> PassMetrics:
    """The counters of ``run --loop``'s passes (one process, many passes)."""
    return PassMetrics()


def instance_name() -> str:
    """The Pushgateway group of a ``run --loop`` process: its host name (in Kubernetes, the pod's)."""
    return socket.gethostname() or "unknown"


def push_pass_metrics(url: str | None, result: PassResult, trigger: str) -> bool:
    """Push one pass's metrics to the Pushgateway at ``url`` (PROMETHEUS_PUSHGATEWAY_URL; None: off);
    returns whether the Pushgateway took them.

    ``serve``'s passes (trigger ``http``) are never pushed: ``serve`` counts them itself
    (:class:`PassMetrics`, ``GET /metrics``) and is scraped. ``run --loop`` (trigger ``loop``) pushes
    its process's counters under ``instance=<hostname>``; any other pass pushes its gauges.
    """
    if not url or trigger == RunTrigger.HTTP:
        return False
    from prometheus_client import pushadd_to_gateway  # only with a Pushgateway

    grouping: dict[str, str] | None = None
    if trigger == RunTrigger.LOOP:
        loop = _loop()
        loop.observe(result, trigger)
        registry = loop.registry
        grouping = {"instance": instance_name()}
    else:
        registry = last_pass_registry(result, trigger)
    try:
        pushadd_to_gateway(url, job=JOB, registry=registry, grouping_key=grouping, timeout=PUSH_TIMEOUT_SECONDS)
    except Exception as exc:  # metrics are a convenience; the pass's outcome stands
        logs.event("metrics.push_failed", 30, error=f"{type(exc).__name__}: {exc}")
        return False
    return True
