"""The tool catalog: a directory of YAML files, one per tool, and argument validation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import ValidationError

from schemas import ToolSpec
from servicekit.argschema import ArgsValidator
from servicekit.catalog_checks import declaration_problems

__all__ = ["CatalogError", "ToolCatalog"]


class CatalogError(ValueError):
    """A catalog file that cannot be loaded; names the file and the problem."""


@dataclass(frozen=True)
class ToolCatalog(Mapping[str, ToolSpec]):
    """Tools by name, loaded once; validates args against each tool's JSON Schema."""

    tools: dict[str, ToolSpec]
    _validators: dict[str, ArgsValidator] = field(default_factory=dict, compare=False, repr=False)
    # When `load` read the folder: a service reads it once, at start, so a tool added since is unknown to it until a restart.
    loaded_at: datetime | None = field(default=None, compare=False)

    @classmethod
    def load(cls, directory: Path, *more: Path) -> ToolCatalog:
        """Load every `*.yaml` in `directory`, then in each folder of `more`; a bad file raises CatalogError naming it.

        `more` are the deployment's own folders beside the shipped catalog (`TIDEGATE_EXTRA_TOOLS_DIRS`): each must
        exist, and a tool declared in two files, in one folder or two, is refused naming both, never one silently
        shadowing the other. A catalog of no tools is a mistyped path (`TIDEGATE_TOOLS_DIR`), never a deployment:
        every proposal would be refused.
        """
        tools: dict[str, ToolSpec] = {}
        declared_in: dict[str, Path] = {}
        folders = (directory, *more)
        for folder in folders:
            if not folder.is_dir():
                raise CatalogError(f"tool catalog directory {folder} does not exist")
            for path in sorted(folder.glob("*.y*ml")):
                spec = _read_tool(path)
                if spec.name in tools:
                    raise CatalogError(f"{path}: tool {spec.name!r} is declared twice (also in {declared_in[spec.name]})")
                tools[spec.name] = spec
                declared_in[spec.name] = path
        named = ", ".join(str(folder) for folder in folders)
        if not tools:
            raise CatalogError(f"tool catalog directory {named} holds no tool (no *.yaml file)")
        problems = _undo_problems(tools)
        if problems:
            raise CatalogError(f"{named}: " + "; ".join(problems))
        return cls(tools, loaded_at=datetime.now(UTC))

    def __getitem__(self, name: str) -> ToolSpec:
        return self.tools[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    def for_tenant(self, tenant_id: str) -> ToolCatalog:
        """The tools `tenant_id` may call and no other: what a model planning or acting for the tenant is shown.

        The rule is the policy's `tool_not_granted` one, `ToolSpec.granted_to`: another tenant's outside tool is left out,
        its name, description and schema with it.
        """
        return ToolCatalog({name: spec for name, spec in self.tools.items() if spec.granted_to(tenant_id)})

    def arg_errors(self, name: str, args: dict[str, Any]) -> list[str]:
        """Every way `args` break the tool's schema, as readable strings (empty when valid)."""
        validator = self._validators.get(name)
        if validator is None:  # compiled once per tool, on first use
            validator = self._validators[name] = ArgsValidator(self.tools[name].args_schema)
        return validator.errors(args)


def _read_tool(path: Path) -> ToolSpec:
    """The tool `path` declares, checked as `load` needs it; CatalogError naming the file otherwise."""
    try:
        spec = ToolSpec.model_validate(yaml.safe_load(path.read_text()))
        jsonschema.Draft202012Validator.check_schema(spec.args_schema)
    except (yaml.YAMLError, ValidationError, jsonschema.SchemaError) as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    if problems := declaration_problems(spec):
        raise CatalogError(f"{path}: " + "; ".join(problems))
    return spec


def _undo_problems(tools: Mapping[str, ToolSpec]) -> list[str]:
    """An undo that names a tool the catalog lacks, or a prior-state read that is not a read."""
    problems = []
    for spec in tools.values():
        undo = spec.undo
        if undo is None or undo.tool is None:
            continue
        if undo.tool not in tools:
            problems.append(f"{spec.name}: undo tool {undo.tool!r} is not in the catalog")
        if undo.before is not None:
            read = tools.get(undo.before.tool)
            if read is None or read.writes:
                problems.append(f"{spec.name}: undo.before.tool {undo.before.tool!r} must be a read tool of the catalog")
    return problems
