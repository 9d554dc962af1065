"""The planner's pure functions: reminder times (daylight-saving changes included), text, backoff."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from worker import planner
from worker.config import parse_offsets

OFFSETS = parse_offsets("24h,3h,30m")
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def test_three_reminders_before_a_plain_event() -> None:
    start = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
    now = datetime(2026, 11, 20, tzinfo=UTC)
    assert planner.reminder_times(start, OFFSETS, now) == [
        start - timedelta(hours=24), start - timedelta(hours=3), start - timedelta(minutes=30)]


def test_reminders_already_past_are_left_out() -> None:
    start = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
    assert planner.reminder_times(start, OFFSETS, start - timedelta(hours=2)) == [start - timedelta(minutes=30)]
    assert planner.reminder_times(start, OFFSETS, start - timedelta(minutes=30)) == []
    assert planner.reminder_times(start, OFFSETS, start + timedelta(hours=1)) == []


def test_a_day_ahead_keeps_the_wall_clock_across_spring_forward() -> None:
    # US clocks jump 02:00 -> 03:00 on 2026-03-08. A 09:00 event that day: "24h before" is 09:00 on the 7th,
    # which is only 23 real hours earlier.
    start = datetime(2026, 3, 8, 9, 0, tzinfo=NY)
    times = planner.reminder_times(start, OFFSETS, datetime(2026, 3, 1, tzinfo=UTC), NY)
    day_before = times[0].astimezone(NY)
    assert (day_before.date().isoformat(), day_before.hour, day_before.minute) == ("2026-03-07", 9, 0)
    assert start - times[0] == timedelta(hours=23)
    assert start - times[1] == timedelta(hours=3)  # hours stay exact durations


def test_a_day_ahead_keeps_the_wall_clock_across_fall_back() -> None:
    # European clocks go back 03:00 -> 02:00 on 2026-10-25.
    start = datetime(2026, 10, 25, 8, 0, tzinfo=BERLIN)
    times = planner.reminder_times(start, OFFSETS, datetime(2026, 10, 1, tzinfo=UTC), BERLIN)
    assert times[0].astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 10, 24, 8, 0)
    assert start - times[0] == timedelta(hours=25)


def test_a_day_ahead_into_a_skipped_hour_is_early_rather_than_late() -> None:
    # 02:30 on 2026-03-08 never happens in New York; the reminder for 02:30 on the 9th comes at 01:30 EST.
    start = datetime(2026, 3, 9, 2, 30, tzinfo=NY)
    first = planner.reminder_times(start, OFFSETS, datetime(2026, 3, 1, tzinfo=UTC), NY)[0]
    assert first == datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    assert first < start - timedelta(hours=23)


def test_an_event_starting_in_an_ambiguous_hour_plans_once() -> None:
    start = datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NY)  # the second 01:30 (EST)
    times = planner.reminder_times(start, OFFSETS, datetime(2026, 10, 1, tzinfo=UTC), NY)
    assert len(times) == 3 and times == sorted(times)
    assert times[-1] == start.astimezone(UTC) - timedelta(minutes=30)


def test_offsets_parse_dedupe_and_sort() -> None:
    assert parse_offsets("30m, 24h,3h,1d") == (timedelta(days=1), timedelta(hours=3), timedelta(minutes=30))


@pytest.mark.parametrize("text", ["", "soon", "0m", "30 minutes", "29d"])
def test_bad_offsets_are_refused(text: str) -> None:
    from worker.config import ConfigError

    with pytest.raises(ConfigError, match="REMINDER_OFFSETS"):
        parse_offsets(text)


def test_lock_screen_text_12_hour_where_usual() -> None:
    msg = planner.render_message(
        title="Soccer practice", child_name="Emma", start_ts=datetime(2026, 11, 23, 20, 30, tzinfo=UTC),
        location="Field 4", prep_items=["shin guards", "water"], now=datetime(2026, 11, 23, 17, 30, tzinfo=UTC),
        zone_name="America/New_York", max_bytes=4096)
    assert msg.title == "Soccer practice (Emma)"
    assert msg.body == "Today 3:30 PM at Field 4. Bring: shin guards, water"


def test_lock_screen_text_24_hour_elsewhere_and_tomorrow() -> None:
    msg = planner.render_message(
        title="Schwimmkurs", child_name=None, start_ts=datetime(2026, 11, 23, 15, 0, tzinfo=UTC),
        location=None, prep_items=None, now=datetime(2026, 11, 22, 15, 0, tzinfo=UTC),
        zone_name="Europe/Berlin", max_bytes=4096)
    assert (msg.title, msg.body) == ("Schwimmkurs", "Tomorrow 16:00.")


def test_weekday_then_date_further_out() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # a Sunday
    assert planner.format_when(datetime(2026, 11, 26, 9, 0, tzinfo=UTC), now, UTC, False) == "Thursday 09:00"
    assert planner.format_when(datetime(2026, 12, 6, 9, 0, tzinfo=UTC), now, UTC, True) == "Sun 6 Dec 9:00 AM"


def test_an_unknown_timezone_falls_back_to_utc() -> None:
    tz, ok = planner.timezone_for("Mars/Olympus_Mons")
    assert tz is UTC and not ok


@pytest.mark.parametrize("title,location,items", [
    ("Ballet " * 2000, None, None),
    ("Trip", "Ü" * 5000, None),
    ("Camp", "Lake", [f"item {i} " + "é" * 40 for i in range(300)]),
    ("😀" * 3000, "🏟" * 3000, ["🎒" * 100] * 50),
])
def test_the_payload_never_exceeds_expos_limit(title: str, location: str | None, items: list[str] | None) -> None:
    overhead = 250
    msg = planner.render_message(title=title, child_name="Zoë", start_ts=datetime(2026, 11, 23, 9, tzinfo=UTC),
                                 location=location, prep_items=items, now=datetime(2026, 11, 22, 9, tzinfo=UTC),
                                 zone_name="UTC", max_bytes=4096, overhead=overhead)
    size = overhead + len(json.dumps({"title": msg.title, "body": msg.body}, ensure_ascii=False).encode())
    assert size <= 4096
    assert msg.title and msg.body.startswith("Tomorrow 09:00")
    msg.title.encode("utf-8")  # no half characters: encodes cleanly
    msg.body.encode("utf-8")


def test_a_long_prep_list_is_shortened_not_cut() -> None:
    items = [f"thing number {i}" for i in range(400)]
    msg = planner.render_message(title="Camp", child_name=None, start_ts=datetime(2026, 11, 23, 9, tzinfo=UTC),
                                 location="Lake", prep_items=items, now=datetime(2026, 11, 22, 9, tzinfo=UTC),
                                 zone_name="UTC", max_bytes=1000)
    assert msg.body.startswith("Tomorrow 09:00 at Lake. Bring: thing number 0, thing number 1")
    assert msg.body.endswith(" more")


@pytest.mark.parametrize("token,ok", [
    ("ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]", True),
    ("ExpoPushToken[xxxxxxxxxxxxxxxxxxxxxx]", True),
    ("ExponentPushToken[]", False),
    ("ExponentPushToken[abc", False),
    ("fcm:abc", False),
    (None, False),
    ("ExponentPushToken[a b]", False),
])
def test_push_token_shapes(token: str | None, ok: bool) -> None:
    assert planner.is_expo_push_token(token) is ok


def test_event_problems_name_what_is_wrong() -> None:
    start = datetime(2026, 11, 23, 9, tzinfo=UTC)
    assert planner.event_problem("Ok", start, start, None, None) is None
    assert "before start_ts" in (planner.event_problem("Ok", start, start - timedelta(minutes=1), None, None) or "")
    assert "title is empty" == planner.event_problem("  ", start, start, None, None)
    assert "title is too long" in (planner.event_problem("x" * 501, start, start, None, None) or "")
    assert "location is too long" in (planner.event_problem("Ok", start, start, "x" * 1001, None) or "")
    assert "too many prep_items" in (planner.event_problem("Ok", start, start, None, ["a"] * 101) or "")


def test_backoff_grows_as_a_power_of_the_attempt_with_jitter() -> None:
    rng = random.Random(7)
    delays = [planner.backoff_delay(n, 30, 3600, rng) for n in range(1, 9)]
    for n, d in enumerate(delays, start=1):
        nominal = min(3600, 30 * 2 ** (n - 1))
        assert nominal / 2 <= d <= nominal
    assert len({round(planner.backoff_delay(3, 30, 3600, rng), 6) for _ in range(20)}) > 1
