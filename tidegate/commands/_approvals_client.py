"""The approval service's HTTP API as the approvals commands call it: where it listens, the caller's token, its errors in words."""

from __future__ import annotations

import json
from typing import Annotated, Any, NoReturn

import httpx
import typer

from tidegate.commands._common import TEXT_MAX, fail, one_line

__all__ = ["AsJson", "Token", "Url", "call", "configured_url", "service_url"]

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TIDEGATE_APPROVAL_URL",
        help="Base URL of the approval service (default: where it listens by the same settings, TIDEGATE_APPROVAL_PUBLIC_URL "
        "or TIDEGATE_APPROVAL_HTTP_HOST and _HTTP_PORT).",
    ),
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="TIDEGATE_APPROVER_TOKEN", help="Your approver token (or a one-time link token).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # a service listening on every address is reached on this machine's loopback

_STATUS_WORDS = {
    401: "not authenticated: the token is unknown, revoked, expired or already used (set TIDEGATE_APPROVER_TOKEN or pass --token)",
    429: "too many requests: wait and try again",
    403: "not allowed",
    404: "not found",
    409: "conflict: the request is no longer in the state you saw",
    422: "invalid input",
    503: "the approval service cannot answer now (starting, or its database away); try again in a moment",
}
# A 409 whose request did not change under you says what holds it instead: "no longer in the state you saw" read, under a
# kill switch, as if someone had decided it meanwhile (the approver2am probe).
_CONFLICT_WORDS = {
    "killswitch": "conflict: a kill switch holds this tool, the request is still pending",
    "already_approved": "conflict: your approval is already counted",
    "edit_pending": "conflict: another approver's edit waits for yours",
    "tool_not_granted": "conflict: the tenant may no longer use this tool",
    "request_unreadable": "conflict: the request's row cannot be read, nobody can decide it",
}


def configured_url() -> str | None:
    """Where the approval service listens, by the settings it reads itself: its public URL, else its HTTP host and port.

    None when its port is 0 (any free port): then only `--url` can say where.
    """
    from pydantic import ValidationError

    from services.approval import ApprovalSettings

    try:
        service = ApprovalSettings()
    except ValidationError as exc:
        fail(f"the approval service's settings (TIDEGATE_APPROVAL_*): {exc.errors()[0]['msg']}; or pass --url", code=2)
    if service.public_url:
        return service.public_url
    if service.http_port == 0:
        return None
    host = _ANY_ADDRESS.get(service.http_host, service.http_host)
    return f"http://[{host}]:{service.http_port}" if ":" in host else f"http://{host}:{service.http_port}"


def service_url() -> str:
    """The URL the approvals commands call when no `--url` (nor TIDEGATE_APPROVAL_URL) is given."""
    url = configured_url()
    if url is None:
        fail("TIDEGATE_APPROVAL_HTTP_PORT is 0 (any free port): pass --url or set TIDEGATE_APPROVAL_URL to where it listens", code=2)
    return url


def _explain(response: httpx.Response) -> NoReturn:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    message = detail.get("message") if isinstance(detail, dict) else json.dumps(detail)
    code = f" [{detail.get('code')}]" if isinstance(detail, dict) and detail.get("code") else ""
    words = _STATUS_WORDS.get(response.status_code, "error")
    if response.status_code == 409 and isinstance(detail, dict):
        words = _CONFLICT_WORDS.get(str(detail.get("code")), words)
    fail(f"{response.status_code} {words}{one_line(code)}: {one_line(message, TEXT_MAX)}")  # fail shows [..] as text


def call(
    method: str, url: str | None, path: str, token: str | None, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None
) -> Any:
    url = url or service_url()
    if not token:
        fail("no approver token: set TIDEGATE_APPROVER_TOKEN or pass --token (an admin creates one with `tidegate approvals token create`)")
    try:
        response = httpx.request(
            method,
            url.rstrip("/") + path,
            json=body,
            params={k: v for k, v in (params or {}).items() if v is not None},
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach the approval service at {url}: {exc} (is it running? `tidegate up`)")
    if response.status_code >= 400:
        _explain(response)
    return response.json()
