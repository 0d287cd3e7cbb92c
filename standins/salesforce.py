"""The project's own stand-in for Salesforce's REST API (sObject rows), for the calls the Salesforce connector makes.

HTTPS only, as Salesforce (and `simple-salesforce`, which builds `https://` URLs) require: serve it with
`standins._tls.self_signed`. Wire format as Salesforce's: records with `attributes`, `POST
…/sobjects/<Object>/` answering `{"id", "success", "errors"}`, `PATCH` and `DELETE` answering 204, and errors as a list
`[{"message", "errorCode", "fields"}]` (401 `INVALID_SESSION_ID`, 404 `NOT_FOUND`, 400 picklist and
integrity errors, 403 `REQUEST_LIMIT_EXCEEDED`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["STAGES", "SalesforceStandIn"]

STAGES = ["Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost"]
_PREFIX = {"Account": "001", "Contact": "003", "Opportunity": "006", "Task": "00T"}


def _errors(status: int, code: str, message: str, fields: list[str] | None = None) -> JSONResponse:
    return JSONResponse([{"message": message, "errorCode": code, "fields": fields or []}], status_code=status)


@dataclass
class SalesforceStandIn:
    """One org's records by object; accepts one session id (OAuth access token)."""

    token: str = "00Dstandin!session"
    url: str = ""  # set by whoever serves it
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {o: {} for o in _PREFIX})
    requests: list[tuple[str, str]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _injected: list[tuple[str, int, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = "/services/data/v{version}/sobjects/{object}"
        self.app = Starlette(
            routes=[
                Route(base + "/", self._create, methods=["POST"]),
                Route(base + "/{rid}", self._record, methods=["GET", "PATCH", "DELETE"]),
            ]
        )
        self.app.add_middleware(_Gate, standin=self)  # type: ignore[arg-type]

    def add(self, obj: str, **fields: Any) -> str:
        """A record; returns its 18-character id."""
        rid = f"{_PREFIX[obj]}{next(self._seq):012d}AAA"
        self.records[obj][rid] = {"Id": rid, **fields}
        return rid

    def inject(self, status: int, body: Any, *, method: str = "PATCH") -> None:
        """Answer the next `method` request with this response (after authentication)."""
        self._injected.append((method, status, body))

    async def _record(self, request: Request) -> Response:
        obj, rid = request.path_params["object"], request.path_params["rid"]
        record = self.records.get(obj, {}).get(rid)
        if record is None:
            return _errors(404, "NOT_FOUND", "The requested resource does not exist")
        if request.method == "GET":
            url = f"/services/data/v{request.path_params['version']}/sobjects/{obj}/{rid}"
            return JSONResponse({"attributes": {"type": obj, "url": url}, **record})
        if request.method == "DELETE":
            del self.records[obj][rid]
            return Response(status_code=204)
        update = await request.json()
        if obj == "Opportunity" and "StageName" in update and update["StageName"] not in STAGES:
            return _errors(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"bad value for restricted picklist field: {update['StageName']}",
                ["StageName"],
            )
        record.update(update)
        return Response(status_code=204)

    async def _create(self, request: Request) -> Response:
        obj = request.path_params["object"]
        if obj not in self.records:
            return _errors(404, "NOT_FOUND", "The requested resource does not exist")
        fields = await request.json()
        what = fields.get("WhatId")
        if what is not None and not any(what in recs for recs in self.records.values()):
            return _errors(400, "FIELD_INTEGRITY_EXCEPTION", "Related To ID: id value of incorrect type", ["WhatId"])
        rid = self.add(obj, **fields)
        return JSONResponse({"id": rid, "success": True, "errors": []}, status_code=201)


class _Gate:
    """Authentication, request log and scripted failures in front of every route."""

    def __init__(self, app: Any, standin: SalesforceStandIn) -> None:
        self.app = app
        self.standin = standin

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        self.standin.requests.append((request.method, request.url.path))
        if request.headers.get("authorization") != f"Bearer {self.standin.token}":
            await _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")(scope, receive, send)
            return
        for i, (method, status, body) in enumerate(self.standin._injected):
            if method == request.method:
                del self.standin._injected[i]
                await JSONResponse(body, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


if __name__ == "__main__":  # python -m standins.salesforce: the same as python -m standins salesforce
    from standins.__main__ import main

    main(only="salesforce")
