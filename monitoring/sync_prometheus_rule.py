"""Writes deploy/prometheus-rules.yaml (a PrometheusRule for the Prometheus Operator) from
monitoring/alerts.rules.yaml (the plain rule file that promtool checks), so the two hold the same groups.

    python monitoring/sync_prometheus_rule.py           # rewrite deploy/prometheus-rules.yaml
    python monitoring/sync_prometheus_rule.py --check   # exit 1 if it is out of date

The rule file's ``groups:`` block is embedded as it is written, comments included, as the
PrometheusRule's ``spec``. tests/unit/test_alerts.py fails while the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "monitoring" / "alerts.rules.yaml"
CRD = REPO / "deploy" / "prometheus-rules.yaml"

HEADER = """\
# reminder-worker's alerts as a PrometheusRule (Prometheus Operator, kube-prometheus-stack), applied
# beside the CronJob: kubectl apply -f deploy/prometheus-rules.yaml
#
# GENERATED from monitoring/alerts.rules.yaml by `python monitoring/sync_prometheus_rule.py`: edit that
# file (promtool checks and unit-tests it: tests/unit/test_alerts.py), then regenerate this one.
# Without the Operator, load monitoring/alerts.rules.yaml into Prometheus' `rule_files:` instead.
#
# Your Prometheus picks this up only if its ruleSelector (and ruleNamespaceSelector) match: with
# kube-prometheus-stack add the label its release selects, e.g. `release: kube-prometheus-stack`.
# The metrics come from the Pushgateway the CronJob pushes to (scrape it with honor_labels: true,
# i.e. `honorLabels: true` in its ServiceMonitor) and from `serve`'s /metrics (deploy/servicemonitor.yaml).
# What each alert means and what to do: docs/runbook.md.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: reminder-worker
  labels:
    app.kubernetes.io/name: reminder-worker
    app.kubernetes.io/component: monitoring
    app.kubernetes.io/version: "0.1.0"
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule: the header, then the rule file from ``groups:`` on, indented under ``spec``."""
    lines = rules_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "\n".join(("  " + line) if line.strip() else "" for line in lines[start:])
    return HEADER + body.rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    wanted = render(RULES.read_text(encoding="utf-8"))
    if "--check" in argv:
        if CRD.read_text(encoding="utf-8") != wanted:
            print(f"{CRD.relative_to(REPO)} is out of date: run python monitoring/sync_prometheus_rule.py",
                  file=sys.stderr)
            return 1
        return 0
    CRD.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
