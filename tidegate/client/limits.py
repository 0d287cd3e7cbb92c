"""What a proposal may hold for the services to read it: checked before anything is recorded or sent.

The services refuse a record larger than `TIDEGATE_MAX_VALUE_BYTES` or nested deeper than `TIDEGATE_MAX_JSON_DEPTH`
(dead-lettered `too_large`, `too_deep`: a client cannot read that, and no answer ever comes), and the broker one larger
than its `message.max.bytes`. The client knows the deployment's bounds from its own settings (`ClientSettings.max_proposal_bytes`,
`.max_json_depth`, the services' defaults unless set) and refuses such a call at once, naming the bound.
"""

from __future__ import annotations

import json
import math
from typing import Any

from schemas import refuse_nul

__all__ = ["ENCLOSING_DEPTH", "Unsendable", "check_args", "check_size", "too_large"]

ENCLOSING_DEPTH = 2
"""Levels of a proposal's record around its args: the envelope's object and its `data` object."""


class Unsendable(ValueError):
    """A call no Tidegate service could read (too large, nested too deep, NaN or infinity): nothing of it was sent.

    `code` is the services' reason code for it (`too_large`, `too_deep`, `not_finite`), `arg` the arg it is about, if one.
    """

    def __init__(self, message: str, *, code: str, arg: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.arg = arg


def check_args(args: dict[str, Any], *, max_depth: int) -> None:
    """Refuse args the services cannot read or keep, naming the arg: NaN or infinity, nesting past the bound, U+0000.

    Raises:
        Unsendable: NaN or infinity (JSON has no such numbers), or args nested deeper than the record's bound allows.
        pydantic.ValidationError: A string (or key) holds U+0000: the contract's own error, at the arg's path.
    """
    most = max_depth - ENCLOSING_DEPTH  # the args object itself is one level
    stack: list[tuple[Any, str, int]] = [(args, "", 1)]
    while stack:  # a loop, not recursion: args nested 100,000 deep are refused, not a RecursionError
        value, path, depth = stack.pop()
        if isinstance(value, dict | list | tuple) and depth > most:
            raise Unsendable(
                f"args nest deeper than {most} levels (at arg {path or '(the args)'}): Tidegate's services read no deeper "
                f"(their TIDEGATE_MAX_JSON_DEPTH, {max_depth}, counts the proposal's two enclosing levels); flatten the args",
                code="too_deep",
                arg=path or None,
            )
        if isinstance(value, float) and not math.isfinite(value):
            said = f"arg {path} is {value}: Tidegate refuses NaN and infinity (JSON has no such numbers)"
            raise Unsendable(said, code="not_finite", arg=path)
        if isinstance(value, str):
            _refuse_nul(value, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                at = f"{path}.{key}" if path else str(key)
                _refuse_nul(str(key), at)
                stack.append((item, at, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _refuse_nul(text: str, path: str) -> None:
    if "\x00" in text:
        refuse_nul(json.dumps(text), where=("args", path))


def check_size(raw: bytes, *, max_bytes: int) -> None:
    """Refuse a proposal's record (its bytes as sent) larger than the services read.

    Raises:
        Unsendable: `raw` is longer than `max_bytes`.
    """
    if len(raw) > max_bytes:
        raise Unsendable(too_large(len(raw), f"at most {max_bytes} bytes (TIDEGATE_MAX_VALUE_BYTES)"), code="too_large")


def too_large(size: int, bound: str) -> str:
    """The one line of a proposal too large: its size and the bound it exceeds."""
    return (
        f"the call is too large: its proposal is {size} bytes, and Tidegate takes {bound}; "
        "pass a reference to large data (an id, a URL) rather than the data"
    )
