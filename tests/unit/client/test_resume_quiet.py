"""A wait for earlier proposals cut off at its timeout leaves nothing behind: no future whose exception asyncio logs on stderr.

An MCP gateway on stdio answers a pending call or a poll this way every time; a desktop host shows the gateway's stderr.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from tests.unit.client.test_mcp_gateway import rule
from tidegate.client import MemoryTransport, Tidegate
from tidegate.client.scripted import ScriptedTidegate


async def test_a_wait_cut_off_at_its_timeout_leaves_nothing_for_asyncio_to_log() -> None:
    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: logged.append(context))
    try:
        bus = MemoryTransport()
        async with ScriptedTidegate(bus, rule), Tidegate(transport=bus) as client:  # governance that never heard of these ids
            with pytest.raises(TimeoutError):
                await client.resume("mcp-never-answered", timeout_s=0.05)
            with pytest.raises(TimeoutError):
                await client.resume("mcp-never-answered", position=None, timeout_s=0.05)
            assert await client.resume_many([("a", None), ("b", None)], timeout_s=0.05) == {}
            gc.collect()  # what asyncio logs of an unretrieved exception, it logs when the future is collected
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert [context.get("message") for context in logged] == []
