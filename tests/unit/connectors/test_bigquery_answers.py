"""The BigQuery connector reading answers it cannot use (an HTML page, another shape): `bad_answer` naming the path.

google-cloud-bigquery decodes answers itself: a bare JSONDecodeError on an HTML page, a KeyError or AttributeError
on another shape, and a page whose rows are not a list read as no rows at all. The connector's session reads each
answer through the guard before the client does.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from connectors import bigquery_tools as bq
from servicekit.toolcontract import ToolContext

PROJECT = "/bigquery/v2/projects/acme-analytics"
HTML = "<html><body>502 Bad Gateway</body></html>"
QUERY = {"sql": "SELECT order_id FROM `acme-analytics.support.orders` WHERE customer_id = @c", "params": {"c": "cus_1"}}


def _ctx() -> ToolContext:
    return ToolContext(
        pool=None, tenant_id="acme", action_id="a-1", idempotency_key="a-1", task_id="t-1", attempt=1, credential="ya29.tok",
        connection={"base_url": "https://bigquery.test", "project": "acme-analytics", "datasets": "support"},
    )  # fmt: skip


def _job(request: httpx.Request) -> dict[str, Any]:
    sent = json.loads(request.content)
    tables = [{"projectId": "acme-analytics", "datasetId": "support", "tableId": "orders"}]
    stats = {"statementType": "SELECT", "referencedTables": tables, "totalBytesProcessed": "1024", "totalBytesBilled": "10485760"}
    reference = {"projectId": "acme-analytics", "location": "US"} | sent.get("jobReference", {})
    return {"jobReference": reference, "configuration": sent["configuration"], "status": {"state": "DONE"}, "statistics": {"query": stats}}


ROWS = {
    "jobReference": {"projectId": "acme-analytics", "jobId": "tidegate_a_1"}, "jobComplete": True, "totalRows": "2",
    "schema": {"fields": [{"name": "order_id", "type": "STRING", "mode": "NULLABLE"}]},
    "rows": [{"f": [{"v": "O-1"}]}, {"f": [{"v": "O-4"}]}],
}  # fmt: skip


class BigQuery:
    """Answers the dry run, the run and the page of rows as BigQuery does, but with `instead` for the ones named there."""

    def __init__(self, **instead: Any) -> None:
        self.instead = instead
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(PROJECT)
        step = "rows" if request.method == "GET" else "dry" if json.loads(request.content)["configuration"].get("dryRun") else "run"
        self.asked.append(f"{step} {request.method} {path}")
        if step not in self.instead:
            return httpx.Response(200, json=ROWS if step == "rows" else _job(request))
        doc = self.instead[step]
        if isinstance(doc, str):
            return httpx.Response(200, text=doc, headers={"content-type": "text/html"})
        return httpx.Response(200, json=doc)


async def test_an_html_page_instead_of_the_dry_run_is_a_bad_answer_naming_the_path(answer: Any, refused: Any) -> None:
    bigquery = BigQuery(dry=HTML)
    answer(bigquery)
    error = await refused(bq.run_query, _ctx(), QUERY)
    assert (error.type, error.retryable, error.maybe_applied) == ("bad_answer", True, True)  # a read: the executor retries it
    assert "BigQuery answered POST bigquery.test/bigquery/v2/projects/acme-analytics/jobs with HTTP 200 (text/html)" in error.message
    assert "(Invalid JSON" in error.message
    assert "it starts b'<html><body>502 Bad Gateway" in error.message
    assert bigquery.asked == ["dry POST /jobs"]  # nothing ran


async def test_jobs_of_another_shape_name_the_first_broken_field(answer: Any, refused: Any) -> None:
    answer(BigQuery(dry={"kind": "bigquery#job"}))
    assert "(jobReference: Field required)" in (await refused(bq.run_query, _ctx(), QUERY)).message
    answer(BigQuery(dry=[{"jobReference": {"projectId": "acme-analytics"}}]))
    assert "cannot be read (Input should be an object)" in (await refused(bq.run_query, _ctx(), QUERY)).message
    tables = [{"projectId": "acme-analytics", "dataset": "hr"}]
    answer(BigQuery(dry={"jobReference": {"projectId": "acme-analytics"}, "statistics": {"query": {"referencedTables": tables}}}))
    assert "(statistics.query.referencedTables.0.datasetId: Field required)" in (await refused(bq.run_query, _ctx(), QUERY)).message
    answer(BigQuery(run={"jobReference": {"jobId": "tidegate_a_1"}}))
    error = await refused(bq.run_query, _ctx(), QUERY)
    assert "POST bigquery.test/bigquery/v2/projects/acme-analytics/jobs with HTTP 200" in error.message
    assert "(jobReference.projectId: Field required)" in error.message


async def test_a_page_of_rows_of_another_shape_is_a_bad_answer_not_an_empty_result(answer: Any, refused: Any) -> None:
    answer(BigQuery(rows=ROWS | {"rows": {"f": [{"v": "O-1"}]}}))
    error = await refused(bq.run_query, _ctx(), QUERY)
    assert "BigQuery answered GET bigquery.test/bigquery/v2/projects/acme-analytics/queries/tidegate_a_1 with HTTP 200" in error.message
    assert "(rows: Input should be a valid array)" in error.message
    answer(BigQuery(rows=[ROWS]))
    assert (await refused(bq.run_query, _ctx(), QUERY)).type == "bad_answer"


async def test_well_formed_answers_still_read_as_before(answer: Any) -> None:
    bigquery = BigQuery()
    answer(bigquery)
    result = await bq.run_query(_ctx(), QUERY)
    assert result["rows"] == [{"order_id": "O-1"}, {"order_id": "O-4"}]
    assert (result["total_rows"], result["bytes_estimated"], result["bytes_billed"]) == (2, 1024, 10485760)
    assert [step.split()[0] for step in bigquery.asked] == ["dry", "run", "rows"]


async def test_a_dry_run_that_names_no_statement_type_is_refused_in_words_and_nothing_runs(answer: Any, refused: Any) -> None:
    def untyped(request: httpx.Request) -> dict[str, Any]:
        job = _job(request)
        del job["statistics"]["query"]["statementType"]
        return job

    class Untyped(BigQuery):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST" and json.loads(request.content)["configuration"].get("dryRun"):
                self.asked.append("dry")
                return httpx.Response(200, json=untyped(request))
            return super().__call__(request)

    bigquery = Untyped()
    answer(bigquery)
    error = await refused(bq.run_query, _ctx(), QUERY)
    assert error.type == "not_read_only"
    assert error.message == "only SELECT statements run here, not a statement whose type BigQuery's dry run did not say; nothing was run"
    assert bigquery.asked == ["dry"]  # said 'not None' before
