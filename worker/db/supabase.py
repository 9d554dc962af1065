"""Supabase Data API transport: supabase-py's ``rpc()`` on the same SQL functions.

One long-lived client per pass with explicit timeouts over HTTP/1.1. postgrest-py's own retry is
turned off and each call is one attempt: the gateway decides what to retry, and every worker
function is safe to call again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from postgrest.exceptions import APIError
from supabase import create_client
from supabase.lib.client_options import SyncClientOptions

from worker.config import ConfigError
from worker.db import DatabaseError, DatabaseUnavailable, Gateway, SchemaOutdated

_TIMEOUT_SECONDS = 60.0

# SQLSTATE classes worth another try: connection (08), resources (53), operator intervention
# (57: cancelled, shutting down), and serialization failures/deadlocks (40001, 40P01).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57", "40001", "40P01")
# PostgREST's own codes for "cannot reach the database" / "schema cache not loaded yet".
_TRANSIENT_PGRST = ("PGRST000", "PGRST001", "PGRST002", "PGRST003")
# "The worker's schema is not what this code calls": no such function (PostgREST's PGRST202, or
# Postgres' undefined function/table/column).
_SCHEMA_CODES = ("PGRST202", "42883", "42P01", "42703", "42704", "3F000")


class SupabaseGateway(Gateway):
    def __init__(self, url: str, key: str, *, timeout: float = _TIMEOUT_SECONDS) -> None:
        self._args = (url, key, timeout)
        self._http = httpx.Client(http1=True, http2=False, timeout=httpx.Timeout(timeout, connect=10.0))
        options = SyncClientOptions(
            httpx_client=self._http,
            postgrest_client_timeout=timeout,
            postgrest_client_retry=False,
            auto_refresh_token=False,
            persist_session=False,
        )
        self._client = create_client(url, key, options=options)

    def _call(self, function: str, params: Mapping[str, Any]) -> Any:
        try:
            return self._client.rpc(function, dict(params)).execute().data
        except httpx.HTTPError as exc:
            raise DatabaseUnavailable(f"{function}: {type(exc).__name__}: {exc}") from None
        except APIError as exc:
            code = str(exc.code or "")
            if not code and "API key" in str(exc.message or ""):
                # Supabase's gateway refused the key itself: configuration, not weather (exit 2).
                raise ConfigError("SUPABASE_SERVICE_ROLE_KEY", f"was refused by the Data API ({exc.message})") from None
            if code in _SCHEMA_CODES:
                raise SchemaOutdated(f"{function}: {code} {exc.message}") from None
            if _transient(exc):
                raise DatabaseUnavailable(f"{function}: {code or 'gateway error'}: {exc.message}") from None
            raise DatabaseError(f"{function}: {code or 'error'} {exc.message}") from None

    def sibling(self) -> SupabaseGateway:
        url, key, timeout = self._args
        return SupabaseGateway(url, key, timeout=timeout)

    def close(self) -> None:
        self._http.close()


def _transient(exc: Any) -> bool:
    """Whether a Data API error may pass on another try.

    postgrest-py's APIError carries no HTTP status; gateway faults (502/503/520) arrive with no
    code at all, PostgREST's own with PGRST codes, database errors with their SQLSTATE.
    """
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "message", "") or "")
    if not code:
        return "API key" not in message  # a refused key is configuration, not weather
    code = str(code)
    return code.startswith(_TRANSIENT_SQLSTATE_PREFIXES) or code in _TRANSIENT_PGRST
