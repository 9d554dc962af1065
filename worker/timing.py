"""When reminders fire, for parents with quiet hours and for recurring events: pure functions, no I/O.

Two features build on ``planner.reminder_times`` (which they reuse, not copy):

* **Quiet hours.** A parent may ask for no pushes between two wall-clock times in their zone (the window
  may wrap midnight: 21:00-07:00). A reminder that falls inside is held until the window ends; when the
  event starts before the window ends (holding it would make it useless), it is moved earlier, to the
  last minute before the window began (20:59 for 21:00). Reminders of one event that land on the same
  instant become one.
* **Recurring events.** An event may carry an RFC 5545 RRULE. It is expanded from the first start's
  *local* wall time in the parent's zone, so a weekly 09:00 practice stays at 09:00 on the clock across
  daylight-saving changes (its UTC instant moves by an hour). python-dateutil's ``rrule`` does the
  calendar arithmetic on naive wall times; turning wall times into instants uses the planner's rule for
  skipped and repeated times, so both features agree with the one-off planner.

Everything is deterministic given its arguments: instants in and out are aware (UTC out), zones are
passed in, "now" is passed in. Daylight-saving days in both directions are unit-tested.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from dateutil.rrule import rrulestr

from worker.planner import _wall_to_utc, reminder_times

# --- quiet hours --------------------------------------------------------------------------------

# How far before the start of quiet hours a reminder that cannot wait is moved ("20:59 for 21:00").
QUIET_LEAD = timedelta(minutes=1)

# Earlier than any event: reminder_times leaves out times not after its `now`; plan_times asks it for
# every base time and filters by the real `now` itself, after quiet hours have moved them (see there).
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)


def _require_aware(**values: datetime) -> None:
    """A naive datetime would be read in the machine's zone: refuse it rather than depend on the host."""
    for name, value in values.items():
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{name} must be an aware datetime, got {value!r}")


def _first_at_or_after(wall: datetime, tz: tzinfo) -> datetime:
    """The first instant (UTC) at which the clock in ``tz`` reads ``wall`` or later.

    For a wall time that exists this is its first occurrence, as in ``planner._wall_to_utc``. For one
    skipped by a spring-forward gap it is the first moment after the gap (02:30 on a night that jumps
    02:00 -> 03:00 gives 03:00): the end of quiet hours must not come while the clock still reads a quiet
    time, which the planner's early-rather-than-late reading (01:30) would do.
    """
    early = _wall_to_utc(wall, tz)
    if early.astimezone(tz).replace(tzinfo=None) == wall:
        return early
    # A gap: the two readings of the wall time bracket the transition, and inside that bracket the clock
    # only moves forward. Bisect on whole seconds for the first instant that reads `wall` or later.
    late = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    low, high = min(early, late), max(early, late)
    lo, hi = 0, int((high - low).total_seconds())  # the clock reads before `wall` at lo, not at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (low + timedelta(seconds=mid)).astimezone(tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return low + timedelta(seconds=hi)


@dataclass(frozen=True)
class _Window:
    """One night's quiet hours as instants: [start, end), and the local date they began on."""

    day: date
    start: datetime
    end: datetime


def _window_at(at: datetime, tz: tzinfo, start: time, end: time) -> _Window | None:
    """The quiet window that holds ``at``, if any.

    Inside means start <= local time < end, with a window that wraps midnight running into the next day.
    The window is compared as instants (each bound the first instant its clock reading is reached), so
    on a fall-back night the end is the *first* time the clock reads it: the repeated half-hour after a
    02:30 end is no longer quiet, although the clock reads 02:15 again.
    """
    wraps = start > end
    local_day = at.astimezone(tz).date()
    for shift in (-1, 0, 1):
        day = local_day + timedelta(days=shift)
        begins = _first_at_or_after(datetime.combine(day, start), tz)
        end_day = day + timedelta(days=1) if wraps else day
        ends = _first_at_or_after(datetime.combine(end_day, end), tz)
        if begins <= at < ends:
            return _Window(day, begins, ends)
    return None


def _check_quiet_times(start: time, end: time) -> None:
    if start.tzinfo is not None or end.tzinfo is not None:
        raise ValueError("quiet hours are wall-clock times in the parent's zone: pass naive datetime.time values")


