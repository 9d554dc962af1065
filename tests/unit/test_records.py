"""Rows are decoded one by one (a row Python cannot hold is set aside, named); written text is
sanitised in one place; the one rate limiter never lets more than its limit through in a window."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from worker.logs import sanitize
from worker.records import EventRow, PushResult, RowProblem, Undecodable, decode_each
from worker.retry import RateLimiter
from worker.vocabulary import ErrorKind, PushOutcome

GOOD = {"id": "e1", "version": 3, "user_id": "u1", "status": "pending", "title": "Swim",
        "start_ts": "2026-11-22T09:00:00+00:00", "end_ts": "2026-11-22T10:00:00+00:00", "prep_items": ["towel"]}


@pytest.mark.parametrize(("change", "names"), [
    ({"start_ts": "10000-01-01T00:00:00+00:00"}, "start_ts"),
    ({"end_ts": "infinity"}, "end_ts"),
    ({"start_ts": "2026-11-22T09:00:00"}, "time zone"),
    ({"prep_items": "towel"}, "prep_items"),
    ({"prep_items": [1, 2]}, "prep_items"),
    ({"title": 5}, "title"),
    ({"attempts": "many"}, "attempts"),
])
def test_a_row_python_cannot_hold_is_set_aside_with_the_column_named(change: dict[str, Any], names: str) -> None:
    rows = decode_each([GOOD, {**GOOD, "id": "e2", **change}, {**GOOD, "id": "e3"}], EventRow.from_json)
    assert [type(r) for r in rows] == [EventRow, Undecodable, EventRow]
    bad = rows[1]
    assert isinstance(bad, Undecodable)
    assert (bad.id, bad.version) == ("e2", 3)
    assert names in bad.reason


def test_a_row_without_an_id_is_not_a_worker_answer() -> None:
    with pytest.raises(RowProblem):
        decode_each([{"title": "x"}], EventRow.from_json)


def test_written_text_is_sanitised_in_one_place() -> None:
    result = PushResult("r1", PushOutcome.RETRY, "bad\x00 answer for client_secret=abc ExponentPushToken[xyz] \ud800",
                        ErrorKind.EXPO_RATE_EXCEEDED)
    wire = result.wire()
    assert wire["error"] == "bad answer for client_secret=*** ExpoPushToken[***] ?"
    assert wire["error_kind"] == "expo_rate_exceeded"
    assert "\x00" not in sanitize("a\x00b")
    wire["error"].encode("utf-8")  # no lone surrogate left


def test_an_outcome_carries_only_what_the_database_does_not_know() -> None:
    """The database has the message text (reminders.message) and the devices: a sent outcome is
    its id, its word and its tickets; empty values have no key (the SQL reads them as null)."""
    sent = PushResult("r1", PushOutcome.SENT, tickets=(("ExponentPushToken[a]", "t-1"),))
    assert sent.wire() == {"id": "r1", "outcome": "sent", "tickets": [["ExponentPushToken[a]", "t-1"]]}
    retry = PushResult("r2", PushOutcome.RETRY, "Expo answered 503", ErrorKind.EXPO_UNAVAILABLE,
                       datetime(2026, 11, 22, 9, 5, tzinfo=UTC), message="Swim\nToday 9:00",
                       dead_tokens=("ExponentPushToken[b]",))
    assert retry.wire() == {"id": "r2", "outcome": "retry", "error": "Expo answered 503",
                            "error_kind": "expo_unavailable", "next_attempt_at": "2026-11-22T09:05:00+00:00",
                            "message": "Swim\nToday 9:00", "dead_tokens": ["ExponentPushToken[b]"]}
    thousand = json.dumps([PushResult(f"{i:036d}", PushOutcome.SENT,
                                      tickets=((f"ExponentPushToken[{i:022d}]", f"{i:036d}"),)).wire()
                           for i in range(1000)], separators=(",", ":"))
    assert len(thousand) < 180_000  # ids, words and tickets (no text, no token column): was 276 kB


def test_the_rate_limiter_starts_empty_and_never_exceeds_its_window() -> None:
    clock = [0.0]
    grants: list[float] = []

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    limiter = RateLimiter(600, window=1.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(30):  # 30 requests of 100
        limiter.acquire(100)
        grants.append(clock[0])
    for i, at in enumerate(grants):
        in_window = sum(100 for other in grants if at - 1.0 < other <= at)
        assert in_window <= 600, (i, at)
    assert grants[5] == 0.0 and grants[6] == pytest.approx(1.0)  # six at once, the seventh a second later
    assert grants[-1] == pytest.approx(4.0)


def test_an_instant_for_the_database_keeps_its_zone() -> None:
    row = EventRow.from_json(GOOD)
    assert row.start_ts == datetime(2026, 11, 22, 9, tzinfo=UTC)
