"""`tidegate submit` and `tidegate propose` refuse, before anything is published, JSON no Tidegate service can store."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tidegate.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        ["submit", "--input", '{"ticket_id": "T-1", "body": "refund me\\u0000"}'],
        ["propose", "--tool", "tag_ticket", "--args", '{"ticket_id": "T-1", "tags": ["a\\u0000"]}'],
        ["propose", "--tool", "tag_ticket", "--args", '{"ticket\\u0000": "T-1"}'],
    ],
)
def test_a_nul_in_the_json_is_refused_with_why_before_publishing(command: list[str]) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code != 0
    assert "U+0000" in result.output
    assert "Traceback" not in result.output


def test_a_backslash_before_u0000_is_text_not_a_nul() -> None:
    from tidegate.commands.clients import _json_arg

    assert _json_arg('{"path": "C:\\\\u0000"}', "--input") == {"path": "C:\\u0000"}
