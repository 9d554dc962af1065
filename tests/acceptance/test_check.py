"""`python worker/main.py check` as operators run it: exit 0, 1 or 2, one line per finding, no secrets.

Expo and Google are the local stand-ins (standins/), reached over HTTP by the real libraries: they
refuse a wrong Expo access token (401 UNAUTHORIZED) and answer Google's token endpoint with
``invalid_client`` for a wrong OAuth client and ``invalid_grant`` for a refresh token that does not exist.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from standins.expo import ExpoStandIn
from standins.google import GoogleStandIn
from tests.acceptance.cli import clean_env, worker

DB_PASSWORD = "db-pass-never-printed-31f7"
TRIGGER = "trigger-token-never-printed-8c2e41"
CLIENT_ID = "1234-abc.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-client-secret-never-printed"
EXPO_TOKEN = "expo-access-token-never-printed-77aa"
SERVICE_ACCOUNT = "worker@family-app.iam.gserviceaccount.com"
WRONG = "wrong-value-never-printed-5e1d"


def _with_password(url: str, dbname: str | None = None) -> str:
    """The test database's conninfo with a password in it (trust auth ignores it; check must hide it)."""
    parts = conninfo_to_dict(url)
    parts["password"] = DB_PASSWORD
    if dbname is not None:
        parts["dbname"] = dbname
    return make_conninfo("", **parts)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def service_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def private_key_pem(service_key: rsa.RSAPrivateKey) -> str:
    return _pem(service_key)


@dataclass
class Services:
    """The stand-ins `check` asks: Expo demanding EXPO_TOKEN, Google knowing our OAuth client and
    service account (its signature checked with the key's public half)."""

    expo: ExpoStandIn
    google: GoogleStandIn


