"""`tidegate undo` of one action says which case stops it and what to do.

An undo, an undo that failed or was denied, a failed or unknown call, an unknown id.
"""

from __future__ import annotations

from typing import Any

import pytest

import schemas as s
from servicekit.undo import undo_action_id, undo_proposal
from tests.unit.executor_results import executor_result
from tidegate.ops.undo import undo_steps

READY = s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})


def _result(kind: type[s.Envelope], action_id: str, tool: str, status: str, **kw: Any) -> s.Envelope:
    """As the executor publishes it, with the idempotency key it used: the action id."""
    return executor_result(kind, action_id, tool, status, idempotency_key=action_id, **kw)


ORIGINAL = _result(s.ActionSucceeded, "a-1", "tag_ticket", "succeeded", undo=READY)
UNDO_PROPOSED = s.ActionProposed.build(undo_proposal(ORIGINAL.data, requested_by="ops", proposer="undo:ops"), source="external/undo/ops")  # type: ignore[arg-type]


def _refusal(events: list[s.Envelope], action_id: str) -> tuple[str, str]:
    [step] = undo_steps(events, requested_by="ops", only=action_id)
    assert step.proposal is None
    assert step.refused is not None
    return step.refused.code, step.refused.message


def test_an_undo_is_not_undone_and_says_whose_undo_it_is() -> None:
    undone = _result(s.ActionSucceeded, "undo-a-1", "untag_ticket", "succeeded", undo=READY)
    code, message = _refusal([ORIGINAL, UNDO_PROPOSED, undone], "undo-a-1")
    assert code == "undo_irreversible"
    assert "undo-a-1 is the undo of a-1" in message
    assert "propose that call again" in message


def test_an_action_whose_undo_failed_or_was_denied_says_so_and_to_correct_by_hand() -> None:
    failed = _result(s.ActionFailed, "undo-a-1", "untag_ticket", "failed", error=s.ErrorInfo(type="http_503", message="helpdesk down"))
    code, message = _refusal([ORIGINAL, UNDO_PROPOSED, failed], "a-1")
    assert code == "action_id_reused"
    assert "the undo undo-a-1 of action a-1 failed: http_503: helpdesk down" in message
    assert "by hand" in message
    denied = s.ActionDecided.build(
        s.ActionDecidedData(
            action_id="undo-a-1",
            task_id="t-1",
            tenant_id="acme",
            tool="untag_ticket",
            args=READY.args or {},
            action_digest="d",
            outcome="deny",
            reasons=[s.Reason(code=s.ReasonCode.KILL_SWITCH, policy_id="kill")],
            policy_version="v1",
            latency_ms=1,
        ),
        source="tidegate/policy",
    )
    code, message = _refusal([ORIGINAL, UNDO_PROPOSED, denied], "a-1")
    assert code == "action_id_reused"
    assert "was denied by policy (kill_switch)" in message
    assert "by hand" in message
    ok = _result(s.ActionSucceeded, "undo-a-1", "untag_ticket", "succeeded")
    assert "was undone already by undo-a-1" in _refusal([ORIGINAL, UNDO_PROPOSED, ok], "a-1")[1]


def test_a_failed_or_unknown_action_is_refused_with_its_case() -> None:
    failed = _result(s.ActionFailed, "a-3", "tag_ticket", "failed", error=s.ErrorInfo(type="x", message="m"))
    code, message = _refusal([failed], "a-3")
    assert (code, "did not succeed (failed): nothing was done to undo" in message) == ("undo_irreversible", True)
    unknown = _result(s.ActionUnknown, "a-2", "push_commit", "unknown", error=s.ErrorInfo(type="interrupted", message="executor stopped"))
    code, message = _refusal([unknown], "a-2")
    assert code == "undo_irreversible"
    assert "outcome is unknown (interrupted: executor stopped)" in message
    assert "by hand" in message


def test_an_unknown_id_is_said_to_be_unknown_by_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import services.audit
    import tidegate.ops.undo
    from tidegate.cli import app

    class Log:
        async def close(self) -> None:
            return None

    async def connect(*args: Any, **kw: Any) -> Log:
        return Log()

    recorded = {"a-3": [_result(s.ActionFailed, "a-3", "tag_ticket", "failed", error=s.ErrorInfo(type="x", message="m"))]}

    async def read_recorded(log: Any, prefix: str, *, action_id: str | None = None, task_id: str | None = None) -> list[Any]:
        return list(recorded.get(action_id or "", []))

    monkeypatch.setattr(services.audit.PostgresAuditLog, "connect", connect)
    monkeypatch.setattr(tidegate.ops.undo, "read_recorded", read_recorded)
    env = {"COLUMNS": "400"}
    unknown = CliRunner().invoke(app, ["undo", "nonexistent-action", "--dry-run"], env=env)
    assert unknown.exit_code == 1
    assert "action nonexistent-action is not in the audit log: check the id" in unknown.output
    failed = CliRunner().invoke(app, ["undo", "a-3", "--dry-run"], env=env)
    assert failed.exit_code == 1
    assert "did not succeed (failed)" in failed.output
    assert "is the audit service running" not in failed.output


def test_two_long_action_ids_never_share_an_undo_id() -> None:
    one, other = "x" * 256, "x" * 255 + "y"
    assert undo_action_id(one) != undo_action_id(other)
    assert len(undo_action_id(one)) == len(undo_action_id(other)) == 256
    assert undo_action_id("a-1") == "undo-a-1"
    assert undo_action_id("x" * 251) == "undo-" + "x" * 251  # fits: unchanged
