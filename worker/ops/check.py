"""``python worker/main.py check``: is this deployment able to do its job? Exit 0 or say why not.

Why it exists: a CronJob that fails every minute at 3 a.m. is a poor way to learn that a private
key was pasted without its newlines or that nobody ran ``migrate``. ``check`` looks at everything a
pass will need, once, and reports every problem it finds (not just the first), one line each:

* ``problem: ...`` - the worker cannot work like this; ``warning: ...`` - it works, but look.
* Exit 2 for configuration problems (what an operator must fix in the environment), a credential
  Expo or Google refuses included; else 1 when the database, Expo or Google cannot be reached or
  the schema does not match this code; else 0.

It asks Expo and Google one question each that changes nothing and proves the credentials
(:mod:`worker.ops.probes`); ``--offline`` leaves them out and only judges the settings' shapes.

Nothing secret is ever printed: settings come from :meth:`Settings.shown`, the database is shown
without its password, and every line goes through :func:`worker.logs.scrub` as a last defence.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict

from worker import logs
from worker.config import ConfigError, Settings
from worker.db import DatabaseError, DatabaseUnavailable, SchemaOutdated, open_gateway
from worker.db.migrate import audit as audit_migrations
from worker.db.migrate import latest_version
from worker.ops.probes import Probe, Verdict, probe_expo, probe_google_client, probe_service_account
from worker.vocabulary import ErrorKind

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass
class Report:
    """Findings in the order they were made, with the exit code they add up to."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    config_problems: list[str] = field(default_factory=list)
    runtime_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def line(self, text: str, *, scrub: bool = True) -> None:
        print(logs.scrub(text) if scrub else text, file=self.out, flush=True)

    def ok(self, text: str) -> None:
        self.line(f"ok: {text}")

    def config_problem(self, text: str) -> None:
        self.config_problems.append(text)
        self.line(f"problem: {text}")

    def runtime_problem(self, text: str) -> None:
        self.runtime_problems.append(text)
        self.line(f"problem: {text}")

    def warning(self, text: str) -> None:
        self.warnings.append(text)
        self.line(f"warning: {text}")

    @property
    def exit_code(self) -> int:
        if self.config_problems:
            return EXIT_CONFIG
        return EXIT_FAILED if self.runtime_problems else EXIT_OK


def describe_database(settings: Settings) -> str:
    """Where the database is, without the password: ``host=... port=... dbname=... user=...``."""
    if settings.database.url is not None:
        try:
            parts = conninfo_to_dict(str(settings.database.url))
        except Exception:  # unparsable: say so, never echo the string (it may hold a password)
            return "direct Postgres (DATABASE_URL could not be parsed for display)"
        shown = " ".join(f"{k}={parts[k]}" for k in ("host", "port", "dbname", "user") if parts.get(k))
        return f"direct Postgres ({shown or 'libpq defaults'})"
    if settings.database.supabase_url is not None:
        return f"Supabase Data API ({settings.database.supabase_url})"
    return "none"


def check_configuration(settings: Settings, report: Report, *, offline: bool = False) -> None:
    """Print the settings (masked) and judge what ``Settings.from_env`` cannot: keys, shapes; unless
    ``offline``, ask Expo and Google whether they accept the credentials."""
    report.line("configuration:")
    # Values are scrubbed alone, not as `name: value`: the scrubber's `access_token: ...` rule would
    # turn the "-" of an unset token into "***", claiming a token that is not there.
    for name, value in settings.shown().items():
        report.line(f"  {name}: {value if value == '-' else logs.scrub(value)}", scrub=False)
    report.line(f"database: {describe_database(settings)}")
    if not settings.database.configured:
        report.config_problem("DATABASE_URL is not set (nor SUPABASE_URL with SUPABASE_SERVICE_ROLE_KEY): "
                              "a pass has no database")
    elif settings.database.url is None:
        report.warning("only the Data API is configured: `migrate` and this check's migration audit need "
                       "DATABASE_URL")
    _check_google(settings, report, offline=offline)
    _check_expo(settings, report, offline=offline)
    if settings.serve.trigger_token is None:
        report.warning("WORKER_TRIGGER_TOKEN is not set: `serve` will refuse to start (run and --loop "
                       "do not need it)")
    elif len(settings.serve.trigger_token) < 16:
        report.warning("WORKER_TRIGGER_TOKEN is shorter than 16 characters: use a long random value "
                       "(e.g. `openssl rand -hex 32`)")


