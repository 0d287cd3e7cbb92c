"""The tool catalog: a directory of YAML files, one per tool, and argument validation."""

from __future__ import annotations

import functools
import json
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

# libyaml's parser where PyYAML was built with it (its wheels are): the same safe documents, read ~10x faster than the pure
# Python one. A service, a CLI command and each test that starts one read the whole catalog.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
        spec = ToolSpec.model_validate(yaml.load(path.read_text(), Loader=_SAFE_LOADER))  # noqa: S506 (a safe loader)
        _check_args_schema(spec.args_schema)
    except (yaml.YAMLError, ValidationError, jsonschema.SchemaError) as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    if problems := declaration_problems(spec):
        raise CatalogError(f"{path}: " + "; ".join(problems))
    return spec


def _check_args_schema(schema: dict[str, Any]) -> None:
    """Raise jsonschema.SchemaError unless `schema` is a valid JSON Schema (2020-12); a schema found valid once is not checked again.

    Checking against the 2020-12 meta-schema (its dynamic references) takes ~25 ms a tool: a process that reads the
    catalog more than once (the CLI, a test starting services) pays it once per schema.
    """
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):  # a YAML date or the like: checked as it is, each time
        jsonschema.Draft202012Validator.check_schema(schema)
        return
    _check_schema_text(text)


@functools.lru_cache(maxsize=4096)
def _check_schema_text(text: str) -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(text))  # an invalid one raises, which is never cached


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
