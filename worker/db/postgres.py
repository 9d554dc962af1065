"""Direct Postgres transport (psycopg 3): one autocommit connection, one statement per call.

Every worker function is safe to call again after a lost connection (claims lapse by lease, writes
are guarded by the claim), so a call that fails on the network is retried on a fresh connection
before the pass gives up with :class:`DatabaseUnavailable`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import psycopg

from worker.db import DatabaseError, DatabaseUnavailable, Gateway, to_text

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_ATTEMPTS = 3


def connect(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection fit for Supabase's pooler too (no server-side prepared statements)."""
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10,
                               application_name="reminder-worker", prepare_threshold=None)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {_first_line(exc)}") from None
    return conn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class PostgresGateway(Gateway):
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn)
        return self._conn

    def _call(self, function: str, params: Mapping[str, Any]) -> Any:
        if not _NAME_RE.match(function) or not all(_NAME_RE.match(k) for k in params):
            raise DatabaseError(f"not a function or parameter name: {function}")
        args = ", ".join(f"{name} => %s" for name in params)
        sql = f"SELECT public.{function}({args})"
        values = [to_text(v) for v in params.values()]
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._connection().cursor() as cur:
                    cur.execute(sql.encode(), values)
                    row = cur.fetchone()
                return row[0] if row else None
            except psycopg.OperationalError as exc:
                self._drop()
                if attempt == _ATTEMPTS:
                    raise DatabaseUnavailable(f"{function}: {_first_line(exc)}") from None
                time.sleep(0.2 * attempt)
            except psycopg.Error as exc:
                raise DatabaseError(f"{function}: {_first_line(exc)}") from None
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        self._drop()
