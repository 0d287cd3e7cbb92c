"""A tool's argument schema, compiled once: a fast yes/no check in front of the full JSON Schema validator.

Args are checked on every proposal, decision and call. `jsonschema` (Draft 2020-12, formats
asserted) is the authority and the only source of error messages; it costs about 22 µs for a
refund's args. When a schema uses only keywords whose meaning is the same in Draft 7 and Draft
2020-12 (no `format`, no `$ref`, string-only `enum`/`const`), it is also compiled with
`fastjsonschema` (about 1.7 µs). A call the fast check passes is valid; anything it rejects goes
to `jsonschema`, which decides and explains. So the fast path can only ever save time: it never
turns an invalid call valid, and its own errors are never shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema

__all__ = ["ArgsValidator", "fast_path_safe"]

# Keywords that mean the same in Draft 7 (fastjsonschema) and Draft 2020-12 (jsonschema).
_SAME_MEANING = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "enum",
        "const",
        # annotations, never asserted
        "description",
        "title",
        "default",
        "examples",
        "$comment",
    }
)


def fast_path_safe(schema: Any) -> bool:
    """True when every keyword of `schema` (recursively) means the same to both validators."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for keyword, value in schema.items():
        if keyword not in _SAME_MEANING:
            return False
        if keyword == "properties":
            if not isinstance(value, dict) or not all(fast_path_safe(sub) for sub in value.values()):
                return False
        elif keyword in ("additionalProperties", "items"):
            if not fast_path_safe(value):  # a schema (items as a tuple list means different things in the two drafts)
                return False
        elif keyword == "enum":
            # fastjsonschema compares with ==, so 1 == True; jsonschema tells them apart. Strings only.
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return False
        elif keyword == "const" and not isinstance(value, str):
            return False
    return True


class ArgsValidator:
    """Validate one tool's args: `errors(args)` is empty when they conform, else one readable line per problem."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._full = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        self._fast: Callable[[Any], Any] | None = fastjsonschema.compile(schema, use_formats=False) if fast_path_safe(schema) else None

    @property
    def has_fast_path(self) -> bool:
        """Whether the schema is simple enough for the fast check."""
        return self._fast is not None

    def errors(self, args: Any) -> list[str]:
        """Every way `args` break the schema (empty when valid)."""
        if self._fast is not None:
            try:
                self._fast(args)
                return []
            except fastjsonschema.JsonSchemaException:
                pass  # jsonschema decides, and explains
        return [f"{'/'.join(map(str, e.absolute_path)) or '(args)'}: {e.message}" for e in self._full.iter_errors(args)]
