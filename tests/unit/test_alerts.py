"""The alert rules (monitoring/alerts.rules.yaml, deploy/prometheus-rules.yaml) and their runbook.

The rules are checked with Prometheus' own tool: ``promtool check rules`` and ``promtool test rules``
(monitoring/alerts.test.yaml: every alert has series that make it fire and series that keep it
quiet). promtool is Debian's ``prometheus`` package; scripts/ci-system-deps.sh installs it. Without
promtool these tests FAIL, naming the fix, unless ``REMINDER_WORKER_SKIP_PROMTOOL=1`` is set: a check
that silently did not run would look like one that passed. scripts/test.sh sets it, with a warning
on stderr, only where the package could not be installed (no root, no sudo); the skip reason then
names it in pytest's summary.

Beyond the files: the rules read the metrics the code really emits. The series fed to promtool in
``test_the_code_s_metrics_fire_the_alerts`` are the text worker/ops/metrics.py produces for
simulated passes, in each shape (the CronJob's pushes through a Pushgateway, serve's /metrics).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker.ops import status
from worker.ops.metrics import KINDS, PassMetrics, last_pass_registry
from worker.steps.context import PassCounts, PassResult

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "alerts.rules.yaml"
RULE_TESTS = REPO / "monitoring" / "alerts.test.yaml"
CRD = REPO / "deploy" / "prometheus-rules.yaml"
SYNC = REPO / "monitoring" / "sync_prometheus_rule.py"
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/your-org/reminder-worker/blob/main/docs/runbook.md"
SKIP_ENV = "REMINDER_WORKER_SKIP_PROMTOOL"


# ------------------------------------------------------------------------------------------ promtool


def promtool() -> str:
    found = shutil.which("promtool")
    if found is not None:
        return found
    why = ("promtool not found: it checks the alert rules. Install it with `bash scripts/ci-system-deps.sh` "
           "(as root or with sudo; Debian's `prometheus` package ships it)")
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{why}. SKIPPED because {SKIP_ENV}=1: the alert rules were NOT checked")
    pytest.fail(f"{why}, or set {SKIP_ENV}=1 to skip these tests knowingly")


def run_promtool(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules_of(groups: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for group in groups:
        yield from group["rules"]


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in rules_of(load(RULES)["groups"]) if "alert" in r]


def alert_names() -> set[str]:
    return {r["alert"] for r in alert_rules()}


def test_promtool_finds_the_rule_file_valid() -> None:
    done = run_promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = run_promtool("test", "rules", RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


def test_the_prometheus_rule_holds_the_same_groups_and_promtool_accepts_them(tmp_path: Path) -> None:
    crd = load(CRD)
    assert crd["spec"] == load(RULES), (
        "deploy/prometheus-rules.yaml differs from monitoring/alerts.rules.yaml: "
        "run python monitoring/sync_prometheus_rule.py")
    spec = importlib.util.spec_from_file_location("sync_prometheus_rule", SYNC)
    assert spec is not None and spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert CRD.read_text(encoding="utf-8") == sync.render(RULES.read_text(encoding="utf-8")), (
        "deploy/prometheus-rules.yaml is not what monitoring/sync_prometheus_rule.py writes: run it")
    # What is deployed is what promtool checks: the CRD's spec, as a rule file of its own.
    extracted = tmp_path / "from-crd.rules.yaml"
    extracted.write_text(yaml.safe_dump(crd["spec"], sort_keys=False), encoding="utf-8")
    done = run_promtool("check", "rules", extracted)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_that_keeps_it_quiet() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for group in load(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test") or []:
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alert_names() - fires == set(), "alerts never shown to fire"
    assert alert_names() - quiet == set(), "alerts never shown to stay quiet"
    tested = fires | quiet
    assert tested - alert_names() == set(), "tests of alerts that do not exist"


def _mutated_rules_fail(tmp_path: Path, mutate: Callable[[str], str]) -> subprocess.CompletedProcess[str]:
    text = RULES.read_text(encoding="utf-8")
    changed = mutate(text)
    assert changed != text, "the mutation changed nothing: update this test"
    (tmp_path / RULES.name).write_text(changed, encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("ratio15m > 0.05", "ratio15m >= 0.05"),  # the 5% boundary must stay quiet
        lambda t: t.replace("ratio15m > 0.10", "ratio15m > 0.5"),
        lambda t: t.replace("ratio15m > 0.20", "ratio15m > 0.1"),
        lambda t: t.replace("< 300)", "< 3000)"),  # a stopped CronJob's last pass counted on and on
        lambda t: t.replace("[1h])) > 300", "[1h])) > 600"),
        lambda t: t.replace("or\n              sum_over_time", "+ on(kind)\n              sum_over_time"),
        lambda t: t.replace('kind=~"failed|retried|deferred"', 'kind=~"failed"'),
    ],
    ids=["event-boundary", "push-threshold", "calendar-threshold", "freshness", "no-success-threshold",
         "no-dedup", "push-kinds"],
)
def test_the_unit_tests_catch_a_weakened_rule(tmp_path: Path, mutate: Callable[[str], str]) -> None:
    done = _mutated_rules_fail(tmp_path, mutate)
    assert done.returncode != 0, "promtool's unit tests pass on a weakened rule:\n" + done.stdout


def test_promtool_check_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.rules.yaml"
    broken.write_text(RULES.read_text(encoding="utf-8").replace(
        "reminder_worker:event_failures:ratio15m > 0.05", "reminder_worker:event_failures:ratio15m >> 0.05"),
        encoding="utf-8")
    done = run_promtool("check", "rules", broken)
    assert done.returncode != 0, done.stdout


# ----------------------------------------------------------------------- the rules and the code agree


def _metric_names_in(expr: str) -> set[str]:
    # Series names the code must emit; recorded names (with a colon) are the rules' own.
    return {n for n in re.findall(r"(?<![\w:])(reminder_worker_[a-z_]+)", expr)}


def _expand(pattern: str) -> list[str]:
    """``events_(a|b)`` -> ``events_a``, ``events_b``; ``a|b`` -> ``a``, ``b`` (all the rules use)."""
    match = re.fullmatch(r"([a-z_]*)\(([a-z_|]+)\)([a-z_]*)", pattern)
    if match:
        return [match[1] + alt + match[3] for alt in match[2].split("|")]
    return pattern.split("|")


def _emitted_names() -> set[str]:
    result = PassResult(counts=PassCounts(sent=1), exit_code=0)
    served = PassMetrics()
    served.observe(result, "http", now=60.0)
    texts = [served.exposition()[0].decode(), generate_latest(last_pass_registry(result, "cron", now=60.0)).decode()]
    return {s.name for text in texts for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_rules_read_metrics_and_kinds_the_code_emits() -> None:
    exprs = [r["expr"] for r in rules_of(load(RULES)["groups"])]
    used = set().union(*(_metric_names_in(e) for e in exprs))
    assert used, "no metric names found in the rules"
    assert used - _emitted_names() == set(), "the rules read metrics worker/ops/metrics.py does not emit"
    kinds = [k for e in exprs for k in re.findall(r'kind="([^"]+)"', e)]
    kinds += [k for e in exprs for p in re.findall(r'kind=~"([^"]+)"', e) for k in _expand(p)]
    assert kinds
    assert set(kinds) - set(KINDS) == set(), "the rules name kinds PassCounts does not have"


# Counts of one pass in the end-to-end series below: 10% of events fail, pushes are fine.
GOOD = PassCounts(events_synced=90, events_failed=10, sent=100)


def _series_key(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _samples(text: str, target: dict[str, str]) -> dict[str, float]:
    """One scrape: ``{series: value}``, the target's labels added as Prometheus adds them."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out[_series_key(sample.name, {**sample.labels, **target})] = sample.value
    return out


