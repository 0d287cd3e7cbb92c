"""`schemas.storable`: what a tool answered, made something the contract and PostgreSQL's text and jsonb can hold."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import ActionResultData, is_finite_json, storable

# Anything `json.loads` can hand back from an outside system's answer, including what PostgreSQL refuses.
_text = st.text(alphabet=st.sampled_from(["\x00", "\ud800", "\udfff", "a", "é"]) | st.characters(codec=None, categories=None), max_size=12)
_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**1100), max_value=2**1100) | st.floats() | _text
_answers = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=25,
)


def _postgres_could_store(value: object) -> bool:
    """UTF-8 text with no U+0000 in any string or key, and every number finite: what `jsonb` accepts."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except (ValueError, UnicodeEncodeError):
        return False
    strings, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return all("\x00" not in text for text in strings) and is_finite_json(value)


@given(_answers)
def test_whatever_a_tool_answered_becomes_storable_and_stays_so(answer: object) -> None:
    kept = storable(answer)
    assert _postgres_could_store(kept)
    assert storable(kept) == kept
    if _postgres_could_store(answer):
        assert kept is answer  # nothing to change: the same object, not a copy


def test_what_is_replaced_and_with_what() -> None:
    answer = {"tracking": "1Z\x00999", "carrier\x00": ["ups\ud800", math.nan, math.inf, 10**400, 12.5, None, True], "ok": "é"}
    assert storable(answer) == {"tracking": "1Z\ufffd999", "carrier\ufffd": ["ups\ufffd", None, None, None, 12.5, None, True], "ok": "é"}
    assert storable("a\x00b") == "a\ufffdb"
    assert storable(7) == 7


def test_a_cleaned_answer_passes_the_contract_that_refuses_the_answer_as_it_came() -> None:
    dirty = {"body": "x\x00", "n": math.nan}
    data = {"action_id": "a", "task_id": "t", "tenant_id": "acme", "step": 1, "tool": "get_ticket", "status": "succeeded"}
    data |= {"attempts": 1, "duration_ms": 3.0}
    with pytest.raises(ValidationError, match="finite"):
        ActionResultData.model_validate({**data, "result": dirty})
    assert ActionResultData.model_validate({**data, "result": storable(dirty)}).result == {"body": "x\ufffd", "n": None}
