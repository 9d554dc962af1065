"""``supabase/migrations/`` and ``migrate``: one source of truth (``sql/``), one schema.

The committed Supabase CLI migration is what ``worker.db.supabase_cli.render()`` makes of ``sql/``
today; applied the way ``supabase db push`` applies a file (split by the CLI's statement splitter,
each statement over the extended protocol, all in one transaction) it builds the same catalog as
``migrate``: tables, columns, constraints, indexes, functions, views, triggers, row-level security,
policies, grants on schemas, tables, columns and functions, default privileges, and the worker's
bookkeeping rows. Either tool run after the other finds nothing to do. The snapshot is shown to
notice a single dropped policy, revoked grant or changed function, so its equality means something.

Real PostgreSQL with Supabase's roles and default privileges (``SUPABASE_LIKE``); no Supabase CLI
binary (none can be installed here): its splitter is reproduced below from its source.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.appdb import app_database
from tests.conftest import SUPABASE_LIKE
from worker.db import supabase_cli
from worker.db.migrate import (
    SQL_DIR,
    MigrateResult,
    MigrationRefused,
    definition_files,
    definitions_checksum,
    latest_version,
    migrate,
    migrations,
)
from worker.db.supabase_cli import COMMAND, TIMESTAMPS, committed_file, render, statements, target_file

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = ["public", "worker", "auth"]

Row = tuple[str | None, ...]
Snapshot = dict[str, list[Row]]


# --- the Supabase CLI's statement splitter ---------------------------------------------------------
# A transcription of supabase/cli pkg/parser (state.go, token.go: Split, SplitAndTrim): a state
# machine that cuts the file at every `;` outside quotes, dollar quotes, comments and parentheses
# (and after `ATOMIC` until `END`). `supabase db push` sends each piece as one statement.


class _Ready:
    def next(self, ch: str, data: str) -> _State | None:
        if ch == "$":
            return _Tag(len(data) - 1)
        if ch in "'\"":
            return _Quote(ch)
        if ch == "-":
            return _Comment()
        if ch == "/":
            return _Block()
        if ch == "\\":
            return _Escape()
        if ch == ";":
            return None
        if ch == "(":
            return _Atomic(self, ")")
        if ch in "cC" and data[-6:].upper() == "ATOMIC":
            return _Atomic(self, "END")
        return self


class _Comment:
    def next(self, ch: str, data: str) -> _State | None:
        return _Dollar("\n") if ch == "-" else _Ready().next(ch, data)


class _Block:
    def __init__(self) -> None:
        self.depth = 0

    def next(self, ch: str, data: str) -> _State | None:
        window = data[-2:]
        if window == "/*":
            self.depth += 1
            return self
        if self.depth == 0:
            return _Ready().next(ch, data)
        if window == "*/":
            self.depth -= 1
            if self.depth == 0:
                return _Ready()
        return self


class _Quote:
    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.escape = False

    def next(self, ch: str, data: str) -> _State | None:
        if self.escape:
            if ch == self.delimiter:
                self.escape = False
                return self
            return _Ready().next(ch, data)
        if ch == self.delimiter:
            self.escape = True
        return self


class _Dollar:
    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter

    def next(self, ch: str, data: str) -> _State | None:
        return _Ready() if data.endswith(self.delimiter) else self


class _Tag:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def next(self, ch: str, data: str) -> _State | None:
        if ch == "$":
            return _Dollar(data[self.offset:])
        if ch.isalpha() or ch.isdigit() or ch == "_":
            return self
        return _Ready().next(ch, data)


class _Escape:
    def next(self, ch: str, data: str) -> _State | None:
        return _Ready()


class _Atomic:
    def __init__(self, prev: _State, delimiter: str) -> None:
        self.prev = prev
        self.delimiter = delimiter

    def next(self, ch: str, data: str) -> _State | None:
        current = self.prev.next(ch, data)
        if current is not None:
            self.prev = current
        if isinstance(self.prev, _Ready) and data[-len(self.delimiter):].upper() == self.delimiter:
            return _Ready()
        return self


_State = _Ready | _Comment | _Block | _Quote | _Dollar | _Tag | _Escape | _Atomic


def cli_split(script: str) -> list[str]:
    """The statements ``supabase db push`` sends for ``script`` (SplitAndTrim)."""
    found: list[str] = []
    state: _State = _Ready()
    start = 0
    for i, ch in enumerate(script):
        data = script[start:i + 1]
        after = state.next(ch, data)
        if after is None:
            found.append(data)
            start, after = i + 1, _Ready()
        state = after
    found.append(script[start:])
    return [piece for piece in (p.rstrip(";").strip() for p in found) if piece]


def push(url: str, script: str) -> None:
    """Apply ``script`` as ``supabase db push`` applies a migration file: its statements, each over
    the extended protocol (one statement per message), in one transaction."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction(), conn.pipeline():
        for statement in cli_split(script):
            conn.execute(statement)