def _check_google(settings: Settings, report: Report, *, offline: bool = False) -> None:
    if settings.google.oauth_configured:
        client_id = settings.google.client_id or ""
        if not client_id.endswith(".apps.googleusercontent.com"):
            report.warning("GOOGLE_CLIENT_ID does not end in .apps.googleusercontent.com: "
                           "is it an OAuth client id?")
        if offline:
            report.ok("Google OAuth client configured: calendar sync is on (not asked: --offline)")
        else:
            _report_probe(report, "Google's token endpoint", probe_google_client(settings.google),
                          ok="Google accepts the OAuth client (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET): "
                             "calendar sync is on")
    else:
        report.warning("GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET are not set: calendar sync is off "
                       "(reminders are still planned and sent)")
    email, key = settings.google.client_email, settings.google.private_key
    if email is None and key is None:
        return
    if email is not None and not _EMAIL_RE.match(email):
        report.config_problem("GOOGLE_CLIENT_EMAIL does not look like an email address "
                              "(expected name@project.iam.gserviceaccount.com)")
    if key is not None:
        problem = service_account_key_problem(str(key))
        if problem is None:
            report.ok("GOOGLE_PRIVATE_KEY parses as a service-account key")
            if not offline and email is not None and _EMAIL_RE.match(email):
                _report_probe(report, "Google's token endpoint", probe_service_account(settings.google),
                              ok="the service account (GOOGLE_CLIENT_EMAIL, GOOGLE_PRIVATE_KEY) can mint an "
                                 "access token")
        else:
            report.config_problem(f"GOOGLE_PRIVATE_KEY {problem}")


def service_account_key_problem(key: str) -> str | None:
    """None when the key loads as the RSA key Google issues, else why not (never key material).

    ``cryptography`` is what google-auth itself uses to load the key, so a key that passes here is
    one google-auth will sign with; the library's own error text is not repeated (it may quote bytes).
    """
    if "-----BEGIN" not in key or "PRIVATE KEY-----" not in key:
        return ("is not a PEM private key (expected -----BEGIN PRIVATE KEY----- ... "
                "-----END PRIVATE KEY-----; literal \\n is accepted)")
    # cryptography only when a service-account key is configured (it is large to import)
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        loaded = load_pem_private_key(key.encode(), password=None)
    except Exception as exc:  # ValueError, TypeError, UnsupportedAlgorithm: name the kind only
        return (f"does not parse as a private key ({type(exc).__name__}); "
                "paste it again from the service account's JSON file")
    if not isinstance(loaded, rsa.RSAPrivateKey):
        return "is not an RSA key (Google service-account keys are RSA)"
    return None


