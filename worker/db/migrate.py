"""``migrate``: bring a database's worker schema to what this code expects.

``sql/`` holds two kinds of files, applied in this order by every run, under one advisory lock
(two pods starting at once wait for each other):

1. ``bootstrap.sql``: what everything else relies on, created only where missing.
2. ``migrations/NNN_name.sql``: changes to tables, columns and indexes. Each is applied once, in its
   own transaction, and recorded in ``worker.schema_migrations`` with its checksum. An applied file
   that was changed afterwards is refused: the database runs the old text, so a change belongs in a
   new migration.
3. Definitions: ``views/``, ``functions/`` (one file per function), ``triggers.sql`` and
   ``security.sql``, re-applied in one transaction whenever their combined checksum differs from
   the one recorded, so the current truth of every function is one file; and ``vocabulary.sql``
   (the CHECK constraints of the status columns), which costs nothing when unchanged.

Migrations are written to be idempotent (they add only what is missing), because the worker moves
into databases that already have its tables; that also lets ``migrate`` repair a database where
something the worker needs was dropped by hand although recorded as applied (it runs them again,
and the definitions).

Running it twice changes nothing. ``lock_timeout`` keeps a migration from queueing behind the app's
long transactions while blocking everyone else: it fails with a clear message instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from worker.db import DatabaseError
from worker.db.postgres import connect
from worker.vocabulary import CONSTRAINED_COLUMNS, EventStatus, ReminderStatus, constraint_name

# An installed wheel carries sql/ as package data (worker/sql, see pyproject.toml); a checkout has it
# beside the package.
_PACKAGED_SQL = resources.files("worker") / "sql"
SQL_DIR = (_PACKAGED_SQL if isinstance(_PACKAGED_SQL, Path) and _PACKAGED_SQL.is_dir()
           else Path(__file__).resolve().parents[2] / "sql")
_FILE_RE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
LOCK_KEY = 0x5245_4D49  # "REMI"
LOCK_TIMEOUT = "10s"


class MigrationRefused(DatabaseError):
    """The database's recorded migrations do not match this code's: nothing was applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass
