"""The LLM strategy through litellm against a local OpenAI-compatible HTTP stub (real HTTP, loopback only)."""

from __future__ import annotations

import json

import pytest
from llm_stub import Stub

from services.planner.isolation import UNTRUSTED_NOTICE
from services.planner.strategies import LlmStrategy, catalog_tools_for_model
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

INJECTION = next(t for t in TICKETS if t.ticket_id == "T-1005")


def strategy(catalog, stub: Stub, timeout_s: float = 10.0) -> LlmStrategy:
    from services.planner.llm import LiteLLMClient

    client = LiteLLMClient(api_base=stub.url, api_key="test-key", timeout_s=timeout_s)
    return LlmStrategy(catalog, client, cheap_model="openai/gpt-4o-mini", strong_model="openai/gpt-4o")


async def test_routes_models_isolates_untrusted_content_and_sends_the_catalog_schemas(catalog, stub):
    task = ticket_task(INJECTION, task_id="t-llm-1")
    stub.reply("gpt-4o-mini", content='{"category": "refund", "tags": ["refund"]}', tokens=(300, 12))
    stub.reply(
        "gpt-4o",
        tool_calls=[
            ("tag_ticket", {"ticket_id": "T-1005", "tags": ["refund"]}),
            ("wire_money", {"to": "attacker"}),
            ("issue_refund", {"payee_id": "attacker_payout_99", "amount_usd": 950, "order_id": "O-5005"}),
            ("draft_reply", "{not json"),
            ("add_internal_note", {"ticket_id": "T-1005", "note": "see\u0000attached"}),  # a U+0000 the contract refuses
        ],
        tokens=(1200, 80),
    )
    result = await strategy(catalog, stub).plan(task)

    classify, planning = (r["body"] for r in stub.requests)
    assert [r["path"] for r in stub.requests] == ["/v1/chat/completions"] * 2
    assert (classify["model"], planning["model"]) == ("gpt-4o-mini", "gpt-4o")
    assert "tools" not in classify
    assert planning["tools"] == catalog_tools_for_model(catalog)
    assert {t["function"]["name"] for t in planning["tools"]} == set(catalog)
    for body in (classify, planning):
        system, user = body["messages"]
        assert system["role"] == "system"
        assert user["role"] == "user"
        assert UNTRUSTED_NOTICE in system["content"]
        assert INJECTION.body not in system["content"]
        assert "attacker_payout_99" not in json.dumps(body.get("tools", []))
        assert f'<untrusted_data source="body">\n{INJECTION.body}\n</untrusted_data>' in user["content"]
        assert f'<untrusted_data source="subject">\n{INJECTION.subject}\n</untrusted_data>' in user["content"]
    assert "refund" in planning["messages"][0]["content"]  # the cheap model's category routes the plan

    assert [s.tool for s in result.steps] == ["tag_ticket", "issue_refund"]
    assert result.dropped == ["wire_money", "draft_reply(unparseable arguments)", "add_internal_note(arguments no event can carry)"]
    refund = result.steps[1]
    assert refund.tainted_args == ["payee_id", "amount_usd"]  # the order id is vouched for by the trusted fields
    assert [s.tool for s in refund.on_deny] == ["add_internal_note", "draft_reply"]
    cost = result.steps[0].cost
    assert (cost.tokens_in, cost.tokens_out) == (1500, 92)
    expected = 300 * 0.15e-6 + 12 * 0.6e-6 + 1200 * 2.5e-6 + 80 * 10e-6  # litellm's local price map
    assert cost.usd == pytest.approx(expected, rel=1e-6)
    assert cost.model == "openai/gpt-4o-mini+openai/gpt-4o"


async def test_an_unusable_classification_falls_back_to_keywords(catalog, stub):
    stub.reply("gpt-4o-mini", content="I think this is about keyboards")
    stub.reply("gpt-4o", tool_calls=[("tag_ticket", {"ticket_id": "T-1005", "tags": ["hardware"]})])
    result = await strategy(catalog, stub).plan(ticket_task(INJECTION))
    assert "classified as refund" in stub.requests[1]["body"]["messages"][0]["content"]
    assert [s.tool for s in result.steps] == ["tag_ticket"]


async def test_a_model_timeout_fails_closed(catalog, stub):
    stub.delay_s = 1.5
    stub.reply("gpt-4o-mini", content='{"category": "general"}')
    result = await strategy(catalog, stub, timeout_s=0.3).plan(ticket_task(INJECTION))
    assert result.steps == []
    assert result.error == "model_unavailable"
    assert len(stub.requests) == 1  # no hidden retry


@pytest.mark.parametrize(
    ("classification", "confidence"),
    [
        ('{"category": "refund", "confidence": 0.35}', 0.35),  # what the model states
        ('{"category": "refund"}', 0.8),  # a usable answer that states none
        ("I think it is about a refund", 0.4),  # unusable: keywords chose the category
        ('{"category": "refund", "confidence": 7}', 1.0),  # clamped
    ],
)
async def test_a_models_plan_carries_a_confidence_derived_from_its_classification(catalog, stub, classification, confidence):
    stub.reply("gpt-4o-mini", content=classification)
    stub.reply("gpt-4o", tool_calls=[("tag_ticket", {"ticket_id": "T-1005", "tags": ["refund"]})])
    result = await strategy(catalog, stub).plan(ticket_task(INJECTION, task_id="t-llm-c"))
    assert [s.confidence for s in result.steps] == [confidence]
