"""The client against scripted governance on a memory bus: every path a caller relies on, and resuming after a restart."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import ActionProposedData, ActionResultData, ActionSucceeded, ApprovalGranted
from tidegate.client import (
    ActionIdReused,
    ClientSettings,
    Denied,
    Escalated,
    Executed,
    Failed,
    MemoryTransport,
    Position,
    Rejected,
    SigningNotWired,
    SqliteProposals,
    SyncTidegate,
    Tidegate,
)
from tidegate.client.scripted import ScriptedTidegate
from tidegate.client.trust import DeploymentKeys


def rule(p: ActionProposedData) -> tuple[str, str]:
    if p.tool == "delete_customer_data":
        return "deny", "human_only"
    if p.tool == "issue_refund" and p.args["amount_usd"] >= 500:
        return "escalate", "needs_human_approval"
    return "allow", "low_risk_write_allowed"


def refund(args: dict[str, Any]) -> dict[str, Any]:
    return {"refund_id": f"re_{args['order_id']}", "amount_usd": args["amount_usd"]}


@pytest.fixture
def bus() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
async def stack(bus: MemoryTransport) -> AsyncIterator[ScriptedTidegate]:
    async with ScriptedTidegate(bus, rule, tools={"issue_refund": refund}) as scripted:
        yield scripted


@pytest.fixture
async def tg(bus: MemoryTransport, stack: ScriptedTidegate) -> AsyncIterator[Tidegate]:
    async with Tidegate(ClientSettings(principal="alice@acme.example"), transport=bus) as client:
        yield client


async def test_an_allowed_call_returns_the_executed_result(tg: Tidegate, stack: ScriptedTidegate) -> None:
    outcome = await tg.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 40.0, "order_id": "O-1"}, tainted_args=["payee_id"])
    assert isinstance(outcome, Executed)
    assert outcome.result == {"refund_id": "re_O-1", "amount_usd": 40.0}
    assert stack.calls["issue_refund"] == [{"payee_id": "cus_1", "amount_usd": 40.0, "order_id": "O-1"}]
    [sent] = stack.proposals
    assert (sent.requested_by, sent.proposer, sent.tainted_args, sent.tenant_id) == (
        "alice@acme.example",
        "external:client",
        ["payee_id"],
        "acme",
    )


async def test_a_denied_call_carries_the_reason_codes_and_nothing_runs(tg: Tidegate, stack: ScriptedTidegate) -> None:
    outcome = await tg.propose("delete_customer_data", {"customer_id": "cus_1"})
    assert isinstance(outcome, Denied)
    assert outcome.codes == ["human_only"]
    assert stack.calls == {}


async def test_an_escalation_waits_for_the_human_and_runs_the_edited_call(tg: Tidegate, stack: ScriptedTidegate) -> None:
    outcome = await tg.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-2"})
    assert isinstance(outcome, Escalated)
    assert outcome.codes == ["needs_human_approval"]
    assert stack.calls == {}
    edited = {"payee_id": "cus_1", "amount_usd": 450.0, "order_id": "O-2"}
    await stack.approve(outcome.approval_id, "bob@acme.example", edited, comment="half was store credit", review_reason="wrong_amount")
    final = await outcome.decision(timeout_s=5)
    assert isinstance(final, Executed)
    assert (final.via, final.approver, final.approval_id) == ("approval", "bob@acme.example", outcome.approval_id)
    assert (final.edited_args, final.comment, final.review_reason) == (edited, "half was store credit", "wrong_amount")
    assert final.result["amount_usd"] == 450.0
    assert stack.calls["issue_refund"] == [{"payee_id": "cus_1", "amount_usd": 450.0, "order_id": "O-2"}]


async def test_a_rejected_escalation_runs_nothing(tg: Tidegate, stack: ScriptedTidegate) -> None:
    outcome = await tg.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-3"})
    assert isinstance(outcome, Escalated)
    await stack.reject(outcome.approval_id, "bob@acme.example", comment="not this month", review_reason="wrong_recipient")
    final = await outcome.decision(timeout_s=5)
    assert isinstance(final, Rejected)
    assert (final.codes, final.approver, final.comment) == (["approval_rejected"], "bob@acme.example", "not this month")
    assert final.review_reason == "wrong_recipient"
    assert stack.calls == {}


@pytest.mark.parametrize("from_position", [True, False], ids=["from-recorded-position", "from-the-beginning"])
async def test_a_restarted_client_resumes_waiting_and_the_call_runs_once(
    bus: MemoryTransport, stack: ScriptedTidegate, from_position: bool
) -> None:
    async with Tidegate(transport=bus) as first:
        await first.propose("tag_ticket", {"ticket_id": "T-0"})  # history before the escalation, to be skipped by the filter
        outcome = await first.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 700.0, "order_id": "O-4"})
        assert isinstance(outcome, Escalated)
    kept = (outcome.action_id, outcome.position if from_position else None)  # what an agent records before it dies
    await stack.approve(outcome.approval_id)  # the human decides while no client runs

    async with Tidegate(transport=bus) as second:
        final = await second.resume(kept[0], position=kept[1], timeout_s=5)
    assert isinstance(final, Executed)
    assert final.result["refund_id"] == "re_O-4"
    assert len(stack.calls["issue_refund"]) == 1


async def test_no_answer_in_time_is_a_timeout_not_an_outcome(bus: MemoryTransport) -> None:
    async with Tidegate(transport=bus, trust=DeploymentKeys().trust()) as tg:  # no governance running at all
        with pytest.raises(TimeoutError, match="no conclusive answer"):
            await tg.propose("tag_ticket", {"ticket_id": "T-1"}, timeout_s=0.2)


def test_the_sync_flavour_proposes_and_waits_for_a_human() -> None:
    bus = MemoryTransport()
    stack = ScriptedTidegate(bus, rule, tools={"issue_refund": refund})  # before the client: its keys are the bus's
    with SyncTidegate(transport=bus) as tg:
        tg._run(stack.__aenter__())  # the scripted services run on the client's loop
        try:
            assert isinstance(tg.propose("tag_ticket", {"ticket_id": "T-1"}), Executed)
            outcome = tg.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 800.0, "order_id": "O-5"})
            assert isinstance(outcome, Escalated)
            tg._run(stack.approve(outcome.approval_id))
            assert isinstance(tg.decision(outcome, timeout_s=5), Executed)
        finally:
            tg._run(stack.__aexit__(None, None, None))


def test_settings_come_from_the_environment_with_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_CLIENT_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("TIDEGATE_CLIENT_SASL_USERNAME", "agent-acme")
    monkeypatch.setenv("TIDEGATE_CLIENT_SASL_PASSWORD", "s3cret")
    options = ClientSettings().kafka_options()
    assert options == {
        "bootstrap_servers": "broker:9092",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "agent-acme",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(ClientSettings())


def test_a_configured_key_that_cannot_be_used_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(SigningNotWired):
        Tidegate(ClientSettings(signing_key_path=tmp_path / "client.pem"), transport=MemoryTransport())


def test_a_position_token_round_trips_and_rejects_garbage() -> None:
    position = Position({"approvals:0": 12, "actions.results:3": 7})
    assert Position.parse(position.token()) == position
    assert position.offset("actions.decided", 0) == 0
    for garbage in ('["not", "a", "position"]', "garbage", "approvals:x", ":1", "approvals:-1", '{"approvals:0": -1}'):
        with pytest.raises(ValueError, match="position"):
            Position.parse(garbage)


def test_a_position_token_is_short_plain_text_and_earlier_tokens_still_parse() -> None:
    """A token goes in every pending result a model reads: 3 topics of 6 partitions were ~500 characters of JSON to escape."""
    position = Position({f"{topic}:{p}": 1_000_000 + p for topic in ("actions.decided", "approvals", "actions.results") for p in range(6)})
    token = position.token()
    assert len(token) < 200
    assert '"' not in token
    assert Position.parse(token) == position
    earlier = '{"actions.decided:0":12,"approvals:0":3}'  # what a ledger or a workflow kept before
    assert Position.parse(earlier) == Position({"actions.decided:0": 12, "approvals:0": 3})


async def test_the_client_waits_on_many_proposals_at_once(tg: Tidegate, stack: ScriptedTidegate) -> None:
    outcomes = await asyncio.gather(*(tg.propose("tag_ticket", {"ticket_id": f"T-{i}"}) for i in range(20)))
    assert all(isinstance(o, Executed) for o in outcomes)
    assert len(stack.calls["tag_ticket"]) == 20


async def test_proposing_an_action_id_again_after_a_restart_sends_nothing_and_follows_the_first(
    bus: MemoryTransport, stack: ScriptedTidegate, tmp_path: Path
) -> None:
    args = {"payee_id": "cus_1", "amount_usd": 650.0, "order_id": "O-6"}
    async with Tidegate(transport=bus, task_id="ticket-1007", proposals=SqliteProposals(tmp_path / "proposals.sqlite3")) as first:
        escalated = await first.propose("issue_refund", args, action_id="tool-call-17")
        assert isinstance(escalated, Escalated)
    async with Tidegate(transport=bus, task_id="ticket-1007", proposals=SqliteProposals(tmp_path / "proposals.sqlite3")) as second:
        again = await second.propose("issue_refund", args, action_id="tool-call-17")  # the framework re-runs the step
        assert isinstance(again, Escalated)
        assert again.approval_id == escalated.approval_id
        await stack.approve(again.approval_id)
        final = await again.decision(timeout_s=5)
        assert isinstance(final, Executed)
        after = await second.propose("issue_refund", args, action_id="tool-call-17")  # and once more, after it ran
    assert isinstance(after, Executed)
    assert len(stack.proposals) == 1
    assert len(stack.calls["issue_refund"]) == 1


@pytest.mark.parametrize(
    ("tool", "args", "task"),
    [
        ("issue_refund", {"payee_id": "cus_2", "amount_usd": 900.0, "order_id": "O-8"}, "ticket-1007"),
        ("tag_ticket", {"ticket_id": "T-1"}, "ticket-1007"),
        ("issue_refund", {"payee_id": "cus_1", "amount_usd": 40.0, "order_id": "O-7"}, "ticket-2001"),
    ],
    ids=["other-args", "other-tool", "other-task"],
)
async def test_an_action_id_reused_for_another_call_is_refused_and_nothing_is_proposed(
    bus: MemoryTransport, stack: ScriptedTidegate, tmp_path: Path, tool: str, args: dict[str, Any], task: str
) -> None:
    # A provider that numbers tool calls per turn hands the integrator "call_0" again, for another call.
    proposals = SqliteProposals(tmp_path / "proposals.sqlite3")
    async with Tidegate(transport=bus, task_id="ticket-1007", proposals=proposals) as client:
        first = await client.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 40.0, "order_id": "O-7"}, action_id="call_0")
        assert isinstance(first, Executed)
        with pytest.raises(ActionIdReused, match="call_0"):
            await client.propose(tool, args, task=task, action_id="call_0")
    assert [p.action_id for p in stack.proposals] == ["call_0"]
    assert len(stack.calls["issue_refund"]) == 1


async def test_a_call_no_service_could_store_is_refused_before_anything_is_sent(
    bus: MemoryTransport, stack: ScriptedTidegate, tmp_path: Path
) -> None:
    """A U+0000 in an agent's args (a model's output, a scraped page) is refused by the contract at every consumer.

    Sent, the proposal would only be dead-lettered and the agent would wait out its timeout; the client says why at once.
    """
    async with Tidegate(transport=bus, task_id="ticket-1007", proposals=SqliteProposals(tmp_path / "p.sqlite3")) as client:
        with pytest.raises(ValidationError, match="U\\+0000"):
            await client.propose("tag_ticket", {"ticket_id": "T-1", "tags": ["vip\u0000"]}, action_id="call_nul")
        assert client.proposals.lookup("call_nul") is None
        done = await client.propose("tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]}, action_id="call_ok")
    assert isinstance(done, Executed)
    assert [p.action_id for p in stack.proposals] == ["call_ok"]


async def test_a_proposal_ledger_from_before_digests_still_resumes(bus: MemoryTransport, stack: ScriptedTidegate, tmp_path: Path) -> None:
    args = {"payee_id": "cus_1", "amount_usd": 40.0, "order_id": "O-5"}
    async with Tidegate(transport=bus, proposals=SqliteProposals(tmp_path / "old.sqlite3")) as client:
        first = await client.propose("issue_refund", args, action_id="call-5")
    with sqlite3.connect(tmp_path / "old.sqlite3") as db:  # the file as an older client left it: no digest column
        db.execute("CREATE TABLE legacy AS SELECT action_id, position FROM proposals")
        db.execute("DROP TABLE proposals")
        db.execute("ALTER TABLE legacy RENAME TO proposals")
    async with Tidegate(transport=bus, proposals=SqliteProposals(tmp_path / "old.sqlite3")) as client:
        again = await client.propose("issue_refund", args, action_id="call-5")
    assert isinstance(first, Executed)
    assert isinstance(again, Executed)
    assert len(stack.proposals) == 1


async def test_answers_not_signed_by_the_service_that_produces_them_are_not_believed(
    tg: Tidegate, stack: ScriptedTidegate, bus: MemoryTransport
) -> None:
    """An attacker who can write the answer topics cannot tell the agent a held call ran, nor that a denied one was allowed."""
    rogue = DeploymentKeys()
    outcome = await tg.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-9"}, action_id="a-held")
    assert isinstance(outcome, Escalated)
    [request] = stack.pending()
    [decided] = [e for e in bus.topics["actions.decided"] if e.data.action_id == "a-held"]
    forged_done = ActionSucceeded.build(
        ActionResultData(action_id="a-held", task_id=decided.data.task_id, tenant_id="acme", tool="issue_refund", status="succeeded",
                         result={"refund_id": "re_forged"}, attempts=1, duration_ms=1.0, idempotency_key="a-held"),
        source="tidegate/executor",
    )  # fmt: skip
    forged_grant = ApprovalGranted.build(request.model_copy(update={"approver": "mallory"}), source="tidegate/approval")
    for topic, forged in [
        ("actions.results", forged_done),  # unsigned
        ("actions.results", rogue.sign_event("executor", forged_done)),  # a key the deployment never made
        ("actions.results", stack.keys.sign_event("policy", forged_done)),  # a real key, of a service that may not say it
        ("approvals", rogue.sign_event("approval", forged_grant)),
    ]:
        await bus.publish(topic, forged)
    await stack.reject(request.approval_id)  # read after the forgeries: had one been believed, the call would have ended before it
    assert isinstance(await outcome.decision(timeout_s=5), Rejected)
    assert stack.calls.get("issue_refund") is None


class FlakyBus(MemoryTransport):
    """A bus whose next `failures` proposals fail to send, as when the broker goes away mid-call."""

    failures = 0

    async def publish(self, topic: str, event: Any) -> None:
        if topic == "actions.proposed" and self.failures:
            self.failures -= 1
            raise ConnectionError("broker went away")
        await super().publish(topic, event)


@pytest.mark.parametrize("restart", [False, True], ids=["same-client", "restarted-client"])
async def test_a_proposal_whose_send_failed_is_sent_again_when_retried_under_its_action_id(tmp_path: Path, restart: bool) -> None:
    bus = FlakyBus()
    args = {"payee_id": "cus_1", "amount_usd": 40.0, "order_id": "O-11"}
    async with ScriptedTidegate(bus, rule, tools={"issue_refund": refund}) as stack:
        client = Tidegate(transport=bus, task_id="ticket-1007", proposals=SqliteProposals(tmp_path / "p.sqlite3"))
        async with client:
            bus.failures = 1
            with pytest.raises(ConnectionError):
                await client.propose("issue_refund", args, action_id="call-11", timeout_s=5)
            assert client.proposals.unsent("call-11") is not None
            if not restart:
                retried = await client.propose("issue_refund", args, action_id="call-11", timeout_s=5)
        if restart:
            async with Tidegate(transport=bus, task_id="ticket-1007", proposals=SqliteProposals(tmp_path / "p.sqlite3")) as again:
                retried = await again.propose("issue_refund", args, action_id="call-11", timeout_s=5)
                assert again.proposals.unsent("call-11") is None
                with pytest.raises(ActionIdReused):  # the unsent record still binds the id to its call
                    await again.propose("issue_refund", {**args, "amount_usd": 41.0}, action_id="call-11", timeout_s=5)
    assert isinstance(retried, Executed)
    assert retried.result == {"refund_id": "re_O-11", "amount_usd": 40.0}
    assert [p.action_id for p in stack.proposals] == ["call-11"]
    assert stack.calls["issue_refund"] == [args]


async def test_a_retry_after_a_failed_send_sends_the_very_proposal_recorded_not_another(tmp_path: Path) -> None:
    """A crash between recording and sending leaves the signed event in the ledger: the retry sends those bytes, never a new call."""
    bus = FlakyBus()
    async with ScriptedTidegate(bus, rule) as stack, Tidegate(transport=bus, proposals=SqliteProposals(tmp_path / "p.sqlite3")) as client:
        bus.failures = 1
        with pytest.raises(ConnectionError):
            await client.propose("tag_ticket", {"ticket_id": "T-1"}, action_id="call-12", rationale="first", step=3)
        recorded = client.proposals.unsent("call-12")
        with pytest.raises(ActionIdReused):
            await client.propose("tag_ticket", {"ticket_id": "T-2"}, action_id="call-12")
        assert len(stack.proposals) == 0
        done = await client.propose("tag_ticket", {"ticket_id": "T-1"}, action_id="call-12", rationale="second", step=9)
    assert isinstance(done, Executed)
    [sent] = bus.topics["actions.proposed"]
    assert recorded is not None
    assert sent.model_dump_json(exclude_none=True) == recorded
    assert (sent.data.rationale, sent.data.step) == ("first", 3)


class CatchUpFails(MemoryTransport):
    """The bus of `bus`, whose reads after the client's own live reader fail (a broker gone while a restarted client catches up)."""

    def __init__(self, bus: MemoryTransport) -> None:
        self.__dict__ = bus.__dict__  # the same topics and keys
        self.reads = 0

    def read(self, topics: tuple[str, ...], start: Position | None, *, caught_up: asyncio.Event | None = None) -> Any:
        self.reads += 1
        if self.reads > 1:
            raise ConnectionError("the broker went away")
        return super().read(topics, start, caught_up=caught_up)


