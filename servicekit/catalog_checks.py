"""Declarations a catalog entry must make explicitly, because their safe default cannot be guessed.

A read tool must say whether its output is untrusted (provenance fails closed: nothing counts as
trusted by omission), and a write tool must declare as a counterparty every argument that looks
like an address (a recipient, an email, a URL), so that no recipient escapes the directory check;
a draft aside, which reaches no one until a person sends it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from schemas import RiskClass, ToolSpec
from schemas.tools import CounterpartyKind

__all__ = [
    "ADDRESS_FORMATS",
    "ADDRESS_NAMES",
    "address_args",
    "address_kinds",
    "declaration_problems",
    "missing_reply_keys",
    "undo_tenancy_warnings",
    "ungranted_outside_tools",
    "unloadable_entrypoints",
    "unread_amount_warnings",
]

ADDRESS_NAMES = frozenset({"to", "cc", "bcc", "reply_to", "recipient", "recipients", "email", "emails", "url", "urls"})
"""Property names that name where a write sends something."""

ADDRESS_FORMATS = frozenset({"email", "idn-email", "uri", "iri", "uri-reference", "iri-reference"})
"""JSON Schema formats of an address."""

_URL_FORMATS = ADDRESS_FORMATS - {"email", "idn-email"}


def _address_like(name: str, schema: dict[str, Any]) -> bool:
    items = schema.get("items")
    formats = {schema.get("format"), items.get("format") if isinstance(items, dict) else None}
    return name.lower() in ADDRESS_NAMES or bool(formats & ADDRESS_FORMATS)


def address_args(schema: Any, prefix: str = "") -> Iterator[str]:
    """Dot paths of the address-like properties of an args schema, at any depth (array items share their list's path)."""
    if not isinstance(schema, dict):
        return
    if isinstance(schema.get("items"), dict):
        yield from address_args(schema["items"], prefix)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            yield from address_args(sub, prefix)
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        path = f"{prefix}.{name}" if prefix else name
        if _address_like(name, sub):
            yield path
        yield from address_args(sub, path)


def address_kinds(schema: Any) -> dict[str, CounterpartyKind]:
    """A first guess of each address-like arg's kind (a URL by its name or format, else an email), for an importer to write."""
    kinds: dict[str, CounterpartyKind] = {}
    for path in address_args(schema):
        leaf = _property(schema, path)
        items = leaf.get("items")
        fmt = leaf.get("format") or (items.get("format") if isinstance(items, dict) else None) or ""
        kinds[path] = "url" if path.rsplit(".", 1)[-1].lower() in ("url", "urls") or fmt in _URL_FORMATS else "email"
    return kinds


def _property(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node: dict[str, Any] = schema
    for part in path.split("."):
        while isinstance(node.get("items"), dict):
            node = node["items"]
        node = (node.get("properties") or {}).get(part) or {}
    return node


def declaration_problems(spec: ToolSpec) -> list[str]:
    """What `spec` leaves undeclared that the loader refuses: each problem names the tool and the field."""
    problems = []
    if not spec.writes and "untrusted_output" not in spec.model_fields_set:
        problems.append(
            f"tool {spec.name}: a read tool must declare `untrusted_output` (true: its results hold content from outside "
            "the tenant, such as an inbox, a web page, a ticket or chat messages; false: the tenant's own system of record)"
        )
    if spec.writes and spec.risk is not RiskClass.DRAFT:  # a draft reaches no one until a human sends it
        declared = spec.facts.declared_counterparties()
        for arg in dict.fromkeys(address_args(spec.args_schema)):
            if arg not in declared:
                problems.append(
                    f"tool {spec.name}: arg {arg!r} looks like an address but is not a counterparty; declare it in "
                    f"`facts.counterparties` (e.g. `{arg}: email`, or `url`), so the policy checks who it reaches"
                )
    return problems


def _uncovered(spec: ToolSpec, other: ToolSpec) -> str | None:
    """The tenants of `spec` that may not call `other`, as a sentence; None when `other` serves every tenant of `spec`."""
    mine, theirs = spec.grants, other.grants
    if theirs is None or (mine is not None and mine <= theirs):
        return None
    if mine is None:
        return f"the tenants its entry does not name ({spec.name} is granted to every tenant)"
    return ", ".join(sorted(mine - theirs))


def unread_amount_warnings(tools: Mapping[str, ToolSpec]) -> list[str]:
    """`financial` tools whose entry names no `facts.amount`: each a warning (the default pack escalates every call of them).

    Policy reads a call's amount only from the arg `facts.amount` names; without it no threshold can allow the call, and
    the default pack escalates each one `amount_unknown`. Most likely an imported tool whose facts were not filled in.
    """
    return [
        f"tool {spec.name} is financial but names no facts.amount: policy cannot read what a call of it pays, so the default "
        "pack escalates every call `amount_unknown` (add `facts: {amount: <its USD amount arg>, payee: <who is paid>}`)"
        for spec in tools.values()
        if spec.risk is RiskClass.FINANCIAL and spec.facts.amount is None
    ]


def undo_tenancy_warnings(tools: Mapping[str, ToolSpec]) -> list[str]:
    """Writes whose undo's tools (`undo.before.tool`, `undo.tool`) are not granted to every tenant the write is: each a warning.

    A tenant the `before` read is not granted to is denied the write (`tool_not_granted`); one the undo tool is not
    granted to has no rollback path (the write escalates `no_rollback_path`). The catalog still loads: the policy
    decides each call safely, and the entry is most likely a mistake to fix.
    """
    warnings = []
    for spec in tools.values():
        undo = spec.undo
        if undo is None or undo.tool is None:
            continue
        before = tools.get(undo.before.tool) if undo.before is not None else None
        if before is not None and (missing := _uncovered(spec, before)) is not None:
            warnings.append(
                f"tool {spec.name}: its undo.before read {before.name} is not granted to {missing}: {spec.name} is denied "
                f"tool_not_granted for them (add them to {before.name}'s `tenants`, or read with a tool they may call)"
            )
        if (inverse := tools.get(undo.tool)) is not None and (missing := _uncovered(spec, inverse)) is not None:
            warnings.append(
                f"tool {spec.name}: its undo tool {inverse.name} is not granted to {missing}: for them a call of {spec.name} "
                f"cannot be undone, so it has no rollback path (add them to {inverse.name}'s `tenants`)"
            )
    return warnings


def ungranted_outside_tools(tools: Mapping[str, ToolSpec]) -> list[str]:
    """Tools served outside the deployment whose entry names no `tenants`: no tenant may call them, each a warning.

    Such a tool is denied `tool_not_granted` for every tenant while every service reports healthy: said at the policy's
    start and by `tidegate policy validate`, so that an upgrade past tool tenancy that skipped naming them is seen before
    the first failed call (docs/operations.md, the upgrade checklist).
    """
    return [
        f"tool {spec.name} (kind {spec.kind}, served outside the deployment) names no `tenants`: every call of it is denied "
        'tool_not_granted until its catalog entry names the tenants that may call it (`tenants: [<tenant>]`, or ["*"])'
        for spec in tools.values()
        if spec.served_outside and spec.tenants is None
    ]


def missing_reply_keys(tools: Mapping[str, ToolSpec], keys_dir: Path) -> list[str]:
    """Tools whose `reply_key_file` (relative to `keys_dir`) is not there: every reply of such a tool would be refused, each a warning.

    Nothing checks the file when the entry is added; the executor and the audit find it missing at the first reply.
    """
    return [
        f"tool {spec.name}: its reply_key_file {spec.reply_key_file} does not exist under {keys_dir}: every reply of it is refused "
        f"until its service's public key is there (a local tool service makes it on its first run; one served elsewhere: "
        f"`tidegate keys rotate-tool {spec.name} --public-key <its key>.pem`; a function served from this machine: "
        f"`tidegate keys add-tool {spec.name}`)"
        for spec in tools.values()
        if spec.reply_key_file and not (keys_dir / spec.reply_key_file).is_file()
    ]


def unloadable_entrypoints(tools: Mapping[str, ToolSpec]) -> list[str]:
    """Python tools whose `entrypoint` does not import (no such module, an error in it, no such function), each a warning.

    The executor imports an entrypoint at the tool's first call: a misspelt module was found there, as the call's
    `entrypoint_missing` failure, while `tidegate policy validate` said the catalog was valid (connectors probe F13).
    Importing runs the module's top level, as the executor's first call would.
    """
    warnings = []
    for spec in tools.values():
        if spec.kind != "python" or not spec.entrypoint:
            continue
        module, _, function = spec.entrypoint.partition(":")
        try:
            found = callable(getattr(importlib.import_module(module), function, None))
            problem = "" if found else f"module {module} has no function {function}"
        except Exception as exc:  # any error of the import is the tool's, said as the executor would meet it
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            warnings.append(
                f"tool {spec.name}: its entrypoint {spec.entrypoint} cannot be loaded ({problem}): every call of it fails "
                "entrypoint_missing; the module must be importable by the executor (from the directory it runs in, or on its "
                "PYTHONPATH), and define `async def "
                f"{function or '<function>'}(ctx, args)`"
            )
    return warnings