def quiet_adjust(at: datetime, event_start: datetime, tz: tzinfo, start: time, end: time) -> datetime:
    """Where a reminder due at ``at`` goes under quiet hours ``start``-``end`` read in ``tz`` (UTC out).

    Outside quiet hours (or with ``start == end``, meaning none) it stays. Inside, it is held until they
    end, unless the event starts before they end or at that very instant (a reminder at the start is no
    reminder): then it moves to the last minute before they began (20:59 for 21:00), converted like the
    planner converts wall times (a skipped minute reads early, a repeated one its first occurrence).
    Whether that is still in the future is the caller's question (``plan_times`` drops it if not).
    """
    _require_aware(at=at, event_start=event_start)
    _check_quiet_times(start, end)
    at = at.astimezone(UTC)
    if start == end:
        return at
    window = _window_at(at, tz, start, end)
    if window is None:
        return at
    if event_start.astimezone(UTC) > window.end:
        return window.end
    return _wall_to_utc(datetime.combine(window.day, start) - QUIET_LEAD, tz)


def plan_times(
    event_start: datetime,
    offsets: Sequence[timedelta],
    now: datetime,
    tz: tzinfo,
    quiet: tuple[time, time] | None = None,
) -> list[datetime]:
    """The instants (UTC, earliest first, no two alike) at which to remind of an event starting then.

    The base times are ``planner.reminder_times``' (a whole-day lead time is a calendar day in ``tz``),
    quiet hours then hold or move them, and what is not strictly between ``now`` and the start is left
    out: a reminder moved earlier to a time already past is dropped, never sent late inside quiet hours.

    The base times are taken without regard to ``now`` and filtered after quiet hours, so planning later
    only ever removes instants from an earlier plan, never adds or moves one: a 05:00 reminder held to
    07:00 is still planned for 07:00 when the event is (re)planned at 06:00. (Filtering the base times
    by ``now`` first would make a re-plan drop it, and the plan depend on when it was made.)
    """
    _require_aware(event_start=event_start, now=now)
    start_utc = event_start.astimezone(UTC)
    times = reminder_times(start_utc, offsets, _EARLIEST, tz)
    if quiet is not None:
        times = [quiet_adjust(t, start_utc, tz, quiet[0], quiet[1]) for t in times]
    return sorted({t for t in times if now < t < start_utc})


# --- recurring events ---------------------------------------------------------------------------

MAX_RULE_CHARS = 500
MAX_OCCURRENCES = 1000  # per call of occurrences(): a horizon of weeks holds far fewer for any family rule

_FAMILY_FREQS = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY")
_TOO_FINE_FREQS = ("HOURLY", "MINUTELY", "SECONDLY")
_OTHER_LINES = ("DTSTART", "EXDATE", "RDATE", "EXRULE")
_PART_NAMES = ("FREQ", "UNTIL", "COUNT", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY", "BYMONTHDAY",
               "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST")
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
# Allowed values of the number lists (RFC 5545 3.3.10); `signed` ones may count from the end, never 0.
_RANGES: dict[str, tuple[int, int, bool]] = {
    "BYSECOND": (0, 59, False),  # RFC allows 60 (leap second); Python's datetime cannot hold it
    "BYMINUTE": (0, 59, False),
    "BYHOUR": (0, 23, False),
    "BYMONTHDAY": (1, 31, True),
    "BYYEARDAY": (1, 366, True),
    "BYWEEKNO": (1, 53, True),
    "BYMONTH": (1, 12, False),
    "BYSETPOS": (1, 366, True),
}
_BYDAY_RE = re.compile(r"^(?:[+-]?(\d{1,2}))?(MO|TU|WE|TH|FR|SA|SU)$")
_UNTIL_RE = re.compile(r"^(\d{8})(?:T(\d{6})(Z?))?$")
_LONGEST_MONTH = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in range(1, 13)}


class RuleProblem(ValueError):
    """A recurrence rule the worker will not expand, with a message a parent's support person can act on."""

    def __init__(self, rule: str, reason: str) -> None:
        shown = rule if len(rule) <= 60 else rule[:57] + "..."
        super().__init__(f"recurrence: {shown!r} is not a valid RRULE: {reason}")
        self.reason = reason


_Problem = Callable[[str], RuleProblem]


