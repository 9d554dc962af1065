"""``migrate`` on the ParentPal database as it stands (tests/appdb.py): it adds what the worker needs
and nothing else. Every row keeps every value, twice changes nothing, the starter's public-read
``profiles`` keeps working for the app while no API role can read a token, and an applied migration
that was edited afterwards is refused.

Real PostgreSQL, the real ``sql/``, Supabase's roles and default privileges; no CLI (that is
tests/acceptance/test_adoption.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.appdb import (
    APP_TABLES,
    STARTER_COLUMNS,
    STARTER_POLICIES,
    AppDatabase,
    app_columns_only,
    app_database,
    as_role,
    scalar,
    snapshot_rows,
    write_own_profile,
)
from worker.db.migrate import SQL_DIR, MigrationRefused, migrate, migrations

API_ROLES = ("anon", "authenticated")
TOKEN_COLUMNS = ("google_refresh_token", "expo_push_token")
_SCHEMAS = ("public", "worker", "auth")


@pytest.fixture
def app_db(pg_admin_url: str) -> Iterator[AppDatabase]:
    with app_database(pg_admin_url) as built:
        yield built


@pytest.fixture
def conn(app_db: AppDatabase) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(app_db.url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def migrated(app_db: AppDatabase, conn: psycopg.Connection[Any]) -> AppDatabase:
    migrate(app_db.url)
    return app_db


# --- the catalog, for "twice changes nothing" and "keeps the app's definitions" ----------------------

_CATALOG: dict[str, str] = {
    "columns": """
        SELECT c.relnamespace::regnamespace::text, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace::regnamespace::text = ANY (%(schemas)s) AND a.attnum > 0 AND NOT a.attisdropped
          AND c.relkind IN ('r', 'p', 'v', 'm')
        ORDER BY 1, 2, 3""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated, oid::bigint
        FROM pg_constraint WHERE connamespace::regnamespace::text = ANY (%(schemas)s) ORDER BY 1, 2""",
    "indexes": """
        SELECT i.indrelid::regclass::text, c.relname, pg_get_indexdef(i.indexrelid), i.indexrelid::bigint
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relnamespace::regnamespace::text = ANY (%(schemas)s) ORDER BY 1, 2""",
    "policies": """
        SELECT p.polrelid::regclass::text, p.polname, p.polcmd::text, p.polpermissive, p.polroles::regrole[]::text,
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid), p.oid::bigint
        FROM pg_policy p ORDER BY 1, 2""",
    "tables": """
        SELECT c.relnamespace::regnamespace::text, c.relname, c.relkind::text, c.relacl::text, c.relrowsecurity,
               c.relforcerowsecurity, c.oid::bigint
        FROM pg_class c WHERE c.relnamespace::regnamespace::text = ANY (%(schemas)s)
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S') ORDER BY 1, 2""",
    "column grants": """
        SELECT a.attrelid::regclass::text, a.attname, a.attacl::text FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace::regnamespace::text = ANY (%(schemas)s) AND a.attacl IS NOT NULL ORDER BY 1, 2""",
    "schemas": """
        SELECT nspname, nspacl::text FROM pg_namespace WHERE nspname = ANY (%(schemas)s) ORDER BY 1""",
    "functions": """
        SELECT p.oid::regprocedure::text, p.proacl::text, p.prosecdef, p.proconfig::text,
               md5(pg_get_functiondef(p.oid))
        FROM pg_proc p WHERE p.pronamespace::regnamespace::text = ANY (%(schemas)s) AND p.prokind IN ('f', 'p')
        ORDER BY 1""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid), tgenabled::text, oid::bigint
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "views": """
        SELECT schemaname, viewname, definition FROM pg_views WHERE schemaname = ANY (%(schemas)s) ORDER BY 1, 2""",
    "default privileges": "SELECT defaclrole::regrole::text, defaclnamespace, defaclobjtype::text, "
                          "defaclacl::text FROM pg_default_acl ORDER BY 1, 2, 3",
}


def catalog(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Columns, constraints, indexes, policies, grants, functions, triggers and views, as rows."""
    return {name: conn.execute(query, {"schemas": list(_SCHEMAS)}).fetchall() for name, query in _CATALOG.items()}


