"""`tidegate costs` names a database it cannot read instead of reading the topics as if the audit log were empty."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from tidegate.cli import app

runner = CliRunner()
PAST = ["--from", "2001-01-01T00:00:00Z", "--to", "2001-01-02T00:00:00Z"]  # no event anywhere


def costs(infra: Any, prefix: str, database_url: str, *args: str) -> Any:
    env = {"TIDEGATE_KAFKA_BOOTSTRAP": infra.kafka_bootstrap, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_DATABASE_URL": database_url}
    return runner.invoke(app, ["costs", "--no-chart", "--json", *PAST, *args], env=env)


def wrong_password(url: str) -> str:
    parts = urlsplit(url)
    return f"postgresql://nobody:wrong@{parts.hostname}:{parts.port}{parts.path}"


@pytest.mark.parametrize(
    ("broken", "said"),
    [
        (lambda url: "postgresql://tidegate@127.0.0.1:1/tidegate", "cannot reach PostgreSQL at 127.0.0.1:1/tidegate"),
        (wrong_password, "refused nobody"),
    ],
    ids=["closed-port", "refused-login"],
)
def test_a_database_that_cannot_be_read_is_an_error_not_an_empty_log(infra: Any, topics: str, broken: Any, said: str) -> None:
    result = costs(infra, topics, broken(infra.database_url))
    assert result.exit_code == 1, result.output
    assert result.stdout == ""  # no report, no JSON to mistake for figures
    assert said in result.stderr
    assert "--source topics" in result.stderr
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an error raised
    assert "Traceback" not in result.stderr


def test_the_topics_asked_for_need_no_database(infra: Any, topics: str) -> None:
    result = costs(infra, topics, "postgresql://tidegate@127.0.0.1:1/tidegate", "--source", "topics")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["source"], doc["fallback_reason"], doc["groups"]) == ("topics", None, [])


def test_an_empty_audit_log_falls_back_to_the_topics_and_says_so(infra: Any, topics: str) -> None:
    result = costs(infra, topics, infra.database_url)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["source"], doc["fallback_reason"]) == ("topics", "the audit log has no event in this window")
    assert "the audit log has no event in this window: reading the topics instead" in result.stderr