def _pushgateway_scrapes(results: list[PassResult]) -> list[dict[str, float]]:
    """The CronJob: one process per pass, each pushing its gauges with POST (pushadd), which replaces
    the metrics of the same name in the group and keeps the others; Prometheus scrapes the group."""
    group: dict[str, dict[str, float]] = {}
    scrapes = []
    for minute, result in enumerate(results):
        text = generate_latest(last_pass_registry(result, "cron", now=60.0 * minute)).decode()
        for family in text_string_to_metric_families(text):
            group[family.name] = {
                _series_key(s.name, {**s.labels, "job": "reminder_worker"}): s.value for s in family.samples}
        scrapes.append({k: v for samples in group.values() for k, v in samples.items()})
    return scrapes


def _serve_scrapes(results: list[PassResult]) -> list[dict[str, float]]:
    """serve: one process, scraped at /metrics after each minute's pass."""
    served = PassMetrics()
    scrapes = []
    for minute, result in enumerate(results):
        served.observe(result, "http", now=60.0 * minute)
        scrapes.append(_samples(served.exposition()[0].decode(),
                                {"job": "reminder-worker-serve", "instance": "10.0.0.7:8080"}))
    return scrapes


def _input_series(scrapes: list[dict[str, float]]) -> list[dict[str, str]]:
    keys = sorted({k for scrape in scrapes for k in scrape})
    return [{"series": key,
             "values": " ".join(repr(s[key]) if key in s else "_" for s in scrapes)} for key in keys]


