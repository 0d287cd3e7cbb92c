"""The project's own stand-in for BigQuery's REST API v2, for the calls the BigQuery connector makes.

It speaks BigQuery's wire format for `jobs.insert` (dry run or not; a job id used twice answers 409
`ALREADY_EXISTS`), `jobs.get` and `jobs.getQueryResults` (rows as `{"f": [{"v": …}]}`), with
`statistics.query` carrying `totalBytesProcessed`, `totalBytesBilled` (10 MB minimum per table, as
BigQuery bills), `statementType` and `referencedTables`, and BigQuery's error shapes
(`{"error": {"code", "message", "errors": [{"reason"}], "status"}}`: 401, 404 `notFound`, 400
`bytesBilledLimitExceeded`, 403 `rateLimitExceeded`). It runs no SQL: a query returns the rows of the
first table it names, filtered on `WHERE <column> = @<param>` when there is one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["BigQueryStandIn", "Table"]

MIN_BILLED = 10 * 1024 * 1024
_TABLE = re.compile(r"`?(?:([A-Za-z0-9_-]+)\.)?([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)`?")
_FROM = re.compile(r"\b(?:FROM|JOIN)\s+(`[^`]+`|[A-Za-z0-9_.-]+)", re.IGNORECASE)
_WHERE = re.compile(r"\bWHERE\s+([A-Za-z0-9_]+)\s*=\s*@([A-Za-z0-9_]+)", re.IGNORECASE)


@dataclass
class Table:
    """A table: its columns (name → BigQuery type), rows, and the bytes a full scan reads."""

    columns: dict[str, str]
    rows: list[dict[str, Any]]
    bytes: int


def _err(code: int, status: str, reason: str, message: str) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status,
        }
    }
    return JSONResponse(body, status_code=code)


@dataclass
class BigQueryStandIn:
    """One Google Cloud project's BigQuery; accepts one OAuth access token."""

    project: str = "acme-analytics"
    token: str = "ya29.standin"
    url: str = ""  # set by whoever serves it
    tables: dict[str, Table] = field(default_factory=dict)  # "dataset.table"
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    _injected: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        base = "/bigquery/v2/projects/{project}"
        self.app = Starlette(
            routes=[
                Route(base + "/jobs", self._insert, methods=["POST"]),
                Route(base + "/jobs/{job_id}", self._get),
                Route(base + "/queries/{job_id}", self._results),
            ]
        )
        self.app.add_middleware(_Gate, standin=self)  # type: ignore[arg-type]

    def inject(self, status: int, body: dict[str, Any], *, method: str = "POST") -> None:
        """Answer the next `method` request with this response (after authentication)."""
        self._injected.append((method, status, body))

    def _plan(self, sql: str) -> tuple[list[tuple[str, str, str]], str] | JSONResponse:
        refs = []
        for raw in _FROM.findall(sql):
            m = _TABLE.fullmatch(raw)
            if m is None:
                return _err(400, "INVALID_ARGUMENT", "invalidQuery", f"Syntax error: unexpected table name {raw}")
            project, dataset, table = m.group(1) or self.project, m.group(2), m.group(3)
            if project != self.project or f"{dataset}.{table}" not in self.tables:
                return _err(404, "NOT_FOUND", "notFound", f"Not found: Table {project}:{dataset}.{table} was not found in location US")
            refs.append((project, dataset, table))
        first = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        statement = "SELECT" if first in ("SELECT", "WITH") else first
        return refs, statement

    async def _insert(self, request: Request) -> Response:
        doc = await request.json()
        config = doc.get("configuration", {})
        query = config.get("query", {})
        planned = self._plan(str(query.get("query", "")))
        if isinstance(planned, JSONResponse):
            return planned
        refs, statement = planned
        processed = sum(self.tables[f"{d}.{t}"].bytes for _, d, t in refs)
        billed = max(processed, MIN_BILLED * len(refs)) if refs else 0
        cap = query.get("maximumBytesBilled")
        if not config.get("dryRun") and cap is not None and billed > int(cap):
            return _err(400, "INVALID_ARGUMENT", "bytesBilledLimitExceeded",
                        f"Query exceeded limit for bytes billed: {cap}. {billed} or higher required.")  # fmt: skip
        ref = dict(doc.get("jobReference") or {})
        ref.setdefault("projectId", self.project)
        ref.setdefault("location", "US")
        stats = {
            "totalBytesProcessed": str(processed),
            "query": {
                "totalBytesProcessed": str(processed), "totalBytesBilled": "0" if config.get("dryRun") else str(billed),
                "statementType": statement, "cacheHit": False,
                "referencedTables": [{"projectId": p, "datasetId": d, "tableId": t} for p, d, t in refs],
            },
        }  # fmt: skip
        job = {"kind": "bigquery#job", "jobReference": ref, "configuration": config, "status": {"state": "DONE"}, "statistics": stats}
        if config.get("dryRun"):
            return JSONResponse(job)
        job_id = ref.get("jobId", "")
        if job_id in self.jobs:
            return _err(409, "ALREADY_EXISTS", "duplicate", f"Already Exists: Job {self.project}:US.{job_id}")
        job["id"] = f"{self.project}:US.{job_id}"
        job["_rows"] = self._rows(refs, query)
        self.jobs[job_id] = job
        return JSONResponse({k: v for k, v in job.items() if k != "_rows"})

    def _rows(self, refs: list[tuple[str, str, str]], query: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
        if not refs:
            return {}, []
        table = self.tables[f"{refs[0][1]}.{refs[0][2]}"]
        rows = table.rows
        where = _WHERE.search(str(query.get("query", "")))
        if where:
            params = {p["name"]: p["parameterValue"]["value"] for p in query.get("queryParameters", [])}
            rows = [r for r in rows if str(r.get(where.group(1))) == str(params.get(where.group(2)))]
        return table.columns, rows

    async def _get(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return _err(404, "NOT_FOUND", "notFound", f"Not found: Job {self.project}:US.{request.path_params['job_id']}")
        return JSONResponse({k: v for k, v in job.items() if k != "_rows"})

    async def _results(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return _err(404, "NOT_FOUND", "notFound", f"Not found: Job {self.project}:US.{request.path_params['job_id']}")
        columns, rows = job["_rows"]
        limit = int(request.query_params.get("maxResults", "100000"))
        fields = [{"name": n, "type": t, "mode": "NULLABLE"} for n, t in columns.items()]
        data = [{"f": [{"v": None if r.get(n) is None else str(r[n])} for n in columns]} for r in rows[:limit]]
        q = job["statistics"]["query"]
        return JSONResponse({
            "kind": "bigquery#getQueryResultsResponse", "jobReference": job["jobReference"], "schema": {"fields": fields},
            "rows": data, "totalRows": str(len(rows)), "jobComplete": True, "cacheHit": False,
            "totalBytesProcessed": q["totalBytesProcessed"],
        })  # fmt: skip


class _Gate:
    """Authentication, request log and scripted failures in front of every route."""

    def __init__(self, app: Any, standin: BigQueryStandIn) -> None:
        self.app = app
        self.standin = standin

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        body: dict[str, Any] = {}
        if request.method == "POST":
            raw = b""
            more = True
            messages = []
            while more:
                message = await receive()
                messages.append(message)
                raw += message.get("body", b"")
                more = message.get("more_body", False)
            body = json.loads(raw or b"{}")

            async def replay() -> dict[str, Any]:
                return messages.pop(0) if messages else {"type": "http.request", "body": b"", "more_body": False}

            receive = replay
        self.standin.requests.append((request.method, request.url.path, body))
        if request.headers.get("authorization") != f"Bearer {self.standin.token}":
            msg = "Request had invalid authentication credentials. Expected OAuth 2 access token."
            await _err(401, "UNAUTHENTICATED", "authError", msg)(scope, receive, send)
            return
        for i, (method, status, payload) in enumerate(self.standin._injected):
            if method == request.method:
                del self.standin._injected[i]
                await JSONResponse(payload, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


if __name__ == "__main__":  # python -m standins.bigquery: the same as python -m standins bigquery
    from standins.__main__ import main

    main(only="bigquery")
