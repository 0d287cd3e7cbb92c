"""Which release this code is: the number of its entry in docs/operations.md's upgrade notes, and the commit.

An upgrade note applies to a deployment whose release is below its number; before this module, nothing said which
release a checkout, a service or an image was (the version stayed `0.1.0`, and releases without a migration left no
trace), so an operator could not tell which notes applied, nor, in a rolling upgrade, which copies ran which code.
`tidegate --version`, every service's start line and its `/health` say it (docs/operations.md, "Upgrading").
"""

from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata

from servicekit.settings import REPO_ROOT

__all__ = ["RELEASE", "commit", "describe", "version"]

RELEASE = 27
"""The highest numbered upgrade note of docs/operations.md this code includes (a unit test holds the two together)."""


def version() -> str:
    """The installed package's version (`pyproject.toml`), or `unknown` when it is not installed."""
    try:
        return metadata.version("tidegate")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def commit() -> str | None:
    """The commit of the code: `TIDEGATE_COMMIT` (an image built without `.git` sets it), else the checkout's HEAD; None if neither."""
    stated = os.environ.get("TIDEGATE_COMMIT", "").strip()
    if stated:
        return stated[:40]
    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    head = done.stdout.strip()
    return head if done.returncode == 0 and head else None


def describe() -> str:
    """`release 17 (version 0.1.0, commit 3d1780aa0b2c)`: one line for a version flag, a start line and a log."""
    head = commit()
    return f"release {RELEASE} (version {version()}, commit {head or 'unknown'})"
