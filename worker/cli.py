"""The command line: parse, configure logging, run one command, map the outcome to an exit code.

Exit codes (the contract): 0 the command did its job (per-row failures live in the rows);
1 it could not (a dependency failed for the whole pass, or an unexpected error);
2 the configuration is invalid or missing (one line on stderr names the variable).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from worker import logs
from worker.config import TRIGGERS, ConfigError, Settings
from worker.db import DatabaseError, DatabaseUnavailable, open_gateway

if TYPE_CHECKING:
    from worker.passes import CalendarPort

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every configuration error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see --help)\n")


#: The shortest --interval: a loop faster than this only burns the database and Expo.
MIN_INTERVAL = 1.0


def _prog() -> str:
    """How the worker was started, for usage lines: the installed command or the checkout's script."""
    return "reminder-worker" if os.path.basename(sys.argv[0]) == "reminder-worker" else "python worker/main.py"


def parse_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= MIN_INTERVAL:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text} is too short: at least {MIN_INTERVAL:g} second")
    return value


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant; UTC where no offset is given."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time like 2026-11-22T09:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parser() -> argparse.ArgumentParser:
    from worker.usage import COMMANDS  # the help texts

    prog = _prog()
    p = _Parser(prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="reminder-worker: calendar sync and push reminders for the family-scheduling app.\n"
                            "Without a command: `run` (one pass).",
                epilog=f"`{prog} COMMAND --help` says what a command does, the environment it reads, its exit "
                       "codes and examples.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        usage = COMMANDS[name]
        return sub.add_parser(name, help=usage.summary, description=usage.text(), epilog=usage.epilog(prog),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    run = command("run")
    run.add_argument("--now", type=parse_instant, metavar="INSTANT",
                     help="act as if the clock read this ISO 8601 instant (UTC unless an offset is given)")
    run.add_argument("--loop", action="store_true", help="pass forever, one every --interval seconds")
    run.add_argument("--interval", type=parse_interval, default=60.0, metavar="SECONDS",
                     help=f"seconds between passes with --loop (default 60, at least {MIN_INTERVAL:g})")
    run.add_argument("--trigger", default=None, choices=TRIGGERS, help=argparse.SUPPRESS)
    command("migrate")
    demo = command("demo")
    demo.add_argument("--data-dir", default=".worker-data", help="where the embedded PostgreSQL lives "
                                                                 "(default .worker-data)")
    demo.add_argument("--fresh", action="store_true", help="start from an empty data folder")
    demo.add_argument("--keep-running", action="store_true",
                      help="leave the demo's PostgreSQL running afterwards, to explore it (demo --stop stops it)")
    demo.add_argument("--stop", action="store_true", help="only stop a PostgreSQL left running by --keep-running")
    serve = command("serve")
    serve.add_argument("--host", default="0.0.0.0",  # noqa: S104 - a server in a pod listens on all
                       help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    check = command("check")
    check.add_argument("--offline", action="store_true",
                       help="do not ask Expo or Google (only the settings' shapes and the database)")
    secure = command("secure-tokens")
    secure.add_argument("--dry-run", action="store_true", help="only say how many would move")
    status = command("status")
    status.add_argument("--json", action="store_true", help="the whole status document as JSON")
    from worker.ops.privacy import parse_user_id  # (export-user, forget-user: a light module)

    export = command("export-user")
    export.add_argument("user_id", metavar="UUID", type=parse_user_id, help="the parent's auth.users id")
    forget = command("forget-user")
    forget.add_argument("user_id", metavar="UUID", type=parse_user_id, help="the parent's auth.users id")
    forget.add_argument("--yes", action="store_true", help="do it (without: a dry run that changes nothing)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        if command == "run":
            _record_config_failure(args, str(exc))
        return EXIT_CONFIG
    logs.setup(settings.log.level, settings.log.format)
    for secret in (settings.database.url, settings.database.supabase_key, settings.google.client_secret,
                   settings.expo.access_token, settings.serve.trigger_token):
        logs.register_secret(secret)
    try:
        if command == "run":
            return _run(settings, getattr(args, "now", None), getattr(args, "loop", False),
                        getattr(args, "interval", 60.0), _trigger(args, settings.passes.trigger))
        if command == "migrate":
            return _migrate(settings)
        if command == "demo":
            try:  # the demo lives beside the worker (demo/), not in an installed package or the image
                from demo import run_demo
            except ImportError as exc:
                if exc.name != "demo":  # the demo is there, something it needs is not: a real error
                    raise
                print("the demo runs from a checkout of the repository: bash scripts/demo.sh", file=sys.stderr)
                return EXIT_CONFIG

            if args.stop:
                from demo import stop_demo_database

                return stop_demo_database(args.data_dir)
            return run_demo(data_dir=args.data_dir, fresh=args.fresh, keep_running=args.keep_running)
        if command == "check":
            from worker.ops.check import run_check  # each command imports what it needs: `run` stays light

            return run_check(settings, offline=args.offline)
        if command == "serve":
            from worker.serve.app import run_server  # starlette and uvicorn only for `serve`

            return run_server(settings, args.host, args.port, calendar_factory=_calendar)
        if command == "secure-tokens":
            return _secure_tokens(settings, dry_run=args.dry_run)
        if command == "status":
            from worker.ops.status import run_status  # (as above)

            return run_status(settings, as_json=args.json)
        if command == "export-user":
            from worker.ops.privacy import run_export  # (as above)

            return run_export(settings, args.user_id)
        if command == "forget-user":
            from worker.ops.privacy import calendar_for, run_forget  # (as above)

            return run_forget(settings, args.user_id, yes=args.yes, calendar_factory=calendar_for)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        if command == "run":
            _record_config_failure(args, str(exc))
        return EXIT_CONFIG
    print(f"unknown command {command!r}", file=sys.stderr)
    return EXIT_CONFIG


def _migrate(settings: Settings) -> int:
    if settings.database.url is None:
        raise ConfigError("DATABASE_URL", "migrate needs a direct Postgres connection (the Data API cannot run DDL)")
    from worker.db.migrate import migrate  # psycopg's DDL path only for `migrate`

    try:
        done = migrate(settings.database.url)
    except (DatabaseError, DatabaseUnavailable) as exc:
        logs.event("migrate.failed", 40, error=str(exc))
        print(f"migrate failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    logs.event("migrate.done", applied=done.applied, definitions_applied=done.definitions_applied,
               constraints_left_out=done.constraints_left_out)
    print(f"applied {len(done.applied)} migration(s)" + (": " + ", ".join(done.applied) if done.applied else ""))
    print("definitions (functions, triggers, grants): " + ("applied" if done.definitions_applied else "up to date"))
    if done.repaired:
        print(f"repaired: {', '.join(done.repaired)} (missing although recorded as applied)")
    for name in done.constraints_left_out:
        print(f"warning: constraint {name} left out: existing rows hold values the worker does not know "
              "(`python worker/main.py check` lists them)")
    return EXIT_OK


def _secure_tokens(settings: Settings, *, dry_run: bool) -> int:
    """Move refresh tokens out of user metadata (see sql/functions/public.worker_secure_tokens.sql)."""

    try:
        with open_gateway(settings.database) as gateway:
            done = gateway.secure_tokens(dry_run=dry_run)
    except (DatabaseError, DatabaseUnavailable) as exc:
        print(f"secure-tokens failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    found, moved = int(done.get("in_metadata") or 0), int(done.get("moved") or 0)
    if dry_run:
        print(f"{found} parent(s) keep a Google refresh token in user metadata; nothing moved (--dry-run)")
    else:
        print(f"moved {moved} Google refresh token(s) from user metadata into the worker's private store"
              + (f"; {found - moved} changed meanwhile and stay for the next run" if found > moved else ""))
    logs.event("secure_tokens.done", in_metadata=found, moved=moved, dry_run=dry_run)
    return EXIT_OK


def _trigger(args: argparse.Namespace, configured: str | None) -> str:
    """What started this pass, for its history row: ``--loop`` is 'loop'; otherwise ``--trigger``,
    then WORKER_TRIGGER (the CronJob sets 'cron'), else 'manual' (someone at a terminal)."""
    if getattr(args, "loop", False):
        return "loop"
    return str(getattr(args, "trigger", None) or configured or "manual")


def _record_config_failure(args: argparse.Namespace, error: str) -> None:
    """Best effort: record a `run` that exits 2 when the database can still be found."""
    from worker.ops.history import record_config_failure  # only on the way out with exit 2

    configured = os.environ.get("WORKER_TRIGGER", "").strip().lower()
    trigger = _trigger(args, configured if configured in TRIGGERS else None)
    record_config_failure(os.environ, f"configuration error: {error}", trigger, getattr(args, "now", None))


def _run(settings: Settings, now: datetime | None, loop: bool, interval: float, trigger: str = "manual") -> int:
    settings.require_database()
    from worker.passes import PassResult, run_pass  # the pass's clients (requests, the Expo SDK) only for `run`

    stop = threading.Event()
    if loop:  # before anything slow, so a SIGTERM during start-up also ends cleanly

        def _stop(signum: int, _frame: FrameType | None) -> None:
            logs.event("loop.stopping", signal=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    gateway = open_gateway(settings.database)

    def one_pass() -> PassResult:
        calendar = _calendar(settings)
        try:
            return run_pass(settings, gateway, now=now, calendar=calendar, trigger=trigger)
        finally:
            if calendar is not None:
                calendar.close()

    with gateway:
        if not loop:
            result = one_pass()
            if result.exit_code == EXIT_CONFIG and result.error:
                print(result.error, file=sys.stderr)  # the contract: one line names what is wrong
            return result.exit_code
        while not stop.is_set():
            one_pass()
            stop.wait(interval)
        return EXIT_OK


def _calendar(settings: Settings) -> CalendarPort | None:
    """The calendar client when Google is configured, else None (calendar sync off)."""
    from worker.steps.calendar import calendar_from_settings  # the Google stack only when configured

    return calendar_from_settings(settings.google, settings.passes.reminder_offsets)
