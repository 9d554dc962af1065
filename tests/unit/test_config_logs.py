"""Configuration errors name their variable; secrets never show in reprs or logs."""

from __future__ import annotations

import base64
import io
import json

import pytest

from worker import logs
from worker.config import ConfigError, Settings


def test_defaults() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgresql://u:pw@h/db"})
    assert s.expo.api_url == "https://exp.host/--/api/v2"
    assert s.google.api_url == "https://www.googleapis.com/"
    assert s.expo.max_attempts == 5
    assert s.log.format == "json"


def _jwt(role: str) -> str:
    def part(doc: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'role': role, 'iss': 'supabase'})}.c2lnbmF0dXJl"


def test_database_url_wins_and_supabase_alias() -> None:
    s = Settings.from_env({"EXPO_PUBLIC_SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "sb_secret_k"})
    assert s.database.supabase_url == "https://x.supabase.co"
    s.require_database()
    assert Settings.from_env({"SUPABASE_URL": "https://x.supabase.co",
                              "SUPABASE_SERVICE_ROLE_KEY": _jwt("service_role")}).database.supabase_key is not None


@pytest.mark.parametrize(("key", "says"), [
    ("not-a-key", "neither a JWT"),
    ("a.b", "neither a JWT"),
    ("sb_publishable_abc", "publishable"),
    ("aaa.!!!.ccc", "not a readable JWT"),
])
def test_a_malformed_service_key_is_configuration(key: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": key})
    assert caught.value.variable == "SUPABASE_SERVICE_ROLE_KEY"
    assert says in caught.value.reason
    assert key not in str(caught.value)


def test_the_anon_key_is_not_the_service_key() -> None:
    with pytest.raises(ConfigError, match="'anon'") as caught:
        Settings.from_env({"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": _jwt("anon")})
    assert caught.value.variable == "SUPABASE_SERVICE_ROLE_KEY"


@pytest.mark.parametrize("env,variable", [
    ({"PUSH_MAX_ATTEMPTS": "zero"}, "PUSH_MAX_ATTEMPTS"),
    ({"PUSH_MAX_ATTEMPTS": "0"}, "PUSH_MAX_ATTEMPTS"),
    ({"EXPO_API_URL": "exp.host"}, "EXPO_API_URL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"SUPABASE_URL": "https://x.supabase.co"}, "SUPABASE_SERVICE_ROLE_KEY"),
    ({"GOOGLE_CLIENT_ID": "id"}, "GOOGLE_CLIENT_SECRET"),
    ({"GOOGLE_PRIVATE_KEY": "k"}, "GOOGLE_CLIENT_EMAIL"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
])
def test_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.variable == variable


def test_no_database_is_an_error_for_a_pass() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Settings.from_env({}).require_database()


def test_private_key_newlines_are_restored() -> None:
    s = Settings.from_env({"GOOGLE_CLIENT_EMAIL": "sa@p.iam.gserviceaccount.com",
                           "GOOGLE_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\\nabc\\n-----END PRIVATE KEY-----\\n"})
    assert s.google.private_key is not None and "\nabc\n" in s.google.private_key


def test_secrets_are_masked_in_repr_and_redacted_view() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgresql://u:hunter2@h/db", "EXPO_ACCESS_TOKEN": "expo-secret-token"})
    assert "hunter2" not in repr(s) and "expo-secret-token" not in repr(s)
    assert s.shown()["DATABASE_URL"] == "***" and s.shown()["REMINDER_OFFSETS"] == "24h,3h,30m"
    assert s.shown()["EXPO_ACCESS_TOKEN"] == "***" and s.shown()["GOOGLE_CLIENT_ID"] == "-"


def test_log_lines_are_json_and_scrubbed() -> None:
    stream = io.StringIO()
    logs.setup("INFO", "json", stream)
    logs.register_secret("my-service-key-123")
    logs.event("x.y", token="ExponentPushToken[abcdef]", key="my-service-key-123",
               url="postgresql://u:hunter2@host/db", header="Bearer eyJhbGciOi.eyJzdWIi.c2ln")
    line = json.loads(stream.getvalue())
    text = json.dumps(line)
    for secret in ("abcdef", "my-service-key-123", "hunter2", "eyJhbGciOi"):
        assert secret not in text
    assert line["event"] == "x.y"


def test_text_format() -> None:
    stream = io.StringIO()
    logs.setup("INFO", "text", stream)
    logs.event("pass.summary", sent=3)
    assert "pass.summary" in stream.getvalue() and "sent=3" in stream.getvalue()


def test_the_readme_documents_every_setting_as_the_code_defines_it() -> None:
    from pathlib import Path

    from worker.config import markdown_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
    documented = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert documented == markdown_table(), "regenerate the table: python -m worker.config"


def test_every_setting_has_a_description_and_one_variable() -> None:
    from worker.config import documented

    seen = [variable for _, variable, _, _ in documented()]
    assert len(seen) == len(set(seen))
    assert all(meaning for _, _, meaning, _ in documented())
    assert {"DATABASE_URL", "WORKER_SHUTDOWN_GRACE", "RECEIPT_MAX_PER_PASS", "PUSH_RETRY_WAIT",
            "PROMETHEUS_PUSHGATEWAY_URL", "WORKER_TRIGGER"} <= set(seen)
