"""A rule that pages on `increase(counter[15m]) > 0` must page on the first count of a label set, too (review61 F2).

prometheus_client makes a labelled counter's series at its first `.inc()`: Prometheus's first sample of it is 1, and
`increase()` over one sample, or over samples that all read 1, is nothing. So a rule written on `increase()` alone never
fired for the one forged dead letter it was written for (or for the first record of a topic and reason since the audit
started). Held here by Prometheus's own rule tester, `promtool test rules`, on the shipped `deploy/prometheus/alerts.yml`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from servicekit import REPO_ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="Prometheus's `promtool` is not installed (apt-get install prometheus)"
)

RULE = "TidegateInvalidRecords"
RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
LABELS = 'topic="tidegate.deadletter",reason="signer_not_allowed",dead_lettered="false",job="tidegate",instance="audit:9464"'
SERIES = "tidegate_audit_invalid_records_total{" + LABELS + "}"
PAGE = {
    "exp_labels": {"severity": "page", "topic": "tidegate.deadletter", "reason": "signer_not_allowed"},
    "exp_annotations": {
        "summary": "A record on tidegate.deadletter is not a valid event (signer_not_allowed) and no service dead-lettered it",
        "runbook": "docs/observability.md#invalid-records",
    },
}


def _promtool(tmp_path: Path, values: str, expected: list[tuple[str, list[dict[str, Any]]]]) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` of `RULE` over one series scraped each minute (`values`), at each (time, alerts)."""
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": SERIES, "values": values}],
                "alert_rule_test": [{"eval_time": at, "alertname": RULE, "exp_alerts": alerts} for at, alerts in expected],
            }
        ],
    }
    path = tmp_path / "invalid_records_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    return subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False)


def test_the_first_invalid_record_since_the_audit_started_pages(tmp_path: Path) -> None:
    """The series is born at 1 (the one forged dead letter) and stays there: it pages, for the rule's 15 minutes only."""
    done = _promtool(tmp_path, "_ _ _ 1x30", [("2m", []), ("5m", [PAGE]), ("17m", [PAGE]), ("25m", [])])
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_count_that_grows_pages_and_one_that_stays_does_not(tmp_path: Path) -> None:
    """What the rule did before is kept: a count that grows pages (across a restart of the audit too); a still one is quiet."""
    quiet, grown, restarted = [("20m", []), ("39m", [])], [("43m", [PAGE])], [("55m", [PAGE])]
    done = _promtool(tmp_path, "1x40 2 2x10 1x10", quiet + grown + restarted)  # born at 0, 2 at 41m, a restart's 1 at 52m
    assert done.returncode == 0, done.stdout + done.stderr
