"""Fixtures of the CLI tests: the worker's environment over each of its two gateways."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from standins.google import GoogleStandIn
from standins.postgrest import PostgrestStandIn
from tests.acceptance.cli import clean_env

EnvFor = Callable[..., dict[str, str]]


def google_env(google: GoogleStandIn) -> dict[str, str]:
    """The settings that point the worker's Google client at the stand-in."""
    return {"GOOGLE_CLIENT_ID": google.client_id, "GOOGLE_CLIENT_SECRET": google.client_secret,
            "GOOGLE_API_URL": google.api_url, "GOOGLE_TOKEN_URI": google.token_uri}


@pytest.fixture(params=["postgres", "supabase"])
def env_for(request: pytest.FixtureRequest, db_url: str) -> Iterator[EnvFor]:
    """``env_for(google=None, **settings)``: the worker's environment over each gateway, DATABASE_URL
    or the Data API (the PostgREST stand-in on the same database) with the service role key; Google's
    settings are added when a stand-in is given, and any further settings as keyword arguments."""

    def build(api: PostgrestStandIn | None, google: GoogleStandIn | None = None, **extra: str) -> dict[str, str]:
        if google is not None:
            extra = {**google_env(google), **extra}
        if api is None:
            return clean_env(DATABASE_URL=db_url, **extra)
        return clean_env(SUPABASE_URL=api.url, SUPABASE_SERVICE_ROLE_KEY=api.service_role_key(), **extra)

    if request.param == "postgres":
        yield lambda google=None, **extra: build(None, google, **extra)
        return
    with PostgrestStandIn(db_url) as api:
        yield lambda google=None, **extra: build(api, google, **extra)
