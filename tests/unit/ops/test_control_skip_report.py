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
