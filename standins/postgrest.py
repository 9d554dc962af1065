"""A local stand-in for the Supabase Data API (Supabase's API gateway in front of PostgREST).

Why this exists: our Supabase gateway must be tested through supabase-py's *real* HTTP path
(``create_client(url, key).rpc(fn, params).execute()``), with real headers, real JSON bodies,
real status codes and a real Postgres behind it.  Mocking httpx (respx) would only check that
we call the client the way we *think* it works; this stand-in checks the wire and the database.

Only what the worker needs is implemented: ``POST /rest/v1/rpc/<function>``.  Within that, the
behaviour follows PostgREST (v12/v13) and the Supabase gateway as closely as is cheap:

* Gateway: the ``apikey`` header must be a known key - a legacy HS256 JWT (``anon`` /
  ``service_role``) signed with ``jwt_secret``, or one of the new opaque keys
  (``sb_secret_...`` -> ``service_role``, ``sb_publishable_...`` -> ``anon``).  Otherwise 401
  ``{"message": "Invalid API key", ...}`` exactly like Supabase's Kong.
* Role: from the ``Authorization: Bearer`` JWT when it is one (verified HS256, ``exp`` checked),
  else from the apikey.  supabase-py sends ``Authorization: Bearer <key>`` for *every* key, also
  the opaque ones; the real gateway accepts that when the bearer equals the apikey (it swaps in a
  short-lived JWT for the key's role), so we do too.
* One transaction per request: ``SET LOCAL ROLE``, ``request.jwt.claims``, ``role``,
  ``request.method``/``request.path``/``request.headers``, ``search_path``; then the call.
* Arguments are bound the way PostgREST does it: the JSON body goes through
  ``json_to_record(...) AS _(arg type, ...)``, so every JSON value is converted by Postgres to the
  parameter's declared type (arrays, jsonb strings and booleans included), and arguments that are
  not in the body are left out so their defaults apply.
* Results: SETOF/TABLE -> JSON array; json/jsonb -> the value itself; other scalars and single
  composites -> ``to_jsonb``; ``void`` -> 204 without a body.
* Errors: ``{"code","details","hint","message"}`` with PostgREST's SQLSTATE -> HTTP status map,
  ``Proxy-Status: PostgREST; error=<code>`` (postgrest-py reads it) and PGRST202/PGRST203 for
  unknown/ambiguous functions.  ``RAISE SQLSTATE 'PGRST'`` custom errors are honoured.

Database outages: while Postgres is unreachable every call answers 503 with PostgREST's shape
(``PGRST000`` when no connection can be made, ``PGRST001`` when a connection is lost under a call);
pooled connections that died with the server are noticed on their first use (a read-only catalog
lookup), dropped with the rest of the idle pool and replaced, so once Postgres is back the stand-in
serves again without being restarted and without answering an error for a stale connection.

Test hooks: ``requests`` records every request (method, path, lower-cased headers, JSON body),
``fail_next`` injects gateway-level faults, ``latency`` delays every response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import secrets
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from standins._server import HttpStandIn, StandInHandler, StandInServer

__all__ = ["PostgrestStandIn", "RequestRecord", "StandInJwtError", "sign_jwt", "verify_jwt"]

# The Supabase CLI's well-known local-development secret, so keys match `supabase start` ones.
DEFAULT_JWT_SECRET: Final = "super-secret-jwt-token-with-at-least-32-characters-long"  # noqa: S105
_RPC_PREFIX: Final = "/rest/v1/rpc/"
_JSON_CT: Final = "application/json; charset=utf-8"
_JWT_CLOCK_SKEW: Final = 30  # seconds; PostgREST tolerates 30 s of clock skew on exp/iat/nbf.
_ROLE_FOR_PREFIX: Final = {"sb_secret_": "service_role", "sb_publishable_": "anon"}
_INVALID_API_KEY: Final = {
    "message": "Invalid API key",
    "hint": "Double check your Supabase `anon` or `service_role` API key.",
}
_NO_API_KEY: Final = {
    "message": "No API key found in request",
    "hint": "No `apikey` request header or url param was found.",
}


@dataclass(frozen=True)
class RequestRecord:
    """One request as the stand-in received it, for assertions in tests.

    ``headers`` are lower-cased (HTTP header names are case-insensitive and supabase-py sends
    ``apiKey``); ``json`` is the parsed body, or ``None`` when there was none or it was not JSON.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    json: Any
    body: bytes


