"""A rule that pages on `increase(counter[15m]) > 0` must page on the first count of a label set, too (review61 F2).

prometheus_client makes a labelled counter's series at its first `.inc()`: Prometheus's first sample of it is 1, and
`increase()` over one sample, or over samples that all read 1, is nothing. So a rule written on `increase()` alone never
fired for the one forged dead letter it was written for (or for the first record of a topic and reason since the audit
started), nor the first conflict in the audit log, the first unknown outcome of a tool, the first dead letter of a code
(review61). Held here by Prometheus's own rule tester, `promtool test rules`, on the shipped `deploy/prometheus/alerts.yml`.
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


def _promtool(
    tmp_path: Path,
    values: str,
    expected: list[tuple[str, list[dict[str, Any]]]],
    *,
    rule: str = RULE,
    series: str = SERIES,
    up: str | None = None,
    started: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` of `rule` over one series scraped each minute (`values`), at each (time, alerts).

    Its target's `up` and `process_start_time_seconds`, which every scrape of it has, are scraped with it: `up` and `started`
    their values (default: answering every scrape of a process started at 0, for as long as `values` runs).
    """
    target = "{" + ",".join(p for p in series.split("{", 1)[1].rstrip("}").split(",") if p.split("=")[0] in ("job", "instance")) + "}"
    minutes = sum(1 if "x" not in v else int(v.split("x")[1]) + (v[0] != "_") for v in values.split())
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series, "values": values},
                    {"series": "up" + target, "values": up or f"1x{minutes}"},
                    {"series": "process_start_time_seconds" + target, "values": started or f"0x{minutes}"},
                ],
                "alert_rule_test": [{"eval_time": at, "alertname": rule, "exp_alerts": alerts} for at, alerts in expected],
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


# Every rule that fires on `increase(counter[w]) > 0` of a labelled counter, with a series of it: (rule, labels, window).
_AT = ',job="tidegate",instance="svc:9464"}'  # the target a series is scraped from, as Prometheus labels it
FIRST_COUNT = [
    ("TidegateOutcomeUnknown", 'tidegate_action_results_total{tenant="acme",tool="issue_refund",status="unknown"' + _AT, 15),
    (
        "TidegateAuthorizationsExpiredUnused",
        'tidegate_action_refusals_total{tenant="acme",tool="t",reason="authorization_expired"' + _AT,
        15,
    ),
    ("TidegateWebhookUndelivered", 'tidegate_webhook_deliveries_total{tenant="acme",status="failed"' + _AT, 15),
    ("TidegateAuditConflict", 'tidegate_audit_conflicts_total{topic="tidegate.actions.authorized"' + _AT, 15),
    ("TidegateRowsRefused", 'tidegate_rows_refused_total{service="approval",table="approvals",reason="invalid"' + _AT, 15),
    ("TidegateDeadLetters", 'tidegate_dead_letters_total{service="policy",code="signature_invalid"' + _AT, 10),
    ("TidegateHandlerErrors", 'tidegate_events_handled_total{service="policy",event_type="action.proposed",result="error"' + _AT, 10),
]


def _rule(name: str) -> dict[str, Any]:
    """The shipped rule of that name."""
    [rule] = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r.get("alert") == name]
    return dict(rule)


def _labels(series: str, rule: str) -> dict[str, str]:
    """The labels the rule's alert carries: its `by` labels of the series (as `sum by` keeps them) and its severity."""
    by = _rule(rule)["expr"].split("sum by (", 1)[1].split(")", 1)[0].split(", ")
    pairs = dict(p.split("=", 1) for p in series.split("{", 1)[1].rstrip("}").split(","))
    return {k: pairs[k].strip('"') for k in by} | {"severity": _rule(rule)["labels"]["severity"]}


def _annotations(rule: str, labels: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, text in _rule(rule)["annotations"].items():
        for name, value in labels.items():
            text = text.replace("{{ $labels." + name + " }}", value)
        out[key] = text.replace("{{ $value }}", "1")
    return out


@pytest.mark.parametrize(("rule", "series", "window"), FIRST_COUNT, ids=[r for r, _, _ in FIRST_COUNT])
def test_the_first_count_of_a_label_set_fires(tmp_path: Path, rule: str, series: str, window: int) -> None:
    """A conflict, an unknown outcome, a dead letter: the first one since the service started fires, for the rule's window."""
    alert = _labels(series, rule)
    fired = [{"exp_labels": alert, "exp_annotations": _annotations(rule, alert)}]
    done = _promtool(
        tmp_path, "_ _ _ 1x40", [("2m", []), ("5m", fired), (f"{window + 2}m", fired), (f"{window + 10}m", [])], rule=rule, series=series
    )
    assert done.returncode == 0, done.stdout + done.stderr


# Every rule with a first-count part, with a series of it (the invalid records' too).
WITH_FIRST_COUNT = [*FIRST_COUNT, (RULE, SERIES, 15)]


@pytest.mark.parametrize(("rule", "series", "window"), WITH_FIRST_COUNT, ids=[r for r, _, _ in WITH_FIRST_COUNT])
def test_a_gap_in_prometheus_does_not_page_an_old_count_as_a_first_one(tmp_path: Path, rule: str, series: str, window: int) -> None:
    """Prometheus down 10 minutes (its restart, an upgrade; a new one has no past at all), the services running on.

    A count made an hour before is not in the window 15 minutes back, where Prometheus has nothing at all: it is not
    a first count, so no page ("tampering?" for an audit conflict) once Prometheus scrapes again, at any minute after.
    """
    gap = "3x30 _x10 3x30"  # scraped, not scraped from 31m to 40m, scraped again: the same count of the same process
    quiet = [(f"{m}m", []) for m in range(41, 71, 2)]
    done = _promtool(tmp_path, gap, quiet, rule=rule, series=series, up="1x30 _x10 1x30", started="0x30 _x10 0x30")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("rule", "series", "window"), WITH_FIRST_COUNT, ids=[r for r, _, _ in WITH_FIRST_COUNT])
def test_a_target_that_did_not_answer_for_a_while_does_not_page_its_old_count(tmp_path: Path, rule: str, series: str, window: int) -> None:
    """The service's port did not answer for 10 minutes (`up` 0: the network, a stall), the same process answers again."""
    done = _promtool(tmp_path, "3x30 _x10 3x30", [(f"{m}m", []) for m in range(41, 71, 2)], rule=rule, series=series, up="1x30 0x10 1x30")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("rule", "series", "window"), WITH_FIRST_COUNT, ids=[r for r, _, _ in WITH_FIRST_COUNT])
def test_a_first_count_of_a_process_started_during_a_gap_pages(tmp_path: Path, rule: str, series: str, window: int) -> None:
    """Prometheus down 20 minutes while the service restarted: what the new process counted is recent, and it pages.

    At 53 and 54 minutes Prometheus has nothing of the window's start (its gap), but the process started within the window.
    """
    alert = _labels(series, rule)
    fired = [{"exp_labels": alert, "exp_annotations": _annotations(rule, alert)}]
    done = _promtool(
        tmp_path,
        "_x51 1x20",  # born at 1 by the process started at 45m, first scraped at 51m
        [("53m", fired), ("54m", fired)],
        rule=rule,
        series=series,
        up="1x30 _x20 1x20",
        started="0x30 _x20 2700x20",
    )
    assert done.returncode == 0, done.stdout + done.stderr
