"""The offline CrewAI example in examples/integrations runs and tells the story it promises."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "integrations"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai.*", "ignore::DeprecationWarning:pydantic.*")


def test_the_crewai_example_blocks_the_crew_for_a_human_and_runs_the_edited_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    story = importlib.import_module("crewai_crew").main()
    sys.modules.pop("crewai_crew", None)
    assert story == [
        "waiting: the crew is blocked on issue_refund (needs_human_approval)",
        'resumed: A human edited the arguments to {"payee_id": "cus_1", "amount_usd": 450.0} before it ran: refunded 450.00 to cus_1',
    ]
