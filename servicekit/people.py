"""Who is one person: the rule the approval service (four eyes, the quorum) and the policy (a grant's distinct approvers) share.

An approver's name is an email or a login as its credential gives it. Two spellings that differ only in
Unicode compatibility forms (a fullwidth `ｐ`), case, surrounding whitespace or invisible format
characters name the same human, so a requester cannot approve their own call as `Alice@…`, nor one
person count twice toward a quorum with a second token named `bob@… ` or `ｂob@…`. A new approver name
must already be plain (`approver_name`), so such spellings exist only in tokens made before the rule.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["approver_name", "person", "same_person"]

# An email (`local@domain`, the domain one or more labels) or a login, in ASCII: what `person` leaves of a plain name.
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_PLAIN_NAME = re.compile(rf"[a-z0-9](?:[a-z0-9._%+'-]*[a-z0-9_])?(?:@{_LABEL}(?:\.{_LABEL})*)?")
_MAX_NAME = 254  # an email address's longest


def person(name: str) -> str:
    """The key of the human `name` names: NFKC, format characters dropped, case folded, surrounding whitespace stripped."""
    visible = "".join(c for c in unicodedata.normalize("NFKC", name) if unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFKC", visible.casefold()).strip()


def same_person(a: str, b: str) -> bool:
    """Whether two approver names are one person."""
    return person(a) == person(b)


def approver_name(name: str) -> str:
    """A new approver's name as stored (`person(name)`); raises ValueError, one line, for a name that is not a plain email or login.

    Refused: whitespace anywhere, control or format (invisible) characters, and anything that is not, once
    normalised, an ASCII email or login, so two names on screen that look alike are one name in the store.
    """
    odd = next((c for c in name if c.isspace() or unicodedata.category(c) in ("Cc", "Cf")), None)
    if odd is not None:
        raise ValueError(f"approver name {name!r} holds {_kind(odd)} U+{ord(odd):04X}: give a plain email or login, e.g. bob@acme.example")
    plain = person(name)
    if len(plain) > _MAX_NAME or not _PLAIN_NAME.fullmatch(plain):
        raise ValueError(f"approver name {name!r} is not an email or a login (ASCII letters, digits, . _ % + ' -), e.g. bob@acme.example")
    return plain


def _kind(char: str) -> str:
    return "whitespace" if char.isspace() else "a control character" if unicodedata.category(char) == "Cc" else "a format character"
