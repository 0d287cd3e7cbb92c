"""A topic tool whose replies are refused: the call that times out says so, not only "did not answer" (platform5 finding 4).

Before, a tool service still signing with the key `tidegate keys rotate-tool` retired answered within milliseconds, each
reply was refused (`signer_retired`, a WARNING in the executor's log), and the action ended `unknown` with
`timeout: … did not answer in 10.0 s`: the cause was nowhere in the result, nor in the follow-up an operator reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import schemas as s
from servicekit import Reject, SigningKey, ToolCatalog, sign_event
from servicekit.authority import Authority, authority_for
from servicekit.signing import rotate
from servicekit.toolcontract import ToolContext
from services.executor.tools import PythonTools, ToolInvokers, TopicTools
from tests.unit.executor.test_executor import World, make_world

ROTATED_AT = datetime(2026, 12, 5, 11, 0, tzinfo=UTC)


def inventory_spec(**kw: Any) -> s.ToolSpec:
    base = {
        "name": "update_inventory",
        "description": "d",
        "args_schema": {"type": "object"},
        "risk": "write_low",
        "kind": "topic",
        "reply_key_file": "tools/update_inventory.pub",
        "accepts_idempotency_key": True,
        "timeout_s": 0.2,  # the replies below are refused before the wait begins: the timeout is the test's end, not a race
        "retry": {"max_attempts": 2, "backoff_initial_s": 0.1},
    }
    return s.ToolSpec.model_validate(base | kw)


Reply = tuple[SigningKey | None, dict[str, Any]]
"""One reply the service sends an invocation: signed by that key (None: the service's), with those fields changed."""


@dataclasses.dataclass
class Service:
    """The outside tool service as the executor's bus meets its replies: checked by the `Authority`, then `on_reply`."""

    authority: Authority
    key: SigningKey
    tools: TopicTools = dataclasses.field(init=False)
    invocations: list[s.ToolInvocation] = dataclasses.field(default_factory=list)
    replies: list[Reply] = dataclasses.field(default_factory=lambda: [(None, {})])  # what it sends each invocation

    def __post_init__(self) -> None:
        self.tools = TopicTools(self.publish, "pfx.")

    async def publish(self, topic: str, event: s.Envelope) -> None:
        assert isinstance(event, s.ToolInvocation)
        self.invocations.append(event)
        d = event.data
        fields = {"action_id": d.action_id, "task_id": d.task_id, "tenant_id": d.tenant_id, "tool": d.tool, "attempt": d.attempt}
        for key, changes in self.replies:
            reply = s.ToolReply.build(s.ToolReplyData(**(fields | changes), ok=True, result={"on_hand": 37}), source="warehouse")
            await self.deliver(sign_event(reply, key or self.key))

    async def deliver(self, reply: s.ToolReply) -> None:
        """What `servicekit._bus_handle` does with a record: the signature first, then the handler; a refusal is dead-lettered."""
        raw = s.encode(reply)
        if self.authority.check(raw, s.decode_any(raw)) is not None:
            return
        with contextlib.suppress(Reject):
            await self.tools.on_reply(reply)


def retired_tool_key(keys_dir: Path) -> SigningKey:
    """The tool's key as the service still holds it, after `tidegate keys rotate-tool` retired it (long ago: past the grace)."""
    current = SigningKey.load_or_create(keys_dir / "tools", "update_inventory")
    rotate(keys_dir / "tools", "update_inventory", now=ROTATED_AT)
    return SigningKey(current.name, current.private)  # held in memory: it does not follow its file to the new key


def current_tool_key(tmp_path: Path) -> SigningKey:
    """The tool's key the catalog names (`reply_key_file`), not retired."""
    return SigningKey.load_or_create(tmp_path / "keys" / "tools", "update_inventory")


def with_topic_tool(tmp_path: Path, key: SigningKey | None = None, **spec: Any) -> tuple[World, Service]:
    """The executor of `make_world` with `update_inventory` served on its topics by a service signing with `key`."""
    world = make_world(tmp_path)
    keys = tmp_path / "keys"
    key = key or retired_tool_key(keys)
    authority = authority_for(keys, keys / "operators", keys / "clients", {"update_inventory": inventory_spec()})
    authority.clock = lambda: ROTATED_AT.timestamp() + 3600  # an hour after the rotation: the grace (600 s) is over
    service = Service(authority, key)
    authority.on_refused = service.tools.refused  # as the executor's app wires it
    world.executor = dataclasses.replace(
        world.executor,
        catalog=ToolCatalog({"update_inventory": inventory_spec(**spec)}),
        invokers=ToolInvokers(python=PythonTools(), http=PythonTools(), topic=service.tools),
    )
    return world, service


async def test_a_write_whose_replies_are_signed_by_a_retired_key_ends_unknown_saying_so(tmp_path: Path) -> None:
    world, service = with_topic_tool(tmp_path)
    event = world.authorize("update_inventory", {"sku": "KB-MECH-01", "delta": -3})
    await world.executor.handle(event)
    [result] = world.published
    assert isinstance(result, s.ActionUnknown)  # the tool replied: the stock may have moved, a person checks
    error = result.data.error
    assert error is not None
    assert (error.type, error.maybe_applied, result.data.attempts) == ("reply_refused", True, 2)
    assert error.message.startswith("update_inventory replied, but its reply was refused: signer_retired: key update_inventory-")
    remedy = "; restart the tool service with its new key, which `tidegate keys rotate-tool` made"
    assert error.message.endswith(remedy + " (no reply it could take came in 0.2 s)")
    assert [i.data.attempt for i in service.invocations] == [1, 2]  # each attempt's reply was refused; the key is the same


async def test_a_tool_that_never_replies_still_times_out(tmp_path: Path) -> None:
    world, service = with_topic_tool(tmp_path, retry={"max_attempts": 1})
    service.replies = []
    await world.executor.handle(world.authorize("update_inventory", {"sku": "KB-MECH-01", "delta": -3}))
    [result] = world.published
    assert isinstance(result, s.ActionUnknown)
    assert result.data.error is not None
    assert (result.data.error.type, result.data.error.message) == ("timeout", "update_inventory did not answer in 0.2 s")


async def test_a_reply_of_another_attempt_is_named_when_the_call_times_out(tmp_path: Path) -> None:
    """A reply that names the action but not the pending attempt (late, stale or forged) is refused, and said to be."""
    world, service = with_topic_tool(tmp_path, current_tool_key(tmp_path))
    service.replies = [(None, {"attempt": 7}), (None, {"attempt": 7})]
    await world.executor.handle(world.authorize("update_inventory", {"sku": "KB-MECH-01", "delta": -3}))
    [result] = world.published
    assert isinstance(result, s.ActionUnknown)
    assert result.data.error is not None
    assert result.data.error.type == "reply_refused"
    assert result.data.error.message.startswith("update_inventory replied 2 times, but each reply was refused: tool_reply_mismatch: ")
    assert "attempt 7; the pending invocation is tenant 'acme', tool 'update_inventory', attempt 2" in result.data.error.message


async def test_a_refused_reply_then_an_accepted_one_succeeds_and_leaves_no_explanation_behind(tmp_path: Path) -> None:
    world, service = with_topic_tool(tmp_path, current_tool_key(tmp_path))
    stranger = SigningKey.load_or_create(tmp_path / "stranger", "update_inventory")  # a key the catalog does not name
    service.replies = [(stranger, {}), (None, {})]
    event = world.authorize("update_inventory", {"sku": "KB-MECH-01", "delta": -3})
    await world.executor.handle(event)
    [result] = world.published
    assert result.type == "tidegate.action.succeeded"
    spec, [invocation] = inventory_spec(), service.invocations
    ctx = ToolContext(pool=None, tenant_id="acme", action_id=event.data.action_id, idempotency_key="k", task_id="t-1")  # type: ignore[arg-type]
    assert invocation.data.attempt == ctx.attempt
    assert service.tools.unanswered(spec, ctx) is None


async def test_a_refused_reply_for_a_call_nobody_waits_for_explains_no_other_call(tmp_path: Path) -> None:
    _, service = with_topic_tool(tmp_path)
    service.replies = []
    other = s.ToolReplyData(action_id="not-waited-for", task_id="t", tenant_id="acme", tool="update_inventory", ok=True)
    await service.deliver(sign_event(s.ToolReply.build(other, source="warehouse"), service.key))  # refused: signer_retired
    spec = inventory_spec()
    ctx = ToolContext(pool=None, tenant_id="acme", action_id="a-1", idempotency_key="a-1", task_id="t-1")  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(spec.timeout_s):
            await service.tools.invoke(spec, ctx, {})
    assert service.tools.unanswered(spec, ctx) is None
