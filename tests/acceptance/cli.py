"""Run the worker the way operators do: ``python worker/main.py ...`` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "worker" / "main.py")

# Variables of the developer's shell that must not leak into a test's worker.
_OURS = ("DATABASE_URL", "SUPABASE_URL", "EXPO_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "GOOGLE_",
         "EXPO_", "REMINDER_", "PUSH_", "WORKER_", "RETRY_", "LOG_", "CALENDAR_", "RECEIPT_", "PROMETHEUS_")


def clean_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env["PYTHONPATH"] = ""  # the entry point must find its package by itself
    env.update(overrides)
    return env


def worker(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, MAIN, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_worker(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, MAIN, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def passes_at_once(count: int, env: dict[str, str], now: datetime, logs: Path,
                   timeout: float = 120) -> tuple[list[int], list[str]]:
    """``count`` processes of ``run --now NOW`` started together; their exit codes and stderr
    (each written to a file under ``logs``, not a pipe, so no process blocks on a full one)."""
    paths = [logs / f"worker-{i}.log" for i in range(count)]
    handles = [path.open("wb") for path in paths]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for handle in handles:
            procs.append(subprocess.Popen([sys.executable, MAIN, "run", "--now", now.isoformat()], env=env,
                                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=handle))
        codes = [proc.wait(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for handle in handles:
            handle.close()
    return codes, [path.read_text() for path in paths]


def summary_of(stderr: str) -> dict[str, Any]:
    """The pass's summary line (the last ``pass.summary`` JSON line on stderr)."""
    for line in reversed(stderr.splitlines()):
        if '"pass.summary"' in line:
            summary: dict[str, Any] = json.loads(line)
            return summary
    raise AssertionError(f"no summary line in:\n{stderr}")


def run_at(env: dict[str, str], now: datetime) -> dict[str, Any]:
    """``run --now NOW`` that must exit 0; its summary line."""
    done = worker("run", "--now", now.isoformat(), env=env)
    assert done.returncode == 0, done.stderr
    return summary_of(done.stderr)
