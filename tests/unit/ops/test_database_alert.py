"""A service retrying its database is counted, and a shipped alert reads that count (platform5 finding 7).

Before, `/health` stayed 200 (`retrying: …`) and `up` 1 through a PostgreSQL outage, and no rule of
`deploy/prometheus/alerts.yml` read anything about the database: the outage paged only by accident, or 300 s later.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import yaml
from aiokafka.errors import KafkaConnectionError
from fake_producer import KeepingProducer
from prometheus_client import REGISTRY

import schemas as s
from servicekit import REPO_ROOT, Bus
from servicekit.db import discard_broken_connections
from servicekit.metrics import METRICS
from tests.unit.ops.test_ops_metrics import FakeRecord, exported

RULE = "TidegateDatabaseRetrying"


class Pool:
    """The pool `discard_broken_connections` expires connections of."""

    async def expire_connections(self) -> None:
        return None


def retries(service: str) -> float:
    return REGISTRY.get_sample_value("tidegate_database_retries_total", {"service": service}) or 0.0


async def test_a_handler_retried_after_a_database_error_is_counted_for_its_service() -> None:
    bus = Bus(KeepingProducer(), "m-db", "unused:1", "p.")
    bus.on_transient = discard_broken_connections(Pool(), "m-db")  # type: ignore[arg-type]  # as the runner installs it
    errors: list[BaseException] = [
        asyncpg.CannotConnectNowError("the database system is starting up"),
        KafkaConnectionError("broker down"),  # retried too, but not the database's: not counted here
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ]
    handled: list[Any] = []

    async def handler(event: Any) -> None:
        if errors:
            raise errors.pop(0)
        handled.append(event)

    proposal = s.ActionProposedData(action_id="a", task_id="t", tenant_id="acme", step=1, tool="tag_ticket", args={}, proposer="x")
    raw = s.encode(s.ActionProposed.build(proposal, source="x"))
    before = retries("m-db")
    await bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", raw), handler)  # type: ignore[arg-type]
    assert len(handled) == 1  # retried until it passed: nothing dead-lettered
    assert retries("m-db") - before == 2


def test_the_shipped_alert_reads_the_database_retries_a_service_exports() -> None:
    doc = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    [rule] = [r for g in doc["groups"] for r in g["rules"] if r["alert"] == RULE]
    assert re.findall(r"\btidegate_[a-z_]+", rule["expr"]) == ["tidegate_database_retries_total"]
    assert exported("tidegate_database_retries_total")
    assert "tidegate_database_retries_total" in METRICS
    assert (rule["labels"]["severity"], rule["for"]) == ("page", "2m")
    assert rule["annotations"]["runbook"] == "docs/operations.md#a-database-outage-tidegatedatabaseretrying"
