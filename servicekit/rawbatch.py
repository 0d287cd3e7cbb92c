"""A polled batch handed to a handler as raw aiokafka records, whatever their headers hold.

FastStream's batch parser decodes every header value as UTF-8: one binary header from a plain Kafka
client would fail the whole batch before any handler runs (and, since a failed batch is rewound,
forever). Every consumer of the kit and the audit uses these instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["raw_decoder", "tolerant_parser"]


def _utf8(value: bytes | None) -> bool:
    if value is None:
        return False
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


async def tolerant_parser(records: Any, original: Any) -> Any:
    """Parse a batch whose headers may not be UTF-8, keeping the real records raw.

    FastStream's batch parser decodes header values as UTF-8 and would fail the whole batch on one
    binary header; it parses a copy with such headers blanked instead.
    """
    try:
        return await original(records)  # the common case, without scanning every header first
    except (UnicodeDecodeError, AttributeError):  # a binary header, or a header without a value
        pass
    batch = records if isinstance(records, tuple | list) else (records,)
    safe = tuple(dataclasses.replace(r, headers=[(k, v if _utf8(v) else b"") for k, v in r.headers]) for r in batch)
    message = await original(safe)
    message.raw_message = records
    return message


async def raw_decoder(message: Any) -> Any:
    """The handler reads raw records; FastStream's default decoder would also decode headers as UTF-8."""
    return message.body
