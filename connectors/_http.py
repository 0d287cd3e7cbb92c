"""How a connector that speaks REST with httpx reports one attempt: the answer, or a ToolError with retry semantics.

The executor is the one layer that retries; these functions only say whether a retry could help
(429, 503, other 5xx, transport errors) and whether the request may have taken effect.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import requests
from pydantic import BaseModel, ValidationError

from servicekit.toolcontract import ToolError, retry_after_s

__all__ = ["NEVER_SENT", "detail_of", "parse_answer", "raise_for_answer", "retry_after_s", "send"]

_Shape = TypeVar("_Shape", bound=BaseModel)
_SHOWN_BYTES = 200

NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
"""httpx's errors raised before a request left: the connection was refused or not opened in time, so nothing was applied."""


async def send(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request; transport failures become ToolErrors (a refused connection was never sent, a read timeout may have been)."""
    try:
        return await client.request(method, url, **kwargs)
    except NEVER_SENT as exc:
        raise ToolError("unreachable", f"{method} {_where(exc, url)}: {type(exc).__name__}", retryable=True) from exc
    except httpx.TimeoutException as exc:
        raise ToolError("timeout", f"{method} {_where(exc, url)} did not answer in time", retryable=True, maybe_applied=True) from exc
    except httpx.HTTPError as exc:
        message = f"{method} {_where(exc, url)}: {type(exc).__name__}"
        raise ToolError("transport_error", message, retryable=True, maybe_applied=True) from exc


def _where(exc: httpx.HTTPError, url: str) -> str:
    """Where the request went: the whole URL as sent (the grant's `base_url` joined: a connector passes a path)."""
    try:
        return _shown(exc.request.url)
    except RuntimeError:  # raised without a request
        return _shown(httpx.URL(url))


def _shown(given: httpx.URL | str | None) -> str:
    """Host, port and path of a URL (httpx's, or the text of requests'), never its query string nor userinfo."""
    url = httpx.URL(str(given or ""))
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.host}{port}{url.path}"


def raise_for_answer(response: httpx.Response, vendor: str) -> None:
    """Raise the ToolError an error answer means; return for 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = detail_of(response)
    wait = retry_after_s(response.headers.get("Retry-After"))
    if status == 429:
        shown = response.headers.get("Retry-After") or "none"
        raise ToolError("rate_limited", f"{vendor} answered 429 (Retry-After: {shown}): {detail}", retryable=True, retry_after_s=wait)
    if status == 503:  # a gateway's answer too, after its backend did the work: a write without a key is not sent again
        raise ToolError("http_503", f"{vendor} is unavailable: {detail}", retryable=True, maybe_applied=True, retry_after_s=wait)
    if status >= 500:
        raise ToolError(f"http_{status}", f"{vendor}: {detail}", retryable=True, maybe_applied=True)
    if status == 401:
        raise ToolError(
            "credential_rejected",
            f"{vendor} refused the tenant's credential (HTTP 401): set the right one with "
            f"`tidegate connectors set-credential {vendor.lower()} --tenant <tenant>`",
        )
    if status == 403:
        raise ToolError("permission_denied", f"the tenant's {vendor} credential may not do this: {detail}")
    if status == 404:
        raise ToolError("not_found", f"{vendor}: {detail}")
    raise ToolError(f"http_{status}", f"{vendor}: {detail}")


def parse_answer(response: httpx.Response | requests.Response, vendor: str, shape: type[_Shape]) -> _Shape:
    """The 2xx answer read as `shape`; a ToolError saying what came instead when it is not JSON of that shape.

    An httpx response, or the requests one an SDK built on requests received (Salesforce's, BigQuery's).

    Such an answer (an HTML page from a proxy, an API that changed) may come after the system acted, as a
    5xx may: `maybe_applied`, and retryable, so only a call that is safe to repeat is tried again.
    """
    try:
        return shape.model_validate_json(response.content)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        problem = f"{where}: {first['msg']}" if where else first["msg"]
        request = response.request
        raise ToolError(
            "bad_answer",
            f"{vendor} answered {request.method} {_shown(request.url)} with HTTP {response.status_code} "
            f"({response.headers.get('content-type', 'no content-type')}) that cannot be read ({problem}); "
            f"it starts {response.content[:_SHOWN_BYTES]!r}",
            retryable=True,
            maybe_applied=True,
        ) from exc


def detail_of(response: httpx.Response) -> str:
    """What an error answer says, in one line (its `error`, `description`, `message`…), at most 500 characters."""
    try:
        doc = response.json()
    except (ValueError, RecursionError):  # not JSON (an HTML page), or nested deeper than json reads
        return response.text[:300] or response.reason_phrase
    if not isinstance(doc, dict):
        return str(doc)[:300]
    parts = [str(doc[k]) for k in ("error", "description", "message") if isinstance(doc.get(k), str)]
    if isinstance(doc.get("error"), dict):  # {"error": {"title": ..., "message": ...}}
        parts += [str(v) for v in doc["error"].values() if isinstance(v, str)]
    if isinstance(doc.get("details"), dict):  # Zendesk's RecordInvalid
        parts += [str(d.get("description")) for v in doc["details"].values() if isinstance(v, list) for d in v if isinstance(d, dict)]
    return ("; ".join(parts) or str(doc))[:500]
