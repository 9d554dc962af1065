"""Helpers for the guarantee and fault acceptance tests (test_guarantees.py, test_faults.py).

Everything here drives real things: the worker as a subprocess, a real Postgres, the stand-ins
over HTTP. Nothing here decides an outcome; the tests assert on what the rows and the stand-ins saw.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING, Any

import psycopg

from tests.acceptance.cli import start_worker, worker

if TYPE_CHECKING:
    from standins.expo import ExpoStandIn
    from tests.pgserver import PgServer

# --- the stand-ins, seen from outside -------------------------------------------------------------


def post_json(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST JSON the way any client would; (status, parsed answer)."""
    import requests

    with requests.post(url, json=body, headers=headers, timeout=10) as answer:
        return answer.status_code, answer.json()


def post_form(url: str, form: dict[str, str]) -> tuple[int, str]:
    """POST a form (what google-auth sends to the token endpoint); (status, body text)."""
    import requests

    with requests.post(url, data=form, timeout=10) as answer:
        return answer.status_code, answer.text


def expo_tickets(expo_url: str, tokens: Sequence[str], access_token: str | None = None) -> tuple[int, Any]:
    """Ask the Expo stand-in directly what it answers for one message to each token."""
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else None
    body = [{"to": t, "title": "probe", "body": "probe", "data": {"probe": True}} for t in tokens]
    return post_json(f"{expo_url}/push/send", body, headers)


def delivered(expo: ExpoStandIn) -> Counter[str]:
    """Messages Expo accepted, per ``data.reminder_id``."""
    return Counter(str(m["data"]["reminder_id"]) for m in list(expo.messages))


def duplicates(expo: ExpoStandIn) -> int:
    """Copies beyond the first, over every reminder."""
    return sum(n - 1 for n in delivered(expo).values())


def messages_for(expo: ExpoStandIn, event_id: str) -> list[dict[str, Any]]:
    return [m for m in list(expo.messages) if str(m["data"].get("event_id")) == event_id]


def settle(expo: ExpoStandIn, quiet: float = 0.3, timeout: float = 10.0) -> None:
    """Wait until the stand-in has seen nothing new for ``quiet`` seconds (requests of a killed
    worker that were already on the wire are still answered and recorded)."""
    deadline = time.monotonic() + timeout
    seen = (len(expo.requests), len(expo.messages))
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now_seen = (len(expo.requests), len(expo.messages))
        if now_seen != seen:
            seen, still_since = now_seen, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
    raise AssertionError("the Expo stand-in never went quiet")


# --- rows -----------------------------------------------------------------------------------------


