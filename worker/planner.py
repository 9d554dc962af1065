"""The planner: pure functions that decide *what* a pass does, with no I/O.

When reminders fire, what they say, whether an event row is usable, how long to wait before the
next try. Everything here is deterministic given its arguments (the random source for jitter is
passed in), so it is unit-tested in isolation, daylight-saving changes included.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Expo's limit on one notification's payload, in bytes.
EXPO_MAX_PAYLOAD_BYTES = 4096

# Limits on what an event may hold; beyond them the row fails with a reason instead of being
# silently cut (the parent should fix the event, not receive half of it).
MAX_TITLE_CHARS = 500
MAX_LOCATION_CHARS = 1000
MAX_PREP_ITEMS = 100
MAX_PREP_ITEM_CHARS = 500

_PUSH_TOKEN_RE = re.compile(r"^(?:Exponent|Expo)PushToken\[[^\[\]\s]{1,256}\]$")

# Places where clocks are usually read in 12-hour time. Everywhere else gets 24-hour time.
_TWELVE_HOUR_PREFIXES = ("US/", "Canada/", "Australia/")
_TWELVE_HOUR_ZONES = frozenset({
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Phoenix",
    "America/Anchorage", "America/Adak", "America/Boise", "America/Detroit", "America/Juneau",
    "America/Sitka", "America/Nome", "America/Yakutat", "America/Metlakatla", "America/Menominee",
    "America/Indiana/Indianapolis", "America/Indiana/Knox", "America/Indiana/Marengo",
    "America/Indiana/Petersburg", "America/Indiana/Tell_City", "America/Indiana/Vevay",
    "America/Indiana/Vincennes", "America/Indiana/Winamac", "America/Kentucky/Louisville",
    "America/Kentucky/Monticello", "America/North_Dakota/Center", "America/North_Dakota/New_Salem",
    "America/North_Dakota/Beulah", "America/Toronto", "America/Vancouver", "America/Edmonton",
    "America/Winnipeg", "America/Halifax", "America/St_Johns", "America/Regina", "America/Moncton",
    "America/Whitehorse", "America/Yellowknife", "America/Iqaluit", "America/Mexico_City",
    "America/Monterrey", "America/Tijuana", "America/Cancun", "America/Bogota", "America/Puerto_Rico",
    "Pacific/Honolulu", "Pacific/Auckland", "Asia/Kolkata", "Asia/Calcutta", "Asia/Karachi",
    "Asia/Manila", "Asia/Dhaka", "Asia/Riyadh", "Africa/Cairo", "Europe/Dublin",
})


def is_expo_push_token(token: str | None) -> bool:
    """Both forms Expo issues: ``ExponentPushToken[...]`` and the newer ``ExpoPushToken[...]``."""
    return token is not None and _PUSH_TOKEN_RE.match(token) is not None


def timezone_for(name: str | None) -> tuple[tzinfo, bool]:
    """The zone for a profile's time zone name, and whether it was usable (else UTC)."""
    if not name:
        return UTC, True
    try:
        return ZoneInfo(name), True
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC, False


def timezone_problem(name: str) -> str:
    """The reason a parent's time zone makes their events and reminders fail."""
    shown = name if len(name) <= 60 else name[:57] + "..."
    return (f"the owner's time zone {shown!r} (profiles.timezone) is not one the worker knows: use an IANA name "
            "such as Europe/Berlin; their events are synced again once it is fixed")


def uses_12_hour_clock(zone_name: str | None) -> bool:
    if not zone_name:
        return False
    return zone_name in _TWELVE_HOUR_ZONES or zone_name.startswith(_TWELVE_HOUR_PREFIXES)


# --- when reminders fire ------------------------------------------------------------------------


def reminder_times(
    start_ts: datetime, offsets: Sequence[timedelta], now: datetime, tz: tzinfo = UTC
) -> list[datetime]:
    """The instants (UTC) at which to remind, earliest first, leaving out those not after ``now``.

    A lead time of whole days is a *calendar* day in the owner's zone: "24h before" a 9:00 event is
    9:00 the day before on the wall clock, even when a daylight-saving change lies between (then it
    is 23 or 25 real hours). A parent reads it as "same time yesterday". Lead times of hours and
    minutes are exact durations.
    """
    times: set[datetime] = set()
    start_utc = start_ts.astimezone(UTC)
    for offset in offsets:
        if offset % timedelta(days=1) == timedelta(0):
            local = start_utc.astimezone(tz)
            wall = local.replace(tzinfo=None) - offset
            at = _wall_to_utc(wall, tz)
        else:
            at = start_utc - offset
        if at > now:
            times.add(at)
    return sorted(times)


def _wall_to_utc(wall: datetime, tz: tzinfo) -> datetime:
    """A naive wall-clock time in ``tz`` as UTC.

    A wall time skipped by a spring-forward gap never happens; take the earlier of its two
    readings, so a reminder is early rather than late. A repeated (fall-back) time takes its first
    occurrence.
    """
    candidate = wall.replace(tzinfo=tz, fold=0)
    utc = candidate.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != wall:
        utc = min(utc, wall.replace(tzinfo=tz, fold=1).astimezone(UTC))
    return utc


# --- is the row usable --------------------------------------------------------------------------


