"""`tidegate propose --action-id` of an action that is not the tenant's own call: said at once, nothing proposed.

Connectors probe F8: an action id another tenant's call owns (or another call of the same tenant, or of another
requester) is refused by the policy as `action_id_reused` and dead-lettered, never answered; the command waited out its
whole --wait and said "no decision within 15s (is the policy service running?)". It now reads what the policy recorded
under the id first, and says that this tenant has no such action, without naming the tenant whose it is nor its call.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from servicekit import action_digest, create_pool
from tidegate import bus_client
from tidegate.cli import app as cli

ARGS = {"ticket_id": "T-1001", "tags": ["vip"]}


class _SilentBus:
    """The CLI's publish and watcher: what it proposed is kept, and no decision ever comes (the policy's dead letter)."""

    def __init__(self) -> None:
        self.proposed: list[Any] = []

    def watcher(self, kit: Any, names: list[str]) -> Any:
        class Watcher:
            async def start(self) -> None:
                return None

            async def poll(self, timeout_s: float = 0.2) -> list[tuple[str, Any]]:
                await asyncio.sleep(timeout_s)
                return []

            async def stop(self) -> None:
                return None

        return Watcher()

    async def publish(self, kit: Any, events: list[tuple[str, Any]]) -> None:
        self.proposed += [event for _, event in events]


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> _SilentBus:
    fake = _SilentBus()
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(bus_client, "Watcher", fake.watcher)
    monkeypatch.setattr(bus_client, "publish_events", fake.publish)
    return fake


async def _decided(database_url: str, action_id: str, tenant: str, requested_by: str = "cli@localhost") -> None:
    """The policy's record of a call decided under `action_id` (what `_reused` compares a new proposal with)."""
    proposal = json.dumps({"tool": "tag_ticket", "args": ARGS, "requested_by": requested_by})
    pool = await create_pool(database_url, max_size=1)
    try:
        await pool.execute(
            "INSERT INTO policy.decisions (key, action_id, tenant_id, task_id, outcome, action_digest, proposal, decided_event) "
            "VALUES ($1, $1, $2, 'task-owner', 'allow', $3, $4::jsonb, '{}')",
            action_id, tenant, action_digest(tenant, "tag_ticket", ARGS), proposal,
        )  # fmt: skip
    finally:
        await pool.close()


async def _propose(env: dict[str, str], tenant: str, action_id: str, args: dict[str, Any], *more: str) -> tuple[Any, float]:
    argv = ["propose", "--tool", "tag_ticket", "--args", json.dumps(args), "--tenant", tenant, "--action-id", action_id, "--wait", "15"]
    began = time.monotonic()
    done = await asyncio.to_thread(CliRunner().invoke, cli, [*argv, *more], env=env)
    return done, time.monotonic() - began


@pytest.fixture
def env(infra: Any, prefix: str, tmp_path: Path) -> dict[str, str]:
    return {"TIDEGATE_DATABASE_URL": infra.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}


async def test_another_tenants_action_id_is_no_action_of_this_tenant_at_once_and_nothing_is_proposed(
    infra: Any, env: dict[str, str], bus: _SilentBus
) -> None:
    owner, other, action_id = f"owner-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}", f"act-{uuid.uuid4().hex[:10]}"
    await _decided(infra.database_url, action_id, owner)

    done, took = await _propose(env, other, action_id, ARGS)
    assert done.exit_code == 1, done.output
    assert took < 10  # it waited out its whole --wait (15 s) before
    said = " ".join(done.output.split())
    assert f"tenant {other} has no action {action_id}" in said
    assert "nothing was proposed" in said
    assert "leave --action-id out" in said
    assert owner not in said  # whose action it is, and what it did, are not this tenant's to read
    assert "tag_ticket" not in said
    assert "T-1001" not in said
    assert bus.proposed == []


async def test_the_same_tenants_other_call_or_requester_under_the_id_is_said_at_once(
    infra: Any, env: dict[str, str], bus: _SilentBus
) -> None:
    tenant, action_id = f"acme-{uuid.uuid4().hex[:6]}", f"act-{uuid.uuid4().hex[:10]}"
    await _decided(infra.database_url, action_id, tenant)

    other_args, _ = await _propose(env, tenant, action_id, {**ARGS, "tags": ["other"]})
    assert other_args.exit_code == 1, other_args.output
    assert f"action {action_id} of tenant {tenant} is another call" in " ".join(other_args.output.split())
    other_requester, _ = await _propose(env, tenant, action_id, ARGS, "--requested-by", "mallory@acme.example")
    assert other_requester.exit_code == 1, other_requester.output
    assert "another requester than mallory@acme.example" in " ".join(other_requester.output.split())
    assert bus.proposed == []


async def test_the_same_call_again_and_a_new_id_are_proposed_as_before(infra: Any, env: dict[str, str], bus: _SilentBus) -> None:
    tenant, action_id = f"acme-{uuid.uuid4().hex[:6]}", f"act-{uuid.uuid4().hex[:10]}"
    await _decided(infra.database_url, action_id, tenant)

    again, _ = await _propose(env, tenant, action_id, ARGS, "--wait", "1")  # the policy answers a repeat with its decision
    fresh, _ = await _propose(env, tenant, f"act-{uuid.uuid4().hex[:10]}", ARGS, "--wait", "1")
    assert [e.data.action_id for e in bus.proposed][:1] == [action_id]
    assert len(bus.proposed) == 2
    for done in (again, fresh):  # no decision came here (the fake bus): the wait says what else it may be, and what to run
        assert done.exit_code == 2, done.output
        said = " ".join(done.output.split())
        assert "is the policy service running" in said
        assert "tidegate audit search --action" in said


async def test_where_the_policy_s_record_cannot_be_read_the_proposal_goes_as_given_and_says_so(bus: _SilentBus, tmp_path: Path) -> None:
    env = {"TIDEGATE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}
    done, _ = await _propose(env, "acme", "act-from-an-agent-machine", ARGS, "--wait", "0")
    assert done.exit_code == 0, done.output
    assert "could not check action id act-from-an-agent-machine against the policy's record (proposing it as given)" in " ".join(
        done.output.split()
    )
    assert [e.data.action_id for e in bus.proposed] == ["act-from-an-agent-machine"]
