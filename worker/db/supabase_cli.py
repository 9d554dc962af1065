"""The worker's schema as a Supabase CLI migration, generated from ``sql/``.

Why this exists
    Teams on Supabase apply schema with the Supabase CLI: SQL files
    ``supabase/migrations/<timestamp>_<name>.sql``, applied by ``supabase db push`` in timestamp
    order, each once (the CLI records it in ``supabase_migrations.schema_migrations``). Such a team
    should not have to run a second migration tool beside it. But ``sql/`` stays the one source of
    truth: :func:`render` turns it into one script that does exactly what
    ``python worker/main.py migrate`` (:func:`worker.db.migrate.migrate`) does, so both tools reach
    the same schema and each recognises what the other did. ``tests/integration/test_supabase_cli.py``
    proves that: it compares the catalog of a database built by this script with one built by
    ``migrate``.

How a team uses it
    The file for the current schema version is committed in ``supabase/migrations/``; copy it into
    your project's ``supabase/migrations/`` (or use this repository's ``supabase/`` directory), then::

        supabase link --project-ref <ref>
        supabase db push

    ``python worker/main.py migrate`` with ``DATABASE_URL`` stays available; either way, in any
    order, reaches the same schema. After changing ``sql/``, regenerate and commit the file::

        python -m worker.db.supabase_cli --write    # writes supabase/migrations/<ts>_reminder_worker_v<N>.sql
        python -m worker.db.supabase_cli --check    # exit 1 when the committed file is not what sql/ renders
        python -m worker.db.supabase_cli            # prints the script

Versions and file names
    Each new worker schema version (a new ``sql/migrations/NNN_*.sql``) gets a new file,
    ``<timestamp>_reminder_worker_v<N>.sql`` (N: the latest migration's number); an old one is never
    edited, because the CLI runs a file once and never looks at it again. Every file is cumulative
    and idempotent: it holds all of ``sql/`` at its version, applies only what the database lacks,
    and records it the way ``migrate`` does. On a database that already has a newer worker schema it
    changes nothing (it only says so), so a project that pushes v2 and v3 for the first time runs v2
    and then v3, and one that ran ``migrate`` before simply records both. The timestamp is fixed per
    version: the existing file's name is kept; a version's first file takes its timestamp from
    :data:`TIMESTAMPS`, or, for a version not listed there, the time of that first ``--write``
    (later than every file already in the directory, so it sorts after them). Regenerating is
    reproducible either way.

    A change to a definition (``sql/functions/``, ``views/``, ``triggers.sql``, ``security.sql``,
    ``vocabulary.sql``) without a new migration rewrites the current version's file. A project that
    already pushed that file does not run it again: it gets the change with the next version's file,
    or with ``migrate`` (``python worker/main.py check`` reports the difference).

What the script does, in one transaction (as ``supabase db push`` runs a file)
    1. takes the advisory lock ``migrate`` takes (one schema change at a time), with its
       ``lock_timeout``; if ``worker.schema_migrations`` records a version newer than the file's,
       it stops there: the database belongs to a newer worker. Then ``sql/bootstrap.sql``.
    2. refuses, as ``migrate`` does, a database whose recorded migrations are not this code's (an
       unknown file, or a file changed after it was applied);
    3. each migration not yet recorded, then its row in ``worker.schema_migrations`` with the
       checksum ``migrate`` uses;
    4. the definitions in :func:`~worker.db.migrate.definition_files` order and the
       ``worker.schema_definitions`` checksum, when ``migrate`` would apply them (a migration was
       applied, the checksum differs, or ``profiles`` gained a column: the rule of
       ``worker.db.migrate._definitions_stale``, restated in SQL here);
    5. ``sql/vocabulary.sql``.

    Each file of ``sql/`` runs through ``EXECUTE`` inside a ``DO`` block of its own: every statement
    the CLI sees is one small dollar-quoted block (its statement splitter has a size limit and quirks
    that the files' own text then never meets), and the steps share their decisions through
    transaction-local settings (``reminder_worker.*``). There are no psql meta-commands; ``psql -1
    -f`` and the dashboard's SQL editor run it too. Run statement by statement outside one
    transaction, it stops with an error at its second statement (the first, the lock and
    ``bootstrap.sql``, only creates what is missing) instead of going on piece by piece.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from worker.db.migrate import (
    LOCK_KEY,
    LOCK_TIMEOUT,
    SQL_DIR,
    definition_files,
    definitions_checksum,
    latest_version,
    migrations,
)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
COMMAND = "python -m worker.db.supabase_cli --write"

# The timestamp of each schema version's file, so that its name never depends on when it was
# generated. A version missing here takes the time of its first `--write`; its file's name is kept
# from then on.
TIMESTAMPS: dict[int, str] = {
    2: "20261202000000",
    3: "20261202074555",
    4: "20261202140356",
}

_OWN_FILE_RE = re.compile(r"^(\d{14})_reminder_worker_v(\d+)\.sql$")
_ANY_FILE_RE = re.compile(r"^(\d+)_.*\.sql$")
_STAMP_FORMAT = "%Y%m%d%H%M%S"


class SupabaseMigrationError(Exception):
    """The supabase/migrations directory is not in a state this module can work with."""


# --- rendering -----------------------------------------------------------------------------------


def _text(path: Path) -> str:
    """A file's text exactly as ``migrate`` sends it (its bytes; no newline translation)."""
    return path.read_bytes().decode("utf-8")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _dollar_quote(text: str, base: str) -> str:
    """``text`` as a dollar-quoted string whose tag closes exactly at its end, both for PostgreSQL
    and for the Supabase CLI's splitter (which looks for the tag as a suffix of what it has read)."""
    n = 0
    while True:
        tag = f"${base}{n or ''}$"
        whole = tag + text + tag
        if whole.find(tag, 1) == len(tag) + len(text):
            return whole
        n += 1


