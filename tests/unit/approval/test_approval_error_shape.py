"""Every error of the approval API is `{"detail": {"code", "message"}}` with a one-line message of at most ~500 characters."""

from __future__ import annotations

from typing import Any

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from services.approval._errors import MAX_MESSAGE


def one_error(answer: Any, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert set(detail) == {"code", "message"}
    assert detail["code"] == code
    assert "\n" not in detail["message"]
    assert len(detail["message"]) <= MAX_MESSAGE + 40
    return str(detail["message"])


async def test_a_bad_query_parameter_is_invalid_param_in_one_line(world: World) -> None:  # noqa: F811
    bob = bearer(world.tokens["bob"])
    for params in ({"limit": "abc"}, {"limit": "0"}, {"status": "bogus"}):
        message = one_error(await world.client.get("/api/v1/approvals", params=params, headers=bob), 422, "invalid_param")
        assert f"query parameter {next(iter(params))}" in message
    one_error(await world.client.get("/api/v1/report", params={"since_days": "-1"}, headers=bob), 422, "invalid_param")
    one_error(await world.client.post("/api/v1/tokens/rotate", params={"expires_in_days": "x"}, headers=bob), 422, "invalid_param")


async def test_a_bogus_status_is_refused_not_an_empty_list(world: World) -> None:  # noqa: F811
    await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    answer = await world.client.get("/api/v1/approvals", params={"status": "pendnig"}, headers=bearer(world.tokens["bob"]))
    assert "'pending'" in one_error(answer, 422, "invalid_param")


async def test_unknown_routes_and_methods_answer_in_the_one_shape(world: World) -> None:  # noqa: F811
    assert "/api/v1/nothing" in one_error(await world.client.get("/api/v1/nothing"), 404, "not_found")
    answer = await world.client.put("/api/v1/webhooks/endpoints/acme-chat", headers=bearer(world.tokens["bob"]))
    one_error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"]


async def test_an_error_never_echoes_a_huge_value(world: World) -> None:  # noqa: F811
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    huge = {"payee_id": "cus_1", "amount_usd": "9" * 500_000, "order_id": "O-1"}
    answer = await world.client.post(
        f"/api/v1/approvals/{record.approval_id}/approve",
        json={"action_digest": record.action_digest, "edited_args": huge},
        headers=bearer(world.tokens["bob"]),
    )
    assert "(cut," in one_error(answer, 422, "invalid_args")


async def test_the_documented_codes_of_the_routes_keep_their_shape(world: World) -> None:  # noqa: F811
    one_error(await world.client.get("/api/v1/approvals"), 401, "unauthenticated")
    one_error(await world.client.get("/api/v1/approvals/ap-none", headers=bearer(world.tokens["bob"])), 404, "not_found")
