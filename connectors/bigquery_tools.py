"""BigQuery: read-only, parameterised queries on the tenant's allow-listed datasets, priced by the bytes billed.

Through the official `google-cloud-bigquery` client (synchronous: each call runs in a worker thread; its
own retries are off, the executor is the one layer that retries). Every query is first a dry run: BigQuery
itself says which tables the query reads and what kind of statement it is, so the tool refuses anything
but a SELECT, any table outside the datasets the tenant allowed (`connection.datasets`), and an estimate
above the tenant's cap (`connection.max_bytes_billed`), before a byte is billed. The real run carries
the cap as `maximumBytesBilled` (BigQuery enforces it too) and the action id as its job id, so a retry
finds the first job instead of running the query twice. The call's cost is the bytes billed at the
on-demand price (`connection.usd_per_tib`, 6.25 by default).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import urlsplit

import requests
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import Credentials
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import AuthorizedSession
from google.cloud import bigquery
from google.oauth2 import credentials as oauth2
from google.oauth2 import service_account
from pydantic import BaseModel, Field, RootModel

from connectors._http import parse_answer
from servicekit.toolcontract import ToolContext, ToolError

__all__ = ["COST_KEY", "run_query"]

COST_KEY = "cost"
TIB = 1024**4
_MAX_ROWS = 1000
_NO_RETRY: Any = None  # the client's own retries are off: the executor is the one layer that retries
_TYPES = {bool: "BOOL", int: "INT64", float: "FLOAT64", str: "STRING"}


class _TableReference(BaseModel):
    projectId: str
    datasetId: str
    tableId: str


class _QueryStatistics(BaseModel):
    statementType: str | None = None
    referencedTables: list[_TableReference] = Field(default_factory=list)
    totalBytesProcessed: int | None = None
    totalBytesBilled: int | None = None


class _Statistics(BaseModel):
    query: _QueryStatistics | None = None


class _JobReference(BaseModel):
    projectId: str
    jobId: str | None = None  # a dry run's job has none


class _Job(BaseModel):
    """A job (`jobs.insert`, `jobs.get`): the fields the client and this connector read, in BigQuery's names."""

    jobReference: _JobReference
    statistics: _Statistics = Field(default_factory=_Statistics)


class _Cell(BaseModel):
    v: Any = None


class _Row(BaseModel):
    f: list[_Cell]


class _Column(BaseModel):
    name: str
    type: str


class _Schema(BaseModel):
    fields: list[_Column] = Field(default_factory=list)


class _QueryResults(BaseModel):
    """A page of a query's rows (`jobs.getQueryResults`); a job still running has none yet."""

    jobComplete: bool | None = None
    table_schema: _Schema | None = Field(default=None, alias="schema")
    rows: list[_Row] = Field(default_factory=list)
    totalRows: int | None = None


class _Resource(RootModel[dict[str, Any]]):
    """Any other answer: the client reads every BigQuery answer as a JSON object."""


_SHAPES: list[tuple[re.Pattern[str], type[BaseModel]]] = [
    (re.compile(r"/projects/[^/]+/jobs(/[^/]+)?$"), _Job),
    (re.compile(r"/projects/[^/]+/queries/[^/]+$"), _QueryResults),
]


def _guard(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """The session's response hook: each 2xx answer is read through the guard before the client reads it.

    The client would fail on an answer that is not JSON of the expected shape with a bare decoding or key error,
    or read a list of rows that is not one as no rows at all; here that answer is `bad_answer` instead.
    """
    if 200 <= response.status_code < 300:
        path = urlsplit(response.url).path
        shape = next((shape for pattern, shape in _SHAPES if pattern.search(path)), _Resource)
        parse_answer(response, "BigQuery", shape)


def _client(ctx: ToolContext) -> bigquery.Client:
    if not ctx.credential:
        raise ToolError("credential_missing", "no BigQuery credential for this call")
    project = ctx.connection.get("project")
    if not project:
        raise ToolError("connection_incomplete", "the tenant's BigQuery grant names no project (`--set project=<id>`)")
    creds: Credentials
    if ctx.credential.lstrip().startswith("{"):  # a service-account key (JSON)
        creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            json.loads(ctx.credential), scopes=["https://www.googleapis.com/auth/bigquery.readonly"]
        )
    else:  # an OAuth access token
        creds = oauth2.Credentials(ctx.credential)  # type: ignore[no-untyped-call]
    endpoint = ctx.connection.get("base_url")
    options = ClientOptions(api_endpoint=endpoint) if endpoint else None
    session = AuthorizedSession(creds)  # type: ignore[no-untyped-call]  # as the client builds it, plus the guard
    session.hooks["response"].append(_guard)
    return bigquery.Client(project=project, credentials=creds, client_options=options, _http=session)