class StandInJwtError(Exception):
    """A bearer token or API key that does not verify; carries PostgREST's code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------------------------
# JWT (HS256 with the stdlib only: the project takes no JWT dependency for a test stand-in)
# --------------------------------------------------------------------------------------------


def _b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(claims: dict[str, Any], secret: str) -> str:
    """Sign ``claims`` as a compact HS256 JWT, the format Supabase's legacy keys and GoTrue use."""
    header = _b64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url_encode(signature)}"


def verify_jwt(token: str, secret: str, *, now: float | None = None) -> dict[str, Any]:
    """Verify an HS256 JWT and return its claims; raise :class:`StandInJwtError` like PostgREST.

    Only HS256 is accepted (that is what a Supabase project with a shared JWT secret issues);
    ``exp``/``nbf``/``iat`` are checked with PostgREST's 30 s clock-skew allowance.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise StandInJwtError("PGRST301", f"Expected 3 parts in JWT; got {len(parts)}")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as exc:
        raise StandInJwtError("PGRST301", "JWT cryptographic operation failed") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise StandInJwtError("PGRST301", "Wrong or unsupported encoding algorithm")
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise StandInJwtError("PGRST301", "No suitable key or wrong key type")
    if not isinstance(claims, dict):
        raise StandInJwtError("PGRST301", "Parsing claims failed")
    current = time.time() if now is None else now
    exp = claims.get("exp")
    if isinstance(exp, int | float) and current - _JWT_CLOCK_SKEW > exp:
        raise StandInJwtError("PGRST303", "JWT expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and current + _JWT_CLOCK_SKEW < nbf:
        raise StandInJwtError("PGRST303", "JWT not yet valid")
    iat = claims.get("iat")
    if isinstance(iat, int | float) and current + _JWT_CLOCK_SKEW < iat:
        raise StandInJwtError("PGRST303", "JWT issued at future")
    return claims


# --------------------------------------------------------------------------------------------
# PostgREST error shapes and SQLSTATE -> HTTP status mapping
# --------------------------------------------------------------------------------------------


class _HttpError(Exception):
    """An error response to send: status, PostgREST-shaped body and extra headers."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(body.get("message"))
        self.status = status
        self.body = body
        self.headers = headers or {}


def _pgrst_error(status: int, code: str, message: str, details: Any = None, hint: Any = None) -> _HttpError:
    return _HttpError(status, {"code": code, "details": details, "hint": hint, "message": message})


def status_for_sqlstate(code: str, message: str, *, authenticated: bool) -> int:
    """PostgREST's ``mapSQLtoHTTP`` (src/PostgREST/Error.hs), for errors raised by Postgres.

    ``authenticated`` is PostgREST's "role differs from the anonymous role": 42501
    (insufficient_privilege) is 401 for ``anon`` and 403 for everyone else.
    """
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "53400": 500,
        "57P01": 503,
        "P0001": 400,
        "42P01": 404,
        "42P17": 500,
    }
    if code in exact:
        return exact[code]
    if code == "21000":
        return 400 if message.endswith("requires a WHERE clause") else 500
    if code == "22023":
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if code == "42883":
        return 406 if message.startswith("function xmlagg(") else 404
    if code == "42501":
        return 403 if authenticated else 401
    prefixes = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
        "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500,
        "F0": 500, "HV": 500, "P0": 500, "XX": 500,
    }  # fmt: skip
    if code[:2] in prefixes:
        return prefixes[code[:2]]
    if code.startswith("PT") and code[2:].isdigit():
        return int(code[2:])
    return 400


