"""The account settings each connector reads (`tidegate connectors enable --set KEY=VALUE`), each checked as it is set.

A setting the connector does not read (`base_ur`), or one it cannot use (`base_url=127.0.0.1:8080`, no scheme), was
stored and signed in silence: the call then went to the vendor's default address, or failed at call time in front of
an agent. Connectors not named here (a deployment's own) keep what they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["ACCOUNT_SETTINGS", "account_problems"]

Check = Callable[[str], str | None]  # what is wrong with a value, or None


def _url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an http(s) URL with a host, e.g. https://api.example.com"
    return None


def _text(value: str) -> str | None:
    return None if value.strip() else "a value that is not blank"


def _email(value: str) -> str | None:
    local, at, host = value.partition("@")
    return None if at and local and "." in host and " " not in value else "an email address (the token's user)"


def _count(value: str) -> str | None:
    return None if value.isdigit() and int(value) > 0 else "a whole number above 0"


def _price(value: str) -> str | None:
    try:
        return None if float(value) >= 0 else "a number, 0 or above"
    except ValueError:
        return "a number, 0 or above"


def _version(value: str) -> str | None:
    whole, dot, minor = value.partition(".")
    return None if whole.isdigit() and dot and minor.isdigit() else "an API version such as 59.0"


def _file(value: str) -> str | None:
    return None if Path(value).is_file() else "the path of a PEM file on this machine (the executor's too)"


ACCOUNT_SETTINGS: dict[str, dict[str, Check]] = {
    "stripe": {"base_url": _url},
    "zendesk": {"base_url": _url, "email": _email},
    "github": {"base_url": _url},
    "salesforce": {"instance_url": _url, "ca_bundle": _file, "api_version": _version},
    "bigquery": {"project": _text, "base_url": _url, "datasets": _text, "max_bytes_billed": _count, "usd_per_tib": _price},
}


def account_problems(connector: str, connection: Mapping[str, str]) -> list[str]:
    """What is wrong with account settings about to be stored for `connector`, one line each (none: store them).

    An empty value is not checked: it removes the setting (a misspelt one stored before this check, too).
    """
    known = ACCOUNT_SETTINGS.get(connector)
    if known is None:
        return []
    problems = []
    for key, value in connection.items():
        check = known.get(key)
        if not value:
            continue
        if check is None:
            problems.append(f"{connector} reads no account setting {key!r} (its settings: {', '.join(sorted(known))})")
        elif (wrong := check(value)) is not None:
            problems.append(f"{connector} {key}={value!r}: expected {wrong}")
    return problems