def _check_expo(settings: Settings, report: Report, *, offline: bool = False) -> None:
    parts = urlsplit(settings.expo.api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        report.config_problem("EXPO_API_URL must be an http(s) URL like https://exp.host/--/api/v2")
        return
    if parts.scheme != "https" and parts.hostname not in _LOCAL_HOSTS:
        report.warning("EXPO_API_URL is not https: push tokens and messages would travel in clear text")
    if offline:
        report.ok(f"Expo API at {settings.expo.api_url} (not asked: --offline)")
    else:
        token = settings.expo.access_token
        _report_probe(report, "Expo", probe_expo(settings.expo),
                      ok="Expo accepts the access token (EXPO_ACCESS_TOKEN)" if token else
                         "Expo answers without an access token")
    if settings.expo.access_token is None:
        report.warning("EXPO_ACCESS_TOKEN is not set: enhanced push security is off (fine unless the Expo "
                       "project requires it, then every send fails with UNAUTHORIZED)")


def check_database(settings: Settings, report: Report) -> None:
    """Reach the database, compare its schema with ``sql/``, and read what the last passes met."""
    latest = latest_version()
    try:
        with open_gateway(settings.database) as gateway:
            version = int(gateway.schema_version(patience=5.0).get("version") or 0)
            status = gateway.status(datetime.now(UTC), patience=5.0)
            audit = gateway.audit(patience=5.0)
    except ConfigError as exc:
        report.config_problem(str(exc))
        return
    except DatabaseUnavailable as exc:
        report.runtime_problem(f"the database is unreachable: {exc}")
        return
    except SchemaOutdated as exc:
        report.runtime_problem(f"{exc} (this worker's schema version is {latest})")
        return
    except DatabaseError as exc:
        report.runtime_problem(f"the worker schema is unreadable ({exc}): "
                               f"run `python worker/main.py migrate` (latest is {latest})")
        return
    if version < latest:
        report.runtime_problem(f"schema version {version} is behind this worker's {latest}: "
                               "run `python worker/main.py migrate`")
    elif version > latest:
        report.runtime_problem(f"schema version {version} is ahead of this worker's {latest}: "
                               "this image is older than the database; deploy the matching worker")
    else:
        report.ok(f"database reachable, schema version {version} (latest)")
    check_recent_passes(status, report)
    check_audit(audit, report)
    if settings.database.url is None:
        return
    try:
        problems = audit_migrations(str(settings.database.url))
    except Exception as exc:  # the audit is extra: its failure is worth a line, not a crash
        report.warning(f"could not compare the database's schema with sql/: {type(exc).__name__}")
        return
    for problem in problems:
        report.runtime_problem(problem)


def check_audit(audit: dict[str, object], report: Report) -> None:
    """What the database itself holds that a pass cannot fix (from worker_audit)."""

    def listed(key: str) -> list[object]:
        value = audit.get(key)
        return list(value) if isinstance(value, list) else []

    missing = listed("missing")
    if missing:
        report.runtime_problem(f"the database lacks what this worker needs ({', '.join(map(str, missing))}): "
                               "run `python worker/main.py migrate`")
    for grant in listed("readable_tokens"):
        report.runtime_problem(f"{grant} through the Data API: a token must never be readable by an API role; "
                               "run `python worker/main.py migrate`, which takes the column away")
    for table in listed("rls_off"):
        report.runtime_problem(f"row-level security is off on {table}: every signed-in user could read every row "
                               f"(ALTER TABLE {table} ENABLE ROW LEVEL SECURITY, or run migrate)")
    for item in listed("unknown_statuses"):
        if isinstance(item, dict):
            report.warning(f"{item.get('rows')} {item.get('table')} row(s) in status {item.get('status')!r}, which "
                           "the worker does not know: left alone by every pass")
    pending_sent = int(str(audit.get("sent_but_pending") or 0))
    if pending_sent:
        report.warning(f"{pending_sent} reminder(s) are 'pending' but have sent_at_ts set (sent by an earlier "
                       "sender): never sent again")
    in_metadata = int(str(audit.get("refresh_tokens_in_metadata") or 0))
    if in_metadata:
        report.warning(f"{in_metadata} parent(s) keep their Google refresh token in user metadata, readable by them "
                       "and carried in every access token: `python worker/main.py secure-tokens` moves them into "
                       "the worker's private store")
    for name in listed("constraints_missing"):
        report.warning(f"constraint {name} is missing: existing rows hold values outside the worker's vocabulary")


def check_recent_passes(status: dict[str, object], report: Report) -> None:
    """What the passes met that only the operator can fix (from the status document)."""
    last = status.get("last_problem")
    reminders = status.get("reminders")
    held = int(reminders.get("held_expo_credentials") or 0) if isinstance(reminders, dict) else 0
    if isinstance(last, dict) and last.get("error_kind") == ErrorKind.EXPO_CREDENTIALS and not last.get("since_ok"):
        report.runtime_problem(f"Expo refused the project's credentials in the last pass that failed "
                               f"({last.get('error')}); {held} reminder(s) are held until they are fixed")
    elif held:
        report.runtime_problem(f"{held} reminder(s) are held because Expo refused the project's push credentials "
                               "(InvalidCredentials / MismatchSenderId / 401): fix them in Expo or EXPO_ACCESS_TOKEN")
    elif isinstance(last, dict) and not last.get("since_ok"):
        report.warning(f"the last pass that failed has not been followed by a clean one: {last.get('error')}")


def _report_probe(report: Report, service: str, probe: Probe, *, ok: str) -> None:
    """One line for what a probe found: ok, a configuration problem naming the variable (exit 2), or
    a runtime problem with the URL that was asked (exit 1)."""
    if probe.verdict is Verdict.OK:
        report.ok(f"{ok} ({probe.url}: {probe.detail})")
    elif probe.verdict is Verdict.REFUSED:
        report.config_problem(f"{probe.variable} was refused by {service} ({probe.detail} from {probe.url}): "
                              "every pass would fail the same way; set the right value")
    elif probe.verdict is Verdict.UNREACHABLE:
        report.runtime_problem(f"{service} is unreachable at {probe.url} ({probe.detail}): check the network, "
                               "and the URL setting if it is not the default")
    else:
        report.runtime_problem(f"{service} at {probe.url} did not answer as expected ({probe.detail})")


def run_check(settings: Settings, out: TextIO | None = None, *, offline: bool = False) -> int:
    """Check everything, print one line per finding, return the exit code (0, 1 or 2). ``offline``:
    judge the settings without asking Expo or Google."""
    report = Report(out=out or sys.stdout)
    check_configuration(settings, report, offline=offline)
    if settings.database.configured:
        check_database(settings, report)
    counts = f"{len(report.config_problems) + len(report.runtime_problems)} problem(s), " \
             f"{len(report.warnings)} warning(s)"
    report.line(f"check: {'ok' if report.exit_code == EXIT_OK else 'failed'}: {counts}")
    if report.config_problems:
        # The contract: exit 2 comes with one line on stderr that names the variable.
        print(logs.scrub(f"configuration error: {report.config_problems[0]}"), file=sys.stderr)
    return report.exit_code
