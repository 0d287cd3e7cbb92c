"""`@governed`: the function runs only when the executor invokes it, once per idempotency key, and a crash never repeats it."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import (
    ActionAuthorizedData,
    ActionProposedData,
    Authorization,
    ToolInvocation,
    ToolInvocationData,
    action_digest,
    authorization_message,
)
from tidegate.client import (
    ClientSettings,
    GovernanceError,
    KeySigner,
    MemoryLedger,
    MemoryTransport,
    Position,
    SqliteLedger,
    Tidegate,
    governed,
    serve_tool,
)
from tidegate.client.governed import NotServed, tool_login
from tidegate.client.scripted import ScriptedTidegate
from tidegate.client.transport import TopicsMissing
from tidegate.client.trust import DeploymentKeys


def rule(p: ActionProposedData) -> tuple[str, str]:
    if p.args.get("quantity", 0) > 100:
        return "escalate", "needs_human_approval"
    if p.args.get("sku") == "FORBIDDEN":
        return "deny", "no_permit"
    return "allow", "low_risk_write_allowed"


@pytest.fixture
def bus() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
async def stack(bus: MemoryTransport) -> AsyncIterator[ScriptedTidegate]:
    async with ScriptedTidegate(bus, rule, topic_tools=("reorder_stock",)) as scripted:
        yield scripted


@pytest.fixture
def keys(bus: MemoryTransport) -> DeploymentKeys:
    """The deployment's keys, as the client on `bus` knows them (no scripted services run in these tests)."""
    made = DeploymentKeys()
    bus.trust = made.trust()
    return made


def authorization(
    keys: DeploymentKeys, action_id: str, args: dict[str, Any], *, signer: str = "policy", lasts: timedelta = timedelta(minutes=5)
) -> ActionAuthorizedData:
    """What the policy signs for a call of `reorder_stock` with `args` (`signer` forges it with another key)."""
    now = datetime.now(UTC)
    auth = Authorization(via="policy", policy_version="v1", action_digest=action_digest("acme", "reorder_stock", args), issued_at=now,
                         expires_at=now + lasts, key_id=keys.key_id(signer), signature="")  # fmt: skip
    data = ActionAuthorizedData(action_id=action_id, task_id="t-1", tenant_id="acme", tool="reorder_stock", args=args, authorization=auth)
    return data.model_copy(update={"authorization": auth.model_copy(update={"signature": keys.sign(signer, authorization_message(data))})})


def invocation(
    keys: DeploymentKeys,
    action_id: str,
    *,
    reply_topic: str = "tidegate.tools.reorder_stock.replies",
    args: dict[str, Any] | None = None,
    authorized: ActionAuthorizedData | None = None,
    signer: str | None = "executor",
    deadline: datetime | None = None,
) -> ToolInvocation:
    """An invocation as the executor sends it: signed, carrying the policy's authorization of these args (unless told otherwise)."""
    args = args or {"sku": "KB-1", "quantity": 3}
    data = ToolInvocationData(
        action_id=action_id,
        task_id="t-1",
        tenant_id="acme",
        tool="reorder_stock",
        args=args,
        idempotency_key=action_id,
        deadline=deadline or datetime.now(UTC) + timedelta(seconds=30),
        reply_topic=reply_topic,
        authorized=authorized or authorization(keys, action_id, args),
    )
    event = ToolInvocation.build(data, source="tidegate/executor")
    return keys.sign_event(signer, event) if signer else event


async def test_calling_a_governed_function_proposes_it_and_returns_what_it_returned(
    bus: MemoryTransport, stack: ScriptedTidegate, wait_for: Any
) -> None:
    ran: list[tuple[str, int]] = []
    async with Tidegate(transport=bus) as tg:

        @governed("reorder_stock", client=tg, ledger=MemoryLedger())
        async def reorder_stock(sku: str, quantity: int = 1) -> dict[str, Any]:
            ran.append((sku, quantity))
            return {"po": f"PO-{sku}-{quantity}"}

        assert await reorder_stock("KB-1", quantity=3) == {"po": "PO-KB-1-3"}
        assert ran == [("KB-1", 3)]
        [proposal] = stack.proposals
        assert (proposal.tool, proposal.args) == ("reorder_stock", {"sku": "KB-1", "quantity": 3})

        with pytest.raises(GovernanceError, match="no_permit") as denied:
            await reorder_stock("FORBIDDEN")
        assert denied.value.outcome.codes == ["no_permit"]
        assert ran == [("KB-1", 3)]