@dataclass(frozen=True)
class _Rule:
    """A checked rule: its parts in order (FREQ first, no UNTIL or COUNT), COUNT, and UNTIL as UTC."""

    parts: tuple[tuple[str, str], ...]
    count: int | None
    until: datetime | None

    def line(self) -> str:
        """The RRULE line Google Calendar takes in an event's `recurrence` list."""
        parts = list(self.parts)
        if self.count is not None:
            parts.append(("COUNT", str(self.count)))
        if self.until is not None:
            parts.append(("UNTIL", self.until.strftime("%Y%m%dT%H%M%SZ")))
        return "RRULE:" + ";".join(f"{name}={value}" for name, value in parts)

    def expansion_line(self) -> str:
        """The rule without COUNT and UNTIL, which occurrences() applies itself (see there)."""
        return "RRULE:" + ";".join(f"{name}={value}" for name, value in self.parts)


def _number_list(name: str, value: str, problem: _Problem) -> list[int]:
    low, high, signed = _RANGES[name]
    numbers: list[int] = []
    for item in value.split(","):
        if not re.fullmatch(r"[+-]?\d{1,3}", item):
            raise problem(f"{name}={value}: {item!r} is not a number")
        n = int(item)
        fits = (n != 0 and low <= abs(n) <= high) if signed else (low <= n <= high and item[0] != "-")
        if not fits:
            span = f"{low}..{high} or -{high}..-{low}" if signed else f"{low}..{high}"
            raise problem(f"{name}={value}: {item} is outside {span}")
        numbers.append(n)
    return numbers


def _until_utc(value: str, tz: tzinfo, problem: _Problem) -> datetime:
    """UNTIL as an instant. A UTC one (…Z) is kept; a local one is read in ``tz`` like any wall time;
    a date alone means "through that day", so its occurrences on that day still happen."""
    match = _UNTIL_RE.match(value)
    if match is None:
        raise problem(f"UNTIL={value} is neither a date (20270301) nor a date-time (20270301T090000[Z])")
    day, clock, zulu = match.groups()
    try:
        when = datetime.strptime(day + (clock or "000000"), "%Y%m%d%H%M%S")
    except ValueError:
        raise problem(f"UNTIL={value} is not a real date or time") from None
    if clock is None:
        return _first_at_or_after(when + timedelta(days=1), tz) - timedelta(seconds=1)
    if zulu:
        return when.replace(tzinfo=UTC)
    return _wall_to_utc(when, tz)


def _line_name(line: str) -> str | None:
    """The property a line names ("RRULE", "DTSTART", ...), or None for a bare rule ("FREQ=...").

    A bare rule may hold a colon in a value (a mistyped UNTIL=...T09:00:00Z): what comes before the first
    colon or semicolon is a property name only if it has no "=".
    """
    name = re.split(r"[:;]", line, maxsplit=1)[0].strip().upper()
    return None if ":" not in line or "=" in name else name