def _block(comment: str, body: str, declare: str = "") -> str:
    """One statement: a commented ``DO`` block."""
    lines = [f"-- {line}".rstrip() for line in comment.splitlines()]
    inner = "\n" + ("DECLARE\n" + declare + "\n" if declare else "") + "BEGIN\n" + body.rstrip("\n") + "\nEND\n"
    return "\n".join(lines) + "\nDO " + _dollar_quote(inner, "rw_step") + ";"


def _execute(text: str) -> str:
    return "EXECUTE " + _dollar_quote(text, "rw_sql") + ";\n"


def _guard(version: int) -> str:
    """The start of every step after the first: go on, stop (the database is newer), or refuse
    (the first step did not run in this transaction)."""
    return (
        "    CASE current_setting('reminder_worker.apply', true)\n"
        f"        WHEN 'v{version}:run' THEN NULL;\n"
        f"        WHEN 'v{version}:skip' THEN RETURN;\n"
        "        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction "
        "(as supabase db push does; psql needs --single-transaction)';\n"
        "    END CASE;\n"
    )


def statements(sql_dir: Path = SQL_DIR) -> list[str]:
    """The script, one statement each (comments included), as the Supabase CLI splits it."""
    version = latest_version(sql_dir)
    found = migrations(sql_dir)
    checksum = definitions_checksum(sql_dir)
    guard = _guard(version)
    out: list[str] = []

    header = (
        f"reminder-worker schema version {version}, as one Supabase CLI migration (`supabase db push`).\n"
        "\n"
        f"GENERATED from sql/ by `{COMMAND}`: never edit it by hand.\n"
        "It does what `python worker/main.py migrate` does, in one transaction, and records what it did\n"
        "the same way (worker.schema_migrations, worker.schema_definitions): either tool may run\n"
        "before or after the other. It applies only what the database lacks; on a database with a\n"
        "newer worker schema it changes nothing. See worker/db/supabase_cli.py.\n"
        "\n"
        "Step 1: the lock `migrate` takes, whether this file has anything to do, then sql/bootstrap.sql."
    )
    out.append(_block(header, (
        f"    PERFORM set_config('lock_timeout', {_literal(LOCK_TIMEOUT)}, true);\n"
        f"    PERFORM pg_advisory_xact_lock({LOCK_KEY});\n"
        "    PERFORM set_config('reminder_worker.migrated', 'off', true);\n"
        "    PERFORM set_config('reminder_worker.definitions', 'off', true);\n"
        "    IF to_regclass('worker.schema_migrations') IS NOT NULL THEN\n"
        f"        IF EXISTS (SELECT 1 FROM worker.schema_migrations WHERE version > {version}) THEN\n"
        "            RAISE NOTICE 'reminder-worker: this database has a worker schema newer than version "
        f"{version}; this file changes nothing';\n"
        f"            PERFORM set_config('reminder_worker.apply', 'v{version}:skip', true);\n"
        "            RETURN;\n"
        "        END IF;\n"
        "    END IF;\n"
        f"    PERFORM set_config('reminder_worker.apply', 'v{version}:run', true);\n"
        "    -- sql/bootstrap.sql\n"
        "    " + _execute(_text(sql_dir / "bootstrap.sql"))
    )))

    known = ",\n".join(f"            ({m.version}, {_literal(m.name)}, {_literal(m.checksum)})" for m in found)
    known_rows = (f"(VALUES\n{known}\n        )" if found
                  else "(SELECT NULL::integer, NULL::text, NULL::text WHERE false)")
    out.append(_block(
        "Step 2: what the database recorded must be this code's migrations, as `migrate` demands.",
        guard + (
            "    FOR v_row IN\n"
            "        SELECT s.filename AS recorded_name, s.checksum AS recorded_checksum, k.filename, k.checksum\n"
            "        FROM worker.schema_migrations s\n"
            f"        LEFT JOIN {known_rows} AS k (version, filename, checksum) ON k.version = s.version\n"
            "        ORDER BY s.version\n"
            "    LOOP\n"
            "        IF v_row.filename IS DISTINCT FROM v_row.recorded_name THEN\n"
            "            RAISE EXCEPTION 'reminder-worker: the database records migration %, which schema version "
            f"{version} does not have: it was set up by another (newer, or pre-release) version; deploy the "
            "matching worker, or restore a backup taken before it', v_row.recorded_name;\n"
            "        ELSIF v_row.checksum IS DISTINCT FROM v_row.recorded_checksum THEN\n"
            "            RAISE EXCEPTION 'reminder-worker: sql/migrations/% was changed after it was applied to this "
            "database: the database runs the old text; undo the edit and put the change in a new migration', "
            "v_row.filename;\n"
            "        END IF;\n"
            "    END LOOP;\n"
        ),
        declare="    v_row record;",
    ))

    for m in found:
        out.append(_block(
            f"Step 3: sql/migrations/{m.name}, once; recorded with its sha256 as `migrate` records it.",
            guard + (
                f"    IF EXISTS (SELECT 1 FROM worker.schema_migrations WHERE version = {m.version}) THEN\n"
                "        RETURN;\n"
                "    END IF;\n"
                "    " + _execute(_text(m.path)) +
                "    INSERT INTO worker.schema_migrations (version, filename, checksum)\n"
                f"        VALUES ({m.version}, {_literal(m.name)}, {_literal(m.checksum)});\n"
                "    PERFORM set_config('reminder_worker.migrated', 'on', true);\n"
            ),
        ))

    out.append(_block(
        "Step 4: the definitions, when `migrate` would apply them: a migration was applied, their\n"
        "checksum differs from the one recorded, or profiles has columns other than those security.sql\n"
        "last granted on (worker.db.migrate._definitions_stale).",
        guard + (
            "    IF current_setting('reminder_worker.migrated') = 'on'\n"
            "       OR NOT EXISTS (SELECT 1 FROM worker.schema_definitions\n"
            f"                      WHERE checksum = {_literal(checksum)}) THEN\n"
            "        v_stale := true;\n"
            "    ELSIF to_regproc('worker.profiles_columns') IS NULL THEN\n"
            "        v_stale := true;\n"
            "    ELSE\n"
            "        v_stale := worker.profiles_columns() IS DISTINCT FROM\n"
            "            (SELECT d.profiles_columns FROM worker.schema_definitions d);\n"
            "    END IF;\n"
            "    IF v_stale THEN\n"
            "        PERFORM set_config('reminder_worker.definitions', 'on', true);\n"
            "    END IF;\n"
        ),
        declare="    v_stale boolean;",
    ))
    for path in definition_files(sql_dir):
        name = path.relative_to(sql_dir).as_posix()
        out.append(_block(
            f"sql/{name}",
            guard + (
                "    IF current_setting('reminder_worker.definitions') = 'on' THEN\n"
                "        " + _execute(_text(path)) +
                "    END IF;\n"
            ),
        ))
    out.append(_block(
        "The definitions' checksum, as `migrate` records it.",
        guard + (
            "    IF current_setting('reminder_worker.definitions') = 'on' THEN\n"
            f"        INSERT INTO worker.schema_definitions (checksum) VALUES ({_literal(checksum)})\n"
            "            ON CONFLICT (id) DO UPDATE SET checksum = excluded.checksum, applied_at = now();\n"
            "    END IF;\n"
        ),
    ))

    out.append(_block(
        "Step 5: sql/vocabulary.sql (CHECK constraints; costs nothing when unchanged).",
        guard + "    " + _execute(_text(sql_dir / "vocabulary.sql")),
    ))
    return out


