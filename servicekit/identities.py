"""Counterparties as typed identities: email lists, chat users and channels, URLs, payees, organisations, paths, repositories.

Parsing is by kind, never by substring: an email argument is an RFC 5322 address list, read by both of Python's parsers
(`"Bob <bob@evil.example>, ops@acme.example"` is two addresses), a URL is its host, a repository path
is normalised (`src/../.github/x`, `./.github/x` and `.GITHUB/x` are all `.github/x`) and case-folded, a code repository
(`owner/name`, as GitHub names one) is its owner, case-folded: whoever owns it receives what a call posts there.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.headerregistry import AddressHeader, HeaderRegistry
from email.utils import getaddresses
from typing import Any
from urllib.parse import urlsplit

from schemas.tools import CounterpartyKind

__all__ = ["Identity", "host_of", "identities_of", "is_address", "normalise_path", "values_at"]


@dataclass(frozen=True)
class Identity:
    """One counterparty named by a call: the arg it came from, its kind and its normalised value."""

    arg: str
    kind: CounterpartyKind
    value: str


def values_at(args: Any, path: str) -> Iterator[Any]:
    """Every value at a dot path; a list met on the way (or at the end) is walked item by item."""
    if isinstance(args, list | tuple):
        for item in args:
            yield from values_at(item, path)
        return
    if not path:
        if args is not None:
            yield args
        return
    head, _, rest = path.partition(".")
    if isinstance(args, Mapping) and head in args:
        yield from values_at(args[head], rest)


def host_of(value: str) -> str:
    """The host of a URL or bare domain, lower-cased, without port, credentials or trailing dot ('' when none)."""
    text = value.strip()
    if "://" not in text:
        text = "//" + text
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


def normalise_path(value: str) -> str:
    """A repository path, normalised and case-folded; a path that climbs out of the repository keeps its leading `..`."""
    text = value.strip().replace("\\", "/").casefold()
    normal = posixpath.normpath("/" + text if text.startswith("/") else text)
    return normal.lstrip("/") if normal not in (".", "/") else ""


# A plain address: no routing in its local part (`evil%evil.example@acme.example` and `host!user@…` are relayed onward
# by mail servers that still honour them), a host of DNS labels.
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\%!]+@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_HEADERS = HeaderRegistry()


def is_address(value: str) -> bool:
    """Whether a normalised email identity is one plain address (`local@host`), the only kind a directory can vouch for.

    What `_emails` could not read as such is kept whole (`evil@evil.example bob@acme.example`), so it is judged as
    no one's: never internal by the host after its last `@`.
    """
    return _ADDRESS.fullmatch(value) is not None


def _emails(value: Any) -> Iterator[str]:
    """Every address an email argument names, read by both of Python's parsers, and the whole text wherever they differ.

    A mailer reads a header with one parser or the other: the legacy `getaddresses` reads `evil@evil.example
    bob@acme.example` as `@acme.example`, the modern one (`email.policy.default`) as `evil@evil.example`. So every
    address either reads is a recipient, and a value either finds a defect in (or an address that is not plain) is also
    counted whole, as no one's address: it escalates as external, never passes as internal.
    """
    if isinstance(value, Mapping):  # {"name": …, "email": …} or {"address": …}
        value = value.get("email") or value.get("address") or ""
    if not isinstance(value, str) or not value.strip():
        return
    legacy = [address.strip().lower() for _, address in getaddresses([value])]
    try:
        header = _HEADERS("to", value)
        assert isinstance(header, AddressHeader)  # what the registry makes of a `To:` header
        modern = [a.addr_spec.strip().lower() for a in header.addresses]
        defects = bool(header.defects)
    except Exception:  # the modern parser refused it outright: the text alone says who it is for
        modern, defects = list[str](), True
    read = [a for a in dict.fromkeys(legacy + modern) if a]
    yield from (a for a in read if is_address(a))
    if defects or not read or not all(is_address(a) for a in read):
        yield " ".join(value.split()).lower()  # not plainly addresses: counted (as no one's), never dropped


def _one(kind: CounterpartyKind, value: Any) -> Iterator[str]:
    if kind == "email":
        yield from _emails(value)
        return
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return
    text = str(value).strip()
    if not text:
        return
    if kind == "url":
        yield host_of(text) or text.lower()
    elif kind == "path":
        yield normalise_path(text)
    elif kind == "chat_user":
        yield text.lstrip("@").casefold()
    elif kind == "chat_channel":
        yield text.lstrip("#").casefold()
    elif kind == "organisation":
        yield " ".join(text.casefold().split())
    elif kind == "repository":
        yield text.split("/", 1)[0].strip().casefold()
    else:  # payee: account ids and IBANs compare without spaces, case-insensitively
        yield "".join(text.split()).upper() if text[:2].isalpha() and text[2:4].isdigit() else text


def identities_of(args: Mapping[str, Any], declared: Mapping[str, CounterpartyKind]) -> list[Identity]:
    """Every counterparty the declared args name, in declaration order, duplicates removed."""
    seen: set[tuple[str, str]] = set()
    found: list[Identity] = []
    for arg, kind in declared.items():
        for raw in values_at(args, arg):
            for value in _one(kind, raw):
                if (kind, value) not in seen:
                    seen.add((kind, value))
                    found.append(Identity(arg, kind, value))
    return found
