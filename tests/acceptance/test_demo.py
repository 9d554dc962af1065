"""`python worker/main.py demo`: the README's first command tells the story it promises.

The demo runs the real pass on its own embedded Postgres; this checks it exits 0 and that each
feature it narrates is visible in what it prints (a failure names the missing line).
"""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.cli import clean_env, worker


def test_the_demo_shows_every_outcome_and_what_parents_set(tmp_path: Path) -> None:
    done = worker("demo", "--data-dir", str(tmp_path / "demo"), "--fresh", env=clean_env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for shown in (
        "migrations applied: 001_tables.sql, 002_tokens_and_adoption.sql, 003_preferences_devices_recurrence.sql",
        # the hard parts: Expo failing and the backoff, a revoked grant, a kill, an outage
        "reminders due, Expo failing",
        "answered 503, 503, 503",
        "the next retry: Expo is back",
        "google_revoked  Google access was revoked",
        "Tomorrow 3:30 PM at Field 7",  # the revoked parent's reminders still go out, with the edit
        "the killed pass (its answer never arrived)",
        "Entries for the Swim meet: 1",
        "expired  the event had already started",
        "expired  not sent: a later reminder of the same event was due as well",
        # the offsets, labelled
        "24 h", "3 h", "30 min", "moved, quiet hours",
        # status: newest first by when the passes ran, the simulated clock beside
        "simulated --now",
        "export DATABASE_URL='",
        "Run it again: python worker/main.py demo",
        "end_ts (",  # the typo'd event fails alone
        "Schmidt (2nd phone)",  # a two-phone parent: each reminder reaches both
        "not sent: the parent muted reminders for this child",
        "the event was cancelled",
        "DeviceNotRegistered",
        "the Schmidts' weekly practice (FREQ=WEEKLY;BYDAY=",
        "push tokens cleared after Expo said DeviceNotRegistered: 1",
    ):
        assert shown in out, f"the demo no longer shows {shown!r}:\n{out}"
    # Quiet hours 21:00-07:00: the 06:45 swim's 3 h and 30 min reminders become one, at 20:59 the day before.
    swim = out.split("Early swim reminders, New York time: ", 1)[1].splitlines()[0]
    assert swim.endswith(" 20:59") and "," not in swim, swim
    practice = out.split("the Schmidts' weekly practice", 1)[1]
    assert practice.count("17:00") >= 4  # every occurrence at 17:00 Berlin time, planned ahead
    retries = out.split("reminders due, Expo failing", 1)[1].split("Expo is back", 1)[0]
    assert "tries" in retries and "next try (UTC)" in retries
    kill = out.split("a pass killed mid-flight", 1)[1].split("a revoked Google grant", 1)[0]
    assert [line.split()[2] for line in kill.splitlines() if line.startswith("  POST primary/events")] == \
        ["200", "409"], kill
