"""docs/settings.md, written from the settings' models: every variable, its default, what it accepts and what it does.

    .venv/bin/python -m tidegate.settings_reference docs/settings.md     # what `make settings-doc` runs

The models (pydantic-settings) are what the services read, so a reference written from them cannot
leave a setting out or give a default the code does not have; tests/unit/foundation/test_settings_reference.py
fails when docs/settings.md is not what this writes.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from servicekit import REPO_ROOT, KitSettings
from services.approval import ApprovalSettings
from services.audit import AuditSettings
from services.executor import ExecutorSettings
from services.planner import PlannerSettings
from services.policy import PolicySettings
from tidegate.client.settings import ClientSettings
from tidegate.mcp_gateway.settings import GatewaySettings

__all__ = ["SECTIONS", "render"]

SECTIONS: list[tuple[str, type[BaseSettings], str]] = [
    ("Every service and the CLI", KitSettings, "docs/operations.md"),
    ("planner", PlannerSettings, "docs/planner.md"),
    ("policy", PolicySettings, "docs/policy.md"),
    ("approval", ApprovalSettings, "docs/approval.md"),
    ("executor", ExecutorSettings, "docs/executor.md"),
    ("audit", AuditSettings, "docs/audit.md"),
    ("The MCP gateway (`tidegate mcp serve`)", GatewaySettings, "docs/integrations.md"),
    ("The Python client, the adapters and the MCP gateway's connection (`tidegate.client`)", ClientSettings, "docs/integrations.md"),
]

_HEAD = """# Settings

Generated from the settings' models by `make settings-doc` (`.venv/bin/python -m tidegate.settings_reference
docs/settings.md`); do not edit by hand. Every setting is an environment variable, read when a process starts
(pydantic-settings). A value that is not valid stops the process before it connects to anything, with the
variable, the value and why (`tidegate …` exits 2, a service 78 and is not restarted: docs/operations.md, "A
setting that is not valid"). Lists and maps are given as JSON (`TIDEGATE_APPROVAL_WEBHOOK_ALLOWED_HOSTS='["hooks.example.com"]'`).
Secrets (passwords, API keys) are best left unset where a file holds them (the Kafka and PostgreSQL logins
`infra up` generates); when set, they are never printed.
"""


def _type(annotation: Any) -> str:
    """What a value must be, in a reader's words."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_type(a) for a in inner)
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (list, tuple):
        return f"JSON list of {_type(args[0])}" if args else "JSON list"
    if origin is dict:
        return f"JSON object of {_type(args[1])}" if len(args) == 2 else "JSON object"
    names = {str: "text", int: "integer", float: "number", bool: "`true` | `false`", Path: "path", SecretStr: "secret text"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    """The field's constraints (`≥ 1`, `≤ 65535`, pattern), as the model checks them."""
    words = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"≥ {item.ge:g}" if isinstance(item.ge, float) else f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"≤ {item.le:g}" if isinstance(item.le, float) else f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            words.append("not empty" if item.min_length == 1 else f"at least {item.min_length} characters")
        elif getattr(item, "pattern", None):
            words.append(f"matching `{item.pattern}`")
    return ", ".join(words)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        optional = type(None) in typing.get_args(field.annotation)
        return "unset" if optional else "derived (see what it does)"  # filled in from another setting when the model is built
    if isinstance(value, Path):
        value = value.relative_to(REPO_ROOT) if value.is_relative_to(REPO_ROOT) else value
        return f"`{value}`"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`" if value else ("`{}`" if isinstance(value, dict) else "`[]`")
    if isinstance(value, float):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _number(value: float) -> str:
    """A default as a person writes it: `600`, `0.5`, `0.00001` (not `1e-05`)."""
    return f"{value:.10f}".rstrip("0").rstrip(".") if value else "0"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """docs/settings.md as the models are now."""
    out = [_HEAD]
    for title, model, page in SECTIONS:
        prefix = str(model.model_config.get("env_prefix") or "")
        summary = (model.__doc__ or "").strip().splitlines()[0]
        out.append(f"\n## {title}\n\n{_cell(summary)} More in {page}.\n")
        out.append("| variable | default | accepts | what it does |\n|---|---|---|---|")
        for name, field in model.model_fields.items():
            accepts = ", ".join(p for p in (_type(field.annotation), _bounds(field)) if p)
            description = field.description or ""
            out.append(f"| `{(prefix + name).upper()}` | {_default(field)} | {_cell(accepts)} | {_cell(description)} |")
    return "\n".join(out) + "\n"


def main() -> None:
    """Write the reference to the path given (or print it)."""
    text = render()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
        print(f"wrote {sys.argv[1]}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
