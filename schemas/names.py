r"""Names an outside producer types that approvers and auditors read (a proposal's `proposer`, an event's `source`).

What they read must not pass for one of the deployment's services: a name is judged on its skeleton (compatibility
forms, case, whitespace and invisible characters folded away: `Tidegate／planner`, ` tidegate/planner` and
`tide\u200bgate/planner` are `tidegate/planner`), and one whose letters mix scripts as a look-alike does (`tіdegate`, a
Cyrillic `і`) is refused whatever it spells. Unicode's "highly restrictive" identifiers (UTS #39, 5.2) allow Latin
with the Han-based writing systems, so `agent-日本` is a name; a name in one script (`иван`) is one too.
"""

from __future__ import annotations

import unicodedata

__all__ = ["OUR_PLANNER", "SERVICE_PROPOSERS", "mixed_scripts", "proposer_problem", "skeleton"]

SERVICE_PROPOSERS = "tidegate/"  # a proposal's `proposer` here names a service of the deployment: only a service key signs one
OUR_PLANNER = "tidegate"  # a task request's `planner` that asks Tidegate's planner to plan it (any other: an outside agent)

_MIXES = (
    frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "CJK", "BOPOMOFO"}),
    frozenset({"LATIN", "CJK", "HANGUL"}),
)


def skeleton(name: str) -> str:
    """`name` as it reads: NFKC, format (invisible) characters and whitespace dropped, case folded."""
    visible = "".join(c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf" and not c.isspace())
    return unicodedata.normalize("NFKC", visible.casefold())


def mixed_scripts(name: str) -> list[str]:
    """The scripts of `name`'s letters when they mix as a look-alike does (`tіdegate`: CYRILLIC and LATIN), else [].

    A letter's script is the first word of its Unicode name (`CYRILLIC SMALL LETTER …`): exact for the scripts that make
    look-alikes of Latin names (Cyrillic, Greek, Armenian, Cherokee…), which is what this guards.
    """
    scripts = {unicodedata.name(c, "UNKNOWN").split(" ")[0] for c in unicodedata.normalize("NFKC", name) if c.isalpha()}
    if len(scripts) < 2 or any(scripts <= allowed for allowed in _MIXES):
        return []
    return sorted(scripts)


def proposer_problem(name: str) -> str | None:
    """Why an outside agent may not propose as `name` (it reads as one of the deployment's services), or None."""
    if skeleton(name).startswith(SERVICE_PROPOSERS.rstrip("/")):
        return f"may not propose as {name!r}: `{SERVICE_PROPOSERS}…` names the deployment's own services (their keys alone)"
    if mixed := mixed_scripts(name):
        return f"may not propose as {name!r}: its letters mix scripts ({', '.join(mixed)}), as a look-alike of another name does"
    return None
