"""Logging: one JSON object per line (or readable text), with secrets scrubbed on the way out.

Callers log an event name plus structured fields: ``log.info("push.batch", extra={"fields": {...}})``
through :func:`event`. The scrubber is the last line of defence: code never passes secrets on
purpose, but an exception text from a library might carry a token, so every line is checked for
the shapes of our secrets before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

_LOGGER_NAME = "reminder_worker"

# Shapes of secrets that must never be written: Expo push tokens, Google refresh/access tokens,
# JWTs (Supabase keys), Supabase secret keys, PEM blocks, bearer headers, passwords in URLs.
def _mask_value(m: re.Match[str]) -> str:
    quoted = m.group(0)[len(m.group(1)):].startswith('"')
    return m.group(1) + ('"***"' if quoted else "***")


_SECRET_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"Expo(?:nent)?PushToken\[[^\]]*\]"), "ExpoPushToken[***]"),
    (re.compile(r"\b1//[0-9A-Za-z_\-]{8,}"), "***"),
    (re.compile(r"\bya29\.[0-9A-Za-z_\-.]+"), "***"),
    (re.compile(r"\beyJ[0-9A-Za-z_\-]+\.[0-9A-Za-z_\-]+\.[0-9A-Za-z_\-]*"), "***"),
    (re.compile(r"\bsb_secret_[0-9A-Za-z_\-]+"), "***"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), "***"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1***"),
    # name=value, where the name says token, secret, password or key (client_secret=...,
    # refresh_token=..., apikey=...): the value goes.
    (re.compile(r"(?i)\b([\w.-]*(?:token|secret|password|passwd|apikey|api_key|private_key)[\w.-]*)=[^\s\"'&,;)]+"),
     r"\1=***"),
    # "name": "value" and name_with_underscore: value likewise (a quoted or snake_case key, or
    # password/apikey: prose such as "every access token: run ..." is not a key); numbers, true,
    # false and null stay (they are counts, and a JSON log line must stay JSON).
    (re.compile(r"(?i)((?:\"[\w.-]*(?:token|secret|password|passwd|apikey|api_key|private_key)[\w.-]*\""
                r"|\b[\w.-]*_[\w.-]*(?:token|secret|key)[\w.-]*|\b[\w.-]*(?:token|secret)_[\w.-]*"
                r"|\b(?:password|passwd|apikey|secret))\s*:\s*)"
                r"(?:\"[^\"]*\"|(?!(?:-?\d[\d.]*|true|false|null)(?:[\s\"'&,;)}\]]|$))[^\s\"'&,;)}\]]+)"),
     _mask_value),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+(@)"), r"\1***\2"),
]

_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Scrub this exact value from every later log line (configured keys, tokens)."""
    if value and len(value) >= 6:
        _extra_secrets.add(value)


def scrub(text: str) -> str:
    """Replace anything that looks like one of our secrets with ``***``."""
    for value in _extra_secrets:
        if value in text:
            text = text.replace(value, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def sanitize(text: str) -> str:
    """Error text fit to store in a row: scrubbed of secrets, and :func:`storable`."""
    return storable(scrub(text))


def storable(text: str) -> str:
    """Text Postgres can hold: without NUL characters and without lone surrogates (they cannot be
    encoded as UTF-8). What a parent wrote (a message rendered from their event) needs only this:
    it is theirs, not a secret of ours, and scrubbing it would cost a regex pass per reminder."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(doc, default=str, ensure_ascii=False))


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        fields = getattr(record, "fields", None) or {}
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}" + (f"  {tail}" if tail else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def setup(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Send our log lines to stderr (stdout stays free for command output)."""
    logger = logging.getLogger(_LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


# Silent until setup(): a library-style NullHandler keeps Python's last-resort handler from printing
# bare event names on stderr (e.g. while a run that exits 2 tries to record itself).
logging.getLogger(_LOGGER_NAME).addHandler(logging.NullHandler())


def get() -> logging.Logger:
    return logging.getLogger(_LOGGER_NAME)


def event(name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    """Log one notable step: ``event("pass.summary", sent=10, failed=0)``."""
    logger = logging.getLogger(_LOGGER_NAME)
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})
