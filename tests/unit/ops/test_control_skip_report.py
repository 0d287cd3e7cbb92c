"""A `control` record the services would refuse is reported, and its text (which whoever wrote it chose) is shown as text.

Security review 3: the skip reason quotes the record's key id; `[/]` there crashed `tidegate killswitch list|set|clear`
(and `budget`, `autonomy`, `ops`, which read `control` the same way) with a MarkupError, and a `[link=…]` key id showed a
disguised link. `control` is compacted by key, so such a record stays.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from servicekit import ControlState
from tidegate.commands import killswitch


def test_a_skipped_records_forged_text_is_shown_as_text(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    async def read(kit: Any, name: str, state: Any, on_skip: Any = None) -> ControlState:
        on_skip(3, "unknown_key: key '[/]' is not trusted")
        on_skip(4, "unknown_key: key '[link=https://evil.example]ops[/link]\nfake line' is not trusted")
        return ControlState()

    monkeypatch.setattr(killswitch, "read_trusted_control", read)
    asyncio.run(killswitch.read_control(object()))  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "key '[/]' is not trusted" in err
    assert "[link=https://evil.example]ops[/link]" in err  # the markup as text, not a link
    assert "\\nfake line" in err  # the record's line break shown escaped: it starts no line of its own


def test_junk_on_control_is_counted_in_one_line_not_printed_record_by_record(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever holds `ops.properties` appended 100,000 unsigned records to `control` (kept forever): `killswitch list`
    printed ~800,000 lines of validation errors before it answered (bounds F4). The first few are shown, the rest counted."""

    async def read(kit: Any, name: str, state: Any, on_skip: Any = None) -> ControlState:
        for offset in range(100_000):
            on_skip(offset, "invalid: 1 validation error for tagged-union" if offset % 4 else "signature_missing: not signed")
        return ControlState()

    monkeypatch.setattr(killswitch, "read_trusted_control", read)
    asyncio.run(killswitch.read_control(object()))  # type: ignore[arg-type]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) <= killswitch.SKIPS_SHOWN + 3, lines[:10]
    assert "skipped control record at offset 0: signature_missing" in lines[0]
    summary = " ".join(" ".join(lines[killswitch.SKIPS_SHOWN :]).split())  # as one line, however the console wrapped it
    assert "99995 more control records, up to offset 99999" in summary
    assert "(invalid 74997, signature_missing 24998)" in summary