async def test_a_governed_call_that_escalates_runs_after_the_human_approves(
    bus: MemoryTransport, stack: ScriptedTidegate, wait_for: Any
) -> None:
    ran: list[int] = []
    async with Tidegate(transport=bus) as tg:

        @governed("reorder_stock", client=tg, ledger=MemoryLedger())
        def reorder_stock(sku: str, quantity: int) -> int:  # a plain (sync) function works too
            ran.append(quantity)
            return quantity

        call = asyncio.create_task(reorder_stock("KB-1", 500))
        [request] = await wait_for(stack.pending, timeout=5, what="the approval request")
        assert ran == []
        await stack.approve(request.approval_id, edited_args={"sku": "KB-1", "quantity": 200})
        assert await asyncio.wait_for(call, 5) == 200
        assert ran == [200]


async def test_a_redelivered_invocation_gets_the_first_answer_and_never_runs_again(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any
) -> None:
    ran: list[dict[str, Any]] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        ran.append(args)
        return {"value": len(ran)}

    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger()))
        for _ in range(3):  # the executor retries with the same key after a timeout
            await bus.publish("tools.reorder_stock.requests", invocation(keys, "a-1"))
        replies = await wait_for(lambda: len(bus.topics["tools.reorder_stock.replies"]) == 3 and bus.topics["tools.reorder_stock.replies"])
    assert [r.data.result for r in replies] == [{"value": 1}] * 3
    assert len(ran) == 1


async def test_a_call_cut_short_by_a_crash_is_answered_unknown_never_run_twice(
    bus: MemoryTransport, keys: DeploymentKeys, tmp_path: Path, wait_for: Any
) -> None:
    ledger_path = tmp_path / "reorder_stock.sqlite3"
    SqliteLedger(ledger_path).begin("a-2")  # the previous process began the call and died before replying
    ran: list[dict[str, Any]] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        ran.append(args)
        return {}

    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, SqliteLedger(ledger_path)))
        await bus.publish("tools.reorder_stock.requests", invocation(keys, "a-2"))
        [reply] = await wait_for(lambda: bus.topics["tools.reorder_stock.replies"])
    assert (reply.data.ok, reply.data.error.type) == (False, "outcome_unknown")
    assert ran == []


async def test_an_invocation_that_asks_for_its_reply_elsewhere_is_refused(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any
) -> None:
    ran: list[dict[str, Any]] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        ran.append(args)
        return {}

    async with Tidegate(ClientSettings(), transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger()))
        await bus.publish("tools.reorder_stock.requests", invocation(keys, "a-3", reply_topic="tidegate.tools.other.replies"))
        await bus.publish("tools.reorder_stock.requests", invocation(keys, "a-4"))
        [reply] = await wait_for(lambda: bus.topics["tools.reorder_stock.replies"])
    assert reply.data.action_id == "a-4"
    assert len(ran) == 1


async def test_a_governed_call_waits_for_a_slow_human_beyond_the_decision_timeout(
    bus: MemoryTransport, stack: ScriptedTidegate, wait_for: Any
) -> None:
    async with Tidegate(ClientSettings(decision_timeout_s=0.2), transport=bus) as tg:

        @governed("reorder_stock", client=tg, ledger=MemoryLedger())
        def reorder_stock(sku: str, quantity: int) -> int:
            return quantity

        call = asyncio.create_task(reorder_stock("KB-1", 500))
        [request] = await wait_for(stack.pending, timeout=5, what="the approval request")
        await asyncio.sleep(0.5)  # the human takes longer than the client waits for a policy decision
        assert not call.done()
        await stack.approve(request.approval_id)
        assert await asyncio.wait_for(call, 5) == 500