def _parse(text: str, tz: tzinfo) -> _Rule:
    """Check a rule and normalise it, or raise RuleProblem naming the first thing wrong."""

    def problem(reason: str) -> RuleProblem:
        return RuleProblem(text, reason)

    if len(text) > MAX_RULE_CHARS:
        raise problem(f"it is {len(text)} characters long, at most {MAX_RULE_CHARS}")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise problem("it is empty")
    names = [_line_name(line) for line in lines]
    for name in names:
        if name in _OTHER_LINES:
            raise problem(f"{name} is not supported: give one RRULE alone (the event's start_ts is its first start)")
        if name not in (None, "RRULE"):
            raise problem(f"{name!r} is not an RRULE line")
    if len(lines) > 1:
        raise problem(f"it has {len(lines)} lines; only a single RRULE is supported")
    line, body = lines[0], lines[0]
    if names[0] is not None:  # "RRULE:...", not a bare rule
        head, body = line.split(":", 1)
        if head.strip().upper() != "RRULE":
            raise problem("parameters on the RRULE line are not supported")
    body = re.sub(r"\s+", "", body).upper().strip(";")
    if not body:
        raise problem("it has no parts")

    parts: dict[str, str] = {}
    for pair in body.split(";"):
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise problem(f"{pair!r} is not NAME=VALUE")
        if name not in _PART_NAMES:
            raise problem(f"{name} is not a part of an RRULE")
        if name in parts:
            raise problem(f"{name} is given twice")
        parts[name] = value

    freq = parts.pop("FREQ", None)
    if freq is None:
        raise problem("FREQ is missing")
    if freq in _TOO_FINE_FREQS:
        raise problem(f"FREQ={freq} is not a family schedule: use DAILY, WEEKLY, MONTHLY or YEARLY")
    if freq not in _FAMILY_FREQS:
        raise problem(f"FREQ={freq} is not one of DAILY, WEEKLY, MONTHLY, YEARLY")
    if "COUNT" in parts and "UNTIL" in parts:
        raise problem("COUNT and UNTIL cannot both be given")
    count: int | None = None
    for name in ("COUNT", "INTERVAL"):
        if name in parts:
            if not parts[name].isdigit() or int(parts[name]) < 1 or len(parts[name]) > 6:
                raise problem(f"{name}={parts[name]} is not a whole number from 1 to 999999")
            parts[name] = str(int(parts[name]))
    if "COUNT" in parts:
        count = int(parts.pop("COUNT"))
    until = _until_utc(parts.pop("UNTIL"), tz, problem) if "UNTIL" in parts else None

    numbers = {name: _number_list(name, parts[name], problem) for name in _RANGES if name in parts}
    ordinal_days = False
    if "BYDAY" in parts:
        for item in parts["BYDAY"].split(","):
            day_match = _BYDAY_RE.match(item)
            if day_match is None:
                raise problem(f"BYDAY={parts['BYDAY']}: {item!r} is not a weekday such as MO, TU or -1FR")
            if day_match.group(1) is not None:
                ordinal = int(day_match.group(1))
                if not 1 <= ordinal <= 53:
                    raise problem(f"BYDAY={parts['BYDAY']}: {item} counts a weekday outside 1..53")
                ordinal_days = True
    if "WKST" in parts and parts["WKST"] not in _WEEKDAYS:
        raise problem(f"WKST={parts['WKST']} is not a weekday such as MO")

    # The combinations RFC 5545 3.3.10 allows; calendars differ in what they make of the others.
    if "BYWEEKNO" in parts and freq != "YEARLY":
        raise problem("BYWEEKNO goes with FREQ=YEARLY only")
    if "BYYEARDAY" in parts and freq != "YEARLY":
        raise problem("BYYEARDAY goes with FREQ=YEARLY only")
    if "BYMONTHDAY" in parts and freq == "WEEKLY":
        raise problem("BYMONTHDAY cannot go with FREQ=WEEKLY")
    if ordinal_days and (freq not in ("MONTHLY", "YEARLY") or "BYWEEKNO" in parts):
        raise problem("a numbered weekday in BYDAY (such as 1MO) goes with FREQ=MONTHLY or YEARLY only")
    if "BYSETPOS" in parts and not any(name.startswith("BY") and name != "BYSETPOS" for name in parts):
        raise problem("BYSETPOS needs another BY... part to pick from")
    # A day of the month no allowed month has would make dateutil search up to the year 9999 (seconds of
    # CPU per call) before finding nothing; say so instead.
    if "BYMONTHDAY" in numbers:
        months = numbers.get("BYMONTH", list(range(1, 13)))
        if not any(abs(d) <= _LONGEST_MONTH[m] for d in numbers["BYMONTHDAY"] for m in months):
            raise problem(f"it never occurs: no month in BYMONTH has the days in BYMONTHDAY={parts['BYMONTHDAY']}")

    rule = _Rule((("FREQ", freq), *parts.items()), count, until)
    try:  # whatever else dateutil objects to
        rrulestr(rule.expansion_line(), dtstart=datetime(2000, 1, 1))
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise problem(str(exc) or type(exc).__name__) from None
    return rule


def _checked(text: str, tz: tzinfo, first_start: datetime | None) -> _Rule:
    rule = _parse(text, tz)
    if first_start is not None:
        _require_aware(first_start=first_start)
        if rule.until is not None and rule.until < first_start.astimezone(UTC).replace(microsecond=0):
            raise RuleProblem(text, f"UNTIL ({rule.until:%Y-%m-%d %H:%M:%S} UTC) is before the first start "
                                    f"({first_start.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)")
    return rule


