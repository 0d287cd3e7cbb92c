"""A Step Functions state machine governed by Tidegate, offline: its refund task waits on its token until a human approves.

moto runs the state machine (`.waitForTaskToken` through SQS) in process; against AWS, pass real boto3 clients.

PYTHONPATH=. .venv-integrations/bin/python examples/integrations/step_functions_bridge.py
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import boto3
from _offline import offline
from moto import mock_aws

from tidegate.integrations.step_functions import PendingTokens, StepFunctionsBridge, governed_task


def state_machine(queue_url: str) -> str:
    """One task that sends the call to the bridge's queue and waits for its token."""
    refund = governed_task(queue_url, "issue_refund", "$.refund") | {"End": True}
    return json.dumps({"StartAt": "Refund", "States": {"Refund": refund}})


async def main() -> list[str]:
    story: list[str] = []
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "offline")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    refund = {"issue_refund": lambda args: {"refund_id": "re_1", **args}}  # a catalog tool: the executor runs it
    _, tidegate, client = offline((), catalog=refund)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn, sqs = boto3.client("stepfunctions"), boto3.client("sqs")
        queue = sqs.create_queue(QueueName="tidegate-proposals")["QueueUrl"]
        machine = sfn.create_state_machine(name="refunds", definition=state_machine(queue), roleArn="arn:aws:iam::123456789012:role/sfn")
        execution = sfn.start_execution(
            stateMachineArn=machine["stateMachineArn"], input=json.dumps({"refund": {"payee_id": "cus_1", "amount_usd": 900.0}})
        )["executionArn"]
        async with tidegate, client:
            bridge = StepFunctionsBridge(
                client, sfn, sqs, queue, PendingTokens(Path(tempfile.mkdtemp(prefix="tidegate-sfn-")) / "tokens.sqlite3")
            )
            deadline = time.monotonic() + 10
            while not await bridge.poll(wait_s=1):  # the bridge's loop: take queued calls and propose them
                assert time.monotonic() < deadline, "the state machine sent nothing"
            status = sfn.describe_execution(executionArn=execution)["status"]
            story.append(f"waiting: execution {status} until a human decides ({tidegate.pending()[0].reasons[0].code})")
            await tidegate.approve(tidegate.pending()[0].approval_id, "bob@acme.example")  # in real life: the approver page or API
            await bridge.complete_decided(timeout_s=5)  # SendTaskSuccess with the outcome
        while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline + 10, "the execution did not finish"
            await asyncio.sleep(0.05)
        output = json.loads(described["output"])
        story.append(f"finished: {described['status']} {output['outcome']} {output['result']['refund_id']}")
    for line in story:
        print(line)
    return story


if __name__ == "__main__":
    asyncio.run(main())
