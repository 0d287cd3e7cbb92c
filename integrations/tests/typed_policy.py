"""Scripted governance that checks arg types first, as the policy does: the catalog's JSON Schema is strict.

Shared by the suites of the adapters that check args with their framework's (lax) validation before
proposing: `"900"` passes that check for a number, and the policy denies it `invalid_args`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from integrations.harness import TOOLS, rule
from schemas import ActionProposedData
from tidegate.client import MemoryTransport
from tidegate.client.scripted import ScriptedTidegate


def typed_rule(p: ActionProposedData) -> tuple[str, str]:
    """`rule`, after the schema check: an `amount_usd` that is not a JSON number is `invalid_args`."""
    amount = p.args.get("amount_usd", 0)
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return "deny", "invalid_args"
    return rule(p)


@pytest.fixture
async def typed_governance(bus: MemoryTransport) -> AsyncIterator[ScriptedTidegate]:
    """The harness's governance, deciding with `typed_rule` (use it instead of `governance`, never beside it)."""
    async with ScriptedTidegate(bus, typed_rule, topic_tools=TOOLS) as scripted:
        yield scripted