def _expected(alertname: str, value_text: str) -> dict[str, Any]:
    rule = next(r for r in alert_rules() if r["alert"] == alertname)
    annotations = {k: re.sub(r"\{\{ \$value \| \w+ \}\}", value_text, v) for k, v in rule["annotations"].items()}
    return {"exp_labels": dict(rule["labels"]), "exp_annotations": annotations}


@pytest.mark.parametrize("shape", [_pushgateway_scrapes, _serve_scrapes], ids=["cronjob-pushgateway", "serve"])
def test_the_code_s_metrics_fire_the_alerts(tmp_path: Path,
                                            shape: Callable[[list[PassResult]], list[dict[str, float]]]) -> None:
    # 10 good passes, then 21 that fail for the whole pass (exit 1: e.g. the database is away).
    results = [PassResult(counts=copy.deepcopy(GOOD), exit_code=0) for _ in range(10)]
    results += [PassResult(counts=PassCounts(), exit_code=1) for _ in range(21)]
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": _input_series(shape(results)),
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "ReminderWorkerEventFailuresHigh",
                 "exp_alerts": [_expected("ReminderWorkerEventFailuresHigh", "10%")]},
                {"eval_time": "9m", "alertname": "ReminderWorkerNoSuccessfulPass", "exp_alerts": []},
                {"eval_time": "9m", "alertname": "ReminderWorkerSuccessMetricAbsent", "exp_alerts": []},
                {"eval_time": "9m", "alertname": "ReminderWorkerPushFailuresHigh", "exp_alerts": []},
                # The last success ended at minute 9: at 14 that is 5 minutes, at 16 more.
                {"eval_time": "14m", "alertname": "ReminderWorkerNoSuccessfulPass", "exp_alerts": []},
                {"eval_time": "16m", "alertname": "ReminderWorkerNoSuccessfulPass",
                 "exp_alerts": [_expected("ReminderWorkerNoSuccessfulPass", "7m 0s")]},
                {"eval_time": "16m", "alertname": "ReminderWorkerSuccessMetricAbsent", "exp_alerts": []},
            ],
        }],
    }
    path = tmp_path / "generated.test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    done = run_promtool("test", "rules", path, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# -------------------------------------------------------------------------------------------- runbook


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_headings() -> list[str]:
    return [m[1] for m in re.finditer(r"^#{2,4} (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)]


def test_every_alert_has_a_runbook_section_and_links_to_it() -> None:
    anchors = {github_anchor(h): h for h in runbook_headings()}
    for rule in alert_rules():
        name = rule["alert"]
        assert github_anchor(name) in anchors, f"docs/runbook.md has no section '## {name}'"
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_URL}#{github_anchor(name)}", name


#: Each line (or part of one) `python worker/main.py status` prints, as worker/ops/status.py words it.
STATUS_LINES = (
    "ATTENTION: the last pass failed",
    "held because Expo refused the project's push credentials",
    "Last passes",
    "no pass recorded yet",
    "due now",
    "in flight (sending)",
    "lapsed leases",
    "waiting for retry",
    "held: Expo credentials",
    "waiting for a receipt",
    "Failed in the last 24 h, by reason",
    "Events waiting for calendar sync",
    "of them retrying",
    "cancellations to clean up",
    "Google access revoked (events failed)",
    "Push token cleared (DeviceNotRegistered)",
)


def test_the_runbook_explains_every_line_status_prints() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    doc = {
        "now": now.isoformat(), "schema_version": 9,
        "runs": [], "runs_24h": {"total": 0, "failed": 0},
        "last_problem": {"recorded_at": (now - timedelta(minutes=2)).isoformat(), "exit_code": 1,
                         "error": "Expo refused", "error_kind": "expo_credentials", "since_ok": False},
        "reminders": {"due_now": 3, "oldest_due": now.isoformat(), "in_flight": 2, "in_flight_lapsed": 1,
                      "waiting_retry": 1, "held_expo_credentials": 4, "awaiting_receipt": 5},
        "failed_24h": [], "events": {"waiting_sync": 1, "retrying": 1, "cancelling": 0},
        "google_revoked": {"users": 0, "list": []}, "tokens_cleared": {"users": 0, "list": []},
    }
    shown = status.render(doc, now)
    text = RUNBOOK.read_text(encoding="utf-8")
    for line in STATUS_LINES:
        assert line in shown, f"status no longer prints {line!r}: update STATUS_LINES and docs/runbook.md"
        assert line in text, f"docs/runbook.md does not explain the status line {line!r}"
    for kind, action in status._ACTIONS.items():
        assert kind.value in text, f"docs/runbook.md does not cover a failed pass of kind {kind.value!r}"
        assert action, kind


def test_the_runbook_s_own_links_lead_somewhere() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    anchors = {github_anchor(h) for h in runbook_headings()}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "no internal links found"
    assert links - anchors == set(), "links to sections that do not exist"
