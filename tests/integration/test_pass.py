"""The pass in-process against a real database and the Expo stand-in, through both gateways."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from standins.expo import ExpoStandIn
from tests import seed
from worker.clients.expo import ExpoPusher
from worker.config import Settings
from worker.db import Gateway
from worker.passes import run_pass

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _settings(expo: ExpoStandIn, **kw: Any) -> Settings:
    env = {"DATABASE_URL": "postgresql://unused", "EXPO_API_URL": expo.url, "PUSH_RETRY_WAIT": "0",
           "PUSH_REQUEST_ATTEMPTS": "1"}
    env.update({k.upper(): str(v) for k, v in kw.items()})
    return Settings.from_env(env)


def _pass(gateway: Gateway, settings: Settings, now: datetime) -> Any:
    pusher = ExpoPusher(settings.expo.api_url, concurrency=2, rate_limit=0, request_attempts=1, retry_wait=0)
    try:
        return run_pass(settings, gateway, now=now, pusher=pusher)
    finally:
        pusher.close()


def test_plans_then_sends_each_reminder_once(db: psycopg.Connection[Any], gateway: Gateway,
                                             expo: ExpoStandIn) -> None:
    parent = seed.add_parent(db, timezone="America/New_York")
    child = seed.add_child(db, parent, "Emma")
    start = NOW + timedelta(days=2)
    event = seed.add_event(db, parent, start, child_id=child)
    settings = _settings(expo)

    first = _pass(gateway, settings, NOW)
    assert first.exit_code == 0
    assert first.counts.events_synced == 1
    assert first.counts.reminders_planned == 3
    times = [r[0] for r in db.execute(
        "SELECT notify_at_ts FROM reminders WHERE event_id = %s ORDER BY 1", (event,)).fetchall()]
    assert times == [start - timedelta(hours=24), start - timedelta(hours=3), start - timedelta(minutes=30)]

    for at in times:
        result = _pass(gateway, settings, at + timedelta(seconds=5))
        assert result.exit_code == 0 and result.counts.sent == 1
    again = _pass(gateway, settings, times[-1] + timedelta(minutes=1))
    assert again.counts.sent == 0
    assert len(expo.messages) == 3
    assert [m["data"]["event_id"] for m in expo.messages] == [event] * 3
    assert expo.messages[0]["title"] == "Soccer practice (Emma)"
    assert expo.messages[-1]["body"].startswith("Today 4:00 AM at Field 4. Bring: shin guards, water")
    assert seed.statuses(db) == {"sent": 3}
