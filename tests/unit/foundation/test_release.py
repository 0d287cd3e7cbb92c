"""Which release a checkout, a service and an image are: the upgrade probe's F6 (no way to tell which notes applied)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from servicekit import release
from servicekit.settings import REPO_ROOT
from tidegate.cli import app


def _highest_upgrade_note() -> int:
    """The highest numbered entry of docs/operations.md's "Backups, restore and upgrades" section."""
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("## Backups, restore and upgrades") :]
    section = section[: section.index("\n## ", 1)]
    return max(int(n) for n in re.findall(r"^(\d+)\. \*\*", section, flags=re.MULTILINE))


def test_the_release_number_is_the_last_upgrade_note_the_docs_give() -> None:
    """A release that adds an upgrade note says so in the code, or an operator reads the notes of the wrong release."""
    assert _highest_upgrade_note() == release.RELEASE


def test_tidegate_version_names_the_release_and_the_notes_it_includes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_COMMIT", "0123456789ab")
    release.commit.cache_clear()
    try:
        done = CliRunner().invoke(app, ["--version"])
    finally:
        release.commit.cache_clear()
    assert done.exit_code == 0, done.output
    first, second = done.output.splitlines()
    assert first == f"Tidegate release {release.RELEASE} (version {release.version()}, commit 0123456789ab)"
    assert f"up to step {release.RELEASE} of docs/operations.md" in second


def test_a_checkout_names_its_own_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TIDEGATE_COMMIT (an image sets it), a git checkout's HEAD: what `tidegate up`'s services run."""
    monkeypatch.delenv("TIDEGATE_COMMIT", raising=False)
    release.commit.cache_clear()
    try:
        head = release.commit()
    finally:
        release.commit.cache_clear()
    if not (REPO_ROOT / ".git").exists():
        assert head is None
    else:
        assert head is not None
        assert re.fullmatch(r"[0-9a-f]{12}", head)
