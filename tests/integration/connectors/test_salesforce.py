"""Salesforce connector (simple-salesforce) against our HTTPS stand-in of Salesforce's REST API."""

from __future__ import annotations

from pathlib import Path

import pytest
from connector_harness import CANARY, Executed, call_context

import schemas as s
from connectors import salesforce_tools as sf
from servicekit.toolcontract import ToolContext, ToolError
from standins.salesforce import SalesforceStandIn


def ctx(standin: SalesforceStandIn, tmp_path: Path, credential: str = CANARY) -> ToolContext:
    return call_context(base_url="", credential=credential, instance_url=standin.url, ca_bundle=str(tmp_path / "tls" / "standin.crt"))


def ids(standin: SalesforceStandIn) -> tuple[str, str]:
    return next(iter(standin.records["Account"])), next(iter(standin.records["Opportunity"]))


async def test_reads_records_and_marks_free_text_untrusted(salesforce: SalesforceStandIn, tmp_path: Path) -> None:
    account, opportunity = ids(salesforce)
    got = await sf.get_record(ctx(salesforce, tmp_path), {"object": "Account", "record_id": account})
    assert got["record"]["Name"] == "Initech"
    assert set(got["untrusted"]) == {"record.Name", "record.Description"}
    opp = await sf.get_record(ctx(salesforce, tmp_path), {"object": "Opportunity", "record_id": opportunity})
    assert (opp["record"]["Amount"], opp["record"]["StageName"]) == (12000.0, "Negotiation/Review")


async def test_adds_a_task_and_moves_a_stage_only_with_the_recorded_amount(salesforce: SalesforceStandIn, tmp_path: Path) -> None:
    account, opportunity = ids(salesforce)
    task = await sf.add_task(ctx(salesforce, tmp_path), {"what_id": account, "subject": "Call back about renewal"})
    assert salesforce.records["Task"][task["task_id"]]["WhatId"] == account
    with pytest.raises(ToolError) as understated:  # the policy saw 500 USD; Salesforce says 12,000
        await sf.update_opportunity_stage(
            ctx(salesforce, tmp_path), {"opportunity_id": opportunity, "stage": "Closed Won", "amount_usd": 500}
        )
    assert understated.value.type == "amount_mismatch"
    assert salesforce.records["Opportunity"][opportunity]["StageName"] == "Negotiation/Review"
    moved = await sf.update_opportunity_stage(
        ctx(salesforce, tmp_path), {"opportunity_id": opportunity, "stage": "Closed Won", "amount_usd": 12000}
    )
    assert (moved["previous_stage"], moved["stage"]) == ("Negotiation/Review", "Closed Won")
    assert salesforce.records["Opportunity"][opportunity]["StageName"] == "Closed Won"


async def test_salesforce_error_shapes(salesforce: SalesforceStandIn, tmp_path: Path) -> None:
    account, _opportunity = ids(salesforce)
    with pytest.raises(ToolError) as rejected:
        await sf.get_record(ctx(salesforce, tmp_path, credential="00Dwrong"), {"object": "Account", "record_id": account})
    assert rejected.value.type == "credential_rejected"
    with pytest.raises(ToolError) as missing:
        await sf.get_record(ctx(salesforce, tmp_path), {"object": "Contact", "record_id": "003000000000099AAA"})
    assert missing.value.type == "not_found"
    with pytest.raises(ToolError) as integrity:
        await sf.add_task(ctx(salesforce, tmp_path), {"what_id": "001000000000099AAA", "subject": "x"})
    assert integrity.value.type == "salesforce_field_integrity_exception"
    salesforce.inject(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], method="GET")
    with pytest.raises(ToolError) as limited:
        await sf.get_record(ctx(salesforce, tmp_path), {"object": "Account", "record_id": account})
    assert (limited.value.type, limited.value.retryable) == ("rate_limited", True)
    with pytest.raises(ToolError) as untrusted_tls:  # without the stand-in's CA, the certificate is refused
        await sf.get_record(call_context(base_url="", instance_url=salesforce.url), {"object": "Account", "record_id": account})
    assert untrusted_tls.value.retryable


