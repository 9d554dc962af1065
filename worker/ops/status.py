"""``python worker/main.py status``: what an on-call person wants to see, in one screen.

Everything comes from one SQL function, ``worker_status(p_now)``, so the view works the same
over a direct connection and over the Supabase Data API, and costs one round trip. ``--json``
prints that document as it is, for scripts and dashboards.

Exit codes: 0 the status was read (whatever it says), 1 the database could not be asked, 2 the
configuration is invalid (raised as ConfigError, mapped by the CLI).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from worker.db import DatabaseError, DatabaseUnavailable, open_gateway
from worker.vocabulary import ErrorKind

if TYPE_CHECKING:
    from worker.config import Settings

_OUTCOMES = {0: "ok", 1: "FAILED", 2: "CONFIG"}
#: A person at a terminal: say quickly that the database cannot be reached.
STATUS_PATIENCE = 3.0


def run_status(settings: Settings, as_json: bool, *, now: datetime | None = None, out: TextIO | None = None) -> int:
    """Print the status view (a table, or JSON); returns the exit code."""
    settings.require_database()
    stream = out or sys.stdout
    clock = now or datetime.now(UTC)
    try:
        with open_gateway(settings.database) as gateway:
            doc = gateway.status(clock, patience=STATUS_PATIENCE)
    except (DatabaseUnavailable, DatabaseError) as exc:
        print(f"status: cannot read the database: {exc}", file=sys.stderr)
        return 1
    if as_json:
        stream.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    else:
        stream.write(render(doc, clock))
    return 0


# --- the table ----------------------------------------------------------------------------------


def _when(value: Any) -> datetime | None:
    """A time from the document; None for nothing, or for a value Python cannot hold (year 10000,
    '-infinity'): the view must never be blinded by one row."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def ago(value: Any, now: datetime) -> str:
    """'3m ago', '2h ago', '4d ago'; 'in 5m' for the future; '-' for nothing; the raw value for a
    time Python cannot hold."""
    at = _when(value)
    if at is None:
        return "-" if value is None else str(value)
    seconds = int((now - at).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds}s"
    elif seconds < 3600:
        text = f"{seconds // 60}m"
    elif seconds < 86400:
        text = f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    else:
        text = f"{seconds // 86400}d{(seconds % 86400) // 3600}h"
    return f"in {text}" if future else f"{text} ago"


def _stamp(value: Any) -> str:
    at = _when(value)
    if at is None:
        return "-" if value is None else str(value)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _counts(counts: Mapping[str, Any]) -> str:
    """The non-zero counts of a pass, compactly: 'sent=3 receipts_ok=2' (or 'nothing to do')."""
    shown = [f"{k}={v}" for k, v in counts.items() if v]
    return " ".join(shown) if shown else "nothing to do"


#: A pass whose clock differs from when it really ran by more than this was run with ``--now``.
SIMULATED_AFTER = timedelta(minutes=1)


def ran_at(run: Mapping[str, Any]) -> datetime | None:
    """When a pass really started: ``recorded_at`` (the database's clock as the pass was recorded)
    less its duration. ``started_at`` is the clock the pass ran with, which ``run --now`` moves."""
    recorded = _when(run.get("recorded_at"))
    if recorded is None:
        return _when(run.get("started_at"))
    return recorded - timedelta(seconds=float(run.get("duration_s") or 0.0))


def simulated_clock(run: Mapping[str, Any]) -> datetime | None:
    """The clock a pass simulated (``run --now``), or None when it ran on the real one."""
    started, real = _when(run.get("started_at")), ran_at(run)
    if started is None or real is None or abs(started - real) <= SIMULATED_AFTER:
        return None
    return started


def _runs(doc: Mapping[str, Any], now: datetime) -> list[str]:
    """The last passes, newest first by when they really ran (the document's order), with the clock a
    pass simulated beside it: a demo or test run with a future ``--now`` never sits on top for good."""
    runs: Sequence[Mapping[str, Any]] = doc.get("runs") or []
    day = doc.get("runs_24h") or {}
    lines = [f"Last passes  (last 24 h: {day.get('total', 0)} passes, {day.get('failed', 0)} failed)"]
    if not runs:
        return [*lines, "  no pass recorded yet", ""]
    lines.append(f"  {'ran (UTC)':<19}  {'when':>9}  {'took':>8}  {'trigger':<7}  {'simulated --now':<19}  outcome")
    for run in runs:
        code = int(run.get("exit_code") or 0)
        outcome = _OUTCOMES.get(code, f"exit {code}")
        detail = str(run.get("error") or "") if code else _counts(run.get("counts") or {})
        if code:
            outcome = f"{outcome} (exit {code})"
        duration = float(run.get("duration_s") or 0.0)
        real, simulated = ran_at(run), simulated_clock(run)
        lines.append(f"  {_stamp(real):<19}  {ago(real, now):>9}  {duration:>7.2f}s  {run.get('trigger', '-'):<7}  "
                     f"{_stamp(simulated) if simulated else '-':<19}  {outcome}: {_shorten(detail, 90)}")
    return [*lines, ""]


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _users(title: str, block: Mapping[str, Any], noun: str, now: datetime) -> list[str]:
    total = int(block.get("users") or 0)
    lines = [f"{title}: {total} user{'s' if total != 1 else ''}"]
    listed: Sequence[Mapping[str, Any]] = block.get("list") or []
    for item in listed:
        n = int(item.get(noun) or 0)
        label = noun if n != 1 else noun[:-1]
        lines.append(f"  {item.get('user_id')}  {n:>4} {label}  last {ago(item.get('last'), now)}")
    if total > len(listed):
        lines.append(f"  ... and {total - len(listed)} more")
    return [*lines, ""]


