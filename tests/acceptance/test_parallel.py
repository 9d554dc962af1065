"""Several workers at once (pods of a CronJob, a Job with parallelism): each reminder goes out once.

Claims take rows with FOR UPDATE SKIP LOCKED under a lease, so three `run` processes started
together split the due reminders between them instead of sending any twice.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from standins.expo import ExpoStandIn
from tests import seed
from tests.acceptance.cli import clean_env, passes_at_once

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _sent(output: str) -> int:
    for line in reversed(output.splitlines()):
        if '"pass.summary"' in line:
            return int(json.loads(line)["sent"])
    raise AssertionError(f"no pass.summary in:\n{output}")


def test_three_workers_at_once_send_every_reminder_exactly_once(db: psycopg.Connection[Any], db_url: str,
                                                               expo: ExpoStandIn, tmp_path: Path) -> None:
    seed.add_due_reminders(db, 600, NOW)
    expo.latency = 0.1  # each Expo request takes a while, so the three passes overlap
    env = clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0", WORKER_BATCH_SIZE="100",
                    PUSH_CONCURRENCY="2")
    codes, outputs = passes_at_once(3, env, NOW, tmp_path)
    assert codes == [0, 0, 0], outputs
    assert len(expo.messages) == 600
    ids = Counter(m["data"]["reminder_id"] for m in expo.messages)
    assert len(ids) == 600
    assert max(ids.values()) == 1
    assert seed.statuses(db) == {"sent": 600}
    assert sum(_sent(out) for out in outputs) == 600
