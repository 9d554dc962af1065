"""Direct Postgres transport (psycopg 3): one autocommit connection, one statement per call.

One attempt per call: a network failure drops the connection and raises
:class:`~worker.db.DatabaseUnavailable`; the gateway decides whether to try again (on a fresh
connection). Parameters travel as text that Postgres casts to each parameter's declared type, so
one statement shape serves every worker function.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from worker import logs
from worker.config import ConfigError
from worker.db import DatabaseError, DatabaseUnavailable, Gateway, SchemaOutdated

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
# libpq's texts for a connection refused for who we are, not for the state of the server.
_REFUSED_MARKERS = ("password authentication failed", "no password supplied", "does not exist",
                    "no pg_hba.conf entry", "invalid connection option", "invalid dsn", "invalid URI")
# SQLSTATEs meaning "the worker's schema is not what this code calls": undefined function, table,
# column, object; a function whose parameters changed.
_SCHEMA_ERRORS = (pg_errors.UndefinedFunction, pg_errors.UndefinedTable, pg_errors.UndefinedColumn,
                  pg_errors.UndefinedObject, pg_errors.InvalidSchemaName)
# Errors worth another try besides lost connections: the server shutting down or restarting
# (57P01-57P03), too many connections (53300), serialization failures and deadlocks.
_TRANSIENT_ERRORS = (psycopg.OperationalError, pg_errors.AdminShutdown, pg_errors.CrashShutdown,
                     pg_errors.CannotConnectNow, pg_errors.TooManyConnections, pg_errors.SerializationFailure,
                     pg_errors.DeadlockDetected)


def connect(dsn: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A connection fit for Supabase's pooler too (no server-side prepared statements)."""
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10,
                               application_name="reminder-worker", prepare_threshold=None)
    except psycopg.OperationalError as exc:
        reason = _first_line(exc)
        if any(marker in reason for marker in _REFUSED_MARKERS):
            # Not weather: waiting will not change the answer. It is the configuration (exit 2).
            raise ConfigError("DATABASE_URL", f"the database refused the connection: {logs.scrub(reason)}") from None
        raise DatabaseUnavailable(f"cannot connect to the database: {reason}") from None
    return conn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def to_text(value: Any) -> str | None:
    """A JSON-ready parameter as text Postgres casts to the parameter's type: objects and lists of
    objects as JSON (jsonb), lists of strings as an array literal (uuid[], text[])."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value) + "}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


class PostgresGateway(Gateway):
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None

    def sibling(self) -> PostgresGateway:
        return PostgresGateway(self._dsn)

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
        try:
            with self._connection().cursor() as cur:
                cur.execute(sql.encode(), values)
                row = cur.fetchone()
            return row[0] if row else None
        except _SCHEMA_ERRORS as exc:
            raise SchemaOutdated(f"{function}: {_first_line(exc)}") from None
        except _TRANSIENT_ERRORS as exc:
            self._drop()
            raise DatabaseUnavailable(f"{function}: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise DatabaseError(f"{function}: {_first_line(exc)}") from None

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        self._drop()
