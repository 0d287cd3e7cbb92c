"""AWS Step Functions `.waitForTaskToken` against moto, which executes the state machine (SQS integration, task tokens)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from integrations.harness import ReadsOpened, rule, wait_pending
from schemas import ActionProposedData
from tidegate.client import MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate
from tidegate.integrations.step_functions import PendingTokens, StepFunctionsBridge, governed_task


class FailuresSent:
    """The Step Functions client, recording each `SendTaskFailure` (moto keeps its error but drops its cause)."""

    def __init__(self, sfn: Any) -> None:
        self.sfn = sfn
        self.failures: list[dict[str, Any]] = []

    def send_task_failure(self, **kwargs: Any) -> Any:
        self.failures.append(kwargs)
        return self.sfn.send_task_failure(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sfn, name)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, str, str]]:
    """moto's Step Functions (executing state machines) and SQS; a state machine whose refund task waits for its token."""
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sqs, sfn = boto3.client("sqs"), FailuresSent(boto3.client("stepfunctions"))
        queue = sqs.create_queue(QueueName="tidegate-proposals")["QueueUrl"]
        definition = {"StartAt": "Refund", "States": {"Refund": governed_task(queue, "issue_refund", "$.refund") | {"End": True}}}
        machine = sfn.create_state_machine(name="refunds", definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/sfn")
        yield sfn, sqs, queue, machine["stateMachineArn"]


def refunds_rule(p: ActionProposedData) -> tuple[str, str]:
    """The harness's rule, and a budget: refunds of 10 000 USD or more are denied outright."""
    if p.tool == "issue_refund" and p.args.get("amount_usd", 0) >= 10_000:
        return "deny", "budget_exceeded"
    return rule(p)


@pytest.fixture
async def governance(bus: MemoryTransport) -> AsyncIterator[ScriptedTidegate]:
    async with ScriptedTidegate(bus, refunds_rule, tools={"issue_refund": lambda args: {"refund_id": "re_1", **args}}) as scripted:
        yield scripted


EDITED = {"payee_id": "cus_1", "amount_usd": 450.0}


async def start(aws: tuple[Any, Any, str, str], name: str, amount: float) -> str:
    sfn, _, _, machine = aws
    return str(
        sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps({"refund": {"payee_id": "cus_1", "amount_usd": amount}}))[
            "executionArn"
        ]
    )


async def take(bridge: StepFunctionsBridge) -> None:
    for _ in range(100):  # moto runs the execution in a thread: poll until its message is queued
        if await bridge.poll():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no message from the state machine")


async def finished(sfn: Any, execution: str) -> dict[str, Any]:
    for _ in range(100):
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return dict(described)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{execution} still running")


async def decided_at_once(
    aws: tuple[Any, Any, str, str], client: Tidegate, tmp_path: Path, name: str, amount: float
) -> tuple[str, dict[str, Any]]:
    """Start an execution, let the bridge take its call once, and return the execution and how it ended."""
    sfn, sqs, queue, _ = aws
    async with client:
        execution = await start(aws, name, amount)
        await take(StepFunctionsBridge(client, sfn, sqs, queue, PendingTokens(tmp_path / "tokens.sqlite3")))
        return execution, await finished(sfn, execution)


