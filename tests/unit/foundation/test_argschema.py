"""The fast args check never changes a verdict: valid exactly when jsonschema (Draft 2020-12, formats asserted) says so."""

from __future__ import annotations

import copy
import random
import re
from typing import Any

import jsonschema
import pytest

from servicekit import REPO_ROOT, ToolCatalog
from servicekit.argschema import ArgsValidator, fast_path_safe

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")

ODD_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 0.5, 1e9, "", "x", "O-1", "cus_1001", "a" * 600, "UPPER", "o-1",
    [], ["a@example.com"], ["x"] * 60, {}, {"k": 1}, 3.0, "alice@example.com", "not an email",
]  # fmt: skip


def _example(schema: dict[str, Any], rng: random.Random) -> Any:
    """A value that often conforms (so that both sides of every check are exercised)."""
    kind = schema.get("type")
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _example(sub, rng) for name, sub in props.items() if name in schema.get("required", []) or rng.random() < 0.5}
    if kind == "array":
        return [_example(schema.get("items", {}), rng) for _ in range(rng.randint(0, 3))]
    if kind == "integer":
        return rng.randint(0, 10)
    if kind == "number":
        return round(rng.uniform(0.01, 900), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if schema.get("format") == "email":
        return "someone@example.com"
    candidates = ["cus_1001", "O-17", "T-100", "SKU-42", "acme/shop", "hello", "a@example.com"]
    candidates += [
        "ch_123",
        "pi_123",
        "in_123",
        "006000000000001AAA",
        "00T000000000001AAA",
    ]  # connector ids: Stripe charge, intent, invoice; Salesforce opportunity, task
    if "pattern" in schema:
        candidates = [c for c in candidates if re.search(schema["pattern"], c)] or candidates
    return rng.choice(candidates)


def _mutants(args: Any, rng: random.Random, n: int) -> list[Any]:
    out = [args]
    for _ in range(n):
        m = copy.deepcopy(args)
        if isinstance(m, dict) and m and rng.random() < 0.7:
            key = rng.choice(sorted(m))
            if rng.random() < 0.2:
                del m[key]
            else:
                m[key] = rng.choice(ODD_VALUES)
        elif isinstance(m, dict):
            m[rng.choice(["extra", "amount_usd", "to"])] = rng.choice(ODD_VALUES)
        out.append(m)
    return out


@pytest.mark.parametrize("tool", sorted(CATALOG))
def test_the_fast_check_agrees_with_jsonschema_on_every_tool(tool: str) -> None:
    schema = CATALOG[tool].args_schema
    full = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    validator = ArgsValidator(schema)
    rng = random.Random(tool)
    seen = {True: 0, False: 0}
    for args in _mutants(_example(schema, rng), rng, 300):
        valid = full.is_valid(args)
        seen[valid] += 1
        errors = validator.errors(args)
        assert (errors == []) == valid, (tool, args, errors)
        if not valid:  # the messages are jsonschema's, one per problem
            assert errors == [f"{'/'.join(map(str, e.absolute_path)) or '(args)'}: {e.message}" for e in full.iter_errors(args)]
    assert seen[True], seen  # both sides exercised
    assert seen[False], seen


def test_the_refund_schema_takes_the_fast_path_and_formats_do_not() -> None:
    assert ArgsValidator(CATALOG["issue_refund"].args_schema).has_fast_path
    assert not ArgsValidator(CATALOG["send_email"].args_schema).has_fast_path  # `format: email` is asserted by jsonschema only


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"n": {"enum": [1, 2]}}},  # fastjsonschema: True == 1
        {"type": "object", "properties": {"n": {"const": 1}}},
        {"type": "array", "items": [{"type": "string"}]},  # a tuple in Draft 7, not in 2020-12
        {"$ref": "#/$defs/x", "$defs": {"x": {"type": "string"}}},
        {"type": "object", "dependentRequired": {"a": ["b"]}},
        {"type": "string", "format": "email"},
    ],
)
def test_keywords_that_differ_between_drafts_keep_jsonschema_alone(schema: dict[str, Any]) -> None:
    assert not fast_path_safe(schema)


def test_a_boolean_is_not_taken_for_the_number_one() -> None:
    validator = ArgsValidator({"type": "object", "properties": {"n": {"type": "number"}}})
    assert validator.has_fast_path
    assert validator.errors({"n": 1}) == []
    assert validator.errors({"n": True}) == ["n: True is not of type 'number'"]
