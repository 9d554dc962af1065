"""Apply ``sql/`` to a database, in file-name order, each file once.

Applied files are recorded in ``worker.schema_migrations`` with a checksum; running migrate again
changes nothing. An advisory lock keeps two migrating processes (two pods starting at once) from
racing. Each file runs in its own transaction, so a failing file leaves nothing half-done.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from worker.db import DatabaseError
from worker.db.postgres import connect

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_FILE_RE = re.compile(r"^(\d+)_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x5245_4D49  # "REMI"

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS worker;
REVOKE ALL ON SCHEMA worker FROM PUBLIC;
CREATE TABLE IF NOT EXISTS worker.schema_migrations (
    version    integer PRIMARY KEY,
    filename   text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """The migration files, by number. Subfolders (e.g. ``sql/cron/``) are not migrations."""
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if m is None:
            raise DatabaseError(f"{path.name}: migration files are named NNN_description.sql")
        found.append(Migration(int(m.group(1)), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError("two migration files share a number")
    return sorted(found, key=lambda m: m.version)


def latest_version(sql_dir: Path = SQL_DIR) -> int:
    found = migrations(sql_dir)
    return found[-1].version if found else 0


def migrate(dsn: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply what is missing; returns the names of the files applied now."""
    applied_now: list[str] = []
    with connect(dsn, autocommit=False) as conn:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                conn.execute(_BOOTSTRAP.encode())
            for m in migrations(sql_dir):
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    row = conn.execute(
                        "SELECT checksum FROM worker.schema_migrations WHERE version = %s", (m.version,)
                    ).fetchone()
                    if row is not None:
                        continue
                    conn.execute(m.path.read_bytes())
                    conn.execute(
                        "INSERT INTO worker.schema_migrations (version, filename, checksum) VALUES (%s, %s, %s)",
                        (m.version, m.path.name, m.checksum),
                    )
                    applied_now.append(m.path.name)
        except psycopg.Error as exc:
            raise DatabaseError(f"migration failed: {str(exc).strip()}") from None
    return applied_now


def changed_since_applied(dsn: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Files whose content differs from what was applied (someone edited an applied migration)."""
    with connect(dsn) as conn:
        rows = dict(conn.execute("SELECT version, checksum FROM worker.schema_migrations").fetchall())
    return [m.path.name for m in migrations(sql_dir) if m.version in rows and rows[m.version] != m.checksum]
