"""Privileges and row-level security, with Supabase's default privileges in place (see conftest)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from postgrest.exceptions import APIError

from standins.postgrest import PostgrestStandIn
from tests import seed
from worker.config import ConfigError
from worker.db import DatabaseError
from worker.db.supabase import SupabaseGateway

WORKER_FUNCTIONS = ["worker_claim_events", "worker_complete_events", "worker_claim_reminders",
                    "worker_record_push_outcomes", "worker_schema_version"]


def _as(db: psycopg.Connection[Any], role: str, user_id: str | None = None) -> None:
    db.execute(f"SET ROLE {role}")
    claims = json.dumps({"sub": user_id, "role": role} if user_id else {"role": role})
    db.execute("SELECT set_config('request.jwt.claims', %s, false)", (claims,))


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_api_roles_cannot_call_worker_functions(db: psycopg.Connection[Any], role: str) -> None:
    for fn in WORKER_FUNCTIONS:
        allowed = db.execute(
            "SELECT has_function_privilege(%s, p.oid, 'EXECUTE') FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.proname = %s",
            (role, fn)).fetchone()
        assert allowed == (False,), fn
    _as(db, role, str(uuid.uuid4()))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("SELECT public.worker_schema_version()")


def test_service_role_can_call_them(db: psycopg.Connection[Any]) -> None:
    _as(db, "service_role")
    assert db.execute("SELECT public.worker_schema_version()").fetchone()[0]["version"] >= 1


def test_a_parent_sees_only_their_own_rows_and_never_a_refresh_token(db: psycopg.Connection[Any]) -> None:
    mine = seed.add_parent(db, refresh_token="1//my-refresh-token")
    theirs = seed.add_parent(db, refresh_token="1//their-refresh-token")
    from datetime import UTC, datetime

    seed.add_event(db, mine, datetime(2026, 12, 1, tzinfo=UTC))
    seed.add_event(db, theirs, datetime(2026, 12, 1, tzinfo=UTC))
    _as(db, "authenticated", mine)
    assert db.execute("SELECT count(*) FROM events").fetchone() == (1,)
    assert db.execute("SELECT id::text FROM profiles").fetchall() == [(mine,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("SELECT google_refresh_token FROM profiles")
    db.execute("RESET ROLE")
    _as(db, "authenticated", mine)
    # The owner may still write a new token.
    db.execute("UPDATE profiles SET google_refresh_token = '1//new' WHERE id = %s", (mine,))
    # ... but not the worker's bookkeeping.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("UPDATE events SET synced_version = 99")
    db.execute("RESET ROLE")
    _as(db, "service_role")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("SELECT google_refresh_token FROM profiles")


def test_anon_sees_nothing(db: psycopg.Connection[Any]) -> None:
    seed.add_parent(db)
    _as(db, "anon")
    for table in ("profiles", "children", "events", "reminders"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute(f"SELECT count(*) FROM {table}")


def test_through_the_data_api_anon_and_users_are_refused(db_url: str) -> None:
    with PostgrestStandIn(db_url) as api:
        import httpx
        from supabase import create_client
        from supabase.lib.client_options import SyncClientOptions

        with httpx.Client() as http:
            anon = create_client(api.url, api.anon_key(), options=SyncClientOptions(httpx_client=http))
            with pytest.raises(APIError) as info:
                anon.rpc("worker_claim_reminders", {"p_now": "2026-11-22T09:00:00Z", "p_claim": str(uuid.uuid4()),
                                                    "p_limit": 10, "p_lease_seconds": 60}).execute()
        assert info.value.code == "42501"
        # A user's token where the service key belongs is refused by the gateway: configuration (exit 2).
        with SupabaseGateway(api.url, api.user_token(str(uuid.uuid4()))) as gw, \
                pytest.raises((DatabaseError, ConfigError)):
            gw.schema_version()
        with SupabaseGateway(api.url, api.secret_key) as gw:
            assert gw.schema_version()["version"] >= 1


def test_an_edit_puts_the_event_back_to_pending(db: psycopg.Connection[Any]) -> None:
    from datetime import UTC, datetime

    user = seed.add_parent(db)
    event = seed.add_event(db, user, datetime(2026, 12, 1, tzinfo=UTC))
    db.execute("UPDATE events SET status = 'synced', synced_version = version, error_message = 'x' WHERE id = %s",
               (event,))
    db.execute("UPDATE events SET location = 'Field 5' WHERE id = %s", (event,))
    assert db.execute("SELECT status, version, synced_version, error_message FROM events WHERE id = %s",
                      (event,)).fetchone() == ("pending", 2, 1, None)
    db.execute("UPDATE events SET status = 'cancelled' WHERE id = %s", (event,))
    assert db.execute("SELECT status, version FROM events WHERE id = %s", (event,)).fetchone() == ("cancelled", 3)


def test_a_bad_timezone_is_refused_with_its_name(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="Mars/Base"):
        seed.add_parent(db, timezone="Mars/Base")


def test_migrate_twice_changes_nothing(db_url: str) -> None:
    from worker.db.migrate import MigrateResult, migrate

    assert migrate(db_url) == MigrateResult()


def test_a_parent_reads_and_writes_only_their_own_preferences_and_devices(db: psycopg.Connection[Any]) -> None:
    from datetime import UTC, datetime, timedelta

    mine, theirs = seed.add_parent(db), seed.add_parent(db)
    event = seed.add_event(db, mine, datetime.now(UTC) + timedelta(days=2))
    db.execute("UPDATE events SET status = 'synced', synced_version = version WHERE id = %s", (event,))
    db.execute("INSERT INTO notification_preferences (user_id, push_enabled) VALUES (%s, false)", (theirs,))
    db.execute("INSERT INTO push_tokens (user_id, token) VALUES (%s, 'ExponentPushToken[theirs]')", (theirs,))
    _as(db, "authenticated", mine)
    assert db.execute("SELECT count(*) FROM notification_preferences").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM push_tokens").fetchone() == (0,)
    # Their own rows: written by the app as the parent, and the re-plan trigger runs for them.
    db.execute("INSERT INTO notification_preferences (user_id, reminder_offsets) VALUES (%s, '{1 hour}')", (mine,))
    db.execute("INSERT INTO push_tokens (user_id, token) VALUES (%s, 'ExponentPushToken[mine]')", (mine,))
    assert db.execute("SELECT token FROM push_tokens").fetchall() == [("ExponentPushToken[mine]",)]
    for statement, params in (("INSERT INTO notification_preferences (user_id) VALUES (%s)", (theirs,)),
                              ("INSERT INTO push_tokens (user_id, token) VALUES (%s, %s)",
                               (theirs, "ExponentPushToken[x]"))):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # RLS: WITH CHECK refuses another's row
            db.execute(statement, params)
    assert db.execute("UPDATE notification_preferences SET push_enabled = true WHERE user_id = %s",
                      (theirs,)).rowcount == 0
    assert db.execute("DELETE FROM push_tokens WHERE user_id = %s", (theirs,)).rowcount == 0
    db.execute("RESET ROLE")
    assert db.execute("SELECT status FROM events WHERE id = %s", (event,)).fetchone() == ("pending",)
    assert db.execute("SELECT push_enabled FROM notification_preferences WHERE user_id = %s",
                      (theirs,)).fetchone() == (False,)
    assert db.execute("SELECT count(*) FROM push_tokens WHERE user_id = %s", (theirs,)).fetchone() == (1,)
    _as(db, "anon")
    for table in ("notification_preferences", "push_tokens"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute(f"SELECT count(*) FROM {table}")