def render(sql_dir: Path = SQL_DIR) -> str:
    """One SQL script that brings a database to exactly what ``migrate`` would (module docstring)."""
    return "\n\n".join(statements(sql_dir)) + "\n"


# --- the file in supabase/migrations --------------------------------------------------------------


def committed_file(version: int, migrations_dir: Path = MIGRATIONS_DIR) -> Path | None:
    """The file of schema ``version`` in ``migrations_dir``, if there is one."""
    found = [path for path in sorted(migrations_dir.glob(f"*_reminder_worker_v{version}.sql"))
             if (m := _OWN_FILE_RE.match(path.name)) is not None and int(m.group(2)) == version]
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise SupabaseMigrationError(f"{migrations_dir}: two files for schema version {version} ({names}); "
                                     "keep the one that was pushed")
    return found[0] if found else None


def target_file(version: int, migrations_dir: Path = MIGRATIONS_DIR, *, now: datetime | None = None) -> Path:
    """Where the file of schema ``version`` lives: its existing name, else the name fixed in
    :data:`TIMESTAMPS`, else one stamped with ``now``, after every file in the directory."""
    existing = committed_file(version, migrations_dir)
    if existing is not None:
        return existing
    stamp = TIMESTAMPS.get(version)
    if stamp is None:
        moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        stamps = [m.group(1) for path in migrations_dir.glob("*.sql") if (m := _ANY_FILE_RE.match(path.name))]
        latest = max((s for s in stamps if len(s) == 14), default=None)
        if latest is not None:
            after = datetime.strptime(latest, _STAMP_FORMAT).replace(tzinfo=UTC) + timedelta(seconds=1)
            moment = max(moment, after)
        stamp = moment.strftime(_STAMP_FORMAT)
    return migrations_dir / f"{stamp}_reminder_worker_v{version}.sql"


