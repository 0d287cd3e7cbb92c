"""The executor over in-memory fakes: exactly once, retries of retryable errors only, unknown outcomes, replays."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_producer import KeepingProducer
from prometheus_client import REGISTRY

import schemas as s
from servicekit import Bus, EventOutlet, Keyring, Reject, SigningKey, ToolCatalog, action_digest, authorization_message, span
from servicekit.authority import authority_for
from servicekit.toolcontract import ToolContext, ToolError
from services.executor.claims import InMemoryClaimStore
from services.executor.credentials import CredentialStore
from services.executor.executor import Executor
from services.executor.tools import ToolAnswer, ToolInvokers

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@dataclass
class ScriptedTool:
    """An invoker answering from a script: a ToolAnswer, or an exception to raise, per call."""

    script: list[Any] = field(default_factory=list)
    contexts: list[ToolContext] = field(default_factory=list)

    async def invoke(self, spec: s.ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        self.contexts.append(ctx)
        step = self.script.pop(0) if self.script else ToolAnswer({"ok": True})
        if isinstance(step, BaseException):
            raise step
        if step == "hang":
            await asyncio.sleep(3600)
        return step


def tool_spec(name: str, **kw: Any) -> s.ToolSpec:
    base = {
        "name": name,
        "description": "d",
        "args_schema": {"type": "object"},
        "risk": "financial",
        "kind": "python",
        "entrypoint": "m:f",
        "cost_usd": 0.01,
        "retry": {"max_attempts": 3, "backoff_initial_s": 0.1, "backoff_max_s": 1.0},
    }
    return s.ToolSpec.model_validate(base | kw)


@dataclass
class World:
    executor: Executor
    tool: ScriptedTool
    published: list[s.Envelope]
    sleeps: list[float]
    switches: dict[tuple[str, str], str]
    claims: InMemoryClaimStore
    key: SigningKey

    def authorize(self, tool: str = "refund", args: dict[str, Any] | None = None, *, ttl_s: float = 300) -> s.ActionAuthorized:
        args = args or {"amount_usd": 10}
        data = s.ActionAuthorizedData(
            action_id=f"a-{len(self.published)}-{tool}",
            task_id="t-1",
            tenant_id="acme",
            tool=tool,
            args=args,
            authorization=s.Authorization(
                via="policy",
                policy_version="v1",
                action_digest=action_digest("acme", tool, args),
                issued_at=NOW,
                expires_at=NOW + timedelta(seconds=ttl_s),
                key_id=self.key.key_id,
                signature="",
            ),
        )
        auth = data.authorization.model_copy(update={"signature": self.key.sign(authorization_message(data))})
        return s.ActionAuthorized.build(data.model_copy(update={"authorization": auth}), source="tidegate/policy")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def make_world(tmp_path: Path) -> World:
    """An executor over in-memory fakes, with the catalog the tests here use (other test modules build theirs with it)."""
    key = SigningKey.load_or_create(tmp_path, "policy")
    tool = ScriptedTool()
    published: list[s.Envelope] = []
    sleeps: list[float] = []
    switches: dict[tuple[str, str], str] = {}
    claims = InMemoryClaimStore()

    async def publish(topic: str, event: s.Envelope) -> None:
        assert topic == "actions.results"
        published.append(event)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    catalog = {
        "refund": tool_spec("refund", accepts_idempotency_key=True, credential_scopes={"acme": "payments:refund"}),
        "push": tool_spec("push", risk="code_change"),
        "read": tool_spec("read", risk="read", idempotent=True, timeout_s=0.05),
        "slow_push": tool_spec("slow_push", risk="code_change", timeout_s=0.05),
        "capped_refund": tool_spec(
            "capped_refund",
            args_schema={"type": "object", "required": ["amount_usd"], "properties": {"amount_usd": {"type": "number", "maximum": 100}}},
        ),
    }
    executor = Executor(
        catalog=ToolCatalog(catalog),
        keyring_loader=lambda: Keyring.load(tmp_path, "policy"),
        claims=claims,
        invokers=ToolInvokers(python=tool, http=tool, topic=tool),
        credentials=CredentialStore({("acme", "payments:refund"): "sk_acme"}, {}),
        out=EventOutlet(publish, signer=SigningKey.load_or_create(tmp_path, "executor")),  # signs as the service's bus does
        killed=lambda tenant, name: switches.get((tenant, name)),
        authority=authority_for(tmp_path, tmp_path / "operators", tmp_path / "clients"),  # a kept result is re-sent only as its own
        clock=lambda: NOW,
        sleep=sleep,
    )
    return World(executor, tool, published, sleeps, switches, claims, key)


async def test_success_carries_attempts_cost_key_and_credential(world: World) -> None:
    event = world.authorize()
    await world.executor.handle(event)
    [result] = world.published
    assert isinstance(result, s.ActionSucceeded)
    assert (result.data.attempts, result.data.cost.usd, result.data.idempotency_key) == (1, 0.01, event.data.action_id)
    [ctx] = world.tool.contexts
    assert (ctx.idempotency_key, ctx.credential_scope, ctx.credential, ctx.attempt) == (
        event.data.action_id,
        "payments:refund",
        "sk_acme",
        1,
    )
    assert world.claims.records[event.data.action_id].status == "succeeded"


async def test_retryable_errors_are_retried_with_backoff_and_priced_per_attempt(world: World) -> None:
    world.tool.script = [ToolError("busy", "try later", retryable=True), ToolError("busy", "again", retryable=True), ToolAnswer({"id": 1})]
    await world.executor.handle(world.authorize())
    [result] = world.published
    assert (result.type, result.data.attempts, result.data.cost.usd) == ("tidegate.action.succeeded", 3, 0.03)
    assert world.sleeps == [0.1, 0.2]
    assert [c.attempt for c in world.tool.contexts] == [1, 2, 3]
    assert len({c.idempotency_key for c in world.tool.contexts}) == 1


async def test_a_final_error_is_not_retried_and_exhausted_retries_fail(world: World) -> None:
    world.tool.script = [ToolError("unknown_payee", "no such payee")]
    await world.executor.handle(world.authorize())
    world.tool.script = [ToolError("busy", "x", retryable=True)] * 3
    await world.executor.handle(world.authorize(args={"amount_usd": 11}))
    first, second = world.published
    assert (first.type, first.data.error.type, first.data.attempts) == ("tidegate.action.failed", "unknown_payee", 1)
    assert (second.type, second.data.error.retryable, second.data.attempts) == ("tidegate.action.failed", True, 3)
    assert not first.data.error.maybe_applied
    assert not second.data.error.maybe_applied


async def test_a_timeout_on_a_tool_without_idempotency_is_unknown_and_never_repeated(world: World) -> None:
    world.tool.script = ["hang"]
    await world.executor.handle(world.authorize("slow_push", {"files": ["a"]}))
    [result] = world.published
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.unknown", "timeout", 1)
    assert result.data.error.maybe_applied  # the event says it itself: a reader of the error alone knows it may have happened
    assert len(world.tool.contexts) == 1


async def test_a_read_that_times_out_is_retried_and_then_fails(world: World) -> None:
    world.tool.script = ["hang", "hang", "hang"]
    await world.executor.handle(world.authorize("read", {"id": 1}))
    [result] = world.published
    assert (result.type, result.data.attempts) == ("tidegate.action.failed", 3)


async def test_a_kill_switch_set_during_backoff_stops_the_retry(world: World) -> None:
    async def set_switch_then_sleep(seconds: float) -> None:
        world.switches[("acme", "refund")] = "ops stop"

    world.executor.sleep = set_switch_then_sleep
    world.tool.script = [ToolError("busy", "x", retryable=True)]
    await world.executor.handle(world.authorize())
    [result] = world.published
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.failed", "kill_switch", 1)


async def test_a_refused_retry_after_an_attempt_that_may_have_applied_still_ends_unknown(world: World) -> None:
    """Attempt 1 timed out after sending (the refund may be done); attempts 2 and 3 never reached the system: unknown, not failed."""
    maybe = ToolError("timeout", "no answer after the request was sent", retryable=True, maybe_applied=True)
    refused = ToolError("unreachable", "connection refused", retryable=True)
    world.tool.script = [maybe, refused, refused]
    await world.executor.handle(world.authorize())
    [result] = world.published
    assert (result.type, result.data.attempts, result.data.error.type) == ("tidegate.action.unknown", 3, "unreachable")
    assert "an earlier attempt may have taken effect: timeout: no answer after the request was sent" in result.data.error.message


async def test_a_retry_stopped_after_an_attempt_that_may_have_applied_still_ends_unknown(world: World) -> None:
    sleeps = 0

    async def switch_on_the_second_wait(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == 2:
            world.switches[("acme", "refund")] = "ops stop"

    world.executor.sleep = switch_on_the_second_wait
    sent = ToolError("timeout", "sent, no answer", retryable=True, maybe_applied=True)
    world.tool.script = [sent, ToolError("busy", "x", retryable=True)]
    await world.executor.handle(world.authorize())
    [result] = world.published
    assert (result.type, result.data.attempts) == ("tidegate.action.unknown", 2)
    assert "an earlier attempt may have taken effect" in result.data.error.message


async def test_redelivery_answers_from_the_record_and_a_copy_is_also_dead_lettered(world: World) -> None:
    event = world.authorize()
    with span("executor handle action.authorized"):  # each delivery is handled in a trace context of its own
        await world.executor.handle(event)
    with span("executor handle action.authorized"):
        await world.executor.handle(event)
    with pytest.raises(Reject) as rejected, span("executor handle action.authorized"):
        await world.executor.handle(event.model_copy(update={"id": "another-event"}))
    assert rejected.value.code == "authorization_replayed"
    assert len(world.tool.contexts) == 1
    assert [e.type for e in world.published] == ["tidegate.action.succeeded"] * 3
    assert len({e.data.result["ok"] for e in world.published}) == 1
    # A redelivery and a replay get the result as first published, not a new event that a cost sum would count again.
    assert len({e.id for e in world.published}) == 1
    assert len({s.encode(e) for e in world.published}) == 1  # the kept bytes: same signature, same trace context
    assert world.published[0].signature is not None


def _keep(world: World, action_id: str, result_event: str | None) -> None:
    """What the executor's database login can do: put another result event (or none) in a finished claim."""
    world.claims.records[action_id] = dataclasses.replace(world.claims.records[action_id], result_event=result_event)