@pytest.fixture
def services(service_key: rsa.RSAPrivateKey) -> Iterator[Services]:
    with ExpoStandIn(access_token=EXPO_TOKEN) as expo, \
            GoogleStandIn(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as google:
        google.add_service_account(SERVICE_ACCOUNT, _public_pem(service_key))
        yield Services(expo, google)


def _good_env(database_url: str, pem: str, services: Services | None = None, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "GOOGLE_CLIENT_ID": CLIENT_ID,
        "GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
        "GOOGLE_CLIENT_EMAIL": SERVICE_ACCOUNT,
        "GOOGLE_PRIVATE_KEY": pem.replace("\n", "\\n"),  # as secret stores often carry it
        "GOOGLE_PROJECT_ID": "family-app",
        "EXPO_ACCESS_TOKEN": EXPO_TOKEN,
        "WORKER_TRIGGER_TOKEN": TRIGGER,
        "REMINDER_OFFSETS": "2h,15m",
    }
    if services is not None:
        env.update(EXPO_API_URL=services.expo.url, GOOGLE_TOKEN_URI=services.google.token_uri,
                   GOOGLE_API_URL=services.google.api_url)
    env.update(extra)
    return clean_env(**env)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(stdout: str, kind: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(f"{kind}:")]


def _no_secrets(text: str, pem: str) -> None:
    key_body = pem.splitlines()[5]  # a line from the middle of the key's base64
    for secret in (DB_PASSWORD, TRIGGER, CLIENT_SECRET, EXPO_TOKEN, WRONG, key_body):
        assert secret not in text


def test_good_configuration_passes_without_showing_a_secret(db_url: str, private_key_pem: str,
                                                            services: Services) -> None:
    done = worker("check", env=_good_env(_with_password(db_url), private_key_pem, services))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    _no_secrets(output, private_key_pem)
    assert "problem:" not in output
    assert "warning:" not in output
    assert "REMINDER_OFFSETS: 2h,15m" in done.stdout
    assert "DATABASE_URL: ***" in done.stdout
    assert "schema version" in done.stdout
    assert "GOOGLE_PRIVATE_KEY parses" in done.stdout
    oks = _lines(done.stdout, "ok")
    assert any(line.startswith("ok: Expo accepts the access token (EXPO_ACCESS_TOKEN)") for line in oks), oks
    assert any(line.startswith("ok: Google accepts the OAuth client") for line in oks), oks
    assert any("service account" in line and "can mint an access token" in line for line in oks), oks
    # What was asked: receipts of no tickets (nothing sent), a refresh token nobody issued, a JWT grant.
    assert services.expo.receipt_requests == [[]]
    assert services.expo.messages == []
    assert services.google.refreshes[SERVICE_ACCOUNT] == 1
    made_up = [token for token in services.google.refreshes if token != SERVICE_ACCOUNT]
    assert len(made_up) == 1 and services.google.refreshes[made_up[0]] == 1
    assert services.google.requests == []  # no Calendar call


def test_a_wrong_expo_access_token_is_exit_2_and_named(db_url: str, private_key_pem: str,
                                                       services: Services) -> None:
    done = worker("check", env=_good_env(db_url, private_key_pem, services, EXPO_ACCESS_TOKEN=WRONG))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    [problem] = _lines(done.stdout, "problem")
    assert problem.startswith("problem: EXPO_ACCESS_TOKEN was refused by Expo (HTTP 401 UNAUTHORIZED"), problem
    assert f"{services.expo.url}/push/getReceipts" in problem
    assert done.stderr.startswith("configuration error: EXPO_ACCESS_TOKEN"), done.stderr
    assert done.stderr.count("\n") == 1
    _no_secrets(output, private_key_pem)
    assert services.expo.messages == []


def test_an_expo_project_demanding_a_token_when_none_is_set_is_exit_2(db_url: str, private_key_pem: str,
                                                                      services: Services) -> None:
    env = _good_env(db_url, private_key_pem, services)
    del env["EXPO_ACCESS_TOKEN"]
    done = worker("check", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    [problem] = _lines(done.stdout, "problem")
    assert "EXPO_ACCESS_TOKEN" in problem and "none is set" in problem, problem


@pytest.mark.parametrize(("variable", "value"), [("GOOGLE_CLIENT_SECRET", WRONG),
                                                 ("GOOGLE_CLIENT_ID", "someone-else.apps.googleusercontent.com")])
def test_a_wrong_google_oauth_client_is_exit_2_and_named(db_url: str, private_key_pem: str, services: Services,
                                                         variable: str, value: str) -> None:
    """Google tells the two apart: "The OAuth client was not found." / "Unauthorized" (a wrong secret)."""
    named = variable
    done = worker("check", env=_good_env(db_url, private_key_pem, services, **{variable: value}))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    [problem] = _lines(done.stdout, "problem")
    assert problem.startswith(f"problem: {named} was refused by Google's token endpoint (invalid_client"), problem
    assert services.google.token_uri in problem
    assert done.stderr.startswith(f"configuration error: {named} was refused"), done.stderr
    _no_secrets(output, private_key_pem)


def test_a_service_account_google_does_not_know_is_named(db_url: str, private_key_pem: str,
                                                         services: Services) -> None:
    stranger = "stranger@family-app.iam.gserviceaccount.com"
    done = worker("check", env=_good_env(db_url, private_key_pem, services, GOOGLE_CLIENT_EMAIL=stranger))
    assert done.returncode == 2, done.stdout + done.stderr
    [problem] = _lines(done.stdout, "problem")
    assert problem.startswith("problem: GOOGLE_CLIENT_EMAIL was refused by Google's token endpoint (invalid_grant"), \
        problem


def test_a_key_of_another_service_account_is_named(db_url: str, services: Services) -> None:
    other = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))  # parses, but Google has not it
    done = worker("check", env=_good_env(db_url, other, services))
    assert done.returncode == 2, done.stdout + done.stderr
    [problem] = _lines(done.stdout, "problem")
    assert problem.startswith("problem: GOOGLE_PRIVATE_KEY was refused by Google's token endpoint (invalid_grant"), \
        problem
    _no_secrets(done.stdout + done.stderr, other)


