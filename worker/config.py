"""Configuration: the environment, read once, checked early, one component per part of the worker.

Each part gets only its own settings: the database gateway :class:`DatabaseSettings`, the Expo
client and the push and receipts steps :class:`ExpoSettings`, the calendar :class:`GoogleSettings`,
the pass :class:`PassSettings`, ``serve`` :class:`ServeSettings`, logging :class:`LogSettings`.
:class:`Settings` holds one of each. Validation lives here only (pydantic-settings): every problem
is a :class:`ConfigError` naming the variable, so the CLI prints one line and exits 2 instead of
failing at 3 a.m. halfway through a pass. Each field's ``description`` is its documentation: the
README's configuration table is generated from it (:func:`markdown_table`, checked by a test), so no
setting goes undocumented.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

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


# --- value types --------------------------------------------------------------------------------


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


def format_offset(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


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
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return "is not a readable JWT (its payload is not base64url-encoded JSON)"
    role = payload.get("role") if isinstance(payload, dict) else None
    if role != "service_role":
        return f"is a JWT for the role {role!r}, not the service_role key"
    return None


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL")
    return value


def _postgres_url(value: str) -> str:
    if urlsplit(value).scheme not in ("postgres", "postgresql") and "=" not in value:  # libpq key=value is fine
        raise ValueError("must be a postgresql:// URL or a libpq connection string")
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _one_of(*words: str) -> Any:
    def check(value: str) -> str:
        if value not in words:
            raise ValueError(f"{value!r} is not {', '.join(words[:-1])} or {words[-1]}")
        return value
    return AfterValidator(check)


SecretText = Annotated[str, AfterValidator(Secret)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
PostgresUrl = Annotated[str, AfterValidator(_postgres_url), AfterValidator(Secret)]
#: What started a pass, for its history row (worker_runs.trigger).
TRIGGERS = tuple(t.value for t in RunTrigger)


def _env(*names: str, doc: str, **kw: Any) -> Any:
    """A field read from the environment variable(s) ``names`` (the first is the documented one)."""
    return Field(validation_alias=AliasChoices(*names) if len(names) > 1 else names[0], description=doc, **kw)


class _Component(BaseSettings):
    """One part's settings. Read from a mapping of environment variables (empty ones count as
    unset); ``validate_default`` runs each field's checks on its default too."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=True, validate_default=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], *sources: Any,
                                   **named: Any) -> tuple[Any, ...]:
        """Only the values handed over (:func:`read`): the environment is read once, by
        :meth:`Settings.from_env`, the same way for every component (empty counts as unset)."""
        init = named.get("init_settings", sources[0] if sources else None)
        return (init,)

    #: The section of the README's table this component fills.
    title: ClassVar[str] = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Any:
        """This component alone, e.g. the database settings of a run whose other settings are invalid."""
        return read(cls, _values(env))

    def shown(self) -> dict[str, str]:
        """Each variable with its value for display: secrets masked, unset as ``-``."""
        out: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, Secret):
                text = "***"
            elif isinstance(value, tuple):
                text = ",".join(format_offset(v) for v in value)
            else:
                text = "-" if value is None else str(value)
            out[_variable(info)] = text
        return out


def _variable(info: FieldInfo) -> str:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias)


# --- the components -----------------------------------------------------------------------------


class DatabaseSettings(_Component):
    title: ClassVar[str] = "Database"

    url: PostgresUrl | None = _env(
        "DATABASE_URL", default=None,
        doc="direct Postgres connection (Supabase's connection string or any Postgres 14+); wins over the Data API")
    supabase_url: HttpUrl | None = _env(
        "SUPABASE_URL", "EXPO_PUBLIC_SUPABASE_URL", default=None,
        doc="Supabase Data API base URL (`EXPO_PUBLIC_SUPABASE_URL` is accepted too)")
    supabase_key: SecretText | None = _env(
        "SUPABASE_SERVICE_ROLE_KEY", default=None,
        doc="the service role key for the Data API: a JWT `service_role` key or an `sb_secret_...` key")

    @model_validator(mode="after")
    def _data_api_needs_the_service_key(self) -> DatabaseSettings:
        if self.url is None and self.supabase_url is not None:
            if self.supabase_key is None:
                raise ConfigError("SUPABASE_SERVICE_ROLE_KEY", "is required with SUPABASE_URL")
            problem = service_key_problem(self.supabase_key)
            if problem is not None:
                raise ConfigError("SUPABASE_SERVICE_ROLE_KEY", problem)
        return self

    @property
    def configured(self) -> bool:
        return self.url is not None or self.supabase_url is not None

    def require(self) -> None:
        """A production pass never falls back to a local database."""
        if not self.configured:
            raise ConfigError(
                "DATABASE_URL", "is not set (nor SUPABASE_URL with SUPABASE_SERVICE_ROLE_KEY); "
                "`python worker/main.py demo` runs on an embedded database instead")