async def test_an_allowed_task_succeeds_with_the_result(
    aws: tuple[Any, Any, str, str], make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    execution, done = await decided_at_once(aws, make_client(), tmp_path, "small-refund", 40.0)
    assert done["status"] == "SUCCEEDED"
    output = json.loads(done["output"])
    assert (output["outcome"], output["result"]["refund_id"]) == ("executed", "re_1")
    assert governance.proposals[0].action_id.startswith(f"sfn:{execution}:Refund:")


async def test_a_denied_task_fails_with_tidegate_denied_and_its_reasons_and_nothing_runs(
    aws: tuple[Any, Any, str, str], make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    sfn = aws[0]
    execution, done = await decided_at_once(aws, make_client(), tmp_path, "huge-refund", 25_000.0)
    assert done["status"] == "FAILED"
    [failed] = [e for e in sfn.get_execution_history(executionArn=execution)["events"] if e["type"] == "TaskFailed"]
    assert failed["taskFailedEventDetails"]["error"] == "tidegate.denied"  # what a Catch matches
    [sent] = sfn.failures
    assert json.loads(sent["cause"])["reasons"] == ["budget_exceeded"]  # the cause the state machine gets (moto drops it)
    [proposed] = governance.proposals
    assert proposed.action_id.startswith(f"sfn:{execution}:Refund:")
    assert governance.calls.get("issue_refund") is None
    assert PendingTokens(tmp_path / "tokens.sqlite3").rows() == []


@pytest.mark.parametrize(("decision", "status"), [("approve", "SUCCEEDED"), ("edit", "SUCCEEDED"), ("reject", "FAILED")])
async def test_an_escalated_task_waits_for_the_human_then_succeeds_or_fails(
    aws: tuple[Any, Any, str, str],
    make_client: Callable[[], Tidegate],
    governance: ScriptedTidegate,
    tmp_path: Path,
    decision: str,
    status: str,
) -> None:
    sfn, sqs, queue, _ = aws
    async with make_client() as client:
        bridge = StepFunctionsBridge(client, sfn, sqs, queue, PendingTokens(tmp_path / "tokens.sqlite3"))
        execution = await start(aws, "big-refund", 900.0)
        await take(bridge)
        assert await bridge.complete_decided(timeout_s=0.2) == 0
        assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"
        approval_id = await wait_pending(governance)
        if decision == "reject":
            await governance.reject(approval_id, comment="no")
        else:
            await governance.approve(approval_id, edited_args=EDITED if decision == "edit" else None)
        assert await bridge.complete_decided(timeout_s=5) == 1
        done = await finished(sfn, execution)
    assert done["status"] == status
    ran = {"approve": [{"payee_id": "cus_1", "amount_usd": 900.0}], "edit": [EDITED], "reject": []}[decision]
    assert governance.calls.get("issue_refund", []) == ran
    if decision == "edit":  # the approver's args are what ran, and what the state machine's next state reads
        output = json.loads(done["output"])
        assert (output["edited_args"], output["result"]["amount_usd"]) == (EDITED, 450.0)
    if decision == "reject":
        history = sfn.get_execution_history(executionArn=execution)["events"]
        assert any("tidegate.rejected" in json.dumps(e, default=str) for e in history)


async def test_a_bridge_restarted_while_a_human_decides_completes_the_task_once(
    aws: tuple[Any, Any, str, str], make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    sfn, sqs, queue, _ = aws
    tokens = tmp_path / "tokens.sqlite3"
    async with make_client() as first:
        execution = await start(aws, "refund-across-restart", 700.0)
        await take(StepFunctionsBridge(first, sfn, sqs, queue, PendingTokens(tokens)))
    await governance.approve(await wait_pending(governance))
    async with make_client() as second:
        bridge = StepFunctionsBridge(second, sfn, sqs, queue, PendingTokens(tokens))
        assert await bridge.complete_decided(timeout_s=5) == 1
        assert await bridge.complete_decided(timeout_s=0.2) == 0
        done = await finished(sfn, execution)
    assert done["status"] == "SUCCEEDED"
    assert len(governance.calls["issue_refund"]) == 1
    assert len(governance.proposals) == 1


def machine_of(aws: tuple[Any, Any, str, str], name: str, states: dict[str, Any], start_at: str) -> str:
    sfn, _, _, _ = aws
    definition = {"StartAt": start_at, "States": states}
    return str(
        sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/sfn")[
            "stateMachineArn"
        ]
    )


async def take_all(bridge: StepFunctionsBridge, count: int) -> None:
    taken = 0
    for _ in range(200):  # moto runs a Map's iterations in threads: poll until every message came
        taken += await bridge.poll()
        if taken >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{taken} of {count} messages from the state machine")


async def test_each_iteration_of_a_map_state_is_its_own_action(
    aws: tuple[Any, Any, str, str], make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    """Every iteration enters the same state of the same execution: only the task token tells them apart."""
    sfn, sqs, queue, _ = aws
    refunds = [
        {"payee_id": "cus_1", "amount_usd": 40.0},
        {"payee_id": "cus_2", "amount_usd": 60.0},
        {"payee_id": "cus_3", "amount_usd": 70.0},
    ]
    iterator = {"StartAt": "Refund", "States": {"Refund": governed_task(queue, "issue_refund", "$") | {"End": True}}}
    machine = machine_of(
        aws, "batch-refunds", {"Each": {"Type": "Map", "ItemsPath": "$.refunds", "Iterator": iterator, "End": True}}, "Each"
    )
    async with make_client() as client:
        execution = str(sfn.start_execution(stateMachineArn=machine, name="batch", input=json.dumps({"refunds": refunds}))["executionArn"])
        await take_all(StepFunctionsBridge(client, sfn, sqs, queue, PendingTokens(tmp_path / "tokens.sqlite3")), len(refunds))
        done = await finished(sfn, execution)
    assert done["status"] == "SUCCEEDED"
    assert sorted(o["result"]["amount_usd"] for o in json.loads(done["output"])) == [40.0, 60.0, 70.0]
    ids = [p.action_id for p in governance.proposals]
    assert len(set(ids)) == 3
    assert all(i.startswith(f"sfn:{execution}:Refund:") for i in ids)
    assert sorted(c["amount_usd"] for c in governance.calls["issue_refund"]) == [40.0, 60.0, 70.0]


class RedeliversOnce:
    """The SQS client of a bridge that dies before its first delete: that message comes back (visibility timeout 0)."""

    def __init__(self, sqs: Any) -> None:
        self.sqs = sqs
        self.redelivered = False

    def delete_message(self, **kwargs: Any) -> Any:
        if not self.redelivered:
            self.redelivered = True
            return self.sqs.change_message_visibility(**kwargs, VisibilityTimeout=0)
        return self.sqs.delete_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sqs, name)


async def test_a_redelivered_message_follows_its_first_proposal(
    aws: tuple[Any, Any, str, str], make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    sfn, sqs, queue, _ = aws
    flaky = RedeliversOnce(sqs)
    async with make_client() as client:
        bridge = StepFunctionsBridge(client, sfn, flaky, queue, PendingTokens(tmp_path / "tokens.sqlite3"))
        execution = await start(aws, "redelivered-refund", 900.0)
        await take(bridge)
        assert flaky.redelivered
        await take(bridge)  # the same message, the same token: the same action
        await governance.approve(await wait_pending(governance))
        assert await bridge.complete_decided(timeout_s=5) == 1
        done = await finished(sfn, execution)
    assert done["status"] == "SUCCEEDED"
    assert len(governance.proposals) == 1
    assert len(governance.calls["issue_refund"]) == 1


async def test_a_call_that_cannot_be_proposed_fails_its_task_and_leaves_the_queue(
    aws: tuple[Any, Any, str, str], make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    """Args the contract refuses (a U+0000) would be refused on every redelivery: the task fails at once, with the reason."""
    sfn, sqs, queue, machine = aws
    async with make_client() as client:
        bridge = StepFunctionsBridge(client, sfn, sqs, queue, PendingTokens(tmp_path / "tokens.sqlite3"))
        refund = {"refund": {"payee_id": "cus_\u0000", "amount_usd": 40.0}}
        execution = str(sfn.start_execution(stateMachineArn=machine, name="nul-refund", input=json.dumps(refund))["executionArn"])
        await take(bridge)
        done = await finished(sfn, execution)
        assert await bridge.poll() == 0  # deleted, not redelivered
    assert done["status"] == "FAILED"
    [sent] = sfn.failures
    assert sent["error"] == "tidegate.invalid"
    assert "U+0000" in json.loads(sent["cause"])["message"]
    assert governance.proposals == []


async def test_a_message_that_is_not_a_governed_task_fails_its_task(
    aws: tuple[Any, Any, str, str], make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    sfn, sqs, queue, _ = aws
    state = {"Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken", "End": True}
    state["Parameters"] = {"QueueUrl": queue, "MessageBody": {"tool": "issue_refund", "token.$": "$$.Task.Token"}}  # no execution, no state
    machine = machine_of(aws, "hand-written", {"Refund": state}, "Refund")
    async with make_client() as client:
        execution = str(sfn.start_execution(stateMachineArn=machine, name="bad-body", input="{}")["executionArn"])
        await take(StepFunctionsBridge(client, sfn, sqs, queue, PendingTokens(tmp_path / "tokens.sqlite3")))
        done = await finished(sfn, execution)
    assert done["status"] == "FAILED"
    [sent] = sfn.failures
    assert (sent["error"], json.loads(sent["cause"])["outcome"]) == ("tidegate.invalid", "invalid")
    assert "execution" in json.loads(sent["cause"])["message"]
    assert governance.proposals == []


class TroubledStepFunctions:
    """Step Functions whose `dead-` tokens timed out (`TaskTimedOut`) and which throttles `slow-` ones; the rest it records."""

    def __init__(self) -> None:
        self.answered: list[tuple[str, str]] = []

    def _answer(self, token: str, what: str, operation: str) -> None:
        if token.startswith("dead-"):
            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "Task Timed Out"}}, operation)
        if token.startswith("slow-"):
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation)
        self.answered.append((what, token))

    def send_task_success(self, taskToken: str, output: str) -> None:
        self._answer(taskToken, "success", "SendTaskSuccess")

    def send_task_failure(self, taskToken: str, error: str, cause: str) -> None:
        self._answer(taskToken, error, "SendTaskFailure")


class OneBatch:
    """SQS holding one batch of messages, recording which are deleted."""

    def __init__(self, tokens_and_amounts: list[tuple[str, float]]) -> None:
        self.messages = [
            {
                "ReceiptHandle": f"rh-{token}",
                "Body": json.dumps(
                    {"tool": "issue_refund", "args": {"payee_id": "cus_1", "amount_usd": amount}, "token": token}
                    | {"execution": f"arn:exec:{token}", "state": "Refund"}
                ),
            }
            for token, amount in tokens_and_amounts
        ]
        self.deleted: list[str] = []

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        batch, self.messages = self.messages, []
        return {"Messages": batch}

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        self.deleted.append(ReceiptHandle)


async def test_a_message_whose_task_timed_out_does_not_stop_the_batch(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    sfn, sqs = TroubledStepFunctions(), OneBatch([("dead-1", 40.0), ("slow-2", 40.0), ("live-3", 40.0)])
    async with make_client() as client:
        assert await StepFunctionsBridge(client, sfn, sqs, "queue", PendingTokens(tmp_path / "tokens.sqlite3")).poll() == 3
    assert sfn.answered == [("success", "live-3")]
    assert sqs.deleted == ["rh-dead-1", "rh-live-3"]  # its task is gone: deleted; throttled: left for redelivery


async def test_a_task_that_cannot_be_answered_does_not_block_the_other_decisions(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, tmp_path: Path
) -> None:
    sfn, sqs = TroubledStepFunctions(), OneBatch([("dead-1", 900.0), ("slow-2", 900.0), ("live-3", 900.0)])
    pending = PendingTokens(tmp_path / "tokens.sqlite3")
    async with make_client() as client:
        bridge = StepFunctionsBridge(client, sfn, sqs, "queue", pending)
        assert await bridge.poll() == 3
        assert len(pending.rows()) == 3
        for request in list(governance.pending()):
            await governance.approve(request.approval_id)
        assert await bridge.complete_decided(timeout_s=5) == 1
        assert [token for _, _, token in pending.rows()] == ["slow-2"]  # timed out: dropped; throttled: kept for the next sweep
        assert await bridge.complete_decided(timeout_s=5) == 0
    assert sfn.answered == [("success", "live-3")]


async def test_a_sweep_reads_the_answer_topics_once_for_all_its_waiting_tasks(
    make_client: Callable[[], Tidegate], governance: ScriptedTidegate, bus: MemoryTransport, tmp_path: Path
) -> None:
    sfn, sqs = TroubledStepFunctions(), OneBatch([(f"live-{n}", 900.0) for n in range(10)])
    pending = PendingTokens(tmp_path / "tokens.sqlite3")
    async with make_client() as client:
        bridge = StepFunctionsBridge(client, sfn, sqs, "queue", pending)
        assert await bridge.poll() == 10
        [decided, *_] = governance.pending()
        await governance.approve(decided.approval_id)
        reads = ReadsOpened(bus)
        assert await bridge.complete_decided(timeout_s=0.5) == 1
    assert reads.count == 1  # one per waiting task (10) before
    assert len(sfn.answered) == 1
    assert len(pending.rows()) == 9
