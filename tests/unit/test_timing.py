"""When reminders fire under quiet hours and for recurring events (worker/timing.py).

Daylight-saving dates used (2026): Europe/Berlin springs forward 02:00 -> 03:00 on 29 March and falls
back 03:00 -> 02:00 on 25 October; America/New_York springs forward 02:00 -> 03:00 on 8 March and falls
back 02:00 -> 01:00 on 1 November.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr

from worker import planner, timing
from worker.config import parse_offsets
from worker.timing import RuleProblem

OFFSETS = parse_offsets("24h,3h,30m")
BERLIN = ZoneInfo("Europe/Berlin")
NY = ZoneInfo("America/New_York")
NIGHT = (time(21, 0), time(7, 0))  # wraps midnight
NAP = (time(13, 0), time(15, 0))  # does not
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(tz: tzinfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0) -> datetime:
    """An aware local time, checked to exist (a typo into a DST gap would silently test something else)."""
    value = datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold)
    assert value.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == value.replace(tzinfo=None), value
    return value


def wall(at: datetime, tz: tzinfo) -> str:
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def adjust(at: datetime, event: datetime, tz: tzinfo, quiet: tuple[time, time]) -> datetime:
    return timing.quiet_adjust(at.astimezone(UTC), event.astimezone(UTC), tz, *quiet)


# ------------------------------------------------------------------------------------ quiet hours


@pytest.mark.parametrize("clock,inside", [
    ((12, 59), False), ((13, 0), True), ((14, 30), True), ((14, 59), True), ((15, 0), False), ((23, 0), False),
])
def test_quiet_hours_that_do_not_wrap_hold_reminders_until_they_end(clock: tuple[int, int], inside: bool) -> None:
    at = local(BERLIN, 2026, 11, 24, *clock)
    event = local(BERLIN, 2026, 11, 25, 9, 0)
    expected = local(BERLIN, 2026, 11, 24, 15, 0) if inside else at
    assert adjust(at, event, BERLIN, NAP) == expected.astimezone(UTC)


@pytest.mark.parametrize("at,expected", [
    ((2026, 11, 24, 20, 59), (2026, 11, 24, 20, 59)),  # before: stays
    ((2026, 11, 24, 21, 0), (2026, 11, 25, 7, 0)),  # start is inside
    ((2026, 11, 24, 23, 30), (2026, 11, 25, 7, 0)),  # evening: held to the next morning
    ((2026, 11, 25, 0, 0), (2026, 11, 25, 7, 0)),
    ((2026, 11, 25, 6, 59), (2026, 11, 25, 7, 0)),  # early morning: held to the same morning
    ((2026, 11, 25, 7, 0), (2026, 11, 25, 7, 0)),  # end is outside
    ((2026, 11, 25, 12, 0), (2026, 11, 25, 12, 0)),
])
def test_quiet_hours_that_wrap_midnight(at: tuple[int, ...], expected: tuple[int, ...]) -> None:
    event = local(NY, 2026, 11, 26, 18, 0)
    assert adjust(local(NY, *at), event, NY, NIGHT) == local(NY, *expected).astimezone(UTC)


def test_moved_to_the_last_minute_before_quiet_hours_when_the_event_starts_before_they_end() -> None:
    event = local(BERLIN, 2026, 11, 25, 6, 30)  # before the 07:00 end
    # A reminder in the early morning and one late in the evening, both in the same night's quiet hours.
    for at in (local(BERLIN, 2026, 11, 25, 3, 30), local(BERLIN, 2026, 11, 24, 22, 15)):
        moved = adjust(at, event, BERLIN, NIGHT)
        assert wall(moved, BERLIN) == "2026-11-24 20:59 CET"


def test_an_event_starting_as_quiet_hours_end_gets_its_reminder_before_them() -> None:
    # Held to 07:00 it would come with the event itself, which is no reminder (and plan_times drops it).
    event = local(BERLIN, 2026, 11, 25, 7, 0)
    moved = adjust(local(BERLIN, 2026, 11, 25, 6, 30), event, BERLIN, NIGHT)
    assert wall(moved, BERLIN) == "2026-11-24 20:59 CET"
    # A reminder at 07:00 itself is outside quiet hours, whenever the event is.
    at_end = local(BERLIN, 2026, 11, 25, 7, 0)
    assert adjust(at_end, event, BERLIN, NIGHT) == at_end.astimezone(UTC)
    # One second later the event starts after the end: held.
    held = adjust(local(BERLIN, 2026, 11, 25, 6, 30), event + timedelta(seconds=1), BERLIN, NIGHT)
    assert wall(held, BERLIN) == "2026-11-25 07:00 CET"


def test_quiet_hours_starting_at_midnight_move_reminders_to_the_day_before() -> None:
    quiet = (time(0, 0), time(6, 0))
    moved = adjust(local(NY, 2026, 11, 25, 2, 0), local(NY, 2026, 11, 25, 5, 0), NY, quiet)
    assert wall(moved, NY) == "2026-11-24 23:59 EST"


def test_equal_start_and_end_mean_no_quiet_hours() -> None:
    event = local(BERLIN, 2026, 11, 25, 6, 0)
    for clock in (time(0, 0), time(21, 0)):
        for at in (local(BERLIN, 2026, 11, 24, 21, 0), local(BERLIN, 2026, 11, 25, 3, 0)):
            assert adjust(at, event, BERLIN, (clock, clock)) == at.astimezone(UTC)
    now = LONG_AGO
    assert timing.plan_times(event, OFFSETS, now, BERLIN, (time(21), time(21))) == planner.reminder_times(
        event, OFFSETS, now, BERLIN)


def test_without_quiet_hours_plan_times_are_the_planners() -> None:
    for start, tz in ((local(NY, 2026, 3, 8, 9, 0), NY), (local(BERLIN, 2026, 10, 25, 8, 0), BERLIN),
                      (local(BERLIN, 2026, 11, 25, 15, 30), BERLIN)):
        for now in (LONG_AGO, start - timedelta(hours=2), start):
            assert timing.plan_times(start, OFFSETS, now, tz) == planner.reminder_times(start, OFFSETS, now, tz)


def test_reminders_held_to_the_same_instant_become_one() -> None:
    # 07:20 event: "3h before" (04:20) and "30 min before" (06:50) are both held to 07:00.
    event = local(BERLIN, 2026, 11, 25, 7, 20)
    times = timing.plan_times(event, OFFSETS, LONG_AGO, BERLIN, NIGHT)
    assert [wall(t, BERLIN) for t in times] == ["2026-11-24 07:20 CET", "2026-11-25 07:00 CET"]


def test_reminders_moved_to_the_same_instant_become_one() -> None:
    # 06:00 event: 03:00 and 05:30 both move to 20:59 the evening before; the day-before one (06:00, also
    # quiet, but a day ahead of the event) is held to 07:00 that morning.
    event = local(BERLIN, 2026, 11, 25, 6, 0)
    times = timing.plan_times(event, OFFSETS, LONG_AGO, BERLIN, NIGHT)
    assert [wall(t, BERLIN) for t in times] == ["2026-11-24 07:00 CET", "2026-11-24 20:59 CET"]


@pytest.mark.parametrize("now_clock,kept", [((20, 58), True), ((20, 59), False), ((22, 0), False)])
def test_a_reminder_moved_to_a_time_already_past_is_dropped(now_clock: tuple[int, int], kept: bool) -> None:
    # Not sent late inside quiet hours: if 20:59 has passed, the parent gets no push for it.
    event = local(BERLIN, 2026, 11, 25, 6, 0)
    now = local(BERLIN, 2026, 11, 24, *now_clock).astimezone(UTC)
    times = timing.plan_times(event, OFFSETS, now, BERLIN, NIGHT)
    assert times == ([local(BERLIN, 2026, 11, 24, 20, 59).astimezone(UTC)] if kept else [])


def test_planning_later_only_leaves_out_what_has_passed() -> None:
    # An event planned (or re-planned after an edit) at any time keeps the instants of an earlier plan:
    # the 05:00 reminder held to 07:00 is still there when planned at 06:00.
    event = local(BERLIN, 2026, 11, 25, 8, 0)
    full = timing.plan_times(event, OFFSETS, LONG_AGO, BERLIN, NIGHT)
    assert [wall(t, BERLIN) for t in full] == ["2026-11-24 08:00 CET", "2026-11-25 07:00 CET",
                                                "2026-11-25 07:30 CET"]
    now = local(BERLIN, 2026, 11, 24, 0, 0)
    while now < event:
        assert timing.plan_times(event, OFFSETS, now, BERLIN, NIGHT) == [t for t in full if t > now], now
        now += timedelta(minutes=20)


def test_planned_times_are_never_inside_quiet_hours_nor_at_or_after_the_start() -> None:
    quiet_start, quiet_end = NIGHT
    for hour in range(24):
        for minute in (0, 15, 45):
            event = local(NY, 2026, 11, 25, hour, minute)
            for t in timing.plan_times(event, OFFSETS, LONG_AGO, NY, NIGHT):
                clock = t.astimezone(NY).time()
                assert quiet_end <= clock < quiet_start, (event, t)
                assert t < event


def test_quiet_hours_must_be_wall_clock_times_and_instants_aware() -> None:
    event = utc(2026, 11, 25, 6)
    with pytest.raises(ValueError, match=r"naive datetime\.time"):
        timing.quiet_adjust(utc(2026, 11, 25, 3), event, UTC, time(21, tzinfo=UTC), time(7))
    with pytest.raises(ValueError, match="aware"):
        timing.quiet_adjust(datetime(2026, 11, 25, 3), event, UTC, *NIGHT)
    with pytest.raises(ValueError, match="aware"):
        timing.plan_times(event, OFFSETS, datetime(2026, 11, 1), UTC, NIGHT)


# --- quiet hours on daylight-saving nights


def test_quiet_hours_on_the_spring_forward_night_in_berlin() -> None:
    quiet = (time(1, 0), time(3, 0))  # 01:00 CET to 03:00 CEST: one real hour, 00:00-01:00 UTC
    event = local(BERLIN, 2026, 3, 29, 10, 0)
    held = adjust(utc(2026, 3, 29, 0, 30), event, BERLIN, quiet)  # 01:30 CET
    assert held == utc(2026, 3, 29, 1, 0)
    assert wall(held, BERLIN) == "2026-03-29 03:00 CEST"
    assert adjust(utc(2026, 3, 28, 23, 59), event, BERLIN, quiet) == utc(2026, 3, 28, 23, 59)  # 00:59 CET
    assert adjust(utc(2026, 3, 29, 1, 0), event, BERLIN, quiet) == utc(2026, 3, 29, 1, 0)  # 03:00 CEST


def test_quiet_hours_ending_in_the_skipped_hour_end_when_the_clock_jumps() -> None:
    # 02:30 never happens on 29 March in Berlin: quiet hours end at the first moment after the gap,
    # 03:00 CEST, not at the early reading 01:30 CET (still inside them).
    quiet = (time(1, 0), time(2, 30))
    held = adjust(local(BERLIN, 2026, 3, 29, 1, 45), local(BERLIN, 2026, 3, 29, 10, 0), BERLIN, quiet)
    assert held == utc(2026, 3, 29, 1, 0)
    assert wall(held, BERLIN) == "2026-03-29 03:00 CEST"


def test_quiet_hours_starting_in_the_skipped_hour_move_reminders_before_the_gap() -> None:
    # 02:30-06:00 begins, on 29 March, as the clock jumps to 03:00 CEST (01:00 UTC); the last minute before
    # it, 02:29, does not exist either, and reads early, as the planner reads skipped times: 01:29 CET.
    quiet = (time(2, 30), time(6, 0))
    event = local(BERLIN, 2026, 3, 29, 5, 0)
    moved = adjust(local(BERLIN, 2026, 3, 29, 4, 0), event, BERLIN, quiet)
    assert moved == utc(2026, 3, 29, 0, 29)
    assert wall(moved, BERLIN) == "2026-03-29 01:29 CET"
    assert adjust(utc(2026, 3, 29, 0, 59), event, BERLIN, quiet) == utc(2026, 3, 29, 0, 59)  # 01:59 CET: not quiet
    held = adjust(utc(2026, 3, 29, 1, 0), local(BERLIN, 2026, 3, 29, 9, 0), BERLIN, quiet)  # 03:00 CEST: quiet
    assert wall(held, BERLIN) == "2026-03-29 06:00 CEST"


def test_quiet_hours_on_the_spring_forward_night_in_new_york() -> None:
    event = local(NY, 2026, 3, 8, 10, 0)
    for quiet in ((time(1, 0), time(3, 0)), (time(1, 0), time(2, 30))):  # 02:30 is skipped there too
        assert adjust(utc(2026, 3, 8, 6, 30), event, NY, quiet) == utc(2026, 3, 8, 7, 0)  # 01:30 EST -> 03:00 EDT
        assert adjust(utc(2026, 3, 8, 5, 59), event, NY, quiet) == utc(2026, 3, 8, 5, 59)  # 00:59 EST
        assert adjust(utc(2026, 3, 8, 7, 0), event, NY, quiet) == utc(2026, 3, 8, 7, 0)


def test_quiet_hours_that_wrap_over_the_spring_forward_night() -> None:
    held = adjust(utc(2026, 3, 29, 3, 0), local(BERLIN, 2026, 3, 29, 9, 0), BERLIN, NIGHT)
    assert wall(held, BERLIN) == "2026-03-29 07:00 CEST"
    assert held == utc(2026, 3, 29, 5, 0)  # the night was 9 real hours: 20:00 to 05:00 UTC
    event = local(BERLIN, 2026, 3, 29, 9, 0)
    assert adjust(utc(2026, 3, 28, 19, 59), event, BERLIN, NIGHT) == utc(2026, 3, 28, 19, 59)  # 20:59 CET
    assert adjust(utc(2026, 3, 28, 20, 0), event, BERLIN, NIGHT) == utc(2026, 3, 29, 5, 0)  # 21:00 CET


def test_quiet_hours_on_the_fall_back_night_in_berlin_end_at_the_first_0230() -> None:
    quiet = (time(0, 30), time(2, 30))  # 00:30 CEST (22:30 UTC) to the first 02:30, CEST (00:30 UTC)
    event = local(BERLIN, 2026, 10, 25, 10, 0)
    held = adjust(utc(2026, 10, 24, 23, 30), event, BERLIN, quiet)  # 01:30 CEST
    assert held == utc(2026, 10, 25, 0, 30)
    assert wall(held, BERLIN) == "2026-10-25 02:30 CEST"
    assert adjust(utc(2026, 10, 24, 22, 29), event, BERLIN, quiet) == utc(2026, 10, 24, 22, 29)
    assert adjust(utc(2026, 10, 24, 22, 30), event, BERLIN, quiet) == utc(2026, 10, 25, 0, 30)
    # The repeated 02:00-02:30 (CET) comes after quiet hours ended: not held (the documented choice).
    assert adjust(utc(2026, 10, 25, 1, 15), event, BERLIN, quiet) == utc(2026, 10, 25, 1, 15)


def test_quiet_hours_on_the_fall_back_night_in_new_york_last_three_real_hours() -> None:
    quiet = (time(0, 30), time(2, 30))  # 00:30 EDT (04:30 UTC) to 02:30 EST (07:30 UTC)
    event = local(NY, 2026, 11, 1, 10, 0)
    for at in (utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 29)):
        assert adjust(at, event, NY, quiet) == utc(2026, 11, 1, 7, 30), at  # both 01:30s are quiet
    assert adjust(utc(2026, 11, 1, 4, 29), event, NY, quiet) == utc(2026, 11, 1, 4, 29)
    # Moved earlier: to 00:29 EDT.
    moved = adjust(utc(2026, 11, 1, 6, 30), local(NY, 2026, 11, 1, 2, 0), NY, quiet)
    assert wall(moved, NY) == "2026-11-01 00:29 EDT"


def test_quiet_hours_ending_in_the_repeated_hour_end_at_its_first_occurrence() -> None:
    quiet = (time(0, 30), time(1, 30))
    held = adjust(utc(2026, 11, 1, 5, 0), local(NY, 2026, 11, 1, 9, 0), NY, quiet)  # 01:00 EDT
    assert held == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, not 01:30 EST
    assert wall(held, NY) == "2026-11-01 01:30 EDT"


def test_a_day_ahead_reminder_and_quiet_hours_together_across_a_change() -> None:
    # 06:30 event the morning after Berlin springs forward: the day-before one (06:30 CET on the 28th) is
    # inside quiet hours and the event is far off: held to 07:00 CET; the others move to 20:59 on the 28th.
    event = local(BERLIN, 2026, 3, 29, 6, 30)
    times = timing.plan_times(event, OFFSETS, LONG_AGO, BERLIN, NIGHT)
    assert [wall(t, BERLIN) for t in times] == ["2026-03-28 07:00 CET", "2026-03-28 20:59 CET"]


# ------------------------------------------------------------------------------- recurring events


@pytest.mark.parametrize("tz,first,offsets_hours", [
    (BERLIN, (2026, 3, 17, 9, 0), (1, 2)),  # spring forward on 29 March
    (BERLIN, (2026, 10, 13, 9, 0), (2, 1)),  # fall back on 25 October
    (NY, (2026, 2, 24, 9, 0), (-5, -4)),  # spring forward on 8 March
    (NY, (2026, 10, 20, 9, 0), (-4, -5)),  # fall back on 1 November
])
def test_a_weekly_0900_event_stays_at_0900_across_a_daylight_saving_change(
        tz: ZoneInfo, first: tuple[int, ...], offsets_hours: tuple[int, int]) -> None:
    first_start = local(tz, *first)
    starts = timing.occurrences("FREQ=WEEKLY", first_start, tz, first_start - timedelta(seconds=1),
                                first_start + timedelta(weeks=3, hours=2))
    assert len(starts) == 4
    assert all(s.tzinfo is UTC for s in starts)
    assert [s.astimezone(tz).strftime("%a %H:%M") for s in starts] == [first_start.strftime("%a %H:%M")] * 4
    offsets = [s.astimezone(tz).utcoffset() for s in starts]
    assert offsets[0] == timedelta(hours=offsets_hours[0]) and offsets[-1] == timedelta(hours=offsets_hours[1])
    gaps = {b - a for a, b in itertools.pairwise(starts)}
    # One week is 7 x 24 real hours, except the week of the change.
    assert gaps == {timedelta(weeks=1), timedelta(weeks=1) - timedelta(hours=offsets_hours[1] - offsets_hours[0])}


def test_tuesdays_and_thursdays_with_a_count() -> None:
    first_start = local(BERLIN, 2026, 3, 17, 16, 30)  # a Tuesday
    starts = timing.occurrences("RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=10", first_start, BERLIN, LONG_AGO,
                                utc(2027, 1, 1))
    assert len(starts) == 10
    assert [s.astimezone(BERLIN).strftime("%a %d %b %H:%M") for s in starts[:4]] == [
        "Tue 17 Mar 16:30", "Thu 19 Mar 16:30", "Tue 24 Mar 16:30", "Thu 26 Mar 16:30"]
    assert wall(starts[-1], BERLIN) == "2026-04-16 16:30 CEST"
    # COUNT counts from the first start, whatever window is asked for.
    later = timing.occurrences("FREQ=WEEKLY;BYDAY=TU,TH;COUNT=10", first_start, BERLIN, starts[7], utc(2027, 1, 1))
    assert later == starts[8:]


def test_a_first_start_off_the_rule_is_the_first_occurrence_and_counts() -> None:
    first_start = local(NY, 2026, 3, 16, 9, 0)  # a Monday, the rule says Tuesdays and Thursdays
    starts = timing.occurrences("FREQ=WEEKLY;BYDAY=TU,TH;COUNT=3", first_start, NY, LONG_AGO, utc(2027, 1, 1))
    assert [s.astimezone(NY).strftime("%a %d") for s in starts] == ["Mon 16", "Tue 17", "Thu 19"]


@pytest.mark.parametrize("until,last", [
    ("20260414T070000Z", "2026-04-14 09:00 CEST"),  # an UNTIL that is an occurrence includes it
    ("20260414T065959Z", "2026-04-07 09:00 CEST"),  # a second earlier does not
    ("20260414", "2026-04-14 09:00 CEST"),  # a date alone: through that day
    ("20260413", "2026-04-07 09:00 CEST"),
    ("20260414T090000", "2026-04-14 09:00 CEST"),  # local time, read in the zone
    ("20260414T085959", "2026-04-07 09:00 CEST"),
])
def test_until_bounds_the_occurrences(until: str, last: str) -> None:
    first_start = local(BERLIN, 2026, 3, 17, 9, 0)
    starts = timing.occurrences(f"FREQ=WEEKLY;UNTIL={until}", first_start, BERLIN, LONG_AGO, utc(2027, 1, 1))
    assert wall(starts[-1], BERLIN) == last
    assert wall(starts[0], BERLIN) == "2026-03-17 09:00 CET"


def test_occurrences_in_a_skipped_or_repeated_hour_read_like_the_planners() -> None:
    # A daily 02:30 in New York: on 8 March 02:30 never happens; it reads early (01:30 EST = 06:30 UTC).
    first = local(NY, 2026, 3, 6, 2, 30)
    starts = timing.occurrences("FREQ=DAILY;COUNT=4", first, NY, LONG_AGO, utc(2027, 1, 1))
    assert starts[2] == utc(2026, 3, 8, 6, 30) == planner._wall_to_utc(datetime(2026, 3, 8, 2, 30), NY)
    assert starts[3] == utc(2026, 3, 9, 6, 30)  # 02:30 EDT
    # A daily 01:30 on 1 November: the first of the two 01:30s (EDT).
    first = local(NY, 2026, 10, 31, 1, 30)
    starts = timing.occurrences("FREQ=DAILY;COUNT=3", first, NY, LONG_AGO, utc(2027, 1, 1))
    assert starts == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_the_first_occurrence_is_the_first_start_itself_even_in_a_repeated_hour() -> None:
    first = local(NY, 2026, 11, 1, 1, 30, fold=1)  # the second 01:30, EST
    starts = timing.occurrences("FREQ=DAILY;COUNT=2", first, NY, LONG_AGO, utc(2027, 1, 1))
    assert starts == [utc(2026, 11, 1, 6, 30), utc(2026, 11, 2, 6, 30)]


def test_occurrences_are_after_exclusive_until_inclusive_and_capped() -> None:
    first = utc(2026, 1, 5, 9)
    starts = timing.occurrences("FREQ=DAILY", first, UTC, utc(2026, 1, 7, 9), utc(2026, 1, 9, 9))
    assert starts == [utc(2026, 1, 8, 9), utc(2026, 1, 9, 9)]
    assert timing.occurrences("FREQ=DAILY", first, UTC, utc(2026, 1, 9, 9), utc(2026, 1, 9, 9)) == []
    many = timing.occurrences("FREQ=DAILY", first, UTC, LONG_AGO, utc(2036, 1, 1))
    assert len(many) == timing.MAX_OCCURRENCES == 1000
    assert many[0] == first and many[-1] == first + timedelta(days=999)


def test_plan_recurring_horizon_includes_its_end_and_excludes_now() -> None:
    first = local(BERLIN, 2026, 11, 3, 16, 0)  # weekly on Tuesdays
    now = local(BERLIN, 2026, 11, 10, 16, 0).astimezone(UTC)  # an occurrence starts right now
    horizon = timedelta(days=7)
    assert timing.occurrences("FREQ=WEEKLY", first, BERLIN, now, now + horizon) == [now + horizon]
    pairs = timing.plan_recurring(first, "FREQ=WEEKLY", OFFSETS, now, BERLIN, horizon)
    nxt = now + horizon
    assert pairs == [(nxt, nxt - timedelta(hours=24)), (nxt, nxt - timedelta(hours=3)),
                     (nxt, nxt - timedelta(minutes=30))]
    assert timing.plan_recurring(first, "FREQ=WEEKLY", OFFSETS, now, BERLIN, horizon - timedelta(seconds=1)) == []


def test_plan_recurring_pairs_each_occurrence_with_its_reminders_sorted_by_instant() -> None:
    first = local(NY, 2026, 10, 27, 9, 0)  # Tuesdays and Thursdays 09:00, over the fall-back weekend
    now = local(NY, 2026, 10, 28, 12, 0).astimezone(UTC)
    pairs = timing.plan_recurring(first, "FREQ=WEEKLY;BYDAY=TU,TH", OFFSETS, now, NY, timedelta(days=8))
    assert [(wall(o, NY), wall(r, NY)) for o, r in pairs] == [
        ("2026-10-29 09:00 EDT", "2026-10-29 06:00 EDT"), ("2026-10-29 09:00 EDT", "2026-10-29 08:30 EDT"),
        ("2026-11-03 09:00 EST", "2026-11-02 09:00 EST"), ("2026-11-03 09:00 EST", "2026-11-03 06:00 EST"),
        ("2026-11-03 09:00 EST", "2026-11-03 08:30 EST"),
        ("2026-11-05 09:00 EST", "2026-11-04 09:00 EST"), ("2026-11-05 09:00 EST", "2026-11-05 06:00 EST"),
        ("2026-11-05 09:00 EST", "2026-11-05 08:30 EST"),
    ]  # the 24h reminder for the 29th (09:00 on the 28th) is past
    assert [r for _, r in pairs] == sorted(r for _, r in pairs)


def test_plan_recurring_with_quiet_hours_keeps_one_reminder_per_instant() -> None:
    # 06:00 and 06:30 every day: both occurrences' 30-minute reminders move to 20:59 the evening before.
    first = local(BERLIN, 2026, 11, 24, 6, 0)
    rule = "FREQ=DAILY;BYHOUR=6;BYMINUTE=0,30"
    now = local(BERLIN, 2026, 11, 24, 12, 0).astimezone(UTC)
    pairs = timing.plan_recurring(first, rule, [timedelta(minutes=30)], now, BERLIN, timedelta(days=1), NIGHT)
    assert [(wall(o, BERLIN), wall(r, BERLIN)) for o, r in pairs] == [("2026-11-25 06:00 CET", "2026-11-24 20:59 CET")]
    instants = [r for _, r in timing.plan_recurring(first, rule, OFFSETS, now, BERLIN, timedelta(days=3), NIGHT)]
    assert len(instants) == len(set(instants))


def test_plan_recurring_of_a_bad_rule_raises_rule_problem() -> None:
    with pytest.raises(RuleProblem, match="FREQ=HOURLY"):
        timing.plan_recurring(utc(2026, 1, 1), "FREQ=HOURLY", OFFSETS, utc(2026, 1, 1), UTC, timedelta(days=14))


# --- malformed rules


@pytest.mark.parametrize("text,needle", [
    ("garbage", "is not NAME=VALUE"),
    ("", "it is empty"),
    ("FREQ=HOURLY", "FREQ=HOURLY is not a family schedule"),
    ("FREQ=MINUTELY;INTERVAL=15", "FREQ=MINUTELY is not a family schedule"),
    ("RRULE:FREQ=SECONDLY", "FREQ=SECONDLY is not a family schedule"),
    ("FREQ=FORTNIGHTLY", "FREQ=FORTNIGHTLY is not one of"),
    ("INTERVAL=2", "FREQ is missing"),
    ("DTSTART:20260317T090000Z\nRRULE:FREQ=WEEKLY", "DTSTART is not supported"),
    ("DTSTART;TZID=Europe/Berlin:20260317T090000", "DTSTART is not supported"),
    ("RRULE:FREQ=WEEKLY\nEXDATE:20260324T080000Z", "EXDATE is not supported"),
    ("RRULE:FREQ=WEEKLY\nRDATE:20260325T080000Z", "RDATE is not supported"),
    ("RRULE:FREQ=WEEKLY\nRRULE:FREQ=DAILY", "only a single RRULE"),
    ("RRULE;X-FOO=1:FREQ=WEEKLY", "parameters on the RRULE line"),
    ("VEVENT:FREQ=WEEKLY", "'VEVENT' is not an RRULE line"),
    ("FREQ=WEEKLY;UNTIL=20260101T000000Z", "UNTIL (2026-01-01 00:00:00 UTC) is before the first start"),
    ("FREQ=WEEKLY;UNTIL=20260316", "is before the first start"),
    ("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;" + "BYMONTH=1,2,3,4,5,6,7,8,9,10,11,12;" * 14, "at most 500"),
    ("FREQ=WEEKLY;COUNT=3;UNTIL=20270101", "COUNT and UNTIL cannot both be given"),
    ("FREQ=WEEKLY;COUNT=0", "COUNT=0 is not a whole number"),
    ("FREQ=WEEKLY;INTERVAL=-1", "INTERVAL=-1 is not a whole number"),
    ("FREQ=WEEKLY;FREQ=DAILY", "FREQ is given twice"),
    ("FREQ=WEEKLY;BYDAY=XX", "'XX' is not a weekday"),
    ("FREQ=WEEKLY;BYDAY=", "is not NAME=VALUE"),
    ("FREQ=WEEKLY;COLOR=RED", "COLOR is not a part of an RRULE"),
    ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY=32: 32 is outside 1..31"),
    ("FREQ=MONTHLY;BYMONTHDAY=0", "outside"),
    ("FREQ=DAILY;BYHOUR=24", "BYHOUR=24: 24 is outside 0..23"),
    ("FREQ=YEARLY;BYMONTH=13", "BYMONTH=13"),
    ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30,31", "it never occurs"),
    ("FREQ=WEEKLY;BYMONTHDAY=1", "BYMONTHDAY cannot go with FREQ=WEEKLY"),
    ("FREQ=MONTHLY;BYWEEKNO=3", "BYWEEKNO goes with FREQ=YEARLY only"),
    ("FREQ=WEEKLY;BYDAY=1MO", "numbered weekday"),
    ("FREQ=MONTHLY;BYSETPOS=1", "BYSETPOS needs another BY"),
    ("FREQ=WEEKLY;UNTIL=2027-03-01", "UNTIL=2027-03-01 is neither a date"),
    ("FREQ=WEEKLY;UNTIL=20270231", "is not a real date"),
    ("FREQ=WEEKLY;WKST=XY", "WKST=XY"),
    ("FREQ=MONTHLY;BYDAY=+MO", "'+MO' is not a weekday"),
    ("FREQ=MONTHLY;BYDAY=0MO", "0MO counts a weekday outside 1..53"),
    ("FREQ=WEEKLY;UNTIL=2027-03-01T00:00:00Z", "UNTIL=2027-03-01T00:00:00Z is neither a date"),
])
def test_malformed_rules_are_refused_naming_the_problem(text: str, needle: str) -> None:
    first_start = local(BERLIN, 2026, 3, 17, 9, 0)
    with pytest.raises(RuleProblem) as caught:
        timing.validate_rule(text, first_start=first_start, tz=BERLIN)
    message = str(caught.value)
    assert message.startswith("recurrence: ") and " is not a valid RRULE: " in message
    assert needle in message, message
    assert isinstance(caught.value, ValueError)
    # occurrences() refuses the same rules the same way.
    with pytest.raises(RuleProblem, match=re.escape(needle)):
        timing.occurrences(text, first_start, BERLIN, LONG_AGO, utc(2027, 1, 1))


def test_a_long_rule_is_shown_shortened_in_the_message() -> None:
    text = "FREQ=WEEKLY;" + "BYDAY=MO;" * 60
    with pytest.raises(RuleProblem) as caught:
        timing.validate_rule(text)
    assert f"it is {len(text)} characters long, at most 500" in str(caught.value)
    assert text not in str(caught.value) and "..." in str(caught.value)


# --- the line Google Calendar takes


GOOGLE_FORM = re.compile(r"^RRULE:FREQ=(DAILY|WEEKLY|MONTHLY|YEARLY)(;[A-Z]+=[A-Z0-9,+-]+)*$")


@pytest.mark.parametrize("text,expected", [
    ("FREQ=WEEKLY;BYDAY=TU,TH;UNTIL=20270301T000000Z", "RRULE:FREQ=WEEKLY;BYDAY=TU,TH;UNTIL=20270301T000000Z"),
    (" rrule:freq=weekly; byday=tu, th ;count=10 ", "RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=10"),
    ("BYDAY=TU;FREQ=WEEKLY;INTERVAL=02", "RRULE:FREQ=WEEKLY;BYDAY=TU;INTERVAL=2"),
    # A local UNTIL is read in the zone (09:00 CET = 08:00 UTC), a date alone runs to that day's end.
    ("FREQ=WEEKLY;UNTIL=20270301T090000", "RRULE:FREQ=WEEKLY;UNTIL=20270301T080000Z"),
    ("FREQ=WEEKLY;UNTIL=20270301", "RRULE:FREQ=WEEKLY;UNTIL=20270301T225959Z"),
    ("FREQ=WEEKLY;UNTIL=20270801", "RRULE:FREQ=WEEKLY;UNTIL=20270801T215959Z"),  # summer: CEST
    ("RRULE:FREQ=MONTHLY;BYDAY=-1FR", "RRULE:FREQ=MONTHLY;BYDAY=-1FR"),
    ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", "RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29"),  # leap days exist
])
def test_validate_rule_gives_googles_form(text: str, expected: str) -> None:
    first_start = local(BERLIN, 2026, 3, 17, 9, 0)
    line = timing.validate_rule(text, first_start=first_start, tz=BERLIN)
    assert line == expected
    assert GOOGLE_FORM.match(line)
    assert timing.validate_rule(line, first_start=first_start, tz=BERLIN) == line  # a fixed point
    # dateutil takes the line as it is, with an aware start (UNTIL in UTC is what it demands then).
    rule = rrulestr(line, dtstart=first_start)
    assert rule[0] >= first_start


def test_validate_rule_without_a_zone_reads_local_until_in_utc() -> None:
    assert timing.validate_rule("FREQ=DAILY;UNTIL=20270301") == "RRULE:FREQ=DAILY;UNTIL=20270301T235959Z"
    assert timing.validate_rule("FREQ=DAILY;UNTIL=20270301T090000") == "RRULE:FREQ=DAILY;UNTIL=20270301T090000Z"


def test_the_normalised_rule_expands_as_dateutil_expands_it() -> None:
    first_start = local(NY, 2026, 10, 20, 18, 15)  # over the fall-back change
    for text in ("FREQ=WEEKLY;BYDAY=TU,TH;UNTIL=20261201", "FREQ=DAILY;INTERVAL=3;COUNT=12",
                 "FREQ=MONTHLY;BYDAY=3TU;COUNT=4"):
        line = timing.validate_rule(text, first_start=first_start, tz=NY)
        theirs = [d.astimezone(UTC) for d in rrulestr(line, dtstart=first_start)]
        ours = timing.occurrences(text, first_start, NY, LONG_AGO, utc(2028, 1, 1))
        assert ours == theirs, text
        assert {d.astimezone(NY).strftime("%H:%M") for d in ours} == {"18:15"}