def row_dict(db: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> dict[str, Any]:
    """One row as {column: value} (SELECT * keeps the test independent of columns that may not
    exist yet, e.g. error_kind: a missing column reads as None and the assertion says so)."""
    cur = db.execute(sql, params)
    names = [c.name for c in cur.description or []]
    row = cur.fetchone()
    assert row is not None, f"no row for {sql} {params}"
    return dict(zip(names, row, strict=True))


def reminder(db: psycopg.Connection[Any], reminder_id: str) -> dict[str, Any]:
    return row_dict(db, "SELECT * FROM public.reminders WHERE id = %s", (reminder_id,))


def event(db: psycopg.Connection[Any], event_id: str) -> dict[str, Any]:
    return row_dict(db, "SELECT * FROM public.events WHERE id = %s", (event_id,))


def reminders_of(db: psycopg.Connection[Any], event_id: str) -> list[dict[str, Any]]:
    cur = db.execute("SELECT * FROM public.reminders WHERE event_id = %s ORDER BY notify_at_ts", (event_id,))
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@contextlib.contextmanager
def replica_role(db: psycopg.Connection[Any]) -> Iterator[None]:
    """Let a superuser write what triggers would refuse (a profile's unknown time zone): the
    way such rows really arrive (a restore, a trigger added later, a manual fix)."""
    db.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        db.execute("RESET session_replication_role")


def has_secret_assignment(text: str, name: str) -> bool:
    """``name=`` followed by a value (a mask like ``***`` is not a value)."""
    return re.search(rf"{re.escape(name)}=(?!\*)[^\s&\"',;)\]}}]", text) is not None


def stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# --- a private Postgres that can go away (helper-1's tests/pgserver.py) --------------------------


def with_db(url: str, dbname: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    parts["dbname"] = dbname
    return psycopg.conninfo.make_conninfo("", **parts)


@contextlib.contextmanager
def outage_database(root: Path, name: str = "outage") -> Iterator[tuple[PgServer, str]]:
    """A PgServer of our own with a migrated database on it: (server, database URL)."""
    from tests.conftest import SUPABASE_LIKE
    from tests.pgserver import PgServer
    from worker.db.migrate import migrate

    with PgServer(root) as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = server.url_for(name)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SUPABASE_LIKE)
        migrate(url)
        yield server, url


# --- the kill storm -------------------------------------------------------------------------------


@dataclass
class StormPass:
    """One `run` of the storm: the stand-in's message indexes [first, last) arrived during it."""

    now: datetime
    first: int
    last: int = 0
    kill_after: float | None = None
    returncode: int | None = None
    stderr: str = ""

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


@dataclass
class StormReport:
    passes: list[StormPass]
    per_pass: dict[int, int] = field(default_factory=dict)  # pass index -> duplicates it caused

    @property
    def kills(self) -> list[int]:
        return [i for i, p in enumerate(self.passes) if p.killed]

    def summary(self) -> str:
        per_kill = [self.per_pass.get(i, 0) for i in self.kills]
        total = sum(self.per_pass.values())
        worst = max(per_kill, default=0)
        mean = total / len(per_kill) if per_kill else 0.0
        return f"kill storm: kills={len(per_kill)} duplicates total={total} per kill max={worst} mean={mean:.1f}"


def killed_pass(env: dict[str, str], expo: ExpoStandIn, now: datetime, kill_after: float, *,
                from_first_send: bool = False) -> StormPass:
    """Start `run --now now` and SIGKILL it ``kill_after`` seconds later (if it is still running);
    with ``from_first_send``, ``kill_after`` seconds after its first message reached Expo."""
    record = StormPass(now=now, first=len(expo.messages), kill_after=kill_after)
    proc = start_worker("run", "--now", now.isoformat(), env=env)
    try:
        if from_first_send:
            give_up = time.monotonic() + 30
            while len(expo.messages) == record.first and proc.poll() is None and time.monotonic() < give_up:
                time.sleep(0.005)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=kill_after)
        proc.send_signal(signal.SIGKILL)  # a no-op when it already finished
    finally:
        _, record.stderr = proc.communicate(timeout=30)
    record.returncode = proc.returncode
    settle(expo)
    record.last = len(expo.messages)
    return record


def plain_pass(env: dict[str, str], expo: ExpoStandIn, now: datetime) -> StormPass:
    record = StormPass(now=now, first=len(expo.messages))
    done = worker("run", "--now", now.isoformat(), env=env, timeout=120)
    record.returncode, record.stderr = done.returncode, done.stderr
    settle(expo)
    record.last = len(expo.messages)
    return record


def attribute_duplicates(expo: ExpoStandIn, passes: Sequence[StormPass]) -> dict[int, int]:
    """For every copy of a reminder after its first: the pass that sent the copy before it.

    That pass sent a message and never recorded Expo's answer, which is what made the later
    copy happen; when it was killed, that copy was in flight at its death. (With at most one
    re-send per reminder this is the pass that sent the first copy.)
    """
    owner: list[int] = []
    for index, p in enumerate(passes):
        assert p.first == len(owner), "passes must cover the stand-in's messages without gaps"
        owner.extend([index] * (p.last - p.first))
    messages = list(expo.messages)
    assert len(owner) == len(messages)
    copies: dict[str, list[int]] = defaultdict(list)
    for position, message in enumerate(messages):
        copies[str(message["data"]["reminder_id"])].append(owner[position])
    caused: Counter[int] = Counter()
    for senders in copies.values():
        for previous in senders[:-1]:
            caused[previous] += 1
    return dict(caused)


def kill_storm(env: dict[str, str], expo: ExpoStandIn, start: datetime, *, kills: int, seed: int,
               step: timedelta, kill_window: tuple[float, float], done: Callable[[], bool],
               max_final_passes: int = 15, from_first_send: bool = False) -> StormReport:
    """``kills`` passes each SIGKILLed at a seeded random instant, the clock moving ``step`` each
    time, then passes without a kill until ``done()``."""
    rng = Random(seed)
    passes: list[StormPass] = []
    now = start
    for _ in range(kills):
        passes.append(killed_pass(env, expo, now, rng.uniform(*kill_window), from_first_send=from_first_send))
        now += step
    for _ in range(max_final_passes):
        final = plain_pass(env, expo, now)
        passes.append(final)
        assert final.returncode == 0, final.stderr[-3000:]
        now += step
        if done():
            break
    return StormReport(passes, attribute_duplicates(expo, passes))
