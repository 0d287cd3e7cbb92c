"""A policy's `@message("…")`: the sentence an approver (and the agent) reads beside the reason code.

A message names the request's values in braces, by their path in the Cedar request context
(`cedar_schema.CONTEXT_TYPE`): `{facts.recipient_count}`, `{settings.min_confidence_pct}`. A value kept
in cents is also named in dollars, `{facts.amount_usd}` for `facts.amount_cents`, written `500.00`.
The pack is refused at load when a message names a value the context does not have, so a typo never
reaches an approver as a blank.
"""

from __future__ import annotations

import re
from typing import Any

from services.policy.cedar_schema import CONTEXT_TYPE

__all__ = ["message_problem", "render_message"]

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)\}")


def _source(path: str) -> tuple[list[str], bool]:
    """The context path a placeholder reads, and whether it is a cents value shown in dollars."""
    parts = path.split(".")
    if parts[-1].endswith("_usd"):
        return [*parts[:-1], parts[-1].removesuffix("_usd") + "_cents"], True
    return parts, False


def message_problem(template: str) -> str | None:
    """Why `template` cannot be rendered for every request (None when it can): a name the context does not have."""
    if template.count("{") != template.count("}") or len(_PLACEHOLDER.findall(template)) != template.count("{"):
        return "braces must hold a value's path, e.g. {facts.amount_usd}"
    for path in _PLACEHOLDER.findall(template):
        parts, dollars = _source(path)
        kind: dict[str, Any] | None = CONTEXT_TYPE
        for part in parts:
            kind = (kind or {}).get("attributes", {}).get(part)
        if kind is None or (dollars and kind.get("type") != "Long"):
            return f"{{{path}}} is not a value of the request context (cedar_schema.CONTEXT_TYPE)"
    return None


def render_message(template: str, context: dict[str, Any]) -> str:
    """`template` with each `{path}` replaced by the request's value (checked at load: every path exists)."""

    def value(match: re.Match[str]) -> str:
        parts, dollars = _source(match.group(1))
        found: Any = context
        for part in parts:
            found = found.get(part) if isinstance(found, dict) else None
        if dollars and isinstance(found, int):
            return f"{found / 100:,.2f}"
        if isinstance(found, bool):
            return "yes" if found else "no"
        if isinstance(found, list | tuple | set | frozenset):
            return ", ".join(sorted(str(v) for v in found)) or "none"
        return "?" if found is None else str(found)

    return _PLACEHOLDER.sub(value, template)