async def test_through_the_executor_a_stage_retry_is_harmless_and_a_lost_task_is_unknown(
    salesforce: SalesforceStandIn, executed: Executed, tmp_path: Path
) -> None:
    account, opportunity = ids(salesforce)
    ca = str(tmp_path / "tls" / "standin.crt")
    await executed.connect("acme", "salesforce", tools=["salesforce_add_task", "salesforce_update_opportunity_stage"], base_url="",
                           instance_url=salesforce.url, ca_bundle=ca)  # fmt: skip
    salesforce.inject(500, [{"message": "An unexpected error occurred", "errorCode": "UNKNOWN_EXCEPTION"}])
    moved = await executed.run(
        executed.authorize(
            "acme", "salesforce_update_opportunity_stage", {"opportunity_id": opportunity, "stage": "Closed Won", "amount_usd": 12000}
        )
    )
    assert (moved.type, moved.data.attempts) == ("tidegate.action.succeeded", 2)
    salesforce.inject(500, [{"message": "An unexpected error occurred", "errorCode": "UNKNOWN_EXCEPTION"}], method="POST")
    lost = await executed.run(executed.authorize("acme", "salesforce_add_task", {"what_id": account, "subject": "renewal signed"}))
    assert isinstance(lost, s.ActionUnknown)
    assert lost.data.attempts == 1
    assert salesforce.records["Task"] == {}


async def test_missing_credential(salesforce: SalesforceStandIn, executed: Executed) -> None:
    account, _ = ids(salesforce)
    failed = await executed.run(executed.authorize("acme", "salesforce_get_record", {"object": "Account", "record_id": account}))
    assert failed.data.error is not None
    assert failed.data.error.type == "credential_missing"
    assert salesforce.requests == []


async def test_undo_deletes_the_task_and_moves_the_stage_back(salesforce: SalesforceStandIn, executed: Executed, tmp_path: Path) -> None:
    account, opportunity = ids(salesforce)
    tools = ["salesforce_add_task", "salesforce_delete_task", "salesforce_update_opportunity_stage"]
    await executed.connect("acme", "salesforce", tools=tools, base_url="", instance_url=salesforce.url,
                           ca_bundle=str(tmp_path / "tls" / "standin.crt"))  # fmt: skip
    original = {"Task": dict(salesforce.records["Task"]), "Opportunity": dict(salesforce.records["Opportunity"][opportunity])}

    task = await executed.run(
        executed.authorize("acme", "salesforce_add_task", {"what_id": account, "subject": "Call back", "description": "renewal"})
    )
    args = {"opportunity_id": opportunity, "stage": "Closed Won", "amount_usd": 12000}
    moved = await executed.run(executed.authorize("acme", "salesforce_update_opportunity_stage", args))

    back, _ = await executed.undo(moved)
    assert back.args == {"opportunity_id": opportunity, "stage": "Negotiation/Review", "amount_usd": 12000.0}
    delete, deleted = await executed.undo(task)
    assert (delete.tool, delete.args) == ("salesforce_delete_task", {"task_id": task.data.result["task_id"]})
    assert {"Task": salesforce.records["Task"], "Opportunity": salesforce.records["Opportunity"][opportunity]} == original

    again, _ = await executed.undo(deleted)
    assert again.args == {"what_id": account, "subject": "Call back", "description": "renewal"}
    [(_, readded)] = salesforce.records["Task"].items()
    assert (readded["WhatId"], readded["Subject"], readded["Description"]) == (account, "Call back", "renewal")


async def test_an_answer_that_cannot_be_read_is_retried_for_a_read_and_unknown_for_a_task(
    salesforce: SalesforceStandIn, executed: Executed, tmp_path: Path
) -> None:
    account, _ = ids(salesforce)
    await executed.connect("acme", "salesforce", tools=["salesforce_add_task"], base_url="", instance_url=salesforce.url,
                           ca_bundle=str(tmp_path / "tls" / "standin.crt"))  # fmt: skip
    salesforce.inject(200, [{"Id": account}], method="GET")  # a list where the record should be
    read = await executed.run(executed.authorize("acme", "salesforce_get_record", {"object": "Account", "record_id": account}))
    assert (read.type, read.data.attempts) == ("tidegate.action.succeeded", 2)

    salesforce.inject(201, {"success": True, "errors": []}, method="POST")  # no id: created or not, we cannot tell
    lost = await executed.run(executed.authorize("acme", "salesforce_add_task", {"what_id": account, "subject": "renewal signed"}))
    assert lost.data.error is not None
    assert (lost.type, lost.data.error.type, lost.data.attempts) == ("tidegate.action.unknown", "bad_answer", 1)
    host = salesforce.url.removeprefix("https://")  # with its port: several accounts may share a host
    assert f"Salesforce answered POST {host}/services/data/v59.0/sobjects/Task/ with HTTP 201" in lost.data.error.message
