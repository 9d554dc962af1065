"""sql/cron/schedule.sql on a real PostgreSQL 15 with pg_cron, end to end into a running `serve`.

pg_net and Supabase Vault are not available outside Supabase, so minimal stand-ins take their place:
``net.http_post`` with pg_net's real signature records its arguments, and ``vault.decrypted_secrets``
holds the two secrets. The job's own command text (as pg_cron stored it) is then executed, and the
request it would have sent is replayed against a real `serve` process: it must be accepted (202).

Needs the Debian packages postgresql-15 and postgresql-15-cron (scripts/ci-system-deps.sh installs
them); skipped only when those files are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from standins.expo import ExpoStandIn
from tests.acceptance.test_serve import AUTH, TOKEN, _env, _outcome, serving

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_CRON_CONTROL = Path("/usr/share/postgresql/15/extension/pg_cron.control")
PG_CRON_LIB = Path("/usr/lib/postgresql/15/lib/pg_cron.so")
SQL_DIR = Path(__file__).resolve().parents[2] / "sql" / "cron"
PORT = 5432  # only names the unix socket inside our own directory; no TCP listener

STAND_INS = """
CREATE SCHEMA net;
CREATE TABLE net.recorded_requests (
    id bigserial PRIMARY KEY, url text, body jsonb, params jsonb, headers jsonb, timeout_milliseconds int
);
-- pg_net's signature (https://github.com/supabase/pg_net, docs/api.md): same names, types, defaults.
CREATE FUNCTION net.http_post(
    url text,
    body jsonb DEFAULT '{}'::jsonb,
    params jsonb DEFAULT '{}'::jsonb,
    headers jsonb DEFAULT '{"Content-Type": "application/json"}'::jsonb,
    timeout_milliseconds int DEFAULT 1000
) RETURNS bigint LANGUAGE sql VOLATILE AS $$
    INSERT INTO net.recorded_requests (url, body, params, headers, timeout_milliseconds)
    VALUES (url, body, params, headers, timeout_milliseconds) RETURNING id
$$;
CREATE SCHEMA vault;
CREATE TABLE vault.decrypted_secrets (name text PRIMARY KEY, decrypted_secret text);
"""


def _require_pg_cron() -> None:
    missing = [str(p) for p in (PG_BIN / "postgres", PG_CRON_CONTROL, PG_CRON_LIB) if not p.exists()]
    if missing:
        pytest.skip("PostgreSQL 15 with pg_cron is not installed (missing " + ", ".join(missing)
                    + "); run scripts/ci-system-deps.sh")


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as `nobody` when we are root."""
    return ["runuser", "-u", "nobody", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def cron_pg() -> Iterator[str]:
    """A throwaway PG15 cluster with pg_cron preloaded, reachable only by its unix socket."""
    _require_pg_cron()
    root = Path(tempfile.mkdtemp(prefix="rw-pgcron-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
    try:
        subprocess.run(_as_owner([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                  "--no-sync", "-E", "UTF8"]),
                       check=True, capture_output=True, timeout=120)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nlisten_addresses = ''\nunix_socket_directories = '{root}'\nport = {PORT}\n"
                       "shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n"
                       "fsync = off\n")
        subprocess.run(_as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                                  "-w", "-t", "60", "start"]),
                       check=True, capture_output=True, timeout=90)
        try:
            yield f"host={root} port={PORT} user=postgres dbname=postgres"
        finally:
            subprocess.run(_as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           check=False, capture_output=True, timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cron_db(cron_pg: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(cron_pg, autocommit=True) as conn:
        conn.execute("DROP EXTENSION IF EXISTS pg_cron CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS net CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS vault CASCADE")
        conn.execute("CREATE EXTENSION pg_cron")
        conn.execute(STAND_INS.encode())
        yield conn


def _jobs(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT jobname, schedule, command, active FROM cron.job "
                        "WHERE jobname = 'reminder-worker'").fetchall()


def test_schedule_registers_a_job_whose_request_serve_accepts(
        cron_db: psycopg.Connection[Any], db_url: str, expo: ExpoStandIn, tmp_path: Path) -> None:
    with serving(_env(db_url, expo), tmp_path) as server:
        cron_db.execute("INSERT INTO vault.decrypted_secrets VALUES ('reminder_worker_url', %s), "
                        "('reminder_worker_token', %s)", (server.url + "/", TOKEN))
        schedule = (SQL_DIR / "schedule.sql").read_bytes()
        cron_db.execute(schedule)
        cron_db.execute(schedule)  # idempotent: still one job
        jobs = _jobs(cron_db)
        assert len(jobs) == 1
        name, when, command, active = jobs[0]
        assert (name, when, active) == ("reminder-worker", "* * * * *", True)
        assert TOKEN not in command  # the secret stays in the vault, not in cron.job

        # What pg_cron runs every minute, run once by hand.
        cron_db.execute("TRUNCATE net.recorded_requests")
        cron_db.execute(command.encode())
        recorded = cron_db.execute("SELECT url, body, params, headers, timeout_milliseconds "
                                   "FROM net.recorded_requests").fetchall()
        assert len(recorded) == 1
        url, body, params, headers, timeout_ms = recorded[0]
        assert url == server.url + "/run"
        assert headers == {**AUTH, "Content-Type": "application/json"}
        assert body == {}
        assert params == {}
        assert timeout_ms == 5000

        # ... and what pg_net would send with it, sent for real.
        with httpx.Client(timeout=5.0) as http:
            answer = http.post(url, headers=headers, json=body, params=params)
        assert answer.status_code == 202, answer.text
        assert _outcome(server, answer.json()["run_id"])["status"] == "succeeded"

    cron_db.execute((SQL_DIR / "unschedule.sql").read_bytes())
    assert _jobs(cron_db) == []
    cron_db.execute((SQL_DIR / "unschedule.sql").read_bytes())  # idempotent when already gone
