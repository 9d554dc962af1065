"""Optional Prometheus metrics: each pass pushes its counts and duration to a Pushgateway.

A batch job is not scraped (it is gone before the scraper comes), so it pushes. Off unless
``PROMETHEUS_PUSHGATEWAY_URL`` is set. ``pushadd`` (POST) rather than ``push`` (PUT): it replaces
only the metrics this push carries, so ``..._last_success_timestamp_seconds`` from the last good
pass survives a failing one, which is what a "no successful pass for 10 minutes" alert needs.
A failure to push is logged and never fails the pass.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from worker import logs

if TYPE_CHECKING:
    from worker.steps.context import PassResult

JOB = "reminder_worker"
PUSH_TIMEOUT_SECONDS = 5.0


def push_pass_metrics(url: str | None, result: PassResult, trigger: str) -> bool:
    """Push one pass's metrics to the Pushgateway at ``url`` (PROMETHEUS_PUSHGATEWAY_URL; None: off)
    on its own registry; returns whether the Pushgateway took them."""
    if not url:
        return False
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway  # only with a Pushgateway

    registry = CollectorRegistry()
    items = Gauge("reminder_worker_pass_items", "What the last pass did, by kind (the summary line's counts)",
                  ["kind"], registry=registry)
    for kind, value in asdict(result.counts).items():
        items.labels(kind=kind).set(value)
    Gauge("reminder_worker_pass_duration_seconds", "How long the last pass took",
          registry=registry).set(result.duration)
    Gauge("reminder_worker_pass_exit_code", "The last pass's exit code (0 ok, 1 failed, 2 configuration)",
          registry=registry).set(result.exit_code)
    info = Gauge("reminder_worker_pass_trigger", "What started the last pass", ["trigger"], registry=registry)
    info.labels(trigger=trigger).set(1)
    now = time.time()
    Gauge("reminder_worker_pass_last_run_timestamp_seconds", "When the last pass ended (Unix time)",
          registry=registry).set(now)
    if result.exit_code == 0:
        Gauge("reminder_worker_pass_last_success_timestamp_seconds", "When the last successful pass ended",
              registry=registry).set(now)
    try:
        pushadd_to_gateway(url, job=JOB, registry=registry, timeout=PUSH_TIMEOUT_SECONDS)
    except Exception as exc:  # metrics are a convenience; the pass's outcome stands
        logs.event("metrics.push_failed", 30, error=f"{type(exc).__name__}: {exc}")
        return False
    return True
