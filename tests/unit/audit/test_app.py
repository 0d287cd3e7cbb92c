"""Wiring details that keep a batch from failing before the audit sees it."""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord

from servicekit.rawbatch import tolerant_parser
from services.audit.app import topic_pattern


def _record(headers: list[tuple[str, bytes | None]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("tidegate.tasks", 0, 0, 0, 0, None, b"{}", None, 0, 2, headers)


class _Message:
    raw_message: Any = None


async def test_binary_headers_reach_the_handler_untouched() -> None:
    seen: list[Any] = []

    async def strict_parser(records: Any) -> _Message:
        for r in records:
            for _, v in r.headers:
                v.decode()  # what FastStream's own batch parser does
        seen.append(records)
        msg = _Message()
        msg.raw_message = records
        return msg

    batch = (_record([("ok", b"yes")]), _record([("bin", b"\xff"), ("none", None)]))
    message = await tolerant_parser(batch, strict_parser)
    assert message.raw_message is batch
    assert seen[0][1].headers == [("bin", b""), ("none", b"")]
    plain = (_record([("ok", b"yes")]),)
    assert (await tolerant_parser(plain, strict_parser)).raw_message is plain


def test_the_pattern_covers_exactly_the_prefix() -> None:
    import re

    pattern = re.compile(topic_pattern("test-1a.x."))
    assert pattern.match("test-1a.x.tools.new_tool.requests")
    assert not pattern.match("test-1a.xy.tasks")
    assert not pattern.match("other.test-1a.x.tasks")
