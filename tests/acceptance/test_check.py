"""`python worker/main.py check` as operators run it: exit 0, 1 or 2, one line per finding, no secrets."""

from __future__ import annotations

import socket
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.acceptance.cli import clean_env, worker

DB_PASSWORD = "db-pass-never-printed-31f7"
TRIGGER = "trigger-token-never-printed-8c2e41"
CLIENT_SECRET = "GOCSPX-client-secret-never-printed"
EXPO_TOKEN = "expo-access-token-never-printed-77aa"


def _with_password(url: str, dbname: str | None = None) -> str:
    """The test database's conninfo with a password in it (trust auth ignores it; check must hide it)."""
    parts = conninfo_to_dict(url)
    parts["password"] = DB_PASSWORD
    if dbname is not None:
        parts["dbname"] = dbname
    return make_conninfo("", **parts)


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _good_env(database_url: str, pem: str, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "GOOGLE_CLIENT_ID": "1234-abc.apps.googleusercontent.com",
        "GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
        "GOOGLE_CLIENT_EMAIL": "worker@family-app.iam.gserviceaccount.com",
        "GOOGLE_PRIVATE_KEY": pem.replace("\n", "\\n"),  # as secret stores often carry it
        "GOOGLE_PROJECT_ID": "family-app",
        "EXPO_ACCESS_TOKEN": EXPO_TOKEN,
        "WORKER_TRIGGER_TOKEN": TRIGGER,
        "REMINDER_OFFSETS": "2h,15m",
    }
    env.update(extra)
    return clean_env(**env)


def _no_secrets(text: str, pem: str) -> None:
    key_body = pem.splitlines()[5]  # a line from the middle of the key's base64
    for secret in (DB_PASSWORD, TRIGGER, CLIENT_SECRET, EXPO_TOKEN, key_body):
        assert secret not in text


def test_good_configuration_passes_without_showing_a_secret(db_url: str, private_key_pem: str) -> None:
    done = worker("check", env=_good_env(_with_password(db_url), private_key_pem))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    _no_secrets(output, private_key_pem)
    assert "problem:" not in output
    assert "warning:" not in output
    assert "REMINDER_OFFSETS: 2h,15m" in done.stdout
    assert "DATABASE_URL: ***" in done.stdout
    assert "schema version" in done.stdout
    assert "GOOGLE_PRIVATE_KEY parses" in done.stdout


def test_a_private_key_that_does_not_parse_is_a_configuration_problem(db_url: str, private_key_pem: str) -> None:
    broken = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC-broken\n" \
             "-----END PRIVATE KEY-----\n"
    done = worker("check", env=_good_env(_with_password(db_url), private_key_pem,
                                         GOOGLE_PRIVATE_KEY=broken.replace("\n", "\\n")))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, output
    assert "GOOGLE_PRIVATE_KEY" in problems[0]
    assert "GOOGLE_PRIVATE_KEY" in done.stderr
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC" not in output
    _no_secrets(output, private_key_pem)


def test_missing_database_configuration_is_exit_2(private_key_pem: str) -> None:
    env = _good_env("", private_key_pem)
    del env["DATABASE_URL"]
    done = worker("check", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "problem: DATABASE_URL" in done.stdout


def test_unreachable_database_is_exit_1(private_key_pem: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    url = f"postgresql://worker:{DB_PASSWORD}@127.0.0.1:{closed}/postgres"
    done = worker("check", env=_good_env(url, private_key_pem))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "problem: the database is unreachable" in done.stdout
    _no_secrets(output, private_key_pem)


def test_a_database_never_migrated_is_behind(empty_db_url: str, private_key_pem: str) -> None:
    done = worker("check", env=_good_env(_with_password(empty_db_url), private_key_pem))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem:")]
    assert problems, output
    assert all("migrate" in line for line in problems), output


def test_a_migration_edited_after_it_was_applied_is_reported(db: psycopg.Connection[Any], db_url: str,
                                                             private_key_pem: str) -> None:
    db.execute("UPDATE worker.schema_migrations SET checksum = 'edited' WHERE version = 1")
    done = worker("check", env=_good_env(_with_password(db_url), private_key_pem))
    assert done.returncode == 1, done.stdout + done.stderr
    assert any(line.startswith("problem: sql/migrations/001_") and "changed after it was applied" in line
               for line in done.stdout.splitlines()), done.stdout


def test_missing_expo_token_and_trigger_token_are_warnings(db_url: str, private_key_pem: str) -> None:
    env = _good_env(_with_password(db_url), private_key_pem)
    del env["EXPO_ACCESS_TOKEN"], env["WORKER_TRIGGER_TOKEN"]
    done = worker("check", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning:")]
    assert any("EXPO_ACCESS_TOKEN" in w and "enhanced push security" in w for w in warnings)
    assert any("WORKER_TRIGGER_TOKEN" in w for w in warnings)
