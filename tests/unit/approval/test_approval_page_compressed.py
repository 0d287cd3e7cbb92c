"""The approver page and the API's reads go gzipped to a phone that asks for it; a POST's answer never does."""

from __future__ import annotations

import gzip

from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

from services.approval._page import PAGE

GZIP = {"Accept-Encoding": "gzip"}


async def _wire(world: World, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:  # noqa: F811
    """Status, headers and the bytes as they crossed the wire (not decoded)."""
    async with world.client.stream(method, path, headers=headers) as answer:
        return answer.status_code, dict(answer.headers), b"".join([chunk async for chunk in answer.aiter_raw()])


async def test_the_page_reaches_a_phone_gzipped_when_it_asks(world: World) -> None:  # noqa: F811
    """approver2am: the ~60 KB page went uncompressed over a phone's 400 kbit/s (over a second of the ~12 s to the request)."""
    status, headers, raw = await _wire(world, "GET", "/", GZIP)
    assert status == 200
    assert headers.get("content-encoding") == "gzip"
    assert gzip.decompress(raw).decode() == PAGE.read_text()
    assert len(raw) < len(PAGE.read_bytes()) / 3
    assert "Content-Security-Policy" in {k.title() for k in headers}  # the page's headers stay

    _, plain, body = await _wire(world, "GET", "/", {"Accept-Encoding": "identity"})  # a client that does not ask: as it is
    assert "content-encoding" not in plain
    assert body.decode() == PAGE.read_text()


async def test_a_read_is_gzipped_and_a_decisions_answer_is_not(world: World) -> None:  # noqa: F811
    """A request's detail (a read, ~9 KB) goes gzipped; a POST's answer, which may hold a secret made for the caller beside
    text the caller sent (what a compression side channel needs), goes as it is."""
    record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
    assert record is not None
    status, headers, raw = await _wire(world, "GET", f"/api/v1/approvals/{record.approval_id}", GZIP | bearer(world.tokens["bob"]))
    assert (status, headers.get("content-encoding")) == (200, "gzip")
    assert gzip.decompress(raw).startswith(b"{")

    status, headers, raw = await _wire(world, "POST", f"/api/v1/approvals/{record.approval_id}/reject", GZIP | bearer(world.tokens["bob"]))
    assert status == 200, raw
    assert len(raw) > 1000  # long enough that a GZipMiddleware over every answer would have compressed it
    assert "content-encoding" not in headers
