"""CrewAI's offline tests run in `.venv-crewai` (CrewAI pins `mcp<2` and `pydantic<2.13`): `make integrations-test`."""

from __future__ import annotations

import os
import warnings

import pytest

with warnings.catch_warnings():  # crewai's lazy submodules warn on import (ImportWarning); the suite makes warnings errors
    warnings.simplefilter("ignore")
    import crewai  # noqa: F401


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    """No telemetry or tracing calls home, and CrewAI's own storage under the test's directory."""
    for name, value in {
        "CREWAI_DISABLE_TELEMETRY": "true",
        "CREWAI_TRACING_ENABLED": "false",
        "OTEL_SDK_DISABLED": "true",
        "HOME": str(tmp_path),
        "CREWAI_STORAGE_DIR": str(tmp_path / "crewai"),
    }.items():
        monkeypatch.setenv(name, value)