def event_problem(
    title: str | None,
    start_ts: datetime | None,
    end_ts: datetime | None,
    location: str | None,
    prep_items: Sequence[str | None] | None,
) -> str | None:
    """Why this event cannot be synced or reminded of, or None when it is fine."""
    if not title or not title.strip():
        return "title is empty"
    if len(title) > MAX_TITLE_CHARS:
        return f"title is too long ({len(title)} characters, at most {MAX_TITLE_CHARS})"
    if start_ts is None or end_ts is None:
        return "start_ts and end_ts are required"
    if end_ts < start_ts:
        return f"end_ts ({end_ts.isoformat()}) is before start_ts ({start_ts.isoformat()})"
    if location is not None and len(location) > MAX_LOCATION_CHARS:
        return f"location is too long ({len(location)} characters, at most {MAX_LOCATION_CHARS})"
    if prep_items:
        if len(prep_items) > MAX_PREP_ITEMS:
            return f"too many prep_items ({len(prep_items)}, at most {MAX_PREP_ITEMS})"
        for item in prep_items:
            if item is not None and len(item) > MAX_PREP_ITEM_CHARS:
                return f"a prep item is too long ({len(item)} characters, at most {MAX_PREP_ITEM_CHARS})"
    return None


# --- what the message says ----------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A notification's visible text."""

    title: str
    body: str

    def as_text(self) -> str:
        """How the reminder row stores what was (or will be) shown."""
        return f"{self.title}\n{self.body}"


def format_when(start_ts: datetime, now: datetime, tz: tzinfo, twelve_hour: bool) -> str:
    """'Today 3:30 PM', 'Tomorrow 15:30', 'Saturday 9:00 AM' or 'Sat 6 Dec 9:00 AM', in ``tz``."""
    local = start_ts.astimezone(tz)
    today = now.astimezone(tz).date()
    if twelve_hour:
        clock = f"{local.hour % 12 or 12}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}"
    else:
        clock = f"{local.hour:02d}:{local.minute:02d}"
    days = (local.date() - today).days
    if days == 0:
        day = "Today"
    elif days == 1:
        day = "Tomorrow"
    elif 1 < days < 7:
        day = local.strftime("%A")
    else:
        day = f"{local.strftime('%a')} {local.day} {local.strftime('%b')}"
    return f"{day} {clock}"


def _shorten(text: str, max_chars: int) -> str:
    """Cut at a character (never inside one) and mark the cut."""
    if len(text) <= max_chars:
        return text
    return text[: max(max_chars - 1, 0)].rstrip() + "…"


def _fits(m: Message, overhead: int, max_bytes: int) -> bool:
    """Whether title and body, in the notification's JSON, plus ``overhead`` take at most
    ``max_bytes``. No character takes more than 6 bytes in JSON (``\\uXXXX``): text far below the
    limit fits without a json.dumps (one per reminder, else)."""
    if overhead + 32 + 6 * (len(m.title) + len(m.body)) <= max_bytes:
        return True
    return overhead + len(json.dumps({"title": m.title, "body": m.body}, ensure_ascii=False).encode()) <= max_bytes


def render_message(
    *,
    title: str,
    child_name: str | None,
    start_ts: datetime,
    location: str | None,
    prep_items: Sequence[str | None] | None,
    now: datetime,
    zone_name: str | None,
    max_bytes: int,
    overhead: int = 0,
) -> Message:
    """The lock-screen text: title "Soccer practice (Emma)", body "Today 3:30 PM at Field 4. Bring: ...".

    The notification as sent (``overhead`` counts the bytes of everything but title and body) stays
    within ``max_bytes``: first the prep list loses items ("+3 more"), then location and title are
    shortened. Text is cut only at character boundaries.
    """
    tz, _ = timezone_for(zone_name)
    when = format_when(start_ts, now, tz, uses_12_hour_clock(zone_name))
    items = [i.strip() for i in (prep_items or []) if i and i.strip()]
    head = title.strip() + (f" ({child_name.strip()})" if child_name and child_name.strip() else "")
    place = location.strip() if location and location.strip() else None

    def build(head: str, place: str | None, shown: int) -> Message:
        body = when + (f" at {place}" if place else "") + "."
        if items:
            listed = items[:shown]
            rest = len(items) - len(listed)
            if listed:
                body += " Bring: " + ", ".join(listed) + (f", +{rest} more" if rest else "")
            else:
                body += f" Bring {len(items)} things."
        return Message(head, body)

    def fits(m: Message) -> bool:
        return _fits(m, overhead, max_bytes)

    shown = len(items)
    msg = build(head, place, shown)
    while not fits(msg) and shown > 0:
        shown -= 1
        msg = build(head, place, shown)
    for limit in (200, 100, 40):
        if fits(msg):
            break
        place = _shorten(place, limit) if place else None
        head = _shorten(head, limit)
        msg = build(head, place, shown)
    return msg


def stored_message(*, title: str, child_name: str | None, text: str, max_bytes: int, overhead: int = 0) -> Message:
    """A reminder the app wrote before the worker arrived: its own text as the body, under the
    event's title, shortened (never inside a character) to fit ``max_bytes`` like a rendered one."""
    head = title.strip() + (f" ({child_name.strip()})" if child_name and child_name.strip() else "")
    body = text.strip()

    def fits(m: Message) -> bool:
        return _fits(m, overhead, max_bytes)

    msg = Message(head, body)
    for limit in (2000, 1000, 500, 200):
        if fits(msg):
            break
        msg = Message(_shorten(head, min(limit, 200)), _shorten(body, limit))
    return msg


# --- when to try again --------------------------------------------------------------------------


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` failed attempts: base * 2^(failures-1), capped, jittered.

    "Equal jitter": half the delay is fixed, half random, so retries of many rows that failed
    together spread out but never come back sooner than half the nominal delay.
    """
    nominal = min(cap, base * 2.0 ** max(failures - 1, 0))
    r = rng.random() if rng is not None else random.random()
    return nominal / 2 + r * nominal / 2


def next_attempt_at(
    now: datetime, failures: int, base: float, cap: float, rng: random.Random | None = None
) -> datetime:
    return now + timedelta(seconds=backoff_delay(failures, base, cap, rng))