async def test_the_function_runs_only_on_an_executor_invocation_carrying_the_policys_authorization_of_those_args(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any
) -> None:
    """Whoever manages to write on the tool's request topic (a stolen login, a misconfigured ACL) cannot make it run."""
    ran: list[dict[str, Any]] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        ran.append(args)
        return {}

    rogue = DeploymentKeys()  # keys the deployment never made
    big = {"sku": "KB-1", "quantity": 9000}
    forgeries = [
        invocation(keys, "f-1", signer=None),  # unsigned
        rogue.sign_event("executor", invocation(keys, "f-2", signer=None)),  # signed by a key that is not the executor's
        invocation(keys, "f-3", authorized=authorization(keys, "f-3", big, signer="executor")),  # authorized by the executor, not policy
        invocation(keys, "f-4", authorized=authorization(rogue, "f-4", big)),  # by another deployment's policy
        invocation(keys, "f-5", args=big, authorized=authorization(keys, "f-5", {"sku": "KB-1", "quantity": 3})),  # other args
        invocation(keys, "f-6", authorized=authorization(keys, "a-other", {"sku": "KB-1", "quantity": 3})),  # another action's
    ]
    unauthorized = invocation(keys, "f-7").model_copy(update={"data": invocation(keys, "f-7").data.model_copy(update={"authorized": None})})
    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger()))
        for forged in [*forgeries, keys.sign_event("executor", unauthorized)]:
            await bus.publish("tools.reorder_stock.requests", forged)
        await bus.publish("tools.reorder_stock.requests", invocation(keys, "a-5"))
        [reply] = await wait_for(lambda: bus.topics["tools.reorder_stock.replies"])
    assert reply.data.action_id == "a-5"
    assert ran == [{"sku": "KB-1", "quantity": 3}]


