"""The chat's link opened on a phone with a slow network: what the page asks before the approver sees what to decide."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

import pytest
from browser import ensure_chromium, page_in_chromium
from playwright.async_api import Route, expect
from test_approval_e2e import Stack, stack  # noqa: F401  (the fixture)

HELD_S = 15  # how long an answer is held back waiting for the others to be asked (the page then goes on)


@pytest.mark.timeout(300)
async def test_a_link_opened_on_a_slow_phone_asks_everything_it_needs_in_one_round_trip(stack: Stack, wait_for: Any) -> None:  # noqa: F811
    """approver2am, at 2 a.m. on a phone at 2 s a round trip: the page asked who the link is, then the review reasons,
    then the queue, then the request, each once the one before had answered: ~12 s before the refund showed. Every
    answer is held back here until the page has asked for all four: it must ask them at once, and then show the request."""
    executable, how = ensure_chromium()
    if executable is None:
        pytest.skip(how)
    _, item = await stack.one_pending_refund(wait_for)  # bob holds a live token: a link dies with its approver's tokens
    wanted = {"/api/v1/me", "/api/v1/review-reasons", "/api/v1/approvals", f"/api/v1/approvals/{item['approval_id']}"}
    asked: list[str] = []
    all_asked = asyncio.Event()
    before_any_answer: list[str] = []

    async def hold(route: Route) -> None:
        asked.append(urlsplit(route.request.url).path)
        if wanted <= set(asked):
            all_asked.set()
        with contextlib.suppress(TimeoutError):  # the page asked one after another: it goes on, and the test says so
            await asyncio.wait_for(all_asked.wait(), HELD_S)
        if not before_any_answer:
            before_any_answer.extend(asked)
        await route.continue_()

    async with page_in_chromium(executable, width=390, height=844) as page:
        await page.route("**/api/v1/**", hold)
        await page.goto(stack.bobs_link(item["approval_id"]))
        await expect(page.locator("#d-subject")).to_have_text("900.00 USD · to cus_1 · order_id O-1")
        await expect(page.locator("#approve")).to_be_enabled()
        assert set(before_any_answer) == wanted, f"asked before the first answer: {before_any_answer}"
        assert sorted(asked) == sorted(wanted), asked  # nothing asked twice, nothing more (a link has no queue age)
