"""The offline AutoGen example in examples/integrations runs and tells the story it promises."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "integrations"


async def test_the_autogen_example_waits_for_a_human_and_runs_the_edited_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    story = await importlib.import_module("autogen_agent").main()
    sys.modules.pop("autogen_agent", None)
    assert story[0] == "waiting: issue_refund needs a human (needs_human_approval)"
    assert story[1].endswith("refunded 450.00 to cus_1")