class ExpoSettings(_Component):
    title: ClassVar[str] = "Expo push"

    access_token: SecretText | None = _env(
        "EXPO_ACCESS_TOKEN", default=None, doc="sent as `Authorization: Bearer` on every Expo call")
    api_url: Annotated[HttpUrl, AfterValidator(lambda v: v.rstrip("/"))] = _env(
        "EXPO_API_URL", default=DEFAULT_EXPO_API_URL,
        doc="Expo push API base: sends go to `{EXPO_API_URL}/push/send`, receipts to `.../push/getReceipts`")
    max_attempts: int = _env("PUSH_MAX_ATTEMPTS", default=5, ge=1, le=100,
                             doc="failed delivery attempts before a reminder is `failed`")
    concurrency: int = _env("PUSH_CONCURRENCY", default=6, ge=1, le=32,
                            doc="Expo requests in flight at once (each up to 100 messages)")
    rate_limit: float = _env("PUSH_RATE_LIMIT", default=600.0, ge=0, le=100_000,
                             doc="notifications per second sent to Expo, at most (0 = no limit)")
    timeout: float = _env("PUSH_TIMEOUT", default=15.0, ge=0.1, le=300, doc="seconds one Expo request may take")
    request_attempts: int = _env("PUSH_REQUEST_ATTEMPTS", default=3, ge=1, le=10,
                                 doc="tries of one Expo request within a pass (network errors, 429, 5xx)")
    retry_wait: float = _env("PUSH_RETRY_WAIT", default=0.5, ge=0, le=60,
                             doc="first wait between those tries, in seconds (it doubles, with jitter)")
    receipt_delay_seconds: int = _env("RECEIPT_DELAY_SECONDS", default=900, ge=0, le=86400,
                                      doc="seconds after sending before a receipt is asked for")
    receipt_max_per_pass: int = _env("RECEIPT_MAX_PER_PASS", default=10_000, ge=0, le=1_000_000,
                                     doc="receipts checked per pass, at most (0 = no receipt checks)")
    receipt_time_budget_seconds: float = _env("RECEIPT_TIME_BUDGET_SECONDS", default=20.0, ge=0, le=3600,
                                              doc="seconds a pass spends on receipts, at most")


