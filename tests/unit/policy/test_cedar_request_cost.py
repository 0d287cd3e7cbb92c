"""What a decision asks of Cedar, cut without changing any answer: the context's text made once.

Each decision paid cedarpy's `json.dumps` of a ~1.3 KB context (and orjson's again for the answers the pack remembers);
the text is now made once, by orjson, for both (bench.policy_cpu, docs/benchmarks.md). These tests hold the cut to what
a pack author relies on: the same answer as Cedar gives with the context as a dict.
"""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest

from servicekit import REPO_ROOT, ToolCatalog
from services.policy import engine
from services.policy.engine import Controls, decide
from services.policy.facts import Call, History
from services.policy.pack import PackSource, TenantSettings, compile_pack

PACK_DIR = REPO_ROOT / "policies" / "default"
CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
ONBOARDED = Controls(tenant=TenantSettings())


def test_cedar_is_handed_the_context_as_text_and_answers_as_with_the_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    pack = compile_pack(PackSource.from_dir(PACK_DIR), CATALOG)
    asked: list[dict[str, Any]] = []
    real = cedarpy.is_authorized

    def spy(request: dict[str, Any], policies: Any, entities: Any) -> Any:
        asked.append(request)
        return real(request, policies, entities)

    monkeypatch.setattr(engine.cedarpy, "is_authorized", spy)
    call = Call("acme", "t-1", "issue_refund", {"payee_id": "cus_1001", "amount_usd": 15.0, "order_id": "O-1"}, "a", mode="autonomous")
    verdict = decide(pack, call, History(payee_known=True), ONBOARDED)
    [request] = asked
    assert isinstance(request["context"], str)  # not a dict for cedarpy to `json.dumps` at every call
    as_dict = request | {"context": json.loads(request["context"])}
    policies = pack.policy_set_for("acme")
    with_dict, with_text = real(as_dict, policies, pack.entities).diagnostics, real(request, policies, pack.entities).diagnostics
    assert sorted(with_dict.reasons) == sorted(with_text.reasons)
    assert with_text.reasons
    assert not with_text.errors
    assert verdict.codes == ["draft_mode"]  # the tenant's default settings: autonomous is not allowed


def test_a_context_orjson_cannot_write_is_written_as_cedarpy_would() -> None:
    for context in ({"n": 2**70}, {"s": "half a pair \ud800"}):
        assert engine._context_text(context) == json.dumps(context)
    assert json.loads(engine._context_text({"s": "é", "n": 1, "b": True, "l": ["x"]})) == {"s": "é", "n": 1, "b": True, "l": ["x"]}
