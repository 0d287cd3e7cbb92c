"""Connectors answered from a function in the test: nothing leaves the process."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from servicekit.toolcontract import ToolContext, ToolError

Respond = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> Callable[[Respond], None]:
    """Make every system answer each request with `respond`.

    httpx clients (Zendesk, GitHub) through httpx's MockTransport; requests sessions (the Salesforce and BigQuery
    SDKs) through their adapter, which hands `respond` the same httpx request and sends its answer back as requests'.
    """
    client = httpx.AsyncClient

    def use(respond: Respond) -> None:
        def send(adapter: HTTPAdapter, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            asked = httpx.Request(str(request.method), str(request.url), headers=dict(request.headers), content=request.body or b"")
            answered = respond(asked)
            raw = urllib3.HTTPResponse(
                body=io.BytesIO(answered.content), headers=dict(answered.headers), status=answered.status_code, preload_content=False
            )
            return adapter.build_response(request, raw)

        monkeypatch.setattr(httpx, "AsyncClient", partial(client, transport=httpx.MockTransport(respond)))
        monkeypatch.setattr(HTTPAdapter, "send", send)

    return use


Refused = Callable[..., Awaitable[ToolError]]


@pytest.fixture
def refused() -> Refused:
    """`await refused(tool, ctx, args)`: the ToolError the tool raised (the test fails if it raised none, or another exception)."""

    async def call(tool: Callable[[ToolContext, dict[str, Any]], Awaitable[Any]], ctx: ToolContext, args: dict[str, Any]) -> ToolError:
        with pytest.raises(ToolError) as error:
            await tool(ctx, args)
        return error.value

    return call