async def test_an_invocation_the_executor_gave_up_on_or_whose_authorization_expired_does_not_run(
    bus: MemoryTransport, keys: DeploymentKeys, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The executor recorded those actions `unknown` (or will retry with a fresh deadline): run now, they would run unseen."""
    ran: list[dict[str, Any]] = []

    async def run(args: dict[str, Any]) -> dict[str, Any]:
        ran.append(args)
        return {}

    past = datetime.now(UTC) - timedelta(seconds=1)
    stale = [
        invocation(keys, "late-1", deadline=past),  # sat on the topic while nobody served the tool
        invocation(keys, "late-2", authorized=authorization(keys, "late-2", {"sku": "KB-1", "quantity": 3}, lasts=-timedelta(seconds=1))),
    ]
    async with Tidegate(transport=bus) as tg:
        tg.run_in_background(serve_tool(tg, "reorder_stock", run, MemoryLedger()))
        for event in [*stale, invocation(keys, "a-6")]:
            await bus.publish("tools.reorder_stock.requests", event)
        [reply] = await wait_for(lambda: bus.topics["tools.reorder_stock.replies"])
    assert reply.data.action_id == "a-6"
    assert ran == [{"sku": "KB-1", "quantity": 3}]
    assert "after its deadline" in caplog.text
    assert "authorization expired" in caplog.text


def private_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return path


async def test_a_function_whose_replies_cannot_be_signed_is_refused_before_it_serves_anything(
    bus: MemoryTransport, keys: DeploymentKeys, tmp_path: Path
) -> None:
    """Found out after the function ran, its result would be lost and the action reported unknown although it ran."""
    signer = KeySigner(private_key(tmp_path / "client.key"), "agent@acme.example")  # no TOOL_KEYS_DIR
    ran: list[int] = []
    async with Tidegate(transport=bus, signer=signer) as tg:
        with pytest.raises(
            NotServed, match=r"tool reorder_stock is not served: .*kind `topic`.*keys add-tool reorder_stock.*TIDEGATE_CLIENT_TOOL_KEYS_DIR"
        ):

            @governed("reorder_stock", client=tg, ledger=MemoryLedger())
            def reorder_stock(sku: str, quantity: int) -> int:
                ran.append(quantity)
                return quantity

        with pytest.raises(NotServed, match="not served"):
            serve_tool(tg, "reorder_stock", lambda args: asyncio.sleep(0, {}), MemoryLedger())  # adapters' `serve=` too
        await bus.publish("tools.reorder_stock.requests", invocation(keys, "a-7"))
        await asyncio.sleep(0.1)
    assert ran == []


class RefusingBus(MemoryTransport):
    """A bus whose tool topics this login may not read (or that has none): as the broker answers a login without the tool's ACLs."""

    async def end(self, topics: tuple[str, ...]) -> Position:
        if any(t.startswith("tools.") for t in topics):
            raise TopicsMissing(f"topics missing on the broker: {topics}")
        return await super().end(topics)


@pytest.mark.parametrize(
    ("login", "why"),
    [
        ("agent", r"SASL user 'agent' may not read tidegate.tools.reorder_stock.requests .*`tool-reorder_stock`"),
        ("admin", r"tidegate.tools.reorder_stock.requests is not on the broker: declare reorder_stock .* kind `topic`.*executor itself"),
    ],
)
async def test_a_function_the_bus_will_not_let_this_process_serve_fails_its_caller_at_once(
    login: str, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a 30 s timeout with the reason only in a log, and no proposal that the executor would then invoke into the void."""
    monkeypatch.setattr(importlib.import_module("tidegate.client.governed"), "CREDENTIALS_DIR", tmp_path)  # no tool login here
    for name in ("TIDEGATE_KAFKA_CREDENTIALS_DIR", "TIDEGATE_INFRA_DIR"):  # nor in a deployment's folder this shell names
        monkeypatch.delenv(name, raising=False)
    bus = RefusingBus()
    async with ScriptedTidegate(bus, rule, topic_tools=("reorder_stock",)) as refusing:
        tg = Tidegate(ClientSettings(sasl_username=login), transport=bus)
        await tg.start()

        @governed("reorder_stock", client=tg, ledger=MemoryLedger())
        def reorder_stock(sku: str, quantity: int) -> int:
            return quantity

        with pytest.raises(NotServed, match=why):
            await asyncio.wait_for(reorder_stock("KB-1", 3), 5)
        with pytest.raises(NotServed):  # and every later call, not a hang
            await asyncio.wait_for(reorder_stock("KB-1", 3), 5)
        await tg.stop()
        assert refusing.proposals == []


def test_a_tool_login_is_read_from_the_properties_file_infra_up_makes(tmp_path: Path) -> None:
    properties = tmp_path / "tool-reorder_stock.properties"
    properties.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="tool-reorder_stock" password="s3cret";\n'
    )
    login = tool_login(ClientSettings(sasl_username="agent", topic_prefix="x."), properties)
    assert (login.sasl_username, login.sasl_password and login.sasl_password.get_secret_value(), login.topic_prefix) == (
        "tool-reorder_stock",
        "s3cret",
        "x.",
    )
    with pytest.raises(ValueError, match="cannot read the bus login"):
        tool_login(ClientSettings(), tmp_path / "missing.properties")


def test_a_tool_login_a_rotation_moved_to_scram_sha_256_logs_in_on_scram_sha_256(tmp_path: Path) -> None:
    """`tidegate infra rotate-login tool-reorder_stock` wrote `sasl.mechanism=SCRAM-SHA-256`: on SCRAM-SHA-512 the broker refuses it."""
    properties = tmp_path / "tool-reorder_stock.properties"
    properties.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="tool-reorder_stock" password="n3w";\n'
    )
    login = tool_login(ClientSettings(sasl_username="agent"), properties)
    assert login.kafka_options()["sasl_mechanism"] == "SCRAM-SHA-256"
    properties.write_text(properties.read_text().replace("SCRAM-SHA-256", "PLAIN"))
    with pytest.raises(ValueError, match=r"sasl\.mechanism=PLAIN: one of SCRAM-SHA-512, SCRAM-SHA-256"):
        tool_login(ClientSettings(sasl_username="agent"), properties)