def _connection_lost(conn: psycopg.Connection[Any]) -> bool:
    """Whether the connection is gone (server stopped or crashed, backend terminated).

    Judged by the connection's state, not the SQLSTATE: a function may ``RAISE`` 57P01 or 08006
    itself, and that is an ordinary error with its own code, as in PostgREST.
    """
    return conn.broken or conn.closed


def _connection_error(exc: psycopg.Error) -> _HttpError:
    """PostgREST's answer when the connection to Postgres broke under a request."""
    return _pgrst_error(503, "PGRST001", "Database client error. Retrying the connection.", str(exc))


def _unreachable_error(exc: psycopg.Error) -> _HttpError:
    """PostgREST's answer when no connection to Postgres can be made."""
    return _pgrst_error(503, "PGRST000", "Database connection error. Retrying the connection.", str(exc))


def _error_from_pg(exc: psycopg.Error, *, authenticated: bool) -> _HttpError:
    """Turn a Postgres error into PostgREST's JSON error (and ``RAISE SQLSTATE 'PGRST'``)."""
    diag = exc.diag
    code = exc.sqlstate
    message = diag.message_primary or str(exc)
    if code is None:  # no server error: connection trouble
        return _pgrst_error(503, "PGRST001", "Database client error. Retrying the connection.", str(exc))
    if code == "PGRST":
        return _raise_pgrst_error(message, diag.message_detail)
    status = status_for_sqlstate(code, message, authenticated=authenticated)
    error = _pgrst_error(status, code, message, diag.message_detail, diag.message_hint)
    if status == 401:
        error.headers["WWW-Authenticate"] = "Bearer"
    return error