class GoogleSettings(_Component):
    title: ClassVar[str] = "Google Calendar"

    client_id: str | None = _env("GOOGLE_CLIENT_ID", default=None,
                                 doc="OAuth client that issued the parents' refresh tokens (calendar sync off without)")
    client_secret: SecretText | None = _env("GOOGLE_CLIENT_SECRET", default=None, doc="that OAuth client's secret")
    client_email: str | None = _env("GOOGLE_CLIENT_EMAIL", default=None,
                                    doc="optional service account, for calendars parents shared with it")
    private_key: Annotated[SecretText | None, BeforeValidator(lambda v: v.replace("\\n", "\n") if isinstance(
        v, str) else v)] = _env("GOOGLE_PRIVATE_KEY", default=None,
                                doc="the service account's private key (literal `\\n` is fine)")
    project_id: str | None = _env("GOOGLE_PROJECT_ID", default=None, doc="the service account's project")
    api_url: Annotated[HttpUrl, AfterValidator(lambda v: v if v.endswith("/") else v + "/")] = _env(
        "GOOGLE_API_URL", default=DEFAULT_GOOGLE_API_URL,
        doc="base of Google APIs; calendar calls go to `{GOOGLE_API_URL}calendar/v3/...`")
    token_uri: HttpUrl = _env("GOOGLE_TOKEN_URI", default=DEFAULT_GOOGLE_TOKEN_URI, doc="OAuth token endpoint")
    concurrency: int = _env("CALENDAR_CONCURRENCY", default=128, ge=1, le=256,
                            doc="Google Calendar requests in flight at once, over all parents")
    concurrency_per_parent: int = _env("CALENDAR_CONCURRENCY_PER_PARENT", default=2, ge=1, le=4,
                                       doc="of those, at most this many for one parent")
    max_requests_per_second: float = _env(
        "GOOGLE_MAX_REQUESTS_PER_SECOND", default=150.0, ge=0, le=100_000,
        doc="Calendar requests per second all workers of the database send together, at most (0 = no "
            "limit); Google's default quota is 10,000 a minute per project")

    @model_validator(mode="after")
    def _pairs(self) -> GoogleSettings:
        if bool(self.client_id) != bool(self.client_secret):
            missing = "GOOGLE_CLIENT_SECRET" if self.client_id else "GOOGLE_CLIENT_ID"
            raise ConfigError(missing, "is required when the other OAuth client setting is set")
        if bool(self.client_email) != bool(self.private_key):
            missing = "GOOGLE_PRIVATE_KEY" if self.client_email else "GOOGLE_CLIENT_EMAIL"
            raise ConfigError(missing, "is required when the other service-account setting is set")
        return self

    @property
    def oauth_configured(self) -> bool:
        return bool(self.client_id and self.client_secret)

    @property
    def service_account_configured(self) -> bool:
        return bool(self.client_email and self.private_key)


class PassSettings(_Component):
    title: ClassVar[str] = "The pass"

    reminder_offsets: Annotated[tuple[timedelta, ...], BeforeValidator(
        lambda v: parse_offsets(v) if isinstance(v, str) else v)] = _env(
        "REMINDER_OFFSETS", default=DEFAULT_OFFSETS,
        doc="reminder lead times before `start_ts` (`d`, `h`, `m`, `s`); a day is a calendar day")
    recurrence_horizon_days: int = _env("RECURRENCE_HORIZON_DAYS", default=14, ge=1, le=366,
                                        doc="how far ahead reminders of recurring events are planned (every pass "
                                            "extends it)")
    batch_size: int = _env("WORKER_BATCH_SIZE", default=1000, ge=1, le=1000, doc="rows per claim")
    lease_seconds: int = _env("WORKER_LEASE_SECONDS", default=300, ge=10, le=86400,
                              doc="how long a claim is held before another pass may take it over")
    retry_base_seconds: float = _env("RETRY_BASE_SECONDS", default=30.0, ge=0, le=86400,
                                     doc="backoff between passes: base * 2^(failures-1), with jitter")
    retry_max_seconds: float = _env("RETRY_MAX_SECONDS", default=3600.0, ge=0, le=7 * 86400,
                                    doc="the longest backoff between passes")
    worker_runs_retention_days: int = _env("WORKER_RUNS_RETENTION_DAYS", default=30, ge=1, le=3650,
                                           doc="days of run history kept")
    reminder_retention_days: int = _env("REMINDER_RETENTION_DAYS", default=90, ge=1, le=3650,
                                        doc="days settled reminders are kept, counted from `notify_at_ts`")
    trigger: Annotated[RunTrigger | None, BeforeValidator(_lower)] = _env(
        "WORKER_TRIGGER", default=None, doc="what started `run`, for its history row (the CronJob sets `cron`)")
    pushgateway_url: HttpUrl | None = _env(
        "PROMETHEUS_PUSHGATEWAY_URL", default=None,
        doc="a Prometheus Pushgateway each pass of `run` pushes its metrics to (`serve` is scraped at /metrics)")


class ServeSettings(_Component):
    title: ClassVar[str] = "`serve`"

    trigger_token: SecretText | None = _env("WORKER_TRIGGER_TOKEN", default=None,
                                            doc="bearer secret `serve` demands (it refuses to start without)")
    shutdown_grace: float = _env("WORKER_SHUTDOWN_GRACE", default=60.0, ge=0, le=3600,
                                 doc="seconds a SIGTERM waits for the pass in flight")