def _forged_results(world: World, event: s.ActionAuthorized, other: s.ActionAuthorized) -> dict[str, tuple[str | None, str]]:
    """Result events the login may keep in `event`'s finished claim, each with the metric's reason for refusing it."""
    kept = s.decode("actions.results", world.claims.records[event.data.action_id].result_event or "")
    richer = kept.data.model_copy(update={"result": {"ok": True, "refunded_usd": 10_000}})
    return {
        "unsigned": (s.encode(kept.model_copy(update={"data": richer, "signature": None, "keyid": None})).decode(), "unsigned"),
        "altered": (s.encode(kept.model_copy(update={"data": richer})).decode(), "invalid"),  # the genuine signature, another result
        "another action's": (world.claims.records[other.data.action_id].result_event, "invalid"),  # genuine, signed, not this action's
        "none": (None, "unsigned"),
    }


@pytest.mark.parametrize("forgery", ["unsigned", "altered", "another action's", "none"])
async def test_a_result_the_login_kept_in_a_finished_claim_is_never_signed_nor_published_again(world: World, forgery: str) -> None:
    event, other = world.authorize(), world.authorize("push", {"files": ["x"]})
    await world.executor.handle(event)
    await world.executor.handle(other)
    text, reason = _forged_results(world, event, other)[forgery]
    _keep(world, event.data.action_id, text)
    sent = len(world.published)
    labels = {"service": "executor", "table": "actions", "reason": reason}
    before = REGISTRY.get_sample_value("tidegate_rows_refused_total", labels) or 0.0
    with pytest.raises(Reject) as rejected:
        await world.executor.handle(event)  # redelivered
    assert rejected.value.code == "kept_result_refused"
    assert "the result event its claim keeps" in rejected.value.message
    assert len(world.published) == sent  # nothing published, so nothing signed
    assert len(world.tool.contexts) == 2  # nor called again
    assert REGISTRY.get_sample_value("tidegate_rows_refused_total", labels) == before + 1


