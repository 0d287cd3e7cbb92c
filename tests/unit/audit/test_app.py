"""Wiring details of the audit: which topics it reads (binary headers reaching it untouched: tests/unit/foundation/test_polling.py)."""

from __future__ import annotations

from services.audit.app import topic_pattern


def test_the_pattern_covers_exactly_the_prefix() -> None:
    import re

    pattern = re.compile(topic_pattern("test-1a.x."))
    assert pattern.match("test-1a.x.tools.new_tool.requests")
    assert not pattern.match("test-1a.xy.tasks")
    assert not pattern.match("other.test-1a.x.tasks")
