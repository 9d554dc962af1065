"""`python worker/main.py COMMAND --help`: what a newcomer reads first must teach something.

Each command's help says what it does, the environment it reads, its exit codes and examples; the
environment is listed from the settings themselves, so a new setting cannot be missing from it.
"""

from __future__ import annotations

import pytest

from tests.acceptance.cli import clean_env, worker
from worker.config import DatabaseSettings, ServeSettings, documented, variables

COMMANDS = ("run", "status", "check", "migrate", "serve", "demo", "secure-tokens", "export-user", "forget-user")


def _help(*args: str) -> str:
    done = worker(*args, "--help", env=clean_env())
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_says_what_it_does_reads_exits_and_how(command: str) -> None:
    out = _help(command)
    sections = ("environment:", "exit codes:", "examples:")
    for section in sections:
        assert f"\n{section}\n" in out, f"`{command} --help` has no {section!r}:\n{out}"
    description = out.split("\n\n", 2)[1]  # after the usage line(s)
    assert len(description.split()) >= 15, f"`{command} --help` says too little:\n{out}"
    codes = out.split("exit codes:\n", 1)[1].split("\n\n", 1)[0]
    assert "  0  " in codes, codes
    examples = out.split("examples:\n", 1)[1].strip().splitlines()
    assert any(f"python worker/main.py {command}" in line for line in examples), out
    assert all("worker/main.py" in line or line.strip().startswith("curl ") for line in examples), out


def test_the_commands_read_what_they_need() -> None:
    run, status, check, migrate, serve = (_help(c) for c in ("run", "status", "check", "migrate", "serve"))
    for needed in ("DATABASE_URL", "EXPO_ACCESS_TOKEN", "GOOGLE_CLIENT_SECRET", "REMINDER_OFFSETS", "LOG_LEVEL"):
        assert needed in run, needed
    assert "WORKER_TRIGGER_TOKEN" not in run
    assert "DATABASE_URL" in status and "EXPO_ACCESS_TOKEN" not in status
    assert "DATABASE_URL" in migrate and "the Data API cannot run DDL" in " ".join(migrate.split())
    for _, names in variables(ServeSettings, DatabaseSettings):
        assert all(name in serve for name in names), serve
    every = {variable for _, variable, _, _ in documented()}
    assert every <= set(check.replace(",", " ").split()), every - set(check.replace(",", " ").split())


def test_help_names_the_exit_codes_and_options_that_matter() -> None:
    run, check, status = _help("run"), _help("check"), _help("status")
    assert "--now INSTANT" in run and "--loop" in run and "--interval SECONDS" in run
    assert "\n  1  " in run and "\n  2  " in run
    assert "--offline" in check and "getReceipts" in check and "invalid_client" in check
    assert "never its value" in " ".join(check.split())
    assert "--json" in status and "simulated" in status


def test_the_top_level_help_lists_every_command_and_points_further() -> None:
    out = _help()
    for command in COMMANDS:
        assert f"\n    {command}" in out, command
    assert "COMMAND --help" in out
