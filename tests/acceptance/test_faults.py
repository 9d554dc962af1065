"""Faults at the worst instant, for real: SIGKILLs mid-send and database outages mid-pass.

* Duplicates are bounded by what was in flight: a pass killed at any instant re-sends at most
  the Expo requests it had in flight (PUSH_CONCURRENCY x 100 = 600 with the defaults), because
  each request's outcome is recorded as it returns.
* A database outage during a pass re-sends nothing that Expo accepted, over a direct connection
  and through the Supabase Data API.

Run with ``-s`` to see the summary lines (the kill storm's duplicates per kill, each outage's
duplicates). The private Postgres that goes away is ``tests/pgserver.py``'s PgServer.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from standins.expo import ExpoStandIn
from tests import seed
from tests.acceptance.cli import clean_env, start_worker, worker
from tests.acceptance.faults import delivered, duplicates, kill_storm, outage_database

if TYPE_CHECKING:
    from tests.pgserver import PgServer

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
IN_FLIGHT_BOUND = 6 * 100  # PUSH_CONCURRENCY (default 6) x 100 messages a request


# --- the kill storm -------------------------------------------------------------------------------

# The sketch says 5,000; but a pass gets through about a thousand reminders before a kill
# at up to 2 s, so 5,000 ran out after five or six kills and the later "kills" hit idle passes.
# 30,000 keeps all 20 kills landing on passes with work to do, with room for a worker that
# records more per pass than today's (about a minute in all).
STORM_REMINDERS = 30_000
STORM_KILLS = 20
LEASE_SECONDS = 10


@pytest.mark.slow
def test_a_kill_storm_resends_at_most_what_was_in_flight(db: psycopg.Connection[Any], db_url: str,
                                                         expo: ExpoStandIn) -> None:
    """20 passes, each SIGKILLed at a seeded random instant of its sending; every kill may cost at
    most the requests it had in flight. The clock moves past the lease between passes (events start
    an hour after the seed's now; 20 x 11 s stays far from it).

    The instant counts from the pass's first message at Expo: under the shared limit a pass first
    waits out the slots the pass killed before it had booked (a few seconds of the schedule), and a
    kill in that wait has nothing in flight to duplicate."""
    seed.add_due_reminders(db, STORM_REMINDERS, NOW, users=50)
    expo.latency = 0.05
    env = clean_env(DATABASE_URL=db_url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0",
                    WORKER_LEASE_SECONDS=str(LEASE_SECONDS))

    report = kill_storm(env, expo, NOW, kills=STORM_KILLS, seed=20261122,
                        step=timedelta(seconds=LEASE_SECONDS + 1), kill_window=(0.05, 2.0), from_first_send=True,
                        done=lambda: seed.statuses(db) == {"sent": STORM_REMINDERS})
    print(f"\n{report.summary()}")

    assert seed.statuses(db) == {"sent": STORM_REMINDERS}
    counts = delivered(expo)
    ids = {str(r[0]) for r in db.execute("SELECT id FROM public.reminders").fetchall()}
    assert set(counts) == ids, "every reminder was delivered at least once"
    killed = report.kills
    hit_mid_send = [i for i in killed if report.passes[i].last > report.passes[i].first]
    assert len(killed) == STORM_KILLS, f"every storm pass must die by the kill ({report.summary()})"
    assert len(hit_mid_send) >= STORM_KILLS - 5, f"the kills must land while passes send ({report.summary()})"
    not_killed = {i: n for i, n in report.per_pass.items() if i not in killed}
    assert not_killed == {}, f"a pass that was not killed caused duplicates: {not_killed}"
    worst = {i: report.per_pass.get(i, 0) for i in killed}
    assert max(worst.values(), default=0) <= IN_FLIGHT_BOUND, f"{report.summary()}; per kill: {worst}"


# --- database outages -----------------------------------------------------------------------------

OUTAGE_REMINDERS = 3000


@pytest.fixture
def outage_db(tmp_path: Path) -> Iterator[tuple[PgServer, str]]:
    with outage_database(tmp_path) as (server, url):
        yield server, url


def _seed_due(url: str, count: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        seed.add_due_reminders(conn, count, NOW, users=50)


def _statuses(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return seed.statuses(conn)


def _pass_through_an_outage(server: PgServer, env: dict[str, str], expo: ExpoStandIn, url: str, down_seconds: float,
                            label: str) -> None:
    """One `run` that loses its database for ``down_seconds`` once Expo has seen a few requests;
    then, if it left work behind, later passes (after the lease) finish it, so that whatever the
    outage made the worker send twice shows up at the stand-in."""
    expo.latency = 0.05
    seen_at_stop: dict[str, Any] = {}
    proc = start_worker("run", "--now", NOW.isoformat(), env=env)

    def trigger() -> bool:
        if len(expo.requests) < 3:
            return False
        seen_at_stop.update(alive=proc.poll() is None, messages=len(expo.messages))
        return True

    outage = server.outage_in_background(after=trigger, down_seconds=down_seconds, wait_timeout=60)
    try:
        _, stderr = proc.communicate(timeout=down_seconds + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        outage.join(timeout=down_seconds + 60)
    assert outage.went_down.is_set() and outage.came_up.is_set(), "the outage did not happen"
    assert seen_at_stop.get("alive"), "the pass had ended before the database went away"
    assert seen_at_stop["messages"] < OUTAGE_REMINDERS, "the outage must start while the pass is sending"
    left = _statuses(url)
    later = NOW + timedelta(seconds=301)  # past the default lease of anything the pass left claimed
    for _ in range(3):
        if left == {"sent": OUTAGE_REMINDERS}:
            break
        worker("run", "--now", later.isoformat(), env=env, timeout=120)
        left = _statuses(url)
        later += timedelta(seconds=301)
    dupes = duplicates(expo)
    print(f"\n{label}: duplicates={dupes} (outage pass exit {proc.returncode}; "
          f"{seen_at_stop['messages']} messages accepted when the database went away)")
    assert dupes == 0, f"{label}: {dupes} reminders Expo had accepted were sent again"
    assert proc.returncode == 0, stderr[-4000:]


def _assert_all_sent_once(url: str, expo: ExpoStandIn) -> None:
    assert _statuses(url) == {"sent": OUTAGE_REMINDERS}
    counts = delivered(expo)
    assert len(counts) == OUTAGE_REMINDERS and max(counts.values()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("down_seconds", [5, 30])
def test_a_database_outage_mid_pass_resends_nothing(outage_db: tuple[PgServer, str], expo: ExpoStandIn,
                                                    down_seconds: int) -> None:
    server, url = outage_db
    _seed_due(url, OUTAGE_REMINDERS)
    env = clean_env(DATABASE_URL=url, EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0")
    _pass_through_an_outage(server, env, expo, url, down_seconds, f"db outage {down_seconds}s")
    _assert_all_sent_once(url, expo)


@pytest.mark.slow
def test_a_database_outage_behind_the_data_api_resends_nothing(outage_db: tuple[PgServer, str],
                                                               expo: ExpoStandIn) -> None:
    from standins.postgrest import PostgrestStandIn

    server, url = outage_db
    _seed_due(url, OUTAGE_REMINDERS)
    with PostgrestStandIn(url) as api:
        env = clean_env(SUPABASE_URL=api.url, SUPABASE_SERVICE_ROLE_KEY=api.service_role_key(),
                        EXPO_API_URL=expo.url, PUSH_RETRY_WAIT="0")
        _pass_through_an_outage(server, env, expo, url, 5, "db outage 5s (Data API)")
    _assert_all_sent_once(url, expo)
