"""No request makes the approval service read a body past its bound, signed in or not: 413 `too_large`, by length and by stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from servicekit import KitSettings
from services.approval._limits import MAX_BODY_BYTES
from services.approval.app import build

CHUNK = 64 * 1024
ATTACK = 5 * 1024 * 1024


@dataclass
class Trickle:
    """A chunked body (no Content-Length) of `size` bytes that counts how much of it the service pulled."""

    size: int
    pulled: int = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.size:
            self.pulled += CHUNK
            yield b'{"x":"' + b"z" * (CHUNK - 6) if self.pulled == CHUNK else b"z" * CHUNK


async def test_a_chunked_5mb_body_to_the_unauthenticated_callback_is_refused_before_any_byte_is_read(world: World) -> None:  # noqa: F811
    body = Trickle(ATTACK)
    answer = await world.client.post("/api/v1/callbacks/acme/nothing", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 401
    assert answer.json()["detail"]["code"] == "missing_headers"
    assert body.pulled == 0


async def test_a_chunked_5mb_body_with_webhook_headers_is_cut_off_at_the_bound(world: World) -> None:  # noqa: F811
    body = Trickle(ATTACK)
    signed_looking = {"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}
    answer = await world.client.post("/api/v1/callbacks/acme/nothing", content=body, headers=signed_looking)
    assert answer.status_code == 413
    assert answer.json()["detail"]["code"] == "too_large"
    assert body.pulled <= MAX_BODY_BYTES + CHUNK


async def test_a_chunked_5mb_approve_is_refused_413_and_the_handler_never_gets_it(world: World) -> None:  # noqa: F811
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    body = Trickle(ATTACK)
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    answer = await world.client.post(url, content=body, headers=bearer(world.tokens["bob"]))
    assert answer.status_code == 413, answer.text
    assert answer.json()["detail"]["code"] == "too_large"
    assert body.pulled <= MAX_BODY_BYTES + CHUNK
    assert world.bus.types() == ["tidegate.approval.requested"]  # nothing was decided
    assert (await world.repo.get(record.approval_id)) == record


async def test_a_declared_length_over_the_bound_is_refused_before_reading(world: World) -> None:  # noqa: F811
    body = Trickle(2 * CHUNK)
    headers = {"content-length": str(MAX_BODY_BYTES + 1), "content-type": "application/json"}
    answer = await world.client.post("/api/v1/approvals/ap-x/reject", content=body, headers=headers | bearer(world.tokens["bob"]))
    assert answer.status_code == 413
    assert answer.json() == {"detail": {"code": "too_large", "message": answer.json()["detail"]["message"]}}
    assert body.pulled == 0


async def test_edited_args_near_the_bound_still_fit(world: World) -> None:  # noqa: F811
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    url = f"/api/v1/approvals/{record.approval_id}/approve"
    comment = "c" * 4000
    edited = {"payee_id": "cus_1", "amount_usd": 400.0, "order_id": "O-" + "1" * (MAX_BODY_BYTES // 2)}
    answer = await world.client.post(
        url, json={"action_digest": record.action_digest, "comment": comment, "edited_args": edited}, headers=bearer(world.tokens["bob"])
    )
    assert answer.status_code != 413, answer.text


async def test_the_service_bounds_bodies_by_the_deployments_event_bound(tmp_path: Path) -> None:
    """`tidegate up` builds the API with the bound its consumers read events by (`TIDEGATE_MAX_VALUE_BYTES`), not a fixed 1 MiB."""
    (tmp_path / "keys").mkdir(exist_ok=True)  # a service refuses a keys folder that is not there
    process = build(KitSettings(keys_dir=tmp_path / "keys", tools_dir=tmp_path / "no-tools", max_value_bytes=4096))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=process.http_app), base_url="http://approvals.test") as client:
        refused = await client.post("/api/v1/approvals/ap-1/approve", content=b"x" * 5000, headers={"content-type": "application/json"})
    assert (refused.status_code, refused.json()["detail"]["code"]) == (413, "too_large")
