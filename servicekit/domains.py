"""Domains a tenant's directory may name as its own: a domain someone registers, or a host under one.

The policy counts an address under a directory domain (a subdomain too) as internal, and a site under
one as trusted, so an entry that is a public suffix (`com`, `co.uk`, `github.io`) would make every
address or site under it the tenant's. Public suffixes are read from the Public Suffix List as the
`publicsuffixlist` package ships it (ICANN and private sections; nothing is downloaded).
"""

from __future__ import annotations

import re
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

__all__ = ["DOMAIN_FIELDS", "domain_problem", "domain_problems"]

DOMAIN_FIELDS = ("internal_domains", "allowed_sites")
"""The directory lists whose entries are domains (a subdomain counts)."""

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def domain_problem(entry: str) -> str | None:
    """Why `entry` cannot be a directory domain (None when it can), as one line naming it.

    Taken: a host name (IDNA, compared lower-case, a trailing dot ignored) with a registrable domain
    (`acme.example`, `mail.acme.co.uk`). Refused: anything else (an address, a URL, a path, spaces), a
    public suffix, and a bare top-level name.
    """
    host = entry.strip().lower().rstrip(".")
    shown = repr(entry[:100])
    if not host or any(c in host for c in "@/:?# \t") or "\\" in host:
        return f"{shown} is not a domain name (give the domain alone, e.g. acme.example)"
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return f"{shown} is not a domain name (not a valid internationalised name)"
    labels = ascii_host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return f"{shown} is not a domain name (letters, digits and hyphens between dots)"
    if len(labels) < 2 or _suffixes().is_public(ascii_host):
        return (
            f"{shown} is a public suffix: every address and site under it would count as the tenant's own "
            "(give the tenant's registered domain, e.g. acme.example)"
        )
    return None


def domain_problems(lists: dict[str, list[str]]) -> list[str]:
    """Each refused entry of the domain lists in `lists` (a directory's fields), as `field: why`."""
    return [f"{name}: {problem}" for name in DOMAIN_FIELDS for entry in lists.get(name, []) if (problem := domain_problem(entry))]
