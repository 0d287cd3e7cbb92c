"""An operator exports evidence from a deployment whose audit service has not signed its first checkpoint yet.

Before, `tidegate audit export` crashed with a Python traceback (`IndexError: list index out of range`) while building
the message meant for the case where checkpoints exist; it now says why nothing can be exported and when to run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from services.audit.repository import InMemoryAuditLog
from tidegate.cli import app


def test_an_export_before_the_first_checkpoint_says_so_without_a_traceback(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr("tidegate.commands._audit_archive.with_audit_log", lambda go: go(InMemoryAuditLog()))
    out = tmp_path / "evidence.jsonl.gz"
    result = CliRunner().invoke(app, ["audit", "export", "--since", "1h", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, IndexError), result.exception
    said = " ".join(result.output.split())
    assert "no checkpoint is signed yet" in said
    assert not out.exists()