def _parameters(params: dict[str, Any]) -> list[bigquery.ScalarQueryParameter]:
    return [bigquery.ScalarQueryParameter(name, _TYPES[type(value)], value) for name, value in params.items()]


def _failure(exc: gexc.GoogleAPICallError) -> ToolError:
    reasons = {e.get("reason") for e in getattr(exc, "errors", []) or [] if isinstance(e, dict)}
    message = str(exc.message)[:500]
    if isinstance(exc, gexc.Unauthorized):
        return ToolError("credential_rejected", "BigQuery refused the tenant's credential (HTTP 401)")
    if reasons & {"rateLimitExceeded", "backendError"} or isinstance(exc, gexc.TooManyRequests | gexc.ServiceUnavailable):
        return ToolError("rate_limited", f"BigQuery: {message}", retryable=True)
    if "bytesBilledLimitExceeded" in reasons:
        return ToolError("bytes_cap_exceeded", f"BigQuery: {message}")
    if isinstance(exc, gexc.NotFound):
        return ToolError("not_found", f"BigQuery: {message}")
    if isinstance(exc, gexc.Forbidden):
        return ToolError("permission_denied", f"BigQuery: {message}")
    if isinstance(exc, gexc.ServerError):
        return ToolError(f"http_{exc.code}", f"BigQuery: {message}", retryable=True, maybe_applied=True)  # a read: safe to repeat
    return ToolError(f"http_{exc.code}", f"BigQuery: {message}")


def _query(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    client = _client(ctx)
    try:
        allowed = {d.strip() for d in ctx.connection.get("datasets", "").split(",") if d.strip()}
        cap = int(ctx.connection.get("max_bytes_billed", str(10 * 1024**3)))
        price = float(ctx.connection.get("usd_per_tib", "6.25"))
        params = _parameters(args.get("params", {}))
        dry = client.query(
            args["sql"], job_config=bigquery.QueryJobConfig(dry_run=True, use_query_cache=False, query_parameters=params),
            retry=_NO_RETRY, job_retry=_NO_RETRY,
        )  # fmt: skip
        if dry.statement_type != "SELECT":
            kind = dry.statement_type or "a statement whose type BigQuery's dry run did not say"
            raise ToolError("not_read_only", f"only SELECT statements run here, not {kind}; nothing was run")
        outside = sorted({f"{t.project}.{t.dataset_id}" for t in dry.referenced_tables if t.dataset_id not in allowed})
        if outside:
            raise ToolError("dataset_not_allowed", f"the query reads datasets the tenant has not allowed: {', '.join(outside)}")
        estimate = int(dry.total_bytes_processed or 0)
        if estimate > cap:
            raise ToolError("bytes_cap_exceeded", f"the dry run estimates {estimate} bytes, above the tenant's cap of {cap}")
        config = bigquery.QueryJobConfig(query_parameters=params, maximum_bytes_billed=cap, labels={"tidegate_tenant": ctx.tenant_id[:63]})
        job_id = f"tidegate_{ctx.action_id}".replace("-", "_")
        try:
            job = client.query(args["sql"], job_config=config, job_id=job_id, retry=_NO_RETRY, job_retry=_NO_RETRY)
        except gexc.Conflict:  # a retry of this action: the first job ran (or runs); read its results
            found = client.get_job(job_id, retry=_NO_RETRY)
            if not isinstance(found, bigquery.QueryJob):
                raise ToolError("job_conflict", f"job {job_id} exists and is not a query") from None
            job = found
        rows = job.result(max_results=min(int(args.get("max_rows", 100)), _MAX_ROWS), retry=_NO_RETRY)
        billed = int(job.total_bytes_billed or 0)
        return {
            "rows": [dict(row.items()) for row in rows],
            "total_rows": rows.total_rows,
            "bytes_estimated": estimate,
            "bytes_billed": billed,
            "job_id": job_id,
            COST_KEY: {"usd": round(billed / TIB * price, 6)},
        }
    except gexc.GoogleAPICallError as exc:
        raise _failure(exc) from exc
    except RefreshError as exc:  # a 401 makes google-auth try to refresh a token it cannot refresh
        raise ToolError("credential_rejected", "BigQuery refused the tenant's credential (HTTP 401)") from exc
    finally:
        client.close()  # type: ignore[no-untyped-call]


async def run_query(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Dry run, checks, then the query; `cost.usd` is what BigQuery billed for it."""
    return await asyncio.to_thread(_query, ctx, args)
