"""What the Supabase gateway puts on the wire (respx at the httpx level): URL, headers, body, errors."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import respx

from worker.config import ConfigError
from worker.db import DatabaseError, DatabaseUnavailable, SchemaOutdated
from worker.db.supabase import SupabaseGateway

URL = "https://abc.supabase.co"
KEY = "sb_secret_0123456789abcdef"
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@respx.mock
def test_rpc_goes_to_rest_v1_with_the_service_key() -> None:
    route = respx.post(f"{URL}/rest/v1/rpc/worker_claim_reminders").mock(
        return_value=httpx.Response(200, json={"claimed": [], "cancelled": 2, "expired": 1}))
    claim = uuid.uuid4()
    with SupabaseGateway(URL, KEY) as gw:
        result = gw.claim_reminders(NOW, claim, 1000, 300)
    assert (result.cancelled, result.expired, result.rows) == (2, 1, [])
    request = route.calls.last.request
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-profile"] == "public"
    assert json.loads(request.content) == {"p_now": NOW.isoformat(), "p_claim": str(claim), "p_limit": 1000,
                                           "p_lease_seconds": 300, "p_rate": 0.0, "p_lookahead_seconds": 2.0,
                                           "p_lead_seconds": 0.0}
    assert request.url.scheme == "https"


@respx.mock
def test_gateway_faults_are_retried_with_backoff_for_the_callers_patience_then_reported_unavailable() -> None:
    route = respx.post(f"{URL}/rest/v1/rpc/worker_schema_version").mock(
        return_value=httpx.Response(503, json={"message": "Service Unavailable"}))
    started = time.monotonic()
    with SupabaseGateway(URL, KEY) as gw, pytest.raises(DatabaseUnavailable):
        gw.schema_version(patience=1.0)
    elapsed = time.monotonic() - started
    assert route.call_count >= 3  # 0.1 s, 0.2 s, 0.4 s ... apart
    assert gw.round_trips == route.call_count
    assert elapsed < 1.0 + 0.5  # no try starts after the patience is spent


@respx.mock
def test_a_transient_fault_then_success() -> None:
    respx.post(f"{URL}/rest/v1/rpc/worker_schema_version").mock(side_effect=[
        httpx.ConnectError("refused"), httpx.Response(200, json={"version": 2, "definitions": "abc"})])
    with SupabaseGateway(URL, KEY) as gw:
        assert gw.schema_version()["version"] == 2


@respx.mock
def test_a_missing_function_means_the_schema_is_older_than_the_code() -> None:
    route = respx.post(f"{URL}/rest/v1/rpc/worker_schema_version").mock(return_value=httpx.Response(
        404, json={"code": "PGRST202", "details": "Searched for the function public.worker_schema_version without "
                   "parameters", "hint": None, "message": "Could not find the function public.worker_schema_version "
                   "without parameters in the schema cache"}))
    with SupabaseGateway(URL, KEY) as gw, pytest.raises(SchemaOutdated, match="migrate"):
        gw.schema_version()
    assert route.call_count == 1


@respx.mock
def test_permission_errors_are_not_retried() -> None:
    route = respx.post(f"{URL}/rest/v1/rpc/worker_schema_version").mock(return_value=httpx.Response(
        403, json={"code": "42501", "details": None, "hint": None,
                   "message": "permission denied for function worker_schema_version"}))
    with SupabaseGateway(URL, KEY) as gw, pytest.raises(DatabaseError, match="42501"):
        gw.schema_version()
    assert route.call_count == 1


@respx.mock
def test_a_refused_api_key_is_not_weather() -> None:
    route = respx.post(f"{URL}/rest/v1/rpc/worker_schema_version").mock(return_value=httpx.Response(
        401, json={"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}))
    with SupabaseGateway(URL, KEY) as gw, pytest.raises(ConfigError, match="SUPABASE_SERVICE_ROLE_KEY") as caught:
        gw.schema_version()
    assert route.call_count == 1
    assert KEY not in str(caught.value)