#: What an on-call person should do about a pass that failed, by its error kind.
_ACTIONS = {
    ErrorKind.EXPO_CREDENTIALS: "Expo refused the project's credentials: check EXPO_ACCESS_TOKEN and the app's push "
                                "credentials at expo.dev; held reminders go out once they are fixed",
    ErrorKind.EXPO_UNAVAILABLE: "Expo could not be reached or kept failing: reminders retry with backoff",
    ErrorKind.GOOGLE_UNAVAILABLE: "Google Calendar could not be reached: events retry with backoff",
    ErrorKind.DATABASE_UNAVAILABLE: "the database could not be reached: check DATABASE_URL / the Data API",
    ErrorKind.SCHEMA: "the database's schema is older than the code: run `python worker/main.py migrate`",
    ErrorKind.CONFIG: "the configuration is invalid: `python worker/main.py check` names the variable",
}


def _attention(doc: Mapping[str, Any], now: datetime) -> list[str]:
    """The first lines: what needs a person now, if anything."""
    last = doc.get("last_problem")
    rem = doc.get("reminders") or {}
    lines: list[str] = []
    if isinstance(last, Mapping) and not last.get("since_ok"):
        kind = str(last.get("error_kind") or "")
        action = _ACTIONS.get(ErrorKind(kind)) if kind in ErrorKind._value2member_map_ else None
        lines.append(f"ATTENTION: the last pass failed {ago(last.get('recorded_at'), now)} and none has succeeded "
                     f"since: {_shorten(str(last.get('error') or ''), 120)}")
        if action:
            lines.append(f"  what to do: {action}")
    held = int(rem.get("held_expo_credentials") or 0)
    if held:
        lines.append(f"ATTENTION: {held} reminder(s) held because Expo refused the project's push credentials")
    return [*lines, ""] if lines else []


def render(doc: Mapping[str, Any], now: datetime) -> str:
    """The status document as a terminal table."""
    rem = doc.get("reminders") or {}
    ev = doc.get("events") or {}
    lines = [f"reminder-worker status at {_stamp(doc.get('now') or now)} UTC "
             f"(schema version {doc.get('schema_version', '?')})", ""]
    lines += _attention(doc, now)
    lines += _runs(doc, now)
    oldest = rem.get("oldest_due")
    lines += [
        "Reminders",
        f"  {'due now':<26}{rem.get('due_now', 0):>7}" + (f"   oldest due {ago(oldest, now)}" if oldest else ""),
        f"  {'in flight (sending)':<26}{rem.get('in_flight', 0):>7}"
        + (f"   lapsed leases: {rem['in_flight_lapsed']}" if rem.get("in_flight_lapsed") else ""),
        f"  {'waiting for retry':<26}{rem.get('waiting_retry', 0):>7}",
        f"  {'held: Expo credentials':<26}{rem.get('held_expo_credentials', 0):>7}",
        f"  {'waiting for a receipt':<26}{rem.get('awaiting_receipt', 0):>7}",
        "",
        "Failed in the last 24 h, by reason",
    ]
    failed: Sequence[Mapping[str, Any]] = doc.get("failed_24h") or []
    lines += [f"  {int(f.get('count') or 0):>6}  {_shorten(str(f.get('reason')), 100)}" for f in failed] or ["  none"]
    lines += [
        "",
        "Events waiting for calendar sync",
        f"  {'waiting':<26}{ev.get('waiting_sync', 0):>7}"
        + (f"   oldest {ago(ev.get('oldest_waiting'), now)}" if ev.get("oldest_waiting") else ""),
        f"  {'of them retrying':<26}{ev.get('retrying', 0):>7}",
        f"  {'cancellations to clean up':<26}{ev.get('cancelling', 0):>7}",
        "",
    ]
    lines += _users("Google access revoked (events failed)", doc.get("google_revoked") or {}, "events", now)
    lines += _users("Push token cleared (DeviceNotRegistered)", doc.get("tokens_cleared") or {}, "reminders", now)
    return "\n".join(lines).rstrip("\n") + "\n"
