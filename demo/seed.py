"""The demo's sample data: three families, four children, a handful of events around the day.

Chosen so that each kind of outcome shows up: a family with Google and families without, three
time zones, events with and without a prep list, one with a typo (it ends before it starts, so it
fails to sync) and a phone Expo no longer knows (its reminders fail and the push token is cleared).
And what parents set beyond the seed: the Garcias keep quiet hours (21:00-07:00 New York time) and
have an early swim inside them and a library visit inside the demo's outage; the Schmidts have two
phones, a weekly football practice (an RFC 5545 rule) and have muted their son Jonas's reminders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg


@dataclass
class Family:
    """One parent account: its name in the tables, its time zone, push token, Google refresh token."""

    name: str
    tz: str
    token: str
    refresh_token: str | None
    user_id: str = ""
    second_token: str | None = None  # a further device (public.push_tokens)

    @property
    def google_email(self) -> str:
        """The Google account the demo registers in the Google stand-in for this family."""
        return f"{self.name.lower()}@example.com"


@dataclass
class Story:
    """What was seeded: the families, and event ids by a short name (``"dentist"``, ``"party"``...)."""

    families: list[Family]
    events: dict[str, str] = field(default_factory=dict)


def _returning_id(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> str:
    row = conn.execute(query, params).fetchone()
    assert row is not None  # INSERT ... RETURNING id always returns the row
    return str(row[0])


def seed(conn: psycopg.Connection[Any], now: datetime) -> Story:
    """Insert the sample families, children and events; event times are local to each family."""
    garcia = Family("Garcia", "America/New_York", "ExponentPushToken[garcia-phone]", "1//demo-garcia")
    schmidt = Family("Schmidt", "Europe/Berlin", "ExpoPushToken[schmidt-phone]", None, "",
                     "ExponentPushToken[schmidt-second-phone]")
    old_phone = Family("Okafor", "Europe/London", "ExponentPushToken[unregistered-okafor-old-phone]", None)
    families = [garcia, schmidt, old_phone]
    for f in families:
        f.user_id = _returning_id(conn, "INSERT INTO auth.users (id) VALUES (gen_random_uuid()) RETURNING id", ())
        conn.execute("INSERT INTO profiles (id, expo_push_token, timezone, google_refresh_token) "
                     "VALUES (%s, %s, %s, %s)",
                     (f.user_id, f.token, f.tz, f.refresh_token))
        if f.second_token:
            conn.execute("INSERT INTO push_tokens (user_id, token) VALUES (%s, %s)", (f.user_id, f.second_token))

    def child(f: Family, name: str) -> str:
        return _returning_id(conn, "INSERT INTO children (user_id, name) VALUES (%s, %s) RETURNING id",
                             (f.user_id, name))

    emma, leo, mia, ada = child(garcia, "Emma"), child(garcia, "Leo"), child(schmidt, "Mia"), child(old_phone, "Ada")
    jonas = child(schmidt, "Jonas")
    conn.execute("INSERT INTO notification_preferences (user_id, quiet_hours_start, quiet_hours_end) "
                 "VALUES (%s, '21:00', '07:00')", (garcia.user_id,))
    conn.execute("INSERT INTO notification_preferences (user_id, muted_children) VALUES (%s, %s)",
                 (schmidt.user_id, [jonas]))

    def local(f: Family, days: int, hour: int, minute: int) -> datetime:
        day = now.astimezone(ZoneInfo(f.tz)).date() + timedelta(days=days)
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(f.tz))

    def event(f: Family, kid: str, title: str, start: datetime, minutes: int, location: str | None,
              prep: list[str] | None) -> str:
        return _returning_id(
            conn,
            "INSERT INTO events (user_id, child_id, title, start_ts, end_ts, location, prep_items) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (f.user_id, kid, title, start, start + timedelta(minutes=minutes), location, prep))

    story = Story(families)
    story.events = {
        "soccer": event(garcia, emma, "Soccer practice", local(garcia, 1, 15, 30), 90, "Field 4",
                        ["shin guards", "water", "orange slices"]),
        "dentist": event(garcia, leo, "Dentist check-up", local(garcia, 1, 11, 0), 45, "Smile Dental, 12 Main St",
                         None),
        "swim": event(schmidt, mia, "Schwimmkurs", local(schmidt, 1, 16, 0), 60, "Hallenbad Mitte",
                      ["Badeanzug", "Handtuch", "Schwimmbrille"]),
        "party": event(schmidt, mia, "Birthday party at Lena's", local(schmidt, 2, 14, 0), 180, None, ["present"]),
        "recital": event(old_phone, ada, "Piano recital", local(old_phone, 1, 18, 0), 60, "Town hall",
                         ["sheet music"]),
    }
    practice = local(schmidt, 1, 17, 0)
    days = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
    weekly = f"FREQ=WEEKLY;BYDAY={days[practice.weekday()]},{days[(practice.weekday() + 3) % 7]};COUNT=8"
    story.events["practice"] = _returning_id(
        conn,
        "INSERT INTO events (user_id, child_id, title, start_ts, end_ts, location, prep_items, recurrence) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (schmidt.user_id, mia, "Fußballtraining", practice, practice + timedelta(minutes=90), "Sportplatz Nord",
         ["Stollenschuhe"], weekly))
    story.events["judo"] = event(schmidt, jonas, "Judo", local(schmidt, 1, 15, 0), 60, "Dojo", ["Judogi"])
    story.events["early swim"] = event(garcia, emma, "Early swim", local(garcia, 1, 6, 45), 45, "Y pool",
                                       ["goggles"])
    # Starts inside the demo's outage (08:45-11:40 New York): its 30 min reminder must expire, not arrive late.
    story.events["story time"] = event(garcia, leo, "Library story time", local(garcia, 1, 10, 0), 45,
                                       "Public library", None)
    story.events["bad"] = _returning_id(
        conn,
        "INSERT INTO events (user_id, child_id, title, start_ts, end_ts) VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (garcia.user_id, leo, "Field trip (typo: ends before it starts)", local(garcia, 1, 9, 0),
         local(garcia, 1, 8, 0)))
    return story