def _app_definitions(cat: dict[str, list[tuple[Any, ...]]], tables: set[str]) -> dict[str, set[tuple[Any, ...]]]:
    """What the app defined on its own tables: columns, constraints, indexes, policies (no oids)."""
    short = {t.split(".")[1] for t in tables}
    return {
        "columns": {r for r in cat["columns"] if f"{r[0]}.{r[1]}" in tables},
        "constraints": {r[:4] for r in cat["constraints"] if r[0] in short or r[0] in tables},
        "indexes": {r[:3] for r in cat["indexes"] if r[0] in short or r[0] in tables},
        "policies": {r[:7] for r in cat["policies"] if r[0] in short or r[0] in tables},
    }


def _diff(before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    return {name: {"gone": sorted(set(before[name]) - set(after[name]), key=str),
                   "new": sorted(set(after[name]) - set(before[name]), key=str)}
            for name in before if before[name] != after[name]}


# --- the fixture is the app as it stands ---------------------------------------------------------------


def test_the_fixture_is_the_app_before_the_worker(app_db: AppDatabase, conn: psycopg.Connection[Any]) -> None:
    """What the later tests change: Supabase's default grants on every app table, RLS on profiles
    only, the starter's policies, auth.uid() from the JWT claims, and nothing of the worker's."""
    for table in ("profiles", "children", "events", "reminders"):
        for role in (*API_ROLES, "service_role"):
            assert scalar(conn, "SELECT has_table_privilege(%s, %s, 'SELECT, INSERT, UPDATE, DELETE')",
                          (role, f"public.{table}")) is True, (role, table)
    assert dict(conn.execute("SELECT relname::text, relrowsecurity FROM pg_class WHERE relname IN "
                             "('profiles', 'children', 'events', 'reminders') "
                             "AND relnamespace = 'public'::regnamespace").fetchall()) == \
        {"profiles": True, "children": False, "events": False, "reminders": False}
    assert dict(conn.execute("SELECT policyname, cmd FROM pg_policies WHERE tablename = 'profiles'").fetchall()) \
        == STARTER_POLICIES
    with as_role(conn, "authenticated", app_db.app.ben.id):
        assert str(scalar(conn, "SELECT auth.uid()")) == app_db.app.ben.id
        assert scalar(conn, "SELECT count(*) FROM public.reminders WHERE push_token IS NOT NULL") == 7
    assert scalar(conn, "SELECT to_regnamespace('worker') IS NULL") is True
    tokens = dict(conn.execute("SELECT email, raw_user_meta_data ->> 'google_refresh_token' FROM auth.users "
                               "WHERE raw_user_meta_data ? 'google_refresh_token'").fetchall())
    assert tokens == {"anna@example.com": "1//anna-refresh-token", "ben@example.com": "1//ben-refresh-token"}


# --- every row, every value ---------------------------------------------------------------------------


def test_migrate_keeps_every_row_and_every_value_of_the_app(app_db: AppDatabase,
                                                            conn: psycopg.Connection[Any]) -> None:
    before = snapshot_rows(conn)
    assert {t: len(rows) for t, rows in before.items()} == {
        "auth.users": 6, "public.profiles": 5, "public.children": 2, "public.events": 10, "public.reminders": 9}

    migrate(app_db.url)

    after = snapshot_rows(conn)
    assert app_columns_only(after, before) == before
    # The worker's columns were added beside the app's (the comparison above is not vacuous).
    assert set(after["public.events"][app_db.app.soccer]) > set(before["public.events"][app_db.app.soccer])


def test_migrate_keeps_the_apps_columns_constraints_indexes_and_policies(app_db: AppDatabase,
                                                                        conn: psycopg.Connection[Any]) -> None:
    tables = set(APP_TABLES)
    before = _app_definitions(catalog(conn), tables)
    assert len(before["policies"]) == 3 and before["constraints"]

    migrate(app_db.url)

    after = _app_definitions(catalog(conn), tables)
    for kind, rows in before.items():
        assert rows <= after[kind], f"{kind} of the app changed or went: {sorted(rows - after[kind], key=str)}"
    # Nothing was added to Supabase's auth.users.
    assert {r for r in after["columns"] if r[:2] == ("auth", "users")} == \
           {r for r in before["columns"] if r[:2] == ("auth", "users")}


def test_migrate_records_each_migration_with_its_checksum(app_db: AppDatabase, conn: psycopg.Connection[Any]) -> None:
    result = migrate(app_db.url)

    files = migrations()
    assert result.applied == [m.name for m in files]
    recorded = conn.execute("SELECT version, filename, checksum FROM worker.schema_migrations ORDER BY version")
    assert recorded.fetchall() == [
        (m.version, m.name, hashlib.sha256((SQL_DIR / "migrations" / m.name).read_bytes()).hexdigest())
        for m in files]


def test_migrate_twice_changes_nothing(app_db: AppDatabase, conn: psycopg.Connection[Any]) -> None:
    first = migrate(app_db.url)
    assert first.applied and first.definitions_applied
    catalog_before, rows_before = catalog(conn), snapshot_rows(conn)
    bookkeeping = conn.execute("SELECT version, checksum, applied_at::text FROM worker.schema_migrations "
                               "ORDER BY version").fetchall()

    second = migrate(app_db.url)

    assert (second.applied, second.definitions_applied) == ([], False)
    assert _diff(catalog_before, catalog(conn)) == {}
    assert snapshot_rows(conn) == rows_before  # every column, the worker's too
    assert conn.execute("SELECT version, checksum, applied_at::text FROM worker.schema_migrations "
                        "ORDER BY version").fetchall() == bookkeeping


def test_an_applied_migration_changed_afterwards_is_refused(migrated: AppDatabase,
                                                            conn: psycopg.Connection[Any]) -> None:
    first = migrations()[0]
    conn.execute("UPDATE worker.schema_migrations SET checksum = %s WHERE version = %s", ("0" * 64, first.version))
    before = catalog(conn)

    with pytest.raises(MigrationRefused, match=re.escape(first.name)) as refused:
        migrate(migrated.url)

    assert "changed" in str(refused.value)
    assert _diff(before, catalog(conn)) == {}
    conn.execute("UPDATE worker.schema_migrations SET checksum = %s WHERE version = %s",
                 (first.checksum, first.version))
    assert migrate(migrated.url).applied == []


# --- the starter's public profiles and the tokens -------------------------------------------------


@pytest.mark.parametrize("role", API_ROLES)
def test_no_api_role_may_read_a_token_column_of_profiles(migrated: AppDatabase, conn: psycopg.Connection[Any],
                                                         role: str) -> None:
    dana = migrated.app.dana
    assert write_own_profile(conn, dana.id, expo_push_token=migrated.app.dana_profile_token,
                             google_refresh_token="1//dana-profile-refresh") == 1
    for column in TOKEN_COLUMNS:
        allowed = conn.execute("SELECT has_column_privilege(%s, 'public.profiles', %s, 'SELECT')",
                               (role, column)).fetchone()
        assert allowed == (False,), f"{role} may SELECT profiles.{column}"
        with as_role(conn, role, dana.id if role == "authenticated" else None), \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT {} FROM public.profiles").format(sql.Identifier(column)))
    assert scalar(conn, "SELECT has_schema_privilege(%s, 'worker', 'USAGE')", (role,)) is False


@pytest.mark.parametrize("role", API_ROLES)
def test_the_public_profile_stays_readable(migrated: AppDatabase, conn: psycopg.Connection[Any], role: str) -> None:
    app = migrated.app
    for column in STARTER_COLUMNS:
        allowed = conn.execute("SELECT has_column_privilege(%s, 'public.profiles', %s, 'SELECT')",
                               (role, column)).fetchone()
        assert allowed == (True,), f"{role} lost SELECT on profiles.{column}"
    with as_role(conn, role, app.eve.id if role == "authenticated" else None):
        seen = conn.execute("SELECT id::text, updated_at::text, username, full_name, avatar_url, website "
                            "FROM public.profiles ORDER BY username").fetchall()
    expected = conn.execute("SELECT id::text, updated_at::text, username, full_name, avatar_url, website "
                            "FROM public.profiles ORDER BY username").fetchall()
    assert [r[2] for r in seen] == ["anna", "cara", "dana", "eve", "finn"]
    assert seen == expected


def test_a_parent_updates_their_own_profile_and_writes_their_own_tokens(migrated: AppDatabase,
                                                                         conn: psycopg.Connection[Any]) -> None:
    app = migrated.app
    assert write_own_profile(conn, app.anna.id, username="anna_k") == 1
    assert write_own_profile(conn, app.anna.id, expo_push_token="ExponentPushToken[anna-new-phone]",
                             google_refresh_token="1//anna-new-grant") == 1
    # Only their own: the starter's update policy still holds.
    with as_role(conn, "authenticated", app.anna.id):
        assert conn.execute("UPDATE public.profiles SET username = 'hijacked' WHERE id = %s",
                            (app.cara.id,)).rowcount == 0
    # A parent without a profile creates their own (the starter's insert policy), tokens included,
    # with Prefer: return=minimal as the app sends it (no RETURNING).
    with as_role(conn, "authenticated", app.ben.id):
        conn.execute("INSERT INTO public.profiles (id, username, expo_push_token) VALUES (%s, 'benny', %s)",
                     (app.ben.id, "ExponentPushToken[ben-profile]"))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # RLS: not someone else's
            conn.execute("INSERT INTO public.profiles (id, username) VALUES (%s, 'intruder')", (app.eve.id,))
    rows = dict(conn.execute(
        "SELECT id::text, (username, expo_push_token, google_refresh_token)::text FROM public.profiles "
        "WHERE id IN (%s, %s, %s)", (app.anna.id, app.ben.id, app.cara.id)).fetchall())
    assert rows == {app.anna.id: "(anna_k,ExponentPushToken[anna-new-phone],1//anna-new-grant)",
                    app.ben.id: "(benny,ExponentPushToken[ben-profile],)",
                    app.cara.id: "(cara,,)"}


def test_the_starters_policies_and_rls_are_still_there(migrated: AppDatabase, conn: psycopg.Connection[Any]) -> None:
    policies = dict(conn.execute("SELECT policyname, cmd FROM pg_policies "
                                 "WHERE schemaname = 'public' AND tablename = 'profiles'").fetchall())
    assert {name: policies.get(name) for name in STARTER_POLICIES} == STARTER_POLICIES
    assert conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.profiles'::regclass").fetchone() \
        == (True,)


def _readable(conn: psycopg.Connection[Any], role: str) -> dict[str, list[str]]:
    """Every relation of the exposed schema ``role`` may read, with the columns it may read."""
    rows = conn.execute(
        "SELECT c.oid::regclass::text, array_agg(a.attname::text ORDER BY a.attnum) FROM pg_class c "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "  AND has_column_privilege(%s, c.oid, a.attnum, 'SELECT') GROUP BY 1", (role,)).fetchall()
    return {str(name): list(columns) for name, columns in rows}


def _everything_visible(conn: psycopg.Connection[Any], role: str, user_id: str | None) -> str:
    """All text ``role`` (as ``user_id``) can read from the exposed schema, in one string."""
    readable = _readable(conn, role)
    seen: list[str] = []
    with as_role(conn, role, user_id):
        for relation, columns in readable.items():
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
                sql.SQL(relation))
            try:
                seen.extend(str(v) for row in conn.execute(query).fetchall() for v in row if v is not None)
            except psycopg.errors.InsufficientPrivilege:
                continue
    return "\n".join(seen)