def write(sql_dir: Path = SQL_DIR, migrations_dir: Path = MIGRATIONS_DIR) -> tuple[Path, bool]:
    """Write the current version's file; returns it and whether its content changed."""
    script = render(sql_dir)
    path = target_file(latest_version(sql_dir), migrations_dir)
    if path.is_file() and path.read_bytes() == script.encode():
        return path, False
    migrations_dir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(script.encode())
    return path, True


def check(sql_dir: Path = SQL_DIR, migrations_dir: Path = MIGRATIONS_DIR) -> str | None:
    """None when the committed file of the current version is what ``sql/`` renders; else the problem."""
    version = latest_version(sql_dir)
    path = committed_file(version, migrations_dir)
    if path is None:
        return f"{migrations_dir}: no file for reminder-worker schema version {version}; run `{COMMAND}`"
    if path.read_bytes() != render(sql_dir).encode():
        return f"{path} is not what sql/ renders (sql/ changed since it was written); run `{COMMAND}`"
    return None


def main(argv: Sequence[str] | None = None, *, sql_dir: Path = SQL_DIR,
         migrations_dir: Path = MIGRATIONS_DIR) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.db.supabase_cli",
        description="The worker's schema (sql/) as one Supabase CLI migration. Without options: print it.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true",
                      help="write supabase/migrations/<timestamp>_reminder_worker_v<version>.sql")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 when the committed file for the current version differs from sql/")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problem = check(sql_dir, migrations_dir)
            if problem is not None:
                print(problem, file=sys.stderr)
                return 1
            return 0
        if args.write:
            path, changed = write(sql_dir, migrations_dir)
            print(f"{path}: {'written' if changed else 'up to date'}")
            return 0
    except SupabaseMigrationError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    sys.stdout.write(render(sql_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