def run_whole(url: str, script: str) -> None:
    """The whole file as one query string, in one transaction: what ``psql -1 -f`` and the
    dashboard's SQL editor do."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(script)


# --- databases ---------------------------------------------------------------------------------------


def _with_db(url: str, dbname: str) -> str:
    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    conninfo["dbname"] = dbname
    return psycopg.conninfo.make_conninfo("", **conninfo)


class _Databases:
    """Fresh databases as a Supabase project has them before any migration (``SUPABASE_LIKE``)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    def new(self) -> str:
        name = f"sb_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.names.append(name)
        url = _with_db(self.admin_url, name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SUPABASE_LIKE)
        return url

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.names:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def new_db(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    databases = _Databases(pg_admin_url)
    try:
        yield databases.new
    finally:
        databases.drop_all()


@pytest.fixture(scope="module")
def pushed_url(pg_admin_url: str) -> Iterator[str]:
    """One database built by the script, shared by tests that change it only inside a transaction
    they roll back."""
    databases = _Databases(pg_admin_url)
    try:
        url = databases.new()
        push(url, render())
        yield url
    finally:
        databases.drop_all()


# --- the catalog snapshot -----------------------------------------------------------------------------
# Names, never oids (two databases); every ACL expanded to one row per (grantee, privilege), with
# NULL (the built-in default) replaced by what it means, so the same rights compare equal however
# they were granted, and a missing or extra right shows as one row.

_ROLE = "CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END, x.privilege_type, " \
        "x.is_grantable, x.grantor::regrole::text"

_SNAPSHOT: dict[str, str] = {
    "schemas": """
        SELECT n.nspname, n.nspowner::regrole::text, obj_description(n.oid, 'pg_namespace')
        FROM pg_namespace n WHERE n.nspname = ANY (%(schemas)s)""",
    "schema grants": f"""
        SELECT n.nspname, {_ROLE}
        FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) x
        WHERE n.nspname = ANY (%(schemas)s)""",
    "relations": """
        SELECT n.nspname, c.relname, c.relkind::text, c.relpersistence::text, c.relrowsecurity,
               c.relforcerowsecurity, c.relowner::regrole::text, c.reloptions::text, c.relreplident::text,
               obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY (%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')""",
    "relation grants": f"""
        SELECT n.nspname, c.relname, {_ROLE}
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
             aclexplode(coalesce(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char",
                                                      c.relowner))) x
        WHERE n.nspname = ANY (%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')""",
    "columns": """
        SELECT n.nspname, c.relname, a.attnum::text, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
               CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
               col_description(c.oid, a.attnum)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = ANY (%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "column grants": f"""
        SELECT n.nspname, c.relname, a.attname, {_ROLE}
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace,
             aclexplode(a.attacl) x
        WHERE n.nspname = ANY (%(schemas)s) AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT n.nspname, coalesce(c.relname, ty.typname), k.conname, k.contype::text,
               pg_get_constraintdef(k.oid, true), k.convalidated, k.condeferrable, k.condeferred,
               obj_description(k.oid, 'pg_constraint')
        FROM pg_constraint k
        JOIN pg_namespace n ON n.oid = k.connamespace
        LEFT JOIN pg_class c ON c.oid = k.conrelid
        LEFT JOIN pg_type ty ON ty.oid = k.contypid
        WHERE n.nspname = ANY (%(schemas)s)""",
    "indexes": """
        SELECT n.nspname, t.relname, c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisreplident,
               obj_description(c.oid, 'pg_class')
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY (%(schemas)s)""",
    "functions": """
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid),
               p.prokind::text, l.lanname, p.provolatile::text, p.proparallel::text, p.prosecdef, p.proisstrict,
               p.proleakproof, p.proretset, p.proconfig::text, p.proowner::regrole::text, md5(p.prosrc),
               obj_description(p.oid, 'pg_proc')
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        JOIN pg_language l ON l.oid = p.prolang
        WHERE n.nspname = ANY (%(schemas)s)""",
    "function grants": f"""
        SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), {_ROLE}
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
             aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
        WHERE n.nspname = ANY (%(schemas)s)""",
    "views": """
        SELECT n.nspname, c.relname, c.relkind::text, pg_get_viewdef(c.oid, true)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY (%(schemas)s) AND c.relkind IN ('v', 'm')""",
    "triggers": """
        SELECT n.nspname, c.relname, g.tgname, pg_get_triggerdef(g.oid, true), g.tgenabled::text
        FROM pg_trigger g
        JOIN pg_class c ON c.oid = g.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY (%(schemas)s) AND NOT g.tgisinternal""",
    "policies": """
        SELECT n.nspname, c.relname, p.polname, p.polcmd::text, p.polpermissive,
               (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END, ',' ORDER BY 1)
                FROM unnest(p.polroles) AS r),
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
        FROM pg_policy p
        JOIN pg_class c ON c.oid = p.polrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY (%(schemas)s)""",
    "sequences": """
        SELECT n.nspname, c.relname, s.seqtypid::regtype::text, s.seqstart::text, s.seqincrement::text,
               s.seqmax::text, s.seqmin::text, s.seqcache::text, s.seqcycle
        FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY (%(schemas)s)""",
    "types": """
        SELECT n.nspname, t.typname, t.typtype::text, format_type(t.typbasetype, t.typtypmod), t.typnotnull,
               t.typdefault,
               (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        LEFT JOIN pg_class c ON c.oid = t.typrelid
        WHERE n.nspname = ANY (%(schemas)s) AND (t.typtype IN ('e', 'd', 'r', 'm')
                                               OR (t.typtype = 'c' AND c.relkind = 'c'))""",
    "default privileges": f"""
        SELECT d.defaclrole::regrole::text, coalesce(n.nspname, '*'), d.defaclobjtype::text, {_ROLE}
        FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
             aclexplode(d.defaclacl) x""",
    "extensions": """
        SELECT e.extname, e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace""",
}


def _worker_rows(conn: psycopg.Connection[Any]) -> list[Row]:
    """Every row of the worker's own tables (its bookkeeping: migrations recorded with their checksums,
    the definitions' checksum, which tables were adopted...), without the columns that hold a clock."""
    columns: dict[str, list[str]] = {}
    for table, column in conn.execute(
            "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relnamespace = 'worker'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 "
            "AND NOT a.attisdropped AND a.atttypid NOT IN ('timestamptz'::regtype, 'timestamp'::regtype) "
            "ORDER BY c.relname, a.attnum").fetchall():
        columns.setdefault(str(table), []).append(str(column))
    rows: list[Row] = []
    for table, names in columns.items():
        query = sql.SQL("SELECT {} FROM worker.{}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n in names), sql.Identifier(table))
        rows += [(table, *(f"{n}={v}" for n, v in zip(names, row, strict=True))) for row in conn.execute(query)]
    return rows


def _sorted(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda row: tuple((value is None, value or "") for value in row))


def snapshot(conn: psycopg.Connection[Any]) -> Snapshot:
    """The catalog of schemas public, worker and auth, section by section, as sorted text rows."""
    snap: Snapshot = {}
    for name, query in _SNAPSHOT.items():
        rows = conn.execute(query, {"schemas": SCHEMAS}).fetchall()
        snap[name] = _sorted([tuple(None if v is None else str(v) for v in row) for row in rows])
    snap["worker rows"] = _sorted(_worker_rows(conn))
    return snap


def snapshot_of(url: str) -> Snapshot:
    with psycopg.connect(url, autocommit=True) as conn:
        return snapshot(conn)


def differences(a: Snapshot, b: Snapshot) -> dict[str, dict[str, list[Row]]]:
    """Per section that differs: the rows only the first has, and those only the second has."""
    return {name: {"only in first": [r for r in a[name] if r not in b[name]],
                   "only in second": [r for r in b[name] if r not in a[name]]}
            for name in a if a[name] != b[name]}


def _with(snap: Snapshot, section: str, *fields: str) -> list[Row]:
    return [row for row in snap[section] if all(f in row for f in fields)]


# --- one source of truth -------------------------------------------------------------------------------


def test_the_committed_migration_is_what_sql_renders() -> None:
    version = latest_version()
    path = committed_file(version)
    assert path is not None, (f"supabase/migrations has no file for reminder-worker schema version {version}: "
                              f"run `{COMMAND}` and commit it")
    assert path.read_bytes().decode("utf-8") == render(), (
        f"{path.relative_to(REPO)} is not what sql/ renders: run `{COMMAND}` and commit it")


def test_the_supabase_cli_sees_the_statements_the_generator_meant() -> None:
    script = render()
    meant = [s.rstrip(";").strip() for s in statements()]
    assert cli_split(script) == meant
    for statement in meant:
        code = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
        # Only DO blocks at the top (no psql meta-command, nothing the splitter could cut); each well
        # under the 64 KiB an older CLI's scanner held (newer ones hold the whole file).
        assert code.startswith("DO $rw_step$\n"), code[:80]
        assert len(statement.encode()) < 64 * 1024
    assert len(meant) == 4 + len(migrations()) + len(definition_files()) + 1


# --- same schema, either way --------------------------------------------------------------------------


@pytest.mark.parametrize("apply", [push, run_whole], ids=["supabase db push", "psql -1"])
def test_push_and_migrate_reach_the_same_schema(new_db: Callable[[], str], apply: Callable[[str, str], None]) -> None:
    pushed, migrated = new_db(), new_db()
    apply(pushed, render())
    migrate(migrated)
    a, b = snapshot_of(pushed), snapshot_of(migrated)
    assert differences(a, b) == {}
    assert a == b

    # ...and the snapshot holds what matters, so the equality above is not that of two empty lists.
    empty = [name for name, rows in a.items() if not rows and name != "extensions"]
    assert empty == []
    assert _with(a, "policies", "profiles", "profiles_own")
    assert _with(a, "triggers", "events", "events_on_edit")
    assert _with(a, "functions", "public", "worker_claim_events")
    assert _with(a, "function grants", "worker_claim_events", "service_role", "EXECUTE")
    assert not _with(a, "function grants", "worker_claim_events", "anon")
    assert _with(a, "column grants", "profiles", "timezone", "authenticated", "SELECT")
    assert _with(a, "relations", "public", "events", "r", "True")  # row-level security on
    assert _with(a, "constraints", "events", "events_status_check")
    assert _with(a, "views", "worker", "parents")
    for m in migrations():
        assert ("schema_migrations", f"version={m.version}", f"filename={m.name}", f"checksum={m.checksum}") \
            in a["worker rows"]
    assert any(f"checksum={definitions_checksum()}" in row for row in a["worker rows"])


def test_migrate_after_the_push_has_nothing_to_do(new_db: Callable[[], str]) -> None:
    url = new_db()
    push(url, render())
    before = snapshot_of(url)
    assert migrate(url) == MigrateResult(applied=[], definitions_applied=False, constraints_left_out=[])
    assert differences(before, snapshot_of(url)) == {}


def _applied_marks(url: str) -> list[Row]:
    """When each migration and the definitions were applied, and the view's oid (a view is dropped
    and created again whenever the definitions are applied): unchanged means nothing was re-applied."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT 'migration ' || version, applied_at::text FROM worker.schema_migrations "
            "UNION ALL SELECT 'definitions', applied_at::text FROM worker.schema_definitions "
            "UNION ALL SELECT 'view ' || c.oid::regclass::text, c.oid::text FROM pg_class c "
            "WHERE c.relnamespace = 'worker'::regnamespace AND c.relkind = 'v' ORDER BY 1").fetchall()
    return [tuple(None if v is None else str(v) for v in row) for row in rows]


def test_the_push_again_or_after_migrate_changes_nothing(new_db: Callable[[], str]) -> None:
    pushed, migrated = new_db(), new_db()
    push(pushed, render())
    first, marks = snapshot_of(pushed), _applied_marks(pushed)
    push(pushed, render())
    assert differences(first, snapshot_of(pushed)) == {}
    assert _applied_marks(pushed) == marks

    migrate(migrated)
    before, marks = snapshot_of(migrated), _applied_marks(migrated)
    push(migrated, render())
    assert differences(before, snapshot_of(migrated)) == {}
    assert _applied_marks(migrated) == marks
    assert differences(first, before) == {}


def test_on_the_apps_database_as_it_stands_push_and_migrate_agree(pg_admin_url: str) -> None:
    """The app's own tables, policies, grants and rows in unknown statuses (tests/appdb.py): the
    adoption path (tables kept, constraints left out where rows break them, grants column by column)."""
    with app_database(pg_admin_url) as pushed, app_database(pg_admin_url) as migrated:
        push(pushed.url, render())
        alone = migrate(migrated.url)
        a, b = snapshot_of(pushed.url), snapshot_of(migrated.url)
        assert differences(a, b) == {}
        after = migrate(pushed.url)
        assert (after.applied, after.definitions_applied) == ([], False)
        assert after.constraints_left_out == alone.constraints_left_out
        assert differences(a, snapshot_of(pushed.url)) == {}


# --- what the script refuses, and when it stands aside ----------------------------------------------------


def test_a_migration_changed_after_it_was_applied_is_refused_as_migrate_refuses_it(new_db: Callable[[], str]) -> None:
    url = new_db()
    migrate(url)
    first = migrations()[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE worker.schema_migrations SET checksum = %s WHERE version = %s", ("0" * 64, first.version))
    before = snapshot_of(url)
    with pytest.raises(psycopg.errors.RaiseException, match=f"{first.name} was changed after it was applied"):
        push(url, render())
    with pytest.raises(MigrationRefused, match="was changed after it was applied"):
        migrate(url)
    assert differences(before, snapshot_of(url)) == {}


def test_a_database_with_a_newer_worker_schema_is_left_as_it_is(new_db: Callable[[], str]) -> None:
    url = new_db()
    migrate(url)
    newer = latest_version() + 1
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO worker.schema_migrations (version, filename, checksum) VALUES (%s, %s, %s)",
                     (newer, f"{newer:03d}_from_a_newer_worker.sql", "f" * 64))
        # What a newer worker's definitions would have left: this file must not put its own back.
        conn.execute("CREATE OR REPLACE FUNCTION worker.is_valid_timezone(tz text) RETURNS boolean "
                     "LANGUAGE plpgsql STABLE SET search_path = '' AS $$ BEGIN RETURN tz <> ''; END $$")
        conn.execute("UPDATE worker.schema_definitions SET checksum = 'newer'")
    before = snapshot_of(url)
    push(url, render())
    assert differences(before, snapshot_of(url)) == {}


def test_run_statement_by_statement_outside_one_transaction_it_stops_instead_of_doing_half(
        new_db: Callable[[], str]) -> None:
    url = new_db()
    first, second, *_ = cli_split(render())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(first)
        with pytest.raises(psycopg.errors.RaiseException, match="in one transaction"):
            conn.execute(second)


# --- the snapshot sees a difference ------------------------------------------------------------------------

MUTATIONS = [
    ("policies", "DROP POLICY profiles_own ON public.profiles"),
    ("column grants", "REVOKE SELECT (timezone) ON public.profiles FROM authenticated"),
    ("relation grants", "GRANT SELECT ON worker.schema_migrations TO anon"),
    ("function grants", "GRANT EXECUTE ON FUNCTION public.worker_schema_version() TO anon"),
    ("schema grants", "GRANT USAGE ON SCHEMA worker TO authenticated"),
    ("functions", "CREATE OR REPLACE FUNCTION worker.is_valid_timezone(tz text) RETURNS boolean "
                  "LANGUAGE plpgsql STABLE SET search_path = '' AS $$ BEGIN RETURN true; END $$"),
    ("functions", "ALTER FUNCTION worker.is_valid_timezone(text) VOLATILE"),
    ("relations", "ALTER TABLE public.children DISABLE ROW LEVEL SECURITY"),
    ("columns", "ALTER TABLE public.events ALTER COLUMN attempts SET DEFAULT 1"),
    ("columns", "ALTER TABLE public.reminders ALTER COLUMN message DROP NOT NULL"),
    ("constraints", "COMMENT ON CONSTRAINT events_status_check ON public.events IS NULL"),
    ("indexes", "DROP INDEX public.events_claim_idx"),
    ("triggers", "ALTER TABLE public.events DISABLE TRIGGER events_on_edit"),
    ("views", "DROP VIEW worker.parents CASCADE"),
    ("sequences", "ALTER SEQUENCE public.worker_runs_id_seq INCREMENT BY 2"),
    ("default privileges", "ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM anon"),
    ("worker rows", "UPDATE worker.schema_definitions SET checksum = 'something else'"),
]


@pytest.mark.parametrize(("section", "change"), MUTATIONS, ids=[f"{s}: {c[:40]}" for s, c in MUTATIONS])
def test_the_snapshot_notices_one_change(pushed_url: str, section: str, change: str) -> None:
    with psycopg.connect(pushed_url) as conn:
        before = snapshot(conn)
        conn.execute(change)
        after = snapshot(conn)
        conn.rollback()
    assert section in differences(before, after)


# --- the command line ----------------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.db.supabase_cli", *args], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=60)


def test_the_command_prints_the_script_and_checks_the_committed_file() -> None:
    printed = _run()
    assert (printed.returncode, printed.stdout) == (0, render())
    checked = _run("--check")
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_write_then_check_in_a_directory_of_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    version = latest_version()
    directory = tmp_path / "supabase" / "migrations"
    assert supabase_cli.main(["--check"], migrations_dir=directory) == 1
    assert COMMAND in capsys.readouterr().err

    assert supabase_cli.main(["--write"], migrations_dir=directory) == 0
    [written] = directory.iterdir()
    assert written.name.endswith(f"_reminder_worker_v{version}.sql")
    if version in TIMESTAMPS:
        assert written.name == f"{TIMESTAMPS[version]}_reminder_worker_v{version}.sql"
    assert written.read_text(encoding="utf-8") == render()
    assert supabase_cli.main(["--check"], migrations_dir=directory) == 0

    written.write_text(render().replace("worker", "wrker", 1), encoding="utf-8")
    assert supabase_cli.main(["--check"], migrations_dir=directory) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1
    assert written.name in message
    assert COMMAND in message

    assert supabase_cli.main(["--write"], migrations_dir=directory) == 0
    assert [p.name for p in directory.iterdir()] == [written.name]
    assert supabase_cli.main(["--check"], migrations_dir=directory) == 0


def test_a_new_version_is_named_once_then_keeps_its_name(tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "20991231235959_the_apps_own.sql").write_text("SELECT 1;\n", encoding="utf-8")
    unlisted = max(TIMESTAMPS) + 1000
    early = datetime(2030, 1, 1, tzinfo=UTC)
    first = target_file(unlisted, directory, now=early)
    # After every file already there, so `supabase db push` runs it after them.
    assert first.name == f"21000101000000_reminder_worker_v{unlisted}.sql"
    first.write_text("-- v\n", encoding="utf-8")
    assert target_file(unlisted, directory, now=datetime(2040, 1, 1, tzinfo=UTC)) == first
    (directory / f"20300101000000_reminder_worker_v{unlisted}.sql").write_text("-- v\n", encoding="utf-8")
    with pytest.raises(supabase_cli.SupabaseMigrationError, match="two files"):
        target_file(unlisted, directory)


def test_render_reads_sql_dir_it_is_given(tmp_path: Path) -> None:
    """No file list is written into the module: a migration added to sql/ is in the script."""
    copy = tmp_path / "sql"
    shutil.copytree(SQL_DIR, copy)
    nxt = latest_version() + 1
    (copy / "migrations" / f"{nxt:03d}_later.sql").write_text("CREATE TABLE public.later (id int);\n",
                                                             encoding="utf-8")
    script = render(copy)
    assert f"sql/migrations/{nxt:03d}_later.sql" in script
    assert "CREATE TABLE public.later (id int);" in script
    assert f"WHERE version > {nxt}" in script
