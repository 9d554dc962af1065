"""The Postgres restart harness for fault tests (tests/pgserver.py).

Why: outage tests are only as good as the outage. These prove that a stop really cuts every
connection and refuses new ones, that a restart brings the server back on the *same* URL with the
committed data, and that a background outage happens when asked (time or predicate) and reports
its own failures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.pgserver import PgServer


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    with PgServer(tmp_path_factory.mktemp("pgserver")) as server:
        yield server


@pytest.fixture(autouse=True)
def running(pg: PgServer) -> None:
    """Every test starts with the shared server up, whatever the previous one did to it."""
    pg.start()


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def test_url_is_tcp_superuser_on_a_fixed_port(pg: PgServer) -> None:
    assert pg.url == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    assert pg.is_running()
    with _connect(pg.url) as conn:
        row = conn.execute("select inet_server_addr()::text, inet_server_port(), current_setting('is_superuser')")
        assert row.fetchone() == ("127.0.0.1/32", pg.port, "on")


def test_stopped_server_refuses_and_restart_serves_the_same_url(pg: PgServer) -> None:
    url = pg.url
    with _connect(url) as conn:
        conn.execute("create table if not exists kept (v int)")
        conn.execute("insert into kept values (42)")
        pg.stop()  # immediate: a crash as far as Postgres is concerned
        assert not pg.is_running()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    with pytest.raises(psycopg.OperationalError):
        _connect(url).close()
    pg.start()
    assert pg.is_running()
    assert pg.url == url
    with _connect(url) as conn:
        assert conn.execute("select v from kept").fetchall() == [(42,)]  # committed data survived


def test_fast_stop_and_restart_with_downtime(pg: PgServer) -> None:
    with _connect(pg.url) as conn:
        pg.stop("fast")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    assert not pg.is_running()
    pg.stop()  # stopping a stopped server is a no-op
    pg.start()
    started = time.monotonic()
    pg.restart(down_seconds=0.3)
    assert time.monotonic() - started >= 0.3
    with _connect(pg.url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    with pytest.raises(ValueError):
        pg.stop("never")


def test_outage_after_seconds(pg: PgServer) -> None:
    before = time.monotonic()
    outage = pg.outage_in_background(0.2, down_seconds=0.5)
    assert outage.went_down.wait(10)
    assert outage.down_at is not None and outage.down_at - before >= 0.2
    with pytest.raises(psycopg.OperationalError):
        _connect(pg.url).close()
    outage.join(timeout=30)
    assert not outage.is_alive()
    assert outage.came_up.is_set()
    assert outage.up_at is not None and outage.up_at - outage.down_at >= 0.5
    with _connect(pg.url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_outage_when_predicate_turns_true(pg: PgServer) -> None:
    trigger = threading.Event()
    outage = pg.outage_in_background(trigger.is_set, down_seconds=0.1)
    time.sleep(0.1)
    assert not outage.went_down.is_set()
    with _connect(pg.url) as conn:
        trigger.set()
        assert outage.went_down.wait(5)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("select 1")
    outage.join(timeout=30)
    with _connect(pg.url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_cancelled_outage_never_happens(pg: PgServer) -> None:
    outage = pg.outage_in_background(lambda: False, down_seconds=5)
    outage.cancel()
    outage.join(timeout=5)
    assert not outage.went_down.is_set()
    assert pg.is_running()


def test_outage_failures_surface_on_join(pg: PgServer) -> None:
    timed_out = pg.outage_in_background(lambda: False, down_seconds=0, wait_timeout=0.05)
    with pytest.raises(TimeoutError):
        timed_out.join(timeout=5)

    def broken() -> bool:
        raise RuntimeError("predicate blew up")

    with pytest.raises(RuntimeError, match="predicate blew up"):
        pg.outage_in_background(broken, down_seconds=0).join(timeout=5)
    assert pg.is_running()


def test_context_manager_stops_and_deletes(tmp_path: Path) -> None:
    with PgServer(tmp_path) as server:
        pending = server.outage_in_background(60.0, down_seconds=1)  # cancelled by the exit
        data_dir = server.data_dir
        assert (data_dir / "PG_VERSION").exists()
        with _connect(server.url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    assert not pending.is_alive()
    assert not pending.went_down.is_set()
    assert not server.is_running()
    assert not data_dir.exists()
    assert tmp_path.exists()
    with pytest.raises(psycopg.OperationalError):
        _connect(server.url).close()
    with pytest.raises(RuntimeError):
        server.start()
