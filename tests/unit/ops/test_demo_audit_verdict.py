"""The demo's last line says how much of the audit chain was checked, and never "verified" of nothing signed (auditor1 F5)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from rich.console import Console

from tidegate.demo import run as demo


def _verdict(monkeypatch: pytest.MonkeyPatch, stdout: str, returncode: int = 0) -> str:
    def fake_run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, returncode, stdout=stdout, stderr="")

    monkeypatch.setattr(demo.subprocess, "run", fake_run)
    return demo._verify_audit(Console(file=None, quiet=True))


def test_no_checkpoint_is_intact_not_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    out = "checked 155 rows in 40 chain(s) and 0\ncheckpoint(s) in 0.02 s (7,750 rows/s)\nintact: every chain and checkpoint checks out\n"
    assert _verdict(monkeypatch, out) == "intact (155 rows; no checkpoint signed yet)"


def test_the_checkpoints_verified_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    out = "checked 209 rows in 40 chain(s) and 3 checkpoint(s) in 0.02 s (9,000 rows/s)\n"
    assert _verdict(monkeypatch, out) == "intact (209 rows; 3 checkpoint(s) verified)"


def test_a_failed_verify_is_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _verdict(monkeypatch, "BROKEN: ...", returncode=1) == "FAILED (exit 1)"
