"""One Expo limit for every worker of the database (PUSH_RATE_LIMIT).

Expo allows a number of notifications a second per project, however many workers send them. Each
claim books its messages' sends on one schedule in Postgres (worker.send_schedule, on the
database's clock) and each worker sends its requests at their slots; so one worker, or several
at once (two `run --loop` replicas, a CronJob pass overlapping a pg_cron one), never put more than
the limit into any one-second window at Expo, and together they still use most of it.

Counted where Expo would count: at the stand-in, by arrival time of each accepted message.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from standins.expo import ExpoStandIn
from tests import seed
from tests.acceptance.cli import MAIN, ROOT, clean_env, passes_at_once, summary_of
from worker.db.postgres import PostgresGateway

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
LIMIT = 200


@pytest.mark.parametrize("workers", [1, 3])
def test_workers_together_never_exceed_the_limit_in_any_second_and_use_most_of_it(
        workers: int, db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn, tmp_path: Path) -> None:
    due = 900
    seed.add_due_reminders(db, due, NOW)
    expo.latency = 0.05
    env = clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0", WORKER_BATCH_SIZE="100",
                    PUSH_RATE_LIMIT=str(LIMIT))
    codes, outputs = passes_at_once(workers, env, NOW, tmp_path)
    assert codes == [0] * workers, outputs

    assert len(expo.messages) == due
    assert max(Counter(m["data"]["reminder_id"] for m in expo.messages).values()) == 1
    assert seed.statuses(db) == {"sent": due}
    assert sum(int(summary_of(out)["sent"]) for out in outputs) == due
    # Never above the limit in any one-second window, the first second included (no full bucket).
    assert expo.max_messages_in_any_window(1.0) <= LIMIT, expo.messages_per_second()
    per_second = expo.messages_per_second()
    assert max(per_second.values()) <= LIMIT
    # ... and most of it used: the arrivals span about due / limit seconds, not much more.
    times = sorted(expo.message_times)
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved >= 0.85 * LIMIT, (achieved, per_second)


def test_a_claim_on_a_schedule_booked_far_ahead_waits_instead_of_leasing_rows(
        db: psycopg.Connection[Any], db_url: str) -> None:
    seed.add_due_reminders(db, 10, NOW)
    db.execute("INSERT INTO worker.send_schedule (name, next_free_at) VALUES ('expo', clock_timestamp() + interval '5 s')"
               " ON CONFLICT (name) DO UPDATE SET next_free_at = excluded.next_free_at")
    with PostgresGateway(db_url) as gateway:
        answer = gateway.claim_reminders(NOW, uuid.uuid4(), 100, 300, rate=100.0, lookahead_seconds=2.0)
        assert answer.rows == []
        assert answer.wait is not None and 2.5 < answer.wait <= 3.0  # 5 s booked, 2 s may be ahead
        assert seed.statuses(db) == {"pending": 10}  # nothing leased while it waits

        unlimited = gateway.claim_reminders(NOW, uuid.uuid4(), 100, 300, rate=0.0)
        assert len(unlimited.rows) == 10 and unlimited.wait is None and unlimited.send_in is None


def test_a_claim_books_one_slot_a_message_after_what_others_booked(db: psycopg.Connection[Any], db_url: str) -> None:
    seed.add_due_reminders(db, 30, NOW, users=30)
    with PostgresGateway(db_url) as first, PostgresGateway(db_url) as second:
        a = first.claim_reminders(NOW, uuid.uuid4(), 10, 300, rate=10.0, lookahead_seconds=5.0)
        b = second.claim_reminders(NOW, uuid.uuid4(), 10, 300, rate=10.0, lookahead_seconds=5.0)
        assert (len(a.rows), len(b.rows)) == (10, 10)
        assert a.send_in is not None and b.send_in is not None and a.rate == b.rate == 10.0
        # b's first slot is a's ten messages (one second at 10/s) after a's first slot.
        start_a, start_b = a.answered_at + a.send_in, b.answered_at + b.send_in
        assert 0.9 <= start_b - start_a <= 1.1
        c = first.claim_reminders(NOW, uuid.uuid4(), 10, 300, rate=10.0, lookahead_seconds=0.5)
        assert c.rows == [] and c.wait is not None and c.wait > 1.0  # booked ~2 s ahead, 0.5 s allowed


def test_a_schedule_booked_further_ahead_than_any_claim_could_is_reset(
        db: psycopg.Connection[Any], db_url: str) -> None:
    """The database's clock set back (a restore, a failover to a host whose clock lagged): a slot
    a day ahead would stop every worker for a day; it is taken for a clock change and reset."""
    seed.add_due_reminders(db, 5, NOW)
    db.execute("INSERT INTO worker.send_schedule (name, next_free_at) VALUES ('expo', clock_timestamp() + interval '1 day')"
               " ON CONFLICT (name) DO UPDATE SET next_free_at = excluded.next_free_at")
    with PostgresGateway(db_url) as gateway:
        answer = gateway.claim_reminders(NOW, uuid.uuid4(), 100, 300, rate=100.0)
    assert len(answer.rows) == 5 and answer.send_in is not None and answer.send_in < 0.5
    booked = db.execute("SELECT next_free_at - clock_timestamp() FROM worker.send_schedule WHERE name = 'expo'").fetchone()
    assert booked is not None and booked[0] < timedelta(seconds=1)


def test_deleting_reminders_forgets_their_tickets(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn) -> None:
    """push_tickets lost its foreign key (it cost every outcome write a lookup); a statement
    trigger on reminders deletes the tickets of deleted rows instead."""
    seed.add_due_reminders(db, 20, NOW)
    env = clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0")
    done = subprocess.run([sys.executable, MAIN, "run", "--now", NOW.isoformat()], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    count = "SELECT count(*) FROM worker.push_tickets"
    assert db.execute(count).fetchone() == (20,)
    db.execute("DELETE FROM public.reminders WHERE id IN (SELECT id FROM public.reminders LIMIT 5)")
    assert db.execute(count).fetchone() == (15,)
    orphans = db.execute("SELECT count(*) FROM worker.push_tickets t WHERE NOT EXISTS "
                         "(SELECT 1 FROM public.reminders r WHERE r.id = t.reminder_id)").fetchone()
    assert orphans == (0,)
