"""`tidegate undo` says how each undo ended, as `tidegate propose` does, and exits non-zero when one did not undo.

Connectors probe F17: the undo of a note in the developer's CRM was printed "proposed 1 undo call(s); policy decides
each" and exited 0; whether it was denied, failed at the CRM or ended unknown was found only in the audit log.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import schemas as s
from tests.unit.executor_results import executor_result
from tidegate import bus_client
from tidegate.cli import app

READY = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
ORIGINAL = executor_result(s.ActionSucceeded, "a-1", "tag_ticket", "succeeded", idempotency_key="a-1", undo=READY)


def _decided(action_id: str, outcome: str) -> s.ActionDecided:
    data = s.ActionDecidedData(
        action_id=action_id, task_id="t-1", tenant_id="acme", tool="untag_ticket", args=READY.args or {}, action_digest="d",
        outcome=outcome, reasons=[s.Reason(code="low_risk_write_allowed", policy_id="low-risk-write-allow")],
        policy_version="v1", latency_ms=1,
    )  # fmt: skip
    return s.ActionDecided.build(data, source="tidegate/policy")


class _Bus:
    """The CLI's publish and watcher: each undo proposed is answered with `outcome` and, when allowed, `result`."""

    def __init__(self, outcome: str, result: type[s.Envelope] | None, status: str = "") -> None:
        self.outcome, self.result, self.status = outcome, result, status
        self.proposed: list[Any] = []

    def watcher(self, kit: Any, names: list[str]) -> Any:
        bus = self

        class Watcher:
            async def start(self) -> None:
                return None

            async def poll(self, timeout_s: float = 0.2) -> list[tuple[str, Any]]:
                if not bus.proposed:
                    return []
                action_id = bus.proposed[-1].data.action_id
                answers: list[tuple[str, Any]] = [("actions.decided", _decided(action_id, bus.outcome))]
                if bus.result is not None:
                    error = s.ErrorInfo(type="http_500", message="crm down") if bus.status != "succeeded" else None
                    done = executor_result(bus.result, action_id, "untag_ticket", bus.status, idempotency_key=action_id, error=error)
                    answers.append(("actions.results", done))
                return answers

            async def stop(self) -> None:
                return None

        return Watcher()

    async def publish(self, kit: Any, events: list[tuple[str, Any]]) -> None:
        self.proposed += [event for _, event in events]


def _undo(monkeypatch: pytest.MonkeyPatch, bus: _Bus, *args: str) -> Any:
    import services.audit
    import tidegate.ops.undo

    class Log:
        async def close(self) -> None:
            return None

    async def connect(*a: Any, **kw: Any) -> Log:
        return Log()

    async def read_recorded(log: Any, prefix: str, *, action_id: str | None = None, task_id: str | None = None) -> list[Any]:
        return [ORIGINAL] if action_id == "a-1" else []

    monkeypatch.setattr(services.audit.PostgresAuditLog, "connect", connect)
    monkeypatch.setattr(tidegate.ops.undo, "read_recorded", read_recorded)
    monkeypatch.setattr(bus_client, "Watcher", bus.watcher)
    monkeypatch.setattr(bus_client, "publish_events", bus.publish)
    return CliRunner().invoke(app, ["undo", "a-1", *args], env={"COLUMNS": "400"})


def test_an_undo_that_failed_at_the_system_of_record_says_so_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    done = _undo(monkeypatch, _Bus("allow", s.ActionUnknown, "unknown"))
    assert done.exit_code == 1, done.output
    assert "undo undo-a-1 (untag_ticket): unknown after 1 attempt(s) — http_500: crm down" in done.output


def test_a_denied_undo_says_so_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    done = _undo(monkeypatch, _Bus("deny", None))
    assert done.exit_code == 1, done.output
    assert "undo undo-a-1 (untag_ticket): deny — low_risk_write_allowed (low-risk-write-allow); it was not undone" in done.output


def test_a_done_undo_says_undone_and_exits_0_and_wait_0_returns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    done = _undo(monkeypatch, _Bus("allow", s.ActionSucceeded, "succeeded"))
    assert done.exit_code == 0, done.output
    assert "undone a-1: untag_ticket succeeded as action undo-a-1" in done.output
    bus = _Bus("allow", None)
    at_once = _undo(monkeypatch, bus, "--wait", "0")
    assert at_once.exit_code == 0, at_once.output
    assert "proposed 1 undo call(s); policy decides each" in at_once.output
    assert [e.data.action_id for e in bus.proposed] == ["undo-a-1"]
