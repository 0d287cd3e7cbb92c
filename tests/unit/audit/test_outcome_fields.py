"""The outcome and reason codes the audit reads from each kind of event: the columns `audit search` filters and `explain` reads.

Read for every recorded event, so the reading is cut for speed (the outcome a type implies is remembered per type,
reasons are looked for only where an event can carry them); these are the answers it must keep giving.
"""

from __future__ import annotations

from typing import Any

from services.audit.records import _fields

CASES: list[tuple[str | None, dict[str, Any], str | None, list[str]]] = [
    ("tidegate.action.proposed", {}, "proposed", []),
    ("tidegate.action.decided", {"outcome": "deny", "reasons": [{"code": "payee_unknown"}, {"x": 1}, "y"]}, "deny", ["payee_unknown"]),
    ("tidegate.action.succeeded", {"status": "succeeded"}, "succeeded", []),
    ("tidegate.tool.reply", {"ok": True}, "ok", []),
    ("tidegate.tool.reply", {"ok": False}, "error", []),
    ("tidegate.tool.reply", {"ok": "yes"}, "reply", []),
    ("tidegate.event.rejected", {"code": "bad_signature"}, "rejected", ["bad_signature"]),
    ("tidegate.event.rejected", {"code": "c", "reasons": [{"code": "r"}]}, "rejected", ["r", "c"]),
    ("tidegate.task.failed", {"reason": "budget_exceeded"}, "failed", ["budget_exceeded"]),
    ("tidegate.task.failed", {}, "failed", []),
    ("com.example.other", {"reasons": [{"code": "z"}]}, None, ["z"]),
    ("com.example.other", {"status": 3}, None, []),
    (None, {"outcome": "o"}, "o", []),
    (None, {}, None, []),
]


def test_each_kind_of_event_gives_its_outcome_and_reasons() -> None:
    for event_type, data, outcome, reasons in CASES:
        doc = {"type": event_type, "data": data} if event_type is not None else {"data": data}
        fields = _fields(doc, [])
        assert (fields[6], fields[7]) == (outcome, reasons), (event_type, data)


def test_the_outcome_of_a_type_is_the_same_read_twice() -> None:
    for _ in range(2):
        assert _fields({"type": "tidegate.audit.checkpoint", "data": {}}, [])[6] == "checkpoint"
        assert _fields({"type": "tidegate.x" + "y" * 300, "data": {}}, [])[6] == "x" + "y" * 49