class MigrateResult:
    applied: list[str] = field(default_factory=list)
    definitions_applied: bool = False
    constraints_left_out: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # what was missing although recorded as applied


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The migration files, by number."""
    found = []
    for path in sorted((sql_dir / "migrations").glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if m is None:
            raise DatabaseError(f"sql/migrations/{path.name}: migration files are named NNN_description.sql")
        found.append(Migration(int(m.group(1)), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError("two migration files share a number")
    return found


def latest_version(sql_dir: Path = SQL_DIR) -> int:
    found = migrations(sql_dir)
    return found[-1].version if found else 0


def definition_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """The definitions, in the order they are applied: what is retired, views, functions, triggers,
    security."""
    # The worker schema's helpers before the public functions, which may call them (an SQL-language
    # body is checked when it is created).
    functions = sorted((sql_dir / "functions").glob("*.sql"), key=lambda p: (not p.name.startswith("worker."), p.name))
    return [sql_dir / "retired.sql", *sorted((sql_dir / "views").glob("*.sql")), *functions,
            sql_dir / "triggers.sql", sql_dir / "security.sql"]


def definitions_checksum(sql_dir: Path = SQL_DIR) -> str:
    digest = hashlib.sha256()
    for path in definition_files(sql_dir):
        digest.update(path.relative_to(sql_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def migrate(dsn: str, sql_dir: Path = SQL_DIR) -> MigrateResult:
    """Apply what is missing; returns what was done."""
    result = MigrateResult()
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                with conn.transaction():
                    conn.execute((sql_dir / "bootstrap.sql").read_bytes())
                pending = _pending(conn, sql_dir)
                for m in pending:
                    with conn.transaction():
                        conn.execute(m.path.read_bytes())
                        conn.execute(
                            "INSERT INTO worker.schema_migrations (version, filename, checksum) VALUES (%s, %s, %s)",
                            (m.version, m.name, m.checksum))
                    result.applied.append(m.name)
                missing = _missing(conn) if not pending else []
                if any(not m.endswith("()") for m in missing):
                    # Someone dropped a column the worker needs: migrations are idempotent (they
                    # only add what is missing), so running them again puts it back.
                    with conn.transaction():
                        for m in migrations(sql_dir):
                            conn.execute(m.path.read_bytes())
                    result.repaired = missing
                elif missing:
                    result.repaired = missing
                checksum = definitions_checksum(sql_dir)
                with conn.transaction():
                    if result.applied or missing or _definitions_stale(conn, checksum):
                        for path in definition_files(sql_dir):
                            conn.execute(path.read_bytes())
                        conn.execute("INSERT INTO worker.schema_definitions (checksum) VALUES (%s) "
                                     "ON CONFLICT (id) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
                                     (checksum,))
                        result.definitions_applied = True
                with conn.transaction():
                    conn.execute((sql_dir / "vocabulary.sql").read_bytes())
                    expected = [constraint_name(table, column) for table, column in CONSTRAINED_COLUMNS]
                    present = {str(name) for (name,) in conn.execute(
                        "SELECT conname FROM pg_constraint WHERE conname = ANY (%s)", (expected,)).fetchall()}
                    result.constraints_left_out = [name for name in expected if name not in present]
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except psycopg.errors.LockNotAvailable:
        raise DatabaseError(f"migration could not lock a table within {LOCK_TIMEOUT}: the app holds it in a long "
                            "transaction; try again when it is quieter") from None
    except psycopg.Error as exc:
        raise DatabaseError(f"migration failed: {str(exc).strip()}") from None
    return result


def _missing(conn: psycopg.Connection[Any]) -> list[str]:
    """Worker columns (``table.column``) and functions (``name()``) the database lacks although its
    migrations are recorded as applied (see sql/functions/public.worker_audit.sql)."""
    if not _function_exists(conn, "public.worker_audit"):
        return ["worker_audit()"]
    row = conn.execute(
        "SELECT public.worker_audit(%s, %s, %s) -> 'missing'",
        ([s.value for s in EventStatus], [s.value for s in ReminderStatus],
         [constraint_name(t, c) for t, c in CONSTRAINED_COLUMNS])).fetchone()
    return [str(m) for m in (row[0] if row and row[0] else [])]


def _definitions_stale(conn: psycopg.Connection[Any], checksum: str) -> bool:
    """Whether the definitions must be applied again: they changed, or the app added a column to
    profiles since security.sql last granted column by column."""
    row = conn.execute("SELECT checksum, profiles_columns FROM worker.schema_definitions").fetchone()
    if row is None or row[0] != checksum:
        return True
    if _function_exists(conn, "worker.profiles_columns"):
        current = conn.execute("SELECT worker.profiles_columns()").fetchone()
        return current is None or current[0] != row[1]
    return True


def _function_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regproc(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _pending(conn: psycopg.Connection[Any], sql_dir: Path) -> list[Migration]:
    """Migrations not yet applied, after checking that what was applied is what this code has."""
    recorded = {int(v): (str(f), str(c)) for v, f, c in conn.execute(
        "SELECT version, filename, checksum FROM worker.schema_migrations").fetchall()}
    known = {m.version: m for m in migrations(sql_dir)}
    for version, (filename, checksum) in sorted(recorded.items()):
        mine = known.get(version)
        if mine is None or mine.name != filename:
            raise MigrationRefused(
                f"the database records migration {filename}, which this version of reminder-worker does not have: "
                "it was set up by another (newer, or pre-release) version; deploy the matching worker, or restore "
                "a backup taken before it")
        if mine.checksum != checksum:
            raise MigrationRefused(
                f"sql/migrations/{filename} was changed after it was applied to this database: the database runs "
                "the old text; undo the edit and put the change in a new migration")
    return [m for v, m in sorted(known.items()) if v not in recorded]


def audit(dsn: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """What does not match between the database and ``sql/``, one sentence each (for ``check``)."""
    problems: list[str] = []
    with connect(dsn) as conn:
        try:
            _pending(conn, sql_dir)
        except MigrationRefused as exc:
            problems.append(str(exc))
        if _definitions_stale(conn, definitions_checksum(sql_dir)):
            problems.append("the worker's functions, triggers or grants differ from this code's, or profiles has "
                            "a column they do not cover yet: run `python worker/main.py migrate`")
    return problems
