"""`run --loop` as systemd runs it: SIGTERM ends the loop, but only after the pass in flight is done."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from standins.expo import ExpoStandIn
from tests import seed
from tests.acceptance.cli import MAIN, ROOT, clean_env, start_worker, summary_of, worker


def test_sigterm_stops_the_loop_after_the_pass_in_flight(db: psycopg.Connection[Any], db_url: str,
                                                          expo: ExpoStandIn, tmp_path: Path) -> None:
    seed.add_due_reminders(db, 20, datetime.now(UTC), users=5)
    expo.latency = 2.0  # the pass is still sending when the signal comes
    env = clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0")
    log_path = tmp_path / "loop.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, MAIN, "run", "--loop", "--interval", "1"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while seed.statuses(db).get("sending", 0) == 0:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the pass never claimed the reminders"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    output = log_path.read_text()
    assert seed.statuses(db) == {"sent": 20}  # the pass finished: nothing left in 'sending'
    assert len(expo.messages) == 20
    assert "loop.stopping" in output
    assert output.count('"pass.start"') == 1  # no new pass after the signal


def test_each_loop_pass_reports_its_own_database_round_trips(db: psycopg.Connection[Any], db_url: str,
                                                             expo: ExpoStandIn) -> None:
    """The summary line counts the round trips of its pass, not of every pass since the loop began."""
    env = clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0")
    once = summary_of(worker("run", env=env).stderr)["db_round_trips"]
    assert 0 < once < 20
    proc = start_worker("run", "--loop", "--interval", "1", env=env)
    try:
        deadline = time.monotonic() + 30
        while db.execute("SELECT count(*) FROM worker_runs").fetchone() < (4,):
            assert proc.poll() is None and time.monotonic() < deadline, "the loop stopped passing"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    trips = [json.loads(line)["db_round_trips"] for line in stderr.splitlines() if '"pass.summary"' in line]
    assert len(trips) >= 3, stderr
    assert set(trips) == {once}, trips  # idle passes cost the same each time: nothing carried over
