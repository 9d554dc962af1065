"""`run --loop` as systemd runs it: SIGTERM ends the loop, but only after the pass in flight is done."""

from __future__ import annotations

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
from tests.acceptance.cli import MAIN, ROOT, clean_env


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