def validate_rule(text: str, *, first_start: datetime | None = None, tz: tzinfo = UTC) -> str:
    """The rule as the one ``RRULE:...`` line Google Calendar takes in an event's ``recurrence`` list.

    Accepts a bare rule or one ``RRULE:`` line, in any case and spacing, and returns it upper-case with
    FREQ first and UNTIL in UTC (``...Z``), as RFC 5545 demands when the start has a zone: a local UNTIL is
    read in ``tz``, a date alone means through the end of that day in ``tz``. Raises RuleProblem for text
    over 500 characters, anything but a single RRULE (DTSTART, EXDATE, RDATE, EXRULE lines), FREQ finer
    than DAILY (not a family schedule), COUNT with UNTIL, values out of range, combinations RFC 5545
    forbids, a rule that never occurs, and (given ``first_start``) an UNTIL before the first start.
    """
    return _checked(text, tz, first_start).line()


def _walls(rule: _Rule, first_wall: datetime) -> Iterator[datetime]:
    """The rule's wall times in order, starting with the first start itself.

    RFC 5545 counts DTSTART as the first occurrence; dateutil leaves it out when it does not match the
    rule (an event created on a Monday with BYDAY=TU,TH). The parent made an event at that time, so it is
    an occurrence, and it counts towards COUNT.
    """
    rrule: Any = rrulestr(rule.expansion_line(), dtstart=first_wall.replace(microsecond=0))
    yield first_wall
    for generated in rrule:
        wall: datetime = generated.replace(microsecond=first_wall.microsecond)
        if wall > first_wall:
            yield wall


def occurrences(rule: str, first_start: datetime, tz: tzinfo, after: datetime, until: datetime) -> list[datetime]:
    """Starts (UTC, earliest first) of the occurrences with ``after < start <= until``, at most 1000.

    The rule is expanded from the first start's wall time in ``tz`` (a weekly 09:00 stays 09:00 local);
    each wall time becomes an instant by the planner's rule: a skipped one reads early, a repeated one is
    its first occurrence. The first occurrence is ``first_start`` itself. Raises RuleProblem like
    ``validate_rule``.
    """
    _require_aware(first_start=first_start, after=after, until=until)
    parsed = _checked(rule, tz, first_start)
    first_utc = first_start.astimezone(UTC)
    first_wall = first_utc.astimezone(tz).replace(tzinfo=None)
    limit = min(until, parsed.until) if parsed.until is not None else until
    # Wall times are in order, their instants almost: a skipped wall time reads an hour early. A day past
    # the limit no later wall time can come back inside it.
    stop = limit + timedelta(days=1)
    found: set[datetime] = set()
    try:
        for index, wall in enumerate(_walls(parsed, first_wall)):
            if parsed.count is not None and index >= parsed.count:
                break
            start = first_utc if index == 0 else _wall_to_utc(wall, tz)
            if start > stop:
                break
            if after < start <= limit:
                found.add(start)
                if len(found) >= MAX_OCCURRENCES:
                    break
    except (ValueError, OverflowError) as exc:  # dates past the year 9999, and the like
        raise RuleProblem(rule, f"it cannot be expanded: {exc}") from None
    return sorted(found)[:MAX_OCCURRENCES]


def plan_recurring(
    first_start: datetime,
    rule: str,
    offsets: Sequence[timedelta],
    now: datetime,
    tz: tzinfo,
    horizon: timedelta,
    quiet: tuple[time, time] | None = None,
) -> list[tuple[datetime, datetime]]:
    """(occurrence start, reminder instant) pairs for the occurrences starting in (now, now + horizon].

    Each occurrence's instants are ``plan_times``'. Reminders of one event are unique per instant (the
    reminders table is UNIQUE on event and instant), so when two occurrences' reminders land on the same
    instant (quiet hours can do that) the earlier occurrence keeps it. Sorted by instant.
    """
    _require_aware(now=now)
    chosen: dict[datetime, datetime] = {}
    for start in occurrences(rule, first_start, tz, now, now + horizon):
        for at in plan_times(start, offsets, now, tz, quiet):
            chosen.setdefault(at, start)
    return sorted(((start, at) for at, start in chosen.items()), key=lambda pair: (pair[1], pair[0]))
