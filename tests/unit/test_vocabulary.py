"""The vocabulary is one: Python's enums, the SQL's CHECK constraints and the SQL functions' words agree."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
import pytest

from worker.vocabulary import CONSTRAINED_COLUMNS, ErrorKind, PushOutcome, ReceiptOutcome

SQL = Path(__file__).resolve().parents[2] / "sql"


def _constraint_words(db: psycopg.Connection[Any], table: str, column: str) -> set[str]:
    row = db.execute(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "WHERE c.conrelid = %s::regclass AND c.conname = %s", (f"public.{table}", f"{table}_{column}_check")
    ).fetchone()
    assert row is not None, f"no CHECK constraint on {table}.{column}"
    return set(re.findall(r"'([a-z_]+)'::text", row[0]))


@pytest.mark.parametrize(("table", "column"), list(CONSTRAINED_COLUMNS))
def test_each_status_column_allows_exactly_the_enums_words(db: psycopg.Connection[Any], table: str,
                                                            column: str) -> None:
    words: type[StrEnum] = CONSTRAINED_COLUMNS[(table, column)]
    assert _constraint_words(db, table, column) == {w.value for w in words}


def test_a_word_outside_the_vocabulary_is_refused(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO public.worker_runs (started_at, finished_at, trigger, exit_code, error_kind) "
                   "VALUES (now(), now(), 'cron', 1, 'no_such_kind')")


def _quoted_words(path: Path) -> set[str]:
    return set(re.findall(r"'([a-z_]+)'", path.read_text()))


@pytest.mark.parametrize(("function", "words"), [
    ("public.worker_record_push_outcomes.sql", PushOutcome),
    ("public.worker_record_receipts.sql", ReceiptOutcome),
])
def test_the_recording_functions_understand_every_outcome_word(function: str, words: type[StrEnum]) -> None:
    quoted = _quoted_words(SQL / "functions" / function)
    assert {w.value for w in words} <= quoted


def test_every_error_kind_the_sql_writes_is_a_word() -> None:
    kinds = {k.value for k in ErrorKind}
    for path in (SQL / "functions").glob("*.sql"):
        written = set(re.findall(r"error_kind\s*=\s*'([a-z_]+)'", path.read_text()))
        assert written <= kinds, path.name
