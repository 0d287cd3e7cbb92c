"""The offline examples in examples/integrations run and tell the story they promise."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "integrations"


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("langgraph_agent", "refunded 900.00 to cus_1"),
        ("openai_agents_agent", "resumed: Refunded."),
        ("pydantic_ai_agent", "refunded 450.00 to cus_1"),
        ("agent_framework_agent", "Done: refunded 900.00 to cus_1"),
        ("temporal_activity", "completed: executed re_1 (900.00 USD)"),
        ("step_functions_bridge", "finished: SUCCEEDED executed re_1"),
    ],
)
async def test_an_offline_example_pauses_for_a_human_and_finishes(module: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    story = await importlib.import_module(module).main()
    sys.modules.pop(module, None)
    assert len(story) == 2
    assert expected in story[1]