async def test_a_catch_up_that_fails_is_logged_at_once_and_stop_does_not_raise_it(
    bus: MemoryTransport, stack: ScriptedTidegate, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = {"payee_id": "cus_1", "amount_usd": 650.0, "order_id": "O-7"}
    async with Tidegate(transport=bus, task_id="ticket-1008", proposals=SqliteProposals(tmp_path / "proposals.sqlite3")) as first:
        assert isinstance(await first.propose("issue_refund", args, action_id="tool-call-18"), Escalated)
    second = Tidegate(transport=CatchUpFails(bus), task_id="ticket-1008", proposals=SqliteProposals(tmp_path / "proposals.sqlite3"))
    await second.start()
    with pytest.raises(TimeoutError):
        await second.propose("issue_refund", args, action_id="tool-call-18", timeout_s=0.3)  # the escalation before its start is not seen
    assert "a background task of the Tidegate client stopped" in caplog.text
    assert "the broker went away" in caplog.text
    await second.stop()  # raised the catch-up's ConnectionError


async def test_an_edited_call_that_failed_carries_the_edit(tg: Tidegate, stack: ScriptedTidegate) -> None:
    outcome = await tg.propose("issue_refund", {"payee_id": "cus_1", "amount_usd": 900.0, "order_id": "O-9"})
    assert isinstance(outcome, Escalated)
    edited = {"payee_id": "cus_1", "amount_usd": 450.0}  # without the order the refund needs: the tool raises
    await stack.approve(outcome.approval_id, "bob@acme.example", edited, comment="half was store credit", review_reason="wrong_amount")
    final = await outcome.decision(timeout_s=5)
    assert isinstance(final, Failed)
    assert (final.edited_args, final.comment, final.review_reason) == (edited, "half was store credit", "wrong_amount")