def _json_object(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _raise_pgrst_error(message: str, detail: str | None) -> _HttpError:
    """``RAISE SQLSTATE 'PGRST' USING message = '{json}', detail = '{json}'`` as PostgREST does."""
    parse_error = "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error"
    body = _json_object(message)
    if body is None or "code" not in body or "message" not in body:
        return _pgrst_error(
            500,
            "PGRST121",
            parse_error,
            f"Invalid JSON value for MESSAGE: '{message}'",
            "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: "
            "'details', 'hint'.",
        )
    meta = _json_object(detail)
    if meta is None or not isinstance(meta.get("status"), int):
        return _pgrst_error(
            500,
            "PGRST121",
            parse_error,
            f"Invalid JSON value for DETAIL: '{detail}'"
            if detail
            else "DETAIL is missing in the RAISE statement",
            "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' and optional key: "
            "'status_text'.",
        )
    headers = {str(k): str(v) for k, v in dict(meta.get("headers") or {}).items()}
    return _HttpError(
        meta["status"],
        {
            "code": str(body["code"]),
            "details": body.get("details"),
            "hint": body.get("hint"),
            "message": str(body["message"]),
        },
        headers,
    )


# --------------------------------------------------------------------------------------------
# Function lookup (PostgREST's schema cache, reduced to what RPC needs)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    name: str
    type_sql: str  # format_type() output: valid SQL for a column definition list / cast
    required: bool


@dataclass(frozen=True)
class _Routine:
    schema: str
    name: str
    params: tuple[_Param, ...]
    returns_set: bool
    return_type: str  # format_type() of prorettype
    return_kind: str  # pg_type.typtype: b base, c composite, d domain, p pseudo, ...

    @property
    def signature(self) -> str:
        return ", ".join(f"{p.name} => {p.type_sql}" for p in self.params)


_ROUTINES_SQL: Final = """
select p.pronargs, p.pronargdefaults, p.proargnames, p.proargmodes::text[],
       array(select format_type(t, null) from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[])) t),
       p.proretset, format_type(p.prorettype, null), t.typtype::text
from pg_catalog.pg_proc p
join pg_catalog.pg_namespace n on n.oid = p.pronamespace
join pg_catalog.pg_type t on t.oid = p.prorettype
where n.nspname = %s and p.proname = %s and p.prokind = 'f'
"""


def _load_routines(conn: psycopg.Connection[Any], schema: str, name: str) -> list[_Routine]:
    routines: list[_Routine] = []
    for nargs, ndefaults, names, modes, types, retset, rettype, typtype in conn.execute(
        _ROUTINES_SQL, (schema, name)
    ).fetchall():
        all_names: list[str] = list(names) if names else [""] * len(types)
        all_modes: list[str] = list(modes) if modes else ["i"] * len(types)
        inputs = [
            (arg_name or "", arg_type)
            for arg_name, arg_mode, arg_type in zip(all_names, all_modes, types, strict=False)
            if arg_mode in ("i", "b", "v")
        ]
        n_required = int(nargs) - int(ndefaults)
        params = tuple(
            _Param(arg_name, arg_type, index < n_required)
            for index, (arg_name, arg_type) in enumerate(inputs)
        )
        routines.append(_Routine(schema, name, params, bool(retset), str(rettype), str(typtype)))
    return routines


def _choose_routine(
    routines: list[_Routine], schema: str, name: str, keys: list[str], *, single_object: bool
) -> _Routine:
    """Overload resolution like PostgREST: the body's keys must cover exactly one signature."""
    if single_object:
        matches = [r for r in routines if len(r.params) == 1 and r.params[0].type_sql in ("json", "jsonb")]
    else:
        given = set(keys)
        matches = [
            r
            for r in routines
            if all(p.name for p in r.params)
            and given <= {p.name for p in r.params}
            and {p.name for p in r.params if p.required} <= given
        ]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        candidates = ", ".join(f"{r.schema}.{r.name}({r.signature})" for r in matches)
        raise _pgrst_error(
            300,
            "PGRST203",
            f"Could not choose the best candidate function between: {candidates}",
            None,
            "Try renaming the parameters or the function itself in the database so function "
            "overloading can be resolved",
        )
    shown = ", ".join(sorted(keys))
    if keys:
        in_message = f"({shown})"
        plural = "s" if len(keys) > 1 else ""
        in_details = f" with parameter{plural} {shown}"
    else:
        in_message = in_details = " without parameters"
    hint = None
    if routines:
        options = sorted({"(" + ", ".join(sorted(p.name for p in r.params)) + ")" for r in routines})
        hint = f"Perhaps you meant to call the function {schema}.{name}{options[0]}"
    raise _pgrst_error(
        404,
        "PGRST202",
        f"Could not find the function {schema}.{name}{in_message} in the schema cache",
        f"Searched for the function {schema}.{name}{in_details} or with a single unnamed json/jsonb "
        "parameter, but no matches were found in the schema cache.",
        hint,
    )


def _call_statement(routine: _Routine, keys: list[str], *, single_object: bool) -> sql.Composed:
    """``select <json result>::text from json_to_record(%s::json) as _(...)`` - PostgREST's call.

    Binding the body through ``json_to_record`` lets Postgres convert each JSON value to the
    parameter's declared type, exactly as PostgREST does, instead of guessing in Python.
    """
    fn = sql.SQL("{}.{}").format(sql.Identifier(routine.schema), sql.Identifier(routine.name))
    source: sql.Composable
    if single_object:
        call = sql.SQL("{}(%s::{})").format(fn, sql.SQL(routine.params[0].type_sql))
        source = sql.SQL("")
    elif keys:
        by_name = {p.name: p for p in routine.params}
        args = sql.SQL(", ").join(
            sql.SQL("{} => _.{}").format(sql.Identifier(k), sql.Identifier(k)) for k in keys
        )
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(by_name[k].type_sql)) for k in keys
        )
        call = sql.SQL("{}({})").format(fn, args)
        source = sql.SQL(" from json_to_record(%s::json) as _({})").format(columns)
    else:
        call = sql.SQL("{}()").format(fn)
        source = sql.SQL("")
    if routine.returns_set:
        if keys and not single_object:
            from_clause = sql.SQL("{}, lateral {} as pgrst_t").format(source, call)
        else:
            from_clause = sql.SQL(" from {} as pgrst_t").format(call)
        return sql.SQL("select coalesce(jsonb_agg(pgrst_t), '[]'::jsonb)::text{}").format(from_clause)
    if routine.return_type in ("json", "jsonb"):
        return sql.SQL("select ({})::text{}").format(call, source)
    if routine.return_type == "void":
        return sql.SQL("select null::text from (select {}{}) as pgrst_void").format(call, source)
    return sql.SQL("select to_jsonb({})::text{}").format(call, source)


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _Handler(StandInHandler):
    """HTTP/1.1 with keep-alive, because httpx pools connections and so does our worker."""

    server: StandInServer[PostgrestStandIn]

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload, extra = self.server.standin._handle(self.command, self.path, headers, body)
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        if status == 204 or payload is None:
            self.end_headers()
            return
        self.send_header("Content-Type", _JSON_CT)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class PostgrestStandIn(HttpStandIn):
    """Supabase Data API stand-in: ``POST /rest/v1/rpc/<fn>`` executed against a real Postgres.

    ``dsn`` should connect as a role that may ``SET ROLE`` to ``anon``, ``authenticated`` and
    ``service_role`` (Supabase's ``authenticator``, or a superuser in tests).  ``schemas`` are the
    exposed schemas (Supabase's "Exposed schemas"); the first is the default profile.
    Lifecycle (``start``/``stop``, context manager) comes from
    :class:`~standins._server.HttpStandIn`; stopping also closes every pooled Postgres connection.
    """

    handler_class = _Handler
    thread_name = "postgrest-standin"

    def __init__(
        self,
        dsn: str,
        *,
        jwt_secret: str = DEFAULT_JWT_SECRET,
        latency: float = 0.0,
        schemas: tuple[str, ...] = ("public",),
    ) -> None:
        super().__init__()
        self.dsn = dsn
        self.jwt_secret = jwt_secret
        self.latency = latency
        self.schemas = schemas
        self.secret_key: str = "sb_secret_" + secrets.token_urlsafe(24)
        self.publishable_key: str = "sb_publishable_" + secrets.token_urlsafe(24)
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._faults: list[tuple[int, dict[str, Any]]] = []
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._connections: set[psycopg.Connection[Any]] = set()
        now = int(time.time())
        ten_years = 10 * 365 * 24 * 3600
        self._service_role_key = sign_jwt(
            {"iss": "supabase", "ref": "standin", "role": "service_role", "iat": now, "exp": now + ten_years},
            jwt_secret,
        )
        self._anon_key = sign_jwt(
            {"iss": "supabase", "ref": "standin", "role": "anon", "iat": now, "exp": now + ten_years},
            jwt_secret,
        )

    # ---- lifecycle (the rest is HttpStandIn's) ---------------------------------------------

    def _after_stop(self) -> None:
        """Close every Postgres connection once no handler can use one any more.

        Connections still out with a handler that outlived ``stop`` are closed when it releases
        them (``_release`` discards every connection once the stand-in is stopped).
        """
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
        for conn in connections:
            conn.close()

    @property
    def url(self) -> str:
        """The ``SUPABASE_URL`` to hand to ``create_client`` (no trailing slash)."""
        return self.base_url

    # ---- keys ------------------------------------------------------------------------------

    def service_role_key(self) -> str:
        """A legacy ``service_role`` API key: HS256 JWT signed with ``jwt_secret``."""
        return self._service_role_key

    def anon_key(self) -> str:
        """A legacy ``anon`` API key: HS256 JWT signed with ``jwt_secret``."""
        return self._anon_key

    def user_token(self, user_id: str, *, expires_in: int = 3600, **extra_claims: Any) -> str:
        """A GoTrue-style access token for ``user_id`` (role ``authenticated``)."""
        now = int(time.time())
        issuer = f"{self.url}/auth/v1" if self.running else "supabase"
        claims: dict[str, Any] = {
            "aud": "authenticated",
            "exp": now + expires_in,
            "iat": now,
            "iss": issuer,
            "sub": user_id,
            "role": "authenticated",
            "aal": "aal1",
            "is_anonymous": False,
            "session_id": secrets.token_hex(16),
        }
        claims.update(extra_claims)
        return sign_jwt(claims, self.jwt_secret)

    # ---- test hooks ------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 503, body: dict[str, Any] | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` at the gateway, before auth or Postgres.

        Simulates what the worker sees from Supabase's edge (503 during a restart, 520/502 from
        the CDN, 429 rate limits) without touching the database.
        """
        if body is None:
            try:
                body = {"message": HTTPStatus(status).phrase}
            except ValueError:  # e.g. Cloudflare's 520 is not in HTTPStatus
                body = {"message": f"Injected fault {status}"}
        payload = body
        with self._lock:
            self._faults.extend([(status, payload)] * n)

    # ---- internals -------------------------------------------------------------------------

    def _acquire(self) -> psycopg.Connection[Any]:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        conn = psycopg.connect(self.dsn, autocommit=False, application_name="postgrest-standin")
        with self._lock:
            self._connections.add(conn)
        return conn

    def _drain_idle(self) -> None:
        """Close every idle pooled connection: after one was found dead, the others died with it."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _connect_and_load(
        self, schema: str, name: str, *, authenticated: bool
    ) -> tuple[psycopg.Connection[Any], list[_Routine]]:
        """A live connection and the routines named ``name``: PostgREST's pool plus schema cache.

        The catalog lookup is read-only, so when a pooled connection turns out to be dead (Postgres
        was restarted since it was last used) it is safe to drop it and try again on a new one.
        """
        attempts = 3
        for attempt in range(attempts):
            fresh = self._idle.empty()
            try:
                conn = self._acquire()
            except psycopg.Error as exc:
                raise _unreachable_error(exc) from exc
            try:
                routines = _load_routines(conn, schema, name)
                conn.rollback()  # the catalog lookup stands for PostgREST's schema cache, not the request
            except psycopg.Error as exc:
                lost = _connection_lost(conn)
                self._release(conn, discard=lost)
                if not lost:
                    raise _error_from_pg(exc, authenticated=authenticated) from exc
                self._drain_idle()
                if fresh or attempt == attempts - 1:
                    raise _connection_error(exc) from exc
                continue
            return conn, routines
        raise AssertionError("unreachable")

    def _release(self, conn: psycopg.Connection[Any], *, discard: bool = False) -> None:
        if discard or conn.closed or conn.broken or not self.running:
            with self._lock:
                self._connections.discard(conn)
            conn.close()
            return
        self._idle.put(conn)

    def _handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes | None, dict[str, str]]:
        """Serve one request; returns (status, JSON body or None, extra headers)."""
        parts = urlsplit(raw_path)
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self._lock:
            self.requests.append(RequestRecord(method, parts.path, parts.query, headers, parsed, body))
            fault = self._faults.pop(0) if self._faults else None
        if self.latency > 0:
            time.sleep(self.latency)
        if fault is not None:
            return fault[0], json.dumps(fault[1]).encode(), {}
        try:
            role, claims = self._authenticate(headers)
            return self._rpc(method, path=parts.path, headers=headers, body=body, role=role, claims=claims)
        except _HttpError as err:
            error = err
        except Exception as exc:  # a stand-in bug must still produce a response, not a dropped socket
            error = _pgrst_error(500, "PGRSTX00", f"Stand-in internal error: {exc!r}")
        extra = dict(error.headers)
        if "code" in error.body:
            extra.setdefault("Proxy-Status", f"PostgREST; error={error.body['code']}")
        return error.status, json.dumps(error.body).encode(), extra

    def _api_key_role(self, apikey: str) -> str | None:
        """The role a gateway API key stands for, or None when the gateway would reject it."""
        if hmac.compare_digest(apikey, self.secret_key):
            return "service_role"
        if hmac.compare_digest(apikey, self.publishable_key):
            return "anon"
        if apikey.count(".") == 2:
            try:
                claims = verify_jwt(apikey, self.jwt_secret)
            except StandInJwtError:
                return None
            role = claims.get("role")
            if role in ("anon", "service_role"):
                return str(role)
        return None

    def _authenticate(self, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """Gateway key check, then PostgREST's JWT check; returns (db role, JWT claims)."""
        apikey = headers.get("apikey")
        if not apikey:
            raise _HttpError(401, dict(_NO_API_KEY))
        key_role = self._api_key_role(apikey)
        if key_role is None:
            raise _HttpError(401, dict(_INVALID_API_KEY))
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if not authorization or (scheme.lower() == "bearer" and token == apikey and apikey.startswith("sb_")):
            # No bearer, or the opaque key echoed as bearer (what supabase-py sends): the gateway
            # forwards a short-lived JWT for the key's role.
            now = int(time.time())
            return key_role, {"iss": "supabase", "role": key_role, "iat": now, "exp": now + 60}
        if scheme.lower() != "bearer" or not token:
            raise _pgrst_error(401, "PGRST301", "Invalid Authorization header", None, None)
        if token.startswith("sb_"):
            # An opaque key as bearer that is not the apikey: the real gateway rejects it.
            raise _HttpError(401, dict(_INVALID_API_KEY))
        try:
            claims = verify_jwt(token, self.jwt_secret)
        except StandInJwtError as exc:
            err = _pgrst_error(401, exc.code, exc.message)
            err.headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", error_description="{exc.message}"'
            )
            raise err from exc
        role = claims.get("role")
        return (str(role) if isinstance(role, str) and role else "anon"), claims

    def _rpc(
        self,
        method: str,
        *,
        path: str,
        headers: dict[str, str],
        body: bytes,
        role: str,
        claims: dict[str, Any],
    ) -> tuple[int, bytes | None, dict[str, str]]:
        if not path.startswith(_RPC_PREFIX) or "/" in path[len(_RPC_PREFIX) :]:
            raise _pgrst_error(404, "PGRST125", "Invalid path specified in request URL")
        name = unquote(path[len(_RPC_PREFIX) :])
        if method in ("GET", "HEAD"):
            raise _pgrst_error(
                400, "PGRST127", "Feature not implemented", "The stand-in only implements POST /rpc."
            )
        if method != "POST":
            raise _pgrst_error(405, "PGRST101", f"Cannot use the {method} method on RPC")
        profile = headers.get("content-profile") or self.schemas[0]
        if profile not in self.schemas:
            raise _pgrst_error(
                406, "PGRST106", f"Invalid schema: {profile}", None,
                "Only the following schemas are exposed: " + ", ".join(self.schemas),
            )  # fmt: skip
        prefer = {p.strip() for p in headers.get("prefer", "").split(",")}
        single_object = "params=single-object" in prefer
        try:
            args: Any = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise _pgrst_error(400, "PGRST102", "Empty or invalid json") from exc
        if not isinstance(args, dict) and not single_object:
            raise _pgrst_error(400, "PGRST102", "Invalid body: the stand-in accepts a JSON object only")
        keys = list(args) if isinstance(args, dict) and not single_object else []

        conn, routines = self._connect_and_load(profile, name, authenticated=role != "anon")
        lost = False
        try:
            routine = _choose_routine(routines, profile, name, keys, single_object=single_object)
            statement = _call_statement(routine, keys, single_object=single_object)
            params: tuple[str, ...] = (json.dumps(args),) if keys or single_object else ()
            search_path = ", ".join(dict.fromkeys(f'"{s}"' for s in (profile, "public")))
            settings = {
                "request.jwt.claims": json.dumps(claims),
                "role": role,
                "request.method": method,
                "request.path": path,
                "request.headers": json.dumps(headers),
                "request.cookies": "{}",
                "search_path": search_path,
            }
            set_configs = sql.SQL(", ").join(
                sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
                for k, v in settings.items()
            )
            with conn.transaction():
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("select {}").format(set_configs))
                row = conn.execute(statement, params).fetchone()
        except psycopg.Error as exc:
            lost = _connection_lost(conn)
            if lost:
                self._drain_idle()
                raise _connection_error(exc) from exc
            raise _error_from_pg(exc, authenticated=role != "anon") from exc
        finally:
            self._release(conn, discard=lost)
        if routine.return_type == "void" and not routine.returns_set:
            return 204, None, {}
        value = row[0] if row is not None else None
        return 200, (value if value is not None else "null").encode(), {}