class LogSettings(_Component):
    title: ClassVar[str] = "Logging"

    level: Annotated[str, BeforeValidator(_upper), _one_of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")] = _env(
        "LOG_LEVEL", default="INFO", doc="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    format: Annotated[str, BeforeValidator(_lower), _one_of("json", "text")] = _env(
        "LOG_FORMAT", default="json", doc="`json` (one object per line) or `text`")


COMPONENTS: tuple[type[_Component], ...] = (DatabaseSettings, ExpoSettings, GoogleSettings, PassSettings,
                                            ServeSettings, LogSettings)


class Settings:
    """One of each component, read from the same environment."""

    __slots__ = ("database", "expo", "google", "log", "passes", "serve")

    def __init__(self, database: DatabaseSettings, expo: ExpoSettings, google: GoogleSettings, passes: PassSettings,
                 serve: ServeSettings, log: LogSettings) -> None:
        self.database = database
        self.expo = expo
        self.google = google
        self.passes = passes
        self.serve = serve
        self.log = log

    def __repr__(self) -> str:
        return f"Settings(database={self.database!r}, expo={self.expo!r}, google={self.google!r}, ...)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment; raises :class:`ConfigError` on the first problem."""
        values = _values(env)
        return cls(*(read(component, values) for component in COMPONENTS))  # type: ignore[arg-type]

    def require_database(self) -> None:
        self.database.require()

    def shown(self) -> dict[str, str]:
        """Every variable with its value for display (secrets masked, unset as ``-``)."""
        return {k: v for c in (self.database, self.expo, self.google, self.passes, self.serve, self.log)
                for k, v in c.shown().items()}


def _values(env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment as the components read it: empty variables count as unset."""
    source = os.environ if env is None else env
    return {k: v.strip() for k, v in source.items() if isinstance(v, str) and v.strip()}


def read(component: type[_Component], values: Mapping[str, str]) -> _Component:
    """One component from environment values, as a :class:`ConfigError` naming the variable."""
    try:
        return component.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error.get("loc") or ("?",)
        variable = str(loc[0])
        shown = values.get(variable, "")
        raise ConfigError(variable, _reason(error, shown)) from None


def _reason(error: Mapping[str, Any], raw: str) -> str:
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind in ("int_parsing", "int_from_float"):
        return f"{raw!r} is not a whole number"
    if kind == "float_parsing":
        return f"{raw!r} is not a number"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{raw} is outside the allowed range ({_bound_text(kind, ctx)})"
    if kind == "enum":
        return f"{raw!r} is not one of {ctx.get('expected', '')}"
    message = str(error.get("msg", "is invalid"))
    return message.removeprefix("Value error, ")


def _bound_text(kind: str, ctx: Mapping[str, Any]) -> str:
    words = {"greater_than_equal": "at least", "less_than_equal": "at most", "greater_than": "more than",
             "less_than": "less than"}
    bound = next(iter(ctx.values()), "")
    return f"{words[kind]} {bound}"


# --- documentation ------------------------------------------------------------------------------


def documented() -> Iterator[tuple[str, str, str, str]]:
    """(section, variable, meaning, default) of every setting, in the order of the components."""
    for component in COMPONENTS:
        for info in component.model_fields.values():
            default = info.default
            if isinstance(default, tuple):
                shown = ",".join(format_offset(v) for v in default)
            elif default is None:
                shown = "none"
            else:
                shown = f"`{default}`"
            yield component.title, _variable(info), info.description or "", shown


def variables(*components: type[_Component]) -> list[tuple[str, list[str]]]:
    """(title, variable names) of each component, for a command's ``--help``."""
    return [(c.title, [_variable(info) for info in c.model_fields.values()]) for c in components]


def markdown_table() -> str:
    """The README's configuration table (generated: `python -m worker.config`)."""
    lines = ["| variable | meaning | default |", "|---|---|---|"]
    section = ""
    for title, variable, meaning, default in documented():
        if title != section:
            lines.append(f"| **{title}** | | |")
            section = title
        lines.append(f"| `{variable}` | {meaning} | {default} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
