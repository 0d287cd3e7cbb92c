"""Who is one person: the rule the approval service (four eyes, the quorum) and the policy (a grant's distinct approvers) share.

An approver's name is an email or a login as its credential gives it; two spellings that differ only in
case name the same human, so a requester cannot approve their own call as `Alice@…`, nor one person
count twice toward a quorum.
"""

from __future__ import annotations

__all__ = ["person", "same_person"]


def person(name: str) -> str:
    """The key of the human `name` names: equal for two names of one person (compared case-insensitively)."""
    return name.casefold()


def same_person(a: str, b: str) -> bool:
    """Whether two approver names are one person."""
    return person(a) == person(b)
