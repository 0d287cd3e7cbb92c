"""HTTP tools: the tenant's credential, the idempotency key, timeouts, and retries of retryable errors only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from servicekit import Bus, KitSettings, ServiceProcess
from services.executor.app import build

LABEL = {"order_id": "O-5008", "service": "express", "weight_kg": 12.5}


def label_tool(url: str, tenant: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "create_shipping_label",
        "description": "Buy a shipping label.",
        "risk": "write_low",
        "kind": "http",
        "url": url,
        "accepts_idempotency_key": True,
        "timeout_s": 1.0,
        "retry": {"max_attempts": 3, "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
        "cost_usd": 0.05,
        "credential_scopes": {tenant: "shipping:labels"},
        "args_schema": {"type": "object"},
        **overrides,
    }


@pytest.fixture
async def start_executor(kit: KitSettings) -> AsyncIterator[Callable[..., Any]]:
    services: list[ServiceProcess] = []

    async def start(tools_dir: Path, environ: dict[str, str] | None = None) -> ServiceProcess:
        svc = build(kit=kit.model_copy(update={"tools_dir": tools_dir}), environ=environ or {})
        await svc.start()
        services.append(svc)
        return svc

    yield start
    for svc in services:
        await svc.stop()


def secret_env(tenant: str, secret: str) -> dict[str, str]:
    from services.executor.credentials import env_var_name

    return {env_var_name(tenant, "shipping:labels"): secret}


async def test_5xx_is_retried_with_the_same_key_and_credential_until_it_succeeds(
    start_executor: Any, http_stub: Any, make_tools_dir: Any, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any
) -> None:
    answers = iter(
        [(502, {"error": "bad gateway"}), (500, {"error": "carrier hiccup"}), (201, {"tracking": "1Z999", "label_url": "https://l/1"})]
    )

    async def carrier(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return next(answers)

    stub = await http_stub(carrier)
    await start_executor(make_tools_dir(label_tool(f"{stub.url}/labels", tenant)), secret_env(tenant, "sk_live_acme"))
    event = authorize(tenant, "create_shipping_label", LABEL)
    await publisher.publish("actions.authorized", event)
    [result] = await wait_for(lambda: listener.for_action(event.data.action_id), what="the label")
    assert result.type == "tidegate.action.succeeded"
    assert result.data.result == {"tracking": "1Z999", "label_url": "https://l/1"}
    assert result.data.attempts == 3
    assert result.data.cost.usd == pytest.approx(0.15)
    assert [r["headers"]["idempotency-key"] for r in stub.requests] == [event.data.action_id] * 3
    assert {r["headers"]["authorization"] for r in stub.requests} == {"Bearer sk_live_acme"}
    assert stub.requests[0]["json"] == LABEL


async def test_4xx_is_final_and_a_missing_credential_never_calls(
    start_executor: Any, http_stub: Any, make_tools_dir: Any, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any
) -> None:
    async def carrier(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 422, {"error": "weight over the carrier's limit"}

    stub = await http_stub(carrier)
    tools = make_tools_dir(
        label_tool(f"{stub.url}/labels", tenant), {**label_tool(f"{stub.url}/x", "another-tenant"), "name": "no_secret_tool"}
    )
    await start_executor(tools, secret_env(tenant, "sk"))
    rejected = authorize(tenant, "create_shipping_label", LABEL)
    no_secret = authorize("another-tenant", "no_secret_tool", LABEL)
    await publisher.publish("actions.authorized", rejected)
    await publisher.publish("actions.authorized", no_secret)
    [result] = await wait_for(lambda: listener.for_action(rejected.data.action_id), what="the 422")
    [missing] = await wait_for(lambda: listener.for_action(no_secret.data.action_id), what="the missing credential")
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.failed", "http_422", 1)
    assert result.data.error.message == "weight over the carrier's limit"
    assert not result.data.error.retryable
    assert (missing.type, missing.data.error.type) == ("tidegate.action.failed", "missing_credential")
    assert len(stub.requests) == 1


async def test_an_answer_postgresql_cannot_store_still_gives_the_call_its_result(
    start_executor: Any,
    http_stub: Any,
    make_tools_dir: Any,
    publisher: Bus,
    listener: Any,
    authorize: Any,
    tenant: str,
    wait_for: Any,
    pool: Any,
) -> None:
    """A system of record answers with U+0000, a lone surrogate and NaN (json.dumps writes them; httpx reads them back).

    The label was bought: the call happened, so its result must be kept and published. Before, storing it failed on
    PostgreSQL's refusal of U+0000, the authorization was dead-lettered as a handler error, and the claim stayed
    `running` with no result for the planner, the policy's budget or the audit.
    """
    answers = iter(
        [
            (201, {"tracking": "1Z\u0000999", "carrier\u0000": "ups\ud800", "weight_kg": float("nan"), "label_url": "https://l/1"}),
            (422, {"error": "weight over\u0000the limit \ud800"}),
        ]
    )

    async def carrier(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return next(answers)

    stub = await http_stub(carrier)
    await start_executor(make_tools_dir(label_tool(f"{stub.url}/labels", tenant)), secret_env(tenant, "sk"))
    bought, refused = authorize(tenant, "create_shipping_label", LABEL), authorize(tenant, "create_shipping_label", LABEL)
    await publisher.publish("actions.authorized", bought)
    [result] = await wait_for(lambda: listener.for_action(bought.data.action_id), what="the label's result")
    await publisher.publish("actions.authorized", refused)
    [failure] = await wait_for(lambda: listener.for_action(refused.data.action_id), what="the refusal's result")
    assert result.type == "tidegate.action.succeeded"
    assert result.data.result == {"tracking": "1Z\ufffd999", "carrier\ufffd": "ups\ufffd", "weight_kg": None, "label_url": "https://l/1"}
    assert (failure.type, failure.data.error.type) == ("tidegate.action.failed", "http_422")
    assert failure.data.error.message == "weight over\ufffdthe limit \ufffd"
    assert listener.dead_codes(bought.data.action_id) == []
    assert listener.dead_codes(refused.data.action_id) == []
    kept = await pool.fetch(
        "SELECT status FROM executor.actions WHERE action_id = ANY($1::text[]) ORDER BY status",
        [bought.data.action_id, refused.data.action_id],
    )
    assert [r["status"] for r in kept] == ["failed", "succeeded"]
    assert len(stub.requests) == 2


async def test_a_timeout_is_retried_for_a_keyed_tool_but_ends_unknown_for_one_without_a_key(
    start_executor: Any, http_stub: Any, make_tools_dir: Any, publisher: Bus, listener: Any, authorize: Any, tenant: str, wait_for: Any
) -> None:
    calls: dict[str, int] = {}

    async def slow_first_time(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = request["headers"]["idempotency-key"]
        calls[key] = calls.get(key, 0) + 1
        if calls[key] == 1:
            await asyncio.sleep(5)  # longer than the tool's 1 s timeout
        return 200, {"tracking": "1Z1"}

    stub = await http_stub(slow_first_time)
    unkeyed = {**label_tool(f"{stub.url}/labels", tenant), "name": "legacy_label", "accepts_idempotency_key": False}
    await start_executor(make_tools_dir(label_tool(f"{stub.url}/labels", tenant), unkeyed), secret_env(tenant, "sk"))
    keyed_event = authorize(tenant, "create_shipping_label", LABEL)
    legacy_event = authorize(tenant, "legacy_label", LABEL)
    await publisher.publish("actions.authorized", keyed_event)
    await publisher.publish("actions.authorized", legacy_event)
    [keyed] = await wait_for(lambda: listener.for_action(keyed_event.data.action_id), what="the keyed result")
    [legacy] = await wait_for(lambda: listener.for_action(legacy_event.data.action_id), what="the legacy result")
    assert (keyed.type, keyed.data.attempts) == ("tidegate.action.succeeded", 2)
    assert keyed.data.duration_ms >= 1000
    assert (legacy.type, legacy.data.error.type, legacy.data.attempts) == ("tidegate.action.unknown", "timeout", 1)
    assert calls == {keyed_event.data.action_id: 2, legacy_event.data.action_id: 1}