@pytest.mark.parametrize("who", ["anon", "anna", "ben", "eve"])
def test_no_api_role_reads_a_refresh_token_or_another_parents_push_token(migrated: AppDatabase,
                                                                         conn: psycopg.Connection[Any],
                                                                         who: str) -> None:
    app = migrated.app
    # Tokens where the app writes them: user metadata (already), profiles (now that it can).
    assert write_own_profile(conn, app.dana.id, expo_push_token=app.dana_profile_token,
                             google_refresh_token="1//dana-profile-refresh") == 1
    assert write_own_profile(conn, app.cara.id, google_refresh_token="1//cara-profile-refresh") == 1
    refresh_tokens = ["1//dana-profile-refresh", "1//cara-profile-refresh",
                      *(p.refresh_token for p in app.parents if p.refresh_token)]
    push_tokens = {p.id: [t for t in (p.push_token,) if t] for p in app.parents}
    push_tokens[app.dana.id].append(app.dana_profile_token)
    for reminder_id, token in app.row_tokens.items():
        if token:
            push_tokens[scalar(conn, "SELECT user_id::text FROM public.reminders WHERE id = %s",
                               (reminder_id,))].append(token)
    assert sum(map(len, push_tokens.values())) >= 9  # metadata, profile and row tokens to leak

    me = getattr(app, who).id if who != "anon" else None
    visible = _everything_visible(conn, "anon" if me is None else "authenticated", me)

    leaked = [t for t in refresh_tokens if t in visible]
    leaked += [t for uid, tokens in push_tokens.items() if uid != me for t in tokens if t in visible]
    assert leaked == [], f"{who} can read: {leaked}"
    if who == "anna":  # the scan does see what it should: her own public profile, others' usernames
        assert "anna" in visible and "cara" in visible


