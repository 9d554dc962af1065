"""`python worker/main.py serve` as a real process, called over real HTTP, against a real database.

What pg_cron + pg_net rely on: a bearer-guarded POST /run that answers at once and runs one pass at
a time, probes that tell liveness from readiness, and a SIGTERM that lets the pass in flight finish.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import pytest

from standins.expo import ExpoStandIn
from tests import seed
from tests.acceptance.cli import MAIN, ROOT, clean_env, worker

TOKEN = "serve-test-token-7f3a9c1e5b2d4f60"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    http: httpx.Client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def serving(env: dict[str, str], tmp_path: Path) -> Iterator[Serve]:
    """Start serve on a free port, wait until /healthz answers, stop it (kill if need be) after."""
    port = free_port()
    log_path = tmp_path / f"serve-{port}.log"
    log: IO[bytes] = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, MAIN, "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as http:
            server = Serve(proc, f"http://127.0.0.1:{port}", log_path, http)

            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"serve exited with {proc.returncode}:\n{server.log()}")
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(up, 20, "serve to answer /healthz")
            yield server
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        log.close()


def _env(db_url: str, expo: ExpoStandIn, **extra: str) -> dict[str, str]:
    return clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, WORKER_TRIGGER_TOKEN=TOKEN,
                     PUSH_RETRY_WAIT="0", **extra)


def _outcome(server: Serve, run_id: str, timeout: float = 20) -> dict[str, Any]:
    doc: dict[str, Any] = {}

    def settled() -> bool:
        nonlocal doc
        answer = server.http.get(f"/runs/{run_id}", headers=AUTH)
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        return bool(doc["status"] != "running")

    wait_for(settled, timeout, f"run {run_id} to settle")
    return doc


def test_trigger_without_the_right_bearer_is_refused_and_runs_nothing(
        db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn, tmp_path: Path) -> None:
    seed.add_due_reminders(db, 5, datetime.now(UTC), users=5)
    with serving(_env(db_url, expo), tmp_path) as server:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
            answer = server.http.post("/run", headers=headers, json={})
            assert answer.status_code == 401, (headers, answer.text)
            assert "error" in answer.json()
        assert server.http.get("/runs/anything").status_code == 401
        time.sleep(0.5)
        assert seed.statuses(db) == {"pending": 5}
        assert expo.messages == []
        log = server.log()
        assert "serve.run_started" not in log
        assert TOKEN not in log
        assert "wrong-token" not in log


def test_single_flight_then_outcome_and_probes(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn,
                                               tmp_path: Path) -> None:
    seed.add_due_reminders(db, 20, datetime.now(UTC), users=5)
    expo.latency = 2.0
    with serving(_env(db_url, expo), tmp_path) as server:
        first = server.http.post("/run", headers=AUTH, json={})
        assert first.status_code == 202, first.text
        run_id = first.json()["run_id"]
        assert first.json() == {"run_id": run_id, "status": "running"}

        second = server.http.post("/run", headers=AUTH, json={})
        assert second.status_code == 409, second.text
        assert second.json()["run_id"] == run_id

        running = server.http.get(f"/runs/{run_id}", headers=AUTH).json()
        assert running["status"] == "running"
        assert server.http.get("/healthz").status_code == 200  # answers while a pass runs

        done = _outcome(server, run_id)
        assert done["status"] == "succeeded", done
        assert done["exit_code"] == 0
        assert done["error"] is None
        assert done["counts"]["sent"] == 20
        assert done["duration"] >= 2.0
        assert done["started_at"]
        assert server.http.get("/runs/no-such-run", headers=AUTH).status_code == 404

        ready = server.http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        # Idle again: a new trigger starts a new pass.
        expo.latency = 0.0
        third = server.http.post("/run", headers=AUTH, json={})
        assert third.status_code == 202
        assert third.json()["run_id"] != run_id
        assert _outcome(server, third.json()["run_id"])["status"] == "succeeded"
    assert len(expo.messages) == 20
    assert seed.statuses(db) == {"sent": 20}
    assert TOKEN not in server.log()
    assert "authorization" not in server.log().lower()


def test_readyz_is_503_while_the_database_is_unreachable(expo: ExpoStandIn, tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there any more
    env = _env(f"postgresql://worker:hunter2-secret@127.0.0.1:{closed}/postgres", expo)
    with serving(env, tmp_path) as server:
        assert server.http.get("/healthz").status_code == 200
        ready = server.http.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "unavailable"
        started = server.http.post("/run", headers=AUTH, json={})
        assert started.status_code == 202
        failed = _outcome(server, started.json()["run_id"])
        assert failed["status"] == "failed"
        assert failed["exit_code"] == 1
        assert "database" in failed["error"]
        assert "hunter2-secret" not in server.log()
        assert "hunter2-secret" not in ready.text + failed["error"]


def test_sigterm_lets_the_pass_in_flight_finish(db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn,
                                                tmp_path: Path) -> None:
    seed.add_due_reminders(db, 20, datetime.now(UTC), users=5)
    expo.latency = 2.0
    with serving(_env(db_url, expo, WORKER_SHUTDOWN_GRACE="30"), tmp_path) as server:
        assert server.http.post("/run", headers=AUTH, json={}).status_code == 202
        wait_for(lambda: seed.statuses(db).get("sending", 0) > 0, 10, "the pass to claim reminders")
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.TransportError):  # stopped accepting while the pass goes on
            server.http.post("/run", headers=AUTH, json={})
        assert server.proc.wait(timeout=20) == 0, server.log()
        log = server.log()
    assert seed.statuses(db) == {"sent": 20}  # finished, nothing left in 'sending'
    assert len(expo.messages) == 20
    assert "serve.waiting_for_pass" in log
    assert "serve.stopped" in log


def test_serve_refuses_to_start_without_a_trigger_token(db_url: str, expo: ExpoStandIn) -> None:
    env = clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url)
    done = worker("serve", "--port", str(free_port()), env=env, timeout=30)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "WORKER_TRIGGER_TOKEN" in lines[0]
