"""`tidegate propose` says what became of an allowed call, not only that it was allowed (connectors probe F7).

A note to a ticket that did not exist printed `decision: allow` and exited 0, and a first-time user read it as done;
the audit said `action.failed … not_found`.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import schemas as s
from tidegate import bus_client
from tidegate.cli import app

runner = CliRunner()


def _decided(action_id: str, outcome: str) -> s.ActionDecided:
    data = s.ActionDecidedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", tool="zendesk_add_internal_note", args={}, action_digest="sha256:x",
        outcome=outcome, reasons=[s.Reason(code="low_risk_write_allowed", policy_id="low-risk-write-allow", message="m")],
        policy_version="v1", latency_ms=1.0,
    )  # fmt: skip
    return s.ActionDecided.build(data, source="tidegate/policy")


def _failed(action_id: str) -> s.ActionFailed:
    data = s.ActionResultData(
        action_id=action_id, task_id="t-1", tenant_id="acme", tool="zendesk_add_internal_note", status="failed",
        error=s.ErrorInfo(type="not_found", message="Zendesk: RecordNotFound"), attempts=1, duration_ms=3,
    )  # fmt: skip
    return s.ActionFailed.build(data, source="tidegate/executor")


class _Bus:
    """The watcher and the publish the CLI uses, answering a proposal with its decision and result in one poll."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.proposed: list[Any] = []

    def watcher(self, kit: Any, names: list[str]) -> Any:
        bus = self

        class Watcher:
            async def start(self) -> None:
                assert names == ["actions.decided", "actions.results"]

            async def poll(self, timeout_s: float = 0.2) -> list[tuple[str, Any]]:
                if not bus.proposed:
                    return []
                action_id = bus.proposed[-1].data.action_id
                other = _decided("a-someone-else", "deny")
                return [
                    ("actions.decided", other),
                    ("actions.decided", _decided(action_id, bus.outcome)),
                    ("actions.results", _failed(action_id)),
                ]

            async def stop(self) -> None:
                return None

        return Watcher()

    async def publish(self, kit: Any, events: list[tuple[str, Any]]) -> None:
        self.proposed += [event for _, event in events]


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> _Bus:
    fake = _Bus("allow")
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(bus_client, "Watcher", fake.watcher)
    monkeypatch.setattr(bus_client, "publish_events", fake.publish)
    return fake


def test_an_allowed_call_that_failed_at_the_system_of_record_says_so_and_exits_1(bus: _Bus) -> None:
    done = runner.invoke(app, ["propose", "--tool", "zendesk_add_internal_note", "--args", '{"ticket_id": 999}', "--wait", "5"])
    assert done.exit_code == 1, done.output
    assert "decision: allow" in done.output
    assert "result: failed after 1 attempt(s) — not_found: Zendesk: RecordNotFound" in done.output


def test_a_denied_call_waits_for_no_result(bus: _Bus) -> None:
    bus.outcome = "deny"
    done = runner.invoke(app, ["propose", "--tool", "zendesk_add_internal_note", "--args", '{"ticket_id": 999}', "--wait", "5"])
    assert done.exit_code == 0, done.output
    assert "decision: deny" in done.output
    assert "result:" not in done.output