async def test_a_result_the_login_put_in_an_unfinished_claim_is_replaced_by_the_calls_own(world: World) -> None:
    """A claim not yet finished keeps no result event but one its database login wrote: the call's outcome replaces it."""
    event = world.authorize()
    forged = s.ActionSucceeded.build(
        s.ActionResultData(
            **s.action_identity(event.data), tool="refund", status="succeeded", result={"refunded_usd": 10_000}, attempts=1, duration_ms=1.0
        ),
        source="tidegate/executor",
    )
    world.claims.records[event.data.action_id] = replace(_claimed(event), result_event=s.encode(forged).decode())
    await world.executor.handle(event)
    [result] = world.published
    assert result.id != forged.id
    assert result.data.result == {"ok": True}  # what the tool answered
    assert result.signature is not None
    assert s.decode("actions.results", world.claims.records[event.data.action_id].result_event or "").id == result.id  # the one kept


async def test_an_interrupted_claim_is_recovered_by_calling_again_only_when_safe(world: World) -> None:
    keyed, unkeyed = world.authorize(), world.authorize("push", {"files": ["x"]})
    for event in (keyed, unkeyed):
        async with world.claims.hold(event.data.action_id) as session:
            await session.claim(_claimed(event))
            await session.running(1)  # then the process died
    await world.executor.handle(keyed)
    await world.executor.handle(unkeyed)
    recovered, unknown = world.published
    assert (recovered.type, recovered.data.attempts) == ("tidegate.action.succeeded", 2)
    assert (unknown.type, unknown.data.error.type, unknown.data.attempts) == ("tidegate.action.unknown", "interrupted", 1)
    assert [c.action_id for c in world.tool.contexts] == [keyed.data.action_id]