def test_unreachable_services_are_exit_1_with_their_url(db_url: str, private_key_pem: str) -> None:
    expo_url = f"http://127.0.0.1:{_closed_port()}/--/api/v2"
    token_uri = f"http://127.0.0.1:{_closed_port()}/token"
    done = worker("check", env=_good_env(db_url, private_key_pem, EXPO_API_URL=expo_url, GOOGLE_TOKEN_URI=token_uri))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    problems = _lines(done.stdout, "problem")
    assert f"problem: Expo is unreachable at {expo_url}/push/getReceipts (ConnectionError)" in " ".join(problems), \
        problems
    google = [p for p in problems if p.startswith(f"problem: Google's token endpoint is unreachable at {token_uri}")]
    assert len(google) == 2, problems  # the OAuth client and the service account
    _no_secrets(output, private_key_pem)


def test_offline_asks_neither_expo_nor_google(db_url: str, private_key_pem: str, services: Services) -> None:
    env = _good_env(db_url, private_key_pem, services, EXPO_ACCESS_TOKEN=WRONG, GOOGLE_CLIENT_SECRET=WRONG)
    done = worker("check", "--offline", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ok: Expo API at {services.expo.url} (not asked: --offline)" in done.stdout
    assert "(not asked: --offline)" in " ".join(_lines(done.stdout, "ok"))
    assert services.expo.receipt_requests == [] and services.expo.requests == []
    assert not services.google.refreshes
    _no_secrets(done.stdout + done.stderr, private_key_pem)


def test_a_private_key_that_does_not_parse_is_a_configuration_problem(db_url: str, private_key_pem: str,
                                                                      services: Services) -> None:
    broken = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC-broken\n" \
             "-----END PRIVATE KEY-----\n"
    done = worker("check", env=_good_env(_with_password(db_url), private_key_pem, services,
                                         GOOGLE_PRIVATE_KEY=broken.replace("\n", "\\n")))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1, output
    assert "GOOGLE_PRIVATE_KEY" in problems[0]
    assert "GOOGLE_PRIVATE_KEY" in done.stderr
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC" not in output
    _no_secrets(output, private_key_pem)


def test_missing_database_configuration_is_exit_2(private_key_pem: str, services: Services) -> None:
    env = _good_env("", private_key_pem, services)
    del env["DATABASE_URL"]
    done = worker("check", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "problem: DATABASE_URL" in done.stdout


def test_unreachable_database_is_exit_1(private_key_pem: str, services: Services) -> None:
    url = f"postgresql://worker:{DB_PASSWORD}@127.0.0.1:{_closed_port()}/postgres"
    done = worker("check", env=_good_env(url, private_key_pem, services))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "problem: the database is unreachable" in done.stdout
    _no_secrets(output, private_key_pem)


def test_a_database_never_migrated_is_behind(empty_db_url: str, private_key_pem: str) -> None:
    done = worker("check", "--offline", env=_good_env(_with_password(empty_db_url), private_key_pem))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    problems = [line for line in done.stdout.splitlines() if line.startswith("problem:")]
    assert problems, output
    assert all("migrate" in line for line in problems), output


def test_a_migration_edited_after_it_was_applied_is_reported(db: psycopg.Connection[Any], db_url: str,
                                                             private_key_pem: str) -> None:
    db.execute("UPDATE worker.schema_migrations SET checksum = 'edited' WHERE version = 1")
    done = worker("check", "--offline", env=_good_env(_with_password(db_url), private_key_pem))
    assert done.returncode == 1, done.stdout + done.stderr
    assert any(line.startswith("problem: sql/migrations/001_") and "changed after it was applied" in line
               for line in done.stdout.splitlines()), done.stdout


def test_missing_expo_token_and_trigger_token_are_warnings(db_url: str, private_key_pem: str,
                                                           services: Services) -> None:
    services.expo.access_token = None  # a project without enhanced push security
    env = _good_env(_with_password(db_url), private_key_pem, services)
    del env["EXPO_ACCESS_TOKEN"], env["WORKER_TRIGGER_TOKEN"]
    done = worker("check", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: Expo answers without an access token" in done.stdout
    warnings = [line for line in done.stdout.splitlines() if line.startswith("warning:")]
    assert any("EXPO_ACCESS_TOKEN" in w and "enhanced push security" in w for w in warnings)
    assert any("WORKER_TRIGGER_TOKEN" in w for w in warnings)
