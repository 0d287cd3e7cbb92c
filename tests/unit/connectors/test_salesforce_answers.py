"""The Salesforce connector reading answers it cannot use (an HTML page, another shape): `bad_answer` naming the path.

simple-salesforce decodes answers itself (a bare JSONDecodeError on an HTML page, a dict of anything otherwise);
the connector reads what its session received through the same guard as the httpx connectors.
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors import salesforce_tools as sf
from servicekit.toolcontract import ToolContext

OBJECTS = "/services/data/v59.0/sobjects"
HTML = "<html><head><title>Salesforce - Maintenance</title></head></html>"
OPP = "006000000000001AAA"


def _ctx() -> ToolContext:
    return ToolContext(
        pool=None, tenant_id="acme", action_id="a-1", idempotency_key="a-1", task_id="t-1", attempt=1,
        credential="00Dtok", connection={"instance_url": "https://acme.my.salesforce.test"},
    )  # fmt: skip


class Org:
    """Answers each `METHOD path` (without the sobjects prefix) with its document, and records what was asked."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path.removeprefix(OBJECTS)}"
        self.asked.append(key)
        doc = self.answers[key]
        status = {"POST": 201, "PATCH": 204, "DELETE": 204}.get(request.method, 200)
        if doc is None:
            return httpx.Response(status)
        if isinstance(doc, str):
            return httpx.Response(status, text=doc, headers={"content-type": "text/html;charset=UTF-8"})
        return httpx.Response(status, json=doc)


async def test_an_html_page_instead_of_a_record_is_a_bad_answer_naming_the_path(answer: Any, refused: Any) -> None:
    answer(Org({"GET /Account/001000000000001AAA": HTML}))
    error = await refused(sf.get_record, _ctx(), {"object": "Account", "record_id": "001000000000001AAA"})
    assert (error.type, error.retryable, error.maybe_applied) == ("bad_answer", True, True)
    assert (
        "Salesforce answered GET acme.my.salesforce.test/services/data/v59.0/sobjects/Account/001000000000001AAA "
        "with HTTP 200 (text/html;charset=UTF-8) that cannot be read (Invalid JSON" in error.message
    )
    assert "it starts b'<html><head><title>Salesforce - Maintenance" in error.message
    assert "JSONDecodeError" not in error.message


async def test_a_record_of_another_shape_is_a_bad_answer(answer: Any, refused: Any) -> None:
    answer(Org({"GET /Contact/003000000000001AAA": [{"Id": "003000000000001AAA"}]}))
    error = await refused(sf.get_record, _ctx(), {"object": "Contact", "record_id": "003000000000001AAA"})
    assert error.type == "bad_answer"
    assert "cannot be read (Input should be an object)" in error.message


async def test_a_stage_is_not_moved_on_an_opportunity_whose_amount_cannot_be_read(answer: Any, refused: Any) -> None:
    org = Org({f"GET /Opportunity/{OPP}": {"StageName": "Prospecting", "Amount": "lots"}, f"PATCH /Opportunity/{OPP}": None})
    answer(org)
    error = await refused(sf.update_opportunity_stage, _ctx(), {"opportunity_id": OPP, "stage": "Closed Won", "amount_usd": 10})
    assert error.type == "bad_answer"
    assert "(Amount: Input should be a valid number" in error.message
    assert org.asked == [f"GET /Opportunity/{OPP}"]  # checked against nothing, moved nothing


async def test_a_task_created_with_an_answer_that_cannot_be_read_may_have_been_applied(answer: Any, refused: Any) -> None:
    answer(Org({"POST /Task/": HTML}))
    error = await refused(sf.add_task, _ctx(), {"what_id": "001000000000001AAA", "subject": "call"})
    assert (error.type, error.maybe_applied) == ("bad_answer", True)  # REST create takes no key: the executor ends it unknown
    assert "Salesforce answered POST acme.my.salesforce.test/services/data/v59.0/sobjects/Task/ with HTTP 201" in error.message
    answer(Org({"POST /Task/": {"success": True, "errors": []}}))
    assert "(id: Field required)" in (await refused(sf.add_task, _ctx(), {"what_id": "001000000000001AAA", "subject": "c"})).message


async def test_a_task_whose_answer_cannot_be_read_is_not_deleted(answer: Any, refused: Any) -> None:
    org = Org({"GET /Task/00T000000000001AAA": {"Subject": ["not", "text"]}, "DELETE /Task/00T000000000001AAA": None})
    answer(org)
    error = await refused(sf.delete_task, _ctx(), {"task_id": "00T000000000001AAA"})
    assert "(Subject: Input should be a valid string)" in error.message
    assert org.asked == ["GET /Task/00T000000000001AAA"]


async def test_well_formed_answers_still_read_as_before(answer: Any) -> None:
    record = {"attributes": {"type": "Opportunity"}, "Id": OPP, "Name": "Big deal", "StageName": "Prospecting", "Amount": 12000}
    task = {"Id": "00T000000000002AAA", "WhatId": OPP, "Subject": "call", "Description": None}
    answers = {
        f"GET /Opportunity/{OPP}": record, f"PATCH /Opportunity/{OPP}": None,
        "POST /Task/": {"id": "00T000000000002AAA", "success": True, "errors": []},
        "GET /Task/00T000000000002AAA": task, "DELETE /Task/00T000000000002AAA": None,
    }  # fmt: skip
    answer(Org(answers))
    got = await sf.get_record(_ctx(), {"object": "Opportunity", "record_id": OPP})
    assert got == {
        "object": "Opportunity",
        "record": {"Id": OPP, "Name": "Big deal", "StageName": "Prospecting", "Amount": 12000},
        "untrusted": ["record.Name"],
    }
    moved = await sf.update_opportunity_stage(_ctx(), {"opportunity_id": OPP, "stage": "Closed Won", "amount_usd": 12000})
    assert moved == {"opportunity_id": OPP, "previous_stage": "Prospecting", "stage": "Closed Won", "amount_usd": 12000.0}
    assert await sf.add_task(_ctx(), {"what_id": OPP, "subject": "call"}) == {"task_id": "00T000000000002AAA", "what_id": OPP}
    deleted = await sf.delete_task(_ctx(), {"task_id": "00T000000000002AAA"})
    assert deleted == {"task_id": "00T000000000002AAA", "deleted": True, "what_id": OPP, "subject": "call", "description": ""}