async def test_settling_at_start_ends_interrupted_unsafe_calls_as_unknown(world: World) -> None:
    unkeyed, keyed = world.authorize("push", {"files": ["x"]}), world.authorize()
    for event in (unkeyed, keyed):
        async with world.claims.hold(event.data.action_id) as session:
            await session.claim(_claimed(event))
            await session.running(1)
    assert await world.executor.settle_interrupted() == 1
    [result] = world.published
    assert (result.type, result.data.action_id) == ("tidegate.action.unknown", unkeyed.data.action_id)
    assert world.claims.records[keyed.data.action_id].status == "running"  # left to its redelivery, which calls again


async def test_refusals_raise_reject_and_never_call(world: World, tmp_path: Path) -> None:
    expired = world.authorize(ttl_s=-1)
    with pytest.raises(Reject) as refused:
        await world.executor.handle(expired)
    assert refused.value.code == "authorization_expired"
    forged = world.authorize()
    forged = forged.model_copy(update={"data": forged.data.model_copy(update={"args": {"amount_usd": 9999}})})
    with pytest.raises(Reject) as refused:
        await world.executor.handle(forged)
    assert refused.value.code == "signature_invalid"
    assert world.tool.contexts == []
    assert [e.data.error.type for e in world.published] == ["authorization_expired"]


async def test_signed_args_the_executors_catalog_refuses_are_never_called(world: World) -> None:
    # A well-signed authorization whose args break the tool's schema as the executor knows it (a policy
    # bug, or a catalog changed in between): the executor does not trust the signature alone.
    bad = world.authorize("capped_refund", {"amount_usd": 5000})
    with pytest.raises(Reject) as refused:
        await world.executor.handle(bad)
    assert refused.value.code == "invalid_args"
    assert "amount_usd" in str(refused.value)
    assert world.tool.contexts == []
    [result] = world.published
    assert (result.type, result.data.error.type) == ("tidegate.action.failed", "invalid_args")
    await world.executor.handle(world.authorize("capped_refund", {"amount_usd": 50}))
    assert len(world.tool.contexts) == 1


