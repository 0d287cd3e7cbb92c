"""docs/settings.md says what the settings' models say, and the docs name no variable that does not exist."""

from __future__ import annotations

import re

import pytest
from pydantic_settings import BaseSettings

from servicekit import REPO_ROOT
from tidegate.settings_reference import SECTIONS, render

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
CODE_DIRS = ("servicekit", "services", "tidegate", "schemas", "infra", "bench", "tests")
SOURCES = [p for pattern in ("*.py", "*.sh") for d in CODE_DIRS for p in (REPO_ROOT / d).rglob(pattern)]


def test_the_settings_reference_is_what_the_models_say() -> None:
    """docs/settings.md is written by `make settings-doc`; this fails when a setting changed and the reference did not."""
    on_disk = (REPO_ROOT / "docs" / "settings.md").read_text()
    assert on_disk == render(), "run `make settings-doc`"


@pytest.mark.parametrize("model", [m for _, m, _ in SECTIONS], ids=lambda m: m.__name__)
def test_every_setting_says_what_it_does(model: type) -> None:
    undescribed = [name for name, field in model.model_fields.items() if not field.description]  # type: ignore[attr-defined]
    assert not undescribed, f"{model.__name__}: give these a Field(description=...): {undescribed}"


SETTINGS = {f"{m.model_config.get('env_prefix')}{name}".upper() for _, m, _ in SECTIONS for name in m.model_fields}
PREFIXES = {str(m.model_config.get("env_prefix")) for _, m, _ in SECTIONS}


def unknown_variables(documents: dict[str, str], code: str) -> list[str]:
    """`document: variable` for each `TIDEGATE_*` a document names that is no setting, no prefix, and nowhere in `code`."""
    named = {v: doc for doc, text in documents.items() for v in re.findall(r"TIDEGATE_[A-Z0-9_]*[A-Z0-9]_?", text)}
    return sorted(f"{doc}: {v}" for v, doc in named.items() if v not in SETTINGS | PREFIXES and not re.search(rf"\b{v}\b", code))


def test_every_variable_the_docs_name_is_a_setting_or_read_by_a_script() -> None:
    code = "\n".join(p.read_text(errors="replace") for p in SOURCES) + (REPO_ROOT / "Makefile").read_text()
    unknown = unknown_variables({str(d.relative_to(REPO_ROOT)): d.read_text() for d in DOCUMENTS}, code)
    assert not unknown, "variables nothing reads:\n" + "\n".join(unknown)


def test_the_check_sees_a_misspelt_variable_and_takes_settings_prefixes_and_script_variables() -> None:
    doc = "Set `TIDEGATE_APPROVAL_EXPIRE_S` (sic), `TIDEGATE_APPROVAL_EXPIRY_S`, any `TIDEGATE_POLICY_` one, `TIDEGATE_KAFKA_PORT`."
    script = "KAFKA_PORT=${TIDEGATE_KAFKA_PORT:-19092}"
    assert unknown_variables({"docs/x.md": doc}, code=script) == ["docs/x.md: TIDEGATE_APPROVAL_EXPIRE_S"]


def test_every_settings_class_of_the_project_has_a_section() -> None:
    """A settings class added to the code and not to `SECTIONS` would be read by a service and documented nowhere."""

    def subclasses(cls: type) -> set[type]:
        return {c for s in cls.__subclasses__() for c in {s, *subclasses(s)}}

    ours = {c for c in subclasses(BaseSettings) if c.__module__.split(".")[0] in ("servicekit", "services", "tidegate")}
    assert ours == {m for _, m, _ in SECTIONS}