def test_a_parent_still_uses_their_own_events_children_and_reminders(migrated: AppDatabase,
                                                                      conn: psycopg.Connection[Any]) -> None:
    app = migrated.app
    mine = {str(r[0]) for r in conn.execute("SELECT id FROM public.events WHERE user_id = %s", (app.anna.id,))}
    with as_role(conn, "authenticated", app.anna.id):
        seen = {str(r[0]) for r in conn.execute("SELECT id FROM public.events").fetchall()}
        reminders = {str(r[0]) for r in conn.execute("SELECT id FROM public.reminders").fetchall()}
        children = [r[0] for r in conn.execute("SELECT name FROM public.children").fetchall()]
        child = conn.execute("INSERT INTO public.children (user_id, name) VALUES (%s, 'Mia') RETURNING id",
                             (app.anna.id,)).fetchone()
        assert child is not None
        conn.execute("INSERT INTO public.events (user_id, child_id, title, start_ts, end_ts, location, prep_items) "
                     "VALUES (%s, %s, 'Swim lesson', now() + interval '2 days', now() + interval '2 days 1 hour', "
                     "'Pool', ARRAY['towel'])", (app.anna.id, child[0]))
        conn.execute("UPDATE public.events SET status = 'cancelled' WHERE id = %s", (app.piano,))
    assert mine <= seen
    assert {app.sent, app.due, app.later, app.old_sent, app.delivered} <= reminders
    assert "Emma" in children
    assert conn.execute("SELECT count(*) FROM public.events WHERE user_id = %s AND title = 'Swim lesson'",
                        (app.anna.id,)).fetchone() == (1,)
    assert conn.execute("SELECT status FROM public.events WHERE id = %s", (app.piano,)).fetchone() == ("cancelled",)


def test_migrate_puts_back_what_the_worker_needs_when_it_went_missing(migrated: AppDatabase,
                                                                      conn: psycopg.Connection[Any]) -> None:
    """`check` answers a missing worker column or function with "run migrate": that must fix it."""
    conn.execute("ALTER TABLE public.events DROP COLUMN next_attempt_at")
    conn.execute("""
        DO $$ DECLARE f regprocedure; BEGIN
            FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'worker_record_receipts' LOOP
                EXECUTE format('DROP FUNCTION %s', f);
            END LOOP;
        END $$""")

    migrate(migrated.url)

    assert conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.events'::regclass "
                        "AND attname = 'next_attempt_at' AND NOT attisdropped").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'worker_record_receipts' "
                        "AND pronamespace = 'public'::regnamespace").fetchone() == (1,)