def _claimed(event: s.ActionAuthorized) -> Any:
    from services.executor.domain import ClaimRecord

    d = event.data
    return replace(
        ClaimRecord(d.action_id, event.id, d.tenant_id, d.task_id, d.step, d.tool, d.args, d.authorization.action_digest, "claimed")
    )


async def test_an_action_id_of_another_tenant_is_refused_without_answering(world: World) -> None:
    event = world.authorize()
    await world.executor.handle(event)
    other = world.authorize()
    data = other.data.model_copy(update={"action_id": event.data.action_id, "tenant_id": "globex"})
    data = data.model_copy(
        update={"authorization": data.authorization.model_copy(update={"action_digest": action_digest("globex", data.tool, data.args)})}
    )
    auth = data.authorization.model_copy(update={"signature": world.key.sign(authorization_message(data))})
    with pytest.raises(Reject) as refused:
        await world.executor.handle(s.ActionAuthorized.build(data.model_copy(update={"authorization": auth}), source="tidegate/policy"))
    assert refused.value.code == "authorization_replayed"
    assert len(world.published) == 1
    assert len(world.tool.contexts) == 1


async def test_nothing_runs_before_control_is_read_and_a_failed_wait_is_tried_again(world: World) -> None:
    gate = asyncio.Event()
    waits: list[int] = []

    async def ready() -> None:
        waits.append(1)
        if len(waits) == 1:
            raise TimeoutError("control not caught up")  # transient: the bus retries the handler
        await gate.wait()

    world.executor.ready = ready
    with pytest.raises(TimeoutError):
        await world.executor.handle(world.authorize())
    first, second = world.authorize(), world.authorize("capped_refund")
    calls = [asyncio.create_task(world.executor.handle(first)), asyncio.create_task(world.executor.handle(second))]
    for _ in range(20):  # let both calls run as far as they can
        await asyncio.sleep(0)
    assert (world.tool.contexts, world.published) == ([], [])
    gate.set()
    await asyncio.gather(*calls)
    assert len(world.published) == 2
    assert len(waits) == 2  # the two calls shared one wait


async def test_a_repeat_answered_from_the_record_is_not_counted_as_another_call(world: World, tmp_path: Path) -> None:
    """An agent's retry (the same authorization again) gets the kept result again; the metrics count one refund, not two."""
    producer = KeepingProducer("executor")
    bus = Bus(producer, "executor", "unused:1", "p.", signer=SigningKey.load_or_create(tmp_path, "executor"))
    executor = dataclasses.replace(world.executor, out=bus)
    event = world.authorize(args={"amount_usd": 12.5})
    labels = {"tenant": event.data.tenant_id, "tool": "refund", "status": "succeeded"}
    before = REGISTRY.get_sample_value("tidegate_action_results_total", labels) or 0.0
    spent = REGISTRY.get_sample_value("tidegate_spend_usd_total", {"tenant": event.data.tenant_id, "kind": "tool"}) or 0.0
    for _ in range(3):  # the first delivery, then the agent's two repeats
        await executor.handle(event)
    assert len(world.tool.contexts) == 1
    assert len(producer.published) == 3  # each repeat is answered, with the result as first published
    assert len(set(producer.published)) == 1
    assert (REGISTRY.get_sample_value("tidegate_action_results_total", labels) or 0.0) - before == 1
    assert s.decode("actions.results", producer.published[0][1]).data.cost.usd == 0.01  # the catalog's price of one call
    after = REGISTRY.get_sample_value("tidegate_spend_usd_total", {"tenant": event.data.tenant_id, "kind": "tool"}) or 0.0
    assert after - spent == pytest.approx(0.01)
