"""Configuration: the environment, read once, checked early, with secrets kept out of reprs.

Every problem is a :class:`ConfigError` naming the variable, so the CLI can print one line and
exit 2 instead of failing at 3 a.m. halfway through a pass.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from worker.vocabulary import RunTrigger

DEFAULT_EXPO_API_URL = "https://exp.host/--/api/v2"
DEFAULT_GOOGLE_API_URL = "https://www.googleapis.com/"
DEFAULT_GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
DEFAULT_OFFSETS = "24h,3h,30m"

_OFFSET_RE = re.compile(r"^\s*(\d+)\s*([dhms])\s*$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class ConfigError(Exception):
    """The environment is invalid: ``variable`` names what is wrong, ``reason`` says how."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


class Secret(str):
    """A string that never shows itself in a repr, a log line or an f-string's ``!r``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


def parse_offsets(text: str, variable: str = "REMINDER_OFFSETS") -> tuple[timedelta, ...]:
    """Parse ``"24h,3h,30m"`` into lead times, longest first, without duplicates."""
    offsets: set[timedelta] = set()
    for part in text.split(","):
        if not part.strip():
            continue
        m = _OFFSET_RE.match(part)
        if m is None:
            raise ConfigError(variable, f"{part.strip()!r} is not a lead time like 24h, 3h, 30m or 90s")
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if seconds <= 0:
            raise ConfigError(variable, f"{part.strip()!r} must be longer than zero")
        if seconds > 28 * 86400:
            raise ConfigError(variable, f"{part.strip()!r} is longer than 28 days")
        offsets.add(timedelta(seconds=seconds))
    if not offsets:
        raise ConfigError(variable, "no lead time given (e.g. 24h,3h,30m)")
    return tuple(sorted(offsets, reverse=True))


def service_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a Supabase service-role key, or None. Never quotes the key.

    Supabase issues two kinds: legacy JWTs (three base64url parts; the payload's ``role`` says
    which key it is) and opaque keys (``sb_secret_...`` for the service role). The anon or
    publishable key would pass the gateway and then be refused by every worker function.
    """
    if key.startswith("sb_secret_"):
        return None if len(key) > len("sb_secret_") else "is an empty sb_secret_ key"
    if key.startswith("sb_publishable_"):
        return "is a publishable key; the worker needs the secret (service role) key, sb_secret_..."
    parts = key.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return "is neither a JWT (three dot-separated parts) nor an sb_secret_... key"
    import base64
    import json

    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return "is not a readable JWT (its payload is not base64url-encoded JSON)"
    role = payload.get("role") if isinstance(payload, dict) else None
    if role != "service_role":
        return f"is a JWT for the role {role!r}, not the service_role key"
    return None


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is outside {low}..{high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is outside {low}..{high}")
    return value


def _url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(name, "must be an http(s) URL")
    return raw


TRIGGERS = tuple(t.value for t in RunTrigger)


def _trigger(env: Mapping[str, str]) -> str | None:
    raw = env.get("WORKER_TRIGGER", "").strip().lower()
    if raw and raw not in TRIGGERS:
        raise ConfigError("WORKER_TRIGGER", f"{raw!r} is not one of {', '.join(TRIGGERS)}")
    return raw or None


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    raw = env.get(name, "").strip()
    return Secret(raw) if raw else None


@dataclass(frozen=True)
class Settings:
    """Everything a pass needs to know, validated. Build with :meth:`from_env`."""

    database_url: Secret | None = None
    supabase_url: str | None = None
    supabase_key: Secret | None = None
    google_client_id: str | None = None
    google_client_secret: Secret | None = None
    google_client_email: str | None = None
    google_private_key: Secret | None = None
    google_project_id: str | None = None
    google_api_url: str = DEFAULT_GOOGLE_API_URL
    google_token_uri: str = DEFAULT_GOOGLE_TOKEN_URI
    expo_access_token: Secret | None = None
    expo_api_url: str = DEFAULT_EXPO_API_URL
    reminder_offsets: tuple[timedelta, ...] = field(default_factory=lambda: parse_offsets(DEFAULT_OFFSETS))
    push_max_attempts: int = 5
    push_concurrency: int = 6
    push_rate_limit: float = 600.0  # notifications per second; 0 turns the limiter off
    push_timeout: float = 15.0
    push_request_attempts: int = 3
    push_retry_wait: float = 0.5
    batch_size: int = 1000
    lease_seconds: int = 300
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    calendar_concurrency: int = 8
    trigger_token: Secret | None = None
    log_level: str = "INFO"
    log_format: str = "json"
    # Receipts, run history, retention, metrics (issue 4).
    receipt_delay_seconds: int = 900  # Expo: receipts are ready about 15 minutes after sending
    receipt_max_per_pass: int = 10_000  # 0 turns receipt checks off
    receipt_time_budget_seconds: float = 20.0  # the receipts step stops claiming after this
    worker_runs_retention_days: int = 30
    reminder_retention_days: int = 90  # settled reminders, counted from notify_at_ts
    prometheus_pushgateway_url: str | None = None
    worker_trigger: str | None = None  # cron|http|manual|loop: what started `run` (WORKER_TRIGGER)

    @property
    def database_configured(self) -> bool:
        return self.database_url is not None or self.supabase_url is not None

    @property
    def google_oauth_configured(self) -> bool:
        return bool(self.google_client_id and self.google_client_secret)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment; raises :class:`ConfigError` on the first problem."""
        env = os.environ if env is None else env
        database_url = _secret(env, "DATABASE_URL")
        if (database_url is not None and urlsplit(database_url).scheme not in ("postgres", "postgresql")
                and "=" not in database_url):  # libpq key=value strings are fine too
            raise ConfigError("DATABASE_URL", "must be a postgresql:// URL or a libpq connection string")
        supabase_url = _url(env, "SUPABASE_URL", None) or _url(env, "EXPO_PUBLIC_SUPABASE_URL", None)
        supabase_key = _secret(env, "SUPABASE_SERVICE_ROLE_KEY")
        if database_url is None and supabase_url is not None:
            if supabase_key is None:
                raise ConfigError("SUPABASE_SERVICE_ROLE_KEY", "is required with SUPABASE_URL")
            problem = service_key_problem(supabase_key)
            if problem is not None:
                raise ConfigError("SUPABASE_SERVICE_ROLE_KEY", problem)

        google_client_id = env.get("GOOGLE_CLIENT_ID", "").strip() or None
        google_client_secret = _secret(env, "GOOGLE_CLIENT_SECRET")
        if bool(google_client_id) != bool(google_client_secret):
            missing = "GOOGLE_CLIENT_SECRET" if google_client_id else "GOOGLE_CLIENT_ID"
            raise ConfigError(missing, "is required when the other OAuth client setting is set")
        private_key = _secret(env, "GOOGLE_PRIVATE_KEY")
        if private_key is not None:
            # Secret stores and .env files often carry the PEM with literal backslash-n.
            private_key = Secret(private_key.replace("\\n", "\n"))
        client_email = env.get("GOOGLE_CLIENT_EMAIL", "").strip() or None
        if bool(client_email) != bool(private_key):
            missing = "GOOGLE_PRIVATE_KEY" if client_email else "GOOGLE_CLIENT_EMAIL"
            raise ConfigError(missing, "is required when the other service-account setting is set")

        google_api_url = _url(env, "GOOGLE_API_URL", DEFAULT_GOOGLE_API_URL) or DEFAULT_GOOGLE_API_URL
        if not google_api_url.endswith("/"):
            google_api_url += "/"

        log_format = env.get("LOG_FORMAT", "json").strip().lower() or "json"
        if log_format not in ("json", "text"):
            raise ConfigError("LOG_FORMAT", f"{log_format!r} is not json or text")
        log_level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError("LOG_LEVEL", f"{log_level!r} is not DEBUG, INFO, WARNING, ERROR or CRITICAL")

        return cls(
            database_url=database_url,
            supabase_url=supabase_url,
            supabase_key=supabase_key,
            google_client_id=google_client_id,
            google_client_secret=google_client_secret,
            google_client_email=client_email,
            google_private_key=private_key,
            google_project_id=env.get("GOOGLE_PROJECT_ID", "").strip() or None,
            google_api_url=google_api_url,
            google_token_uri=_url(env, "GOOGLE_TOKEN_URI", DEFAULT_GOOGLE_TOKEN_URI) or DEFAULT_GOOGLE_TOKEN_URI,
            expo_access_token=_secret(env, "EXPO_ACCESS_TOKEN"),
            expo_api_url=(_url(env, "EXPO_API_URL", DEFAULT_EXPO_API_URL) or DEFAULT_EXPO_API_URL).rstrip("/"),
            reminder_offsets=parse_offsets(env.get("REMINDER_OFFSETS", "").strip() or DEFAULT_OFFSETS),
            push_max_attempts=_int(env, "PUSH_MAX_ATTEMPTS", 5, 1, 100),
            push_concurrency=_int(env, "PUSH_CONCURRENCY", 6, 1, 32),
            push_rate_limit=_float(env, "PUSH_RATE_LIMIT", 600.0, 0.0, 100_000.0),
            push_timeout=_float(env, "PUSH_TIMEOUT", 15.0, 0.1, 300.0),
            push_request_attempts=_int(env, "PUSH_REQUEST_ATTEMPTS", 3, 1, 10),
            push_retry_wait=_float(env, "PUSH_RETRY_WAIT", 0.5, 0.0, 60.0),
            batch_size=_int(env, "WORKER_BATCH_SIZE", 1000, 1, 1000),
            lease_seconds=_int(env, "WORKER_LEASE_SECONDS", 300, 10, 86400),
            retry_base_seconds=_float(env, "RETRY_BASE_SECONDS", 30.0, 0.0, 86400.0),
            retry_max_seconds=_float(env, "RETRY_MAX_SECONDS", 3600.0, 0.0, 7 * 86400.0),
            calendar_concurrency=_int(env, "CALENDAR_CONCURRENCY", 8, 1, 64),
            trigger_token=_secret(env, "WORKER_TRIGGER_TOKEN"),
            log_level=log_level,
            log_format=log_format,
            receipt_delay_seconds=_int(env, "RECEIPT_DELAY_SECONDS", 900, 0, 86400),
            receipt_max_per_pass=_int(env, "RECEIPT_MAX_PER_PASS", 10_000, 0, 1_000_000),
            receipt_time_budget_seconds=_float(env, "RECEIPT_TIME_BUDGET_SECONDS", 20.0, 0.0, 3600.0),
            worker_runs_retention_days=_int(env, "WORKER_RUNS_RETENTION_DAYS", 30, 1, 3650),
            reminder_retention_days=_int(env, "REMINDER_RETENTION_DAYS", 90, 1, 3650),
            prometheus_pushgateway_url=_url(env, "PROMETHEUS_PUSHGATEWAY_URL", None),
            worker_trigger=_trigger(env),
        )

    def require_database(self) -> None:
        """A production pass never falls back to a local database."""
        if not self.database_configured:
            raise ConfigError(
                "DATABASE_URL", "is not set (nor SUPABASE_URL with SUPABASE_SERVICE_ROLE_KEY); "
                "`python worker/main.py demo` runs on an embedded database instead"
            )

    def redacted(self) -> dict[str, object]:
        """The settings for display, secrets masked."""
        out: dict[str, object] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, Secret):
                value = "***"
            elif isinstance(value, tuple):
                value = ",".join(_format_offset(v) for v in value)
            out[name] = value
        return out


def _format_offset(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
