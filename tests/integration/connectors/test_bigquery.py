"""BigQuery connector against our stand-in of BigQuery's REST API: read-only, allow-listed, capped, priced by bytes billed."""

from __future__ import annotations

import pytest
from connector_harness import CANARY, Executed, call_context

import schemas as s
from connectors import bigquery_tools as bq
from servicekit.toolcontract import ToolContext, ToolError
from standins.bigquery import MIN_BILLED, BigQueryStandIn

ORDERS = "SELECT order_id, amount FROM `acme-analytics.support.orders` WHERE customer_id = @customer"
MiB = 1024**2


def ctx(standin: BigQueryStandIn, *, credential: str = CANARY, cap: int = 1024**3, action_id: str = "act-bq-1") -> ToolContext:
    return call_context(
        base_url=standin.url, credential=credential, action_id=action_id, project="acme-analytics", datasets="support",
        max_bytes_billed=str(cap),
    )  # fmt: skip


async def test_a_parameterised_select_returns_rows_and_costs_the_bytes_billed(bigquery: BigQueryStandIn) -> None:
    answer = await bq.run_query(ctx(bigquery), {"sql": ORDERS, "params": {"customer": "cus_1001"}})
    assert [r["order_id"] for r in answer["rows"]] == ["O-1", "O-4"]
    assert (answer["bytes_estimated"], answer["bytes_billed"]) == (200 * MiB, 200 * MiB)
    assert answer["cost"]["usd"] == pytest.approx(200 * MiB / 1024**4 * 6.25, abs=1e-6)
    dry, run = [body for method, _, body in bigquery.requests if method == "POST"]
    assert dry["configuration"]["dryRun"] is True
    assert run["jobReference"]["jobId"] == "tidegate_act_bq_1"
    assert run["configuration"]["query"]["maximumBytesBilled"] == str(1024**3)
    assert run["configuration"]["query"]["queryParameters"][0]["parameterValue"]["value"] == "cus_1001"


async def test_refuses_writes_other_datasets_and_estimates_over_the_cap_before_running(bigquery: BigQueryStandIn) -> None:
    for sql, kind in [
        ("DELETE FROM `acme-analytics.support.orders` WHERE TRUE", "not_read_only"),
        ("SELECT name FROM `acme-analytics.hr.salaries`", "dataset_not_allowed"),
        ("SELECT o.order_id FROM support.orders o JOIN hr.salaries s ON TRUE", "dataset_not_allowed"),
    ]:
        with pytest.raises(ToolError) as refused:
            await bq.run_query(ctx(bigquery), {"sql": sql})
        assert refused.value.type == kind, sql
    with pytest.raises(ToolError) as capped:
        await bq.run_query(ctx(bigquery, cap=100 * MiB), {"sql": ORDERS, "params": {"customer": "x"}})
    assert capped.value.type == "bytes_cap_exceeded"
    assert bigquery.jobs == {}  # only dry runs reached BigQuery: nothing billed


async def test_bigquery_error_shapes(bigquery: BigQueryStandIn) -> None:
    with pytest.raises(ToolError) as rejected:
        await bq.run_query(ctx(bigquery, credential="ya29.wrong"), {"sql": ORDERS, "params": {"customer": "x"}})
    assert rejected.value.type == "credential_rejected"
    with pytest.raises(ToolError) as missing:
        await bq.run_query(ctx(bigquery), {"sql": "SELECT 1 FROM support.nope"})
    assert missing.value.type == "not_found"
    rate = "Exceeded rate limits: too many concurrent queries for this project"
    bigquery.inject(
        403,
        {
            "error": {
                "code": 403,
                "message": rate,
                "errors": [{"reason": "rateLimitExceeded", "message": rate}],
                "status": "PERMISSION_DENIED",
            }
        },
    )
    with pytest.raises(ToolError) as limited:
        await bq.run_query(ctx(bigquery), {"sql": ORDERS, "params": {"customer": "x"}})
    assert (limited.value.type, limited.value.retryable) == ("rate_limited", True)
    # BigQuery's own enforcement of the cap, should the dry run have underestimated (10 MB minimum per table).
    with pytest.raises(ToolError) as enforced:  # the estimate (1 KiB) is under the cap, the bill (10 MB) is not
        await bq.run_query(ctx(bigquery, cap=MIN_BILLED - 1), {"sql": "SELECT tag FROM `acme-analytics.support.tags`"})
    assert enforced.value.type == "bytes_cap_exceeded"
    assert "exceeded limit for bytes billed" in enforced.value.message


async def test_a_retried_query_reads_the_first_job_and_the_result_carries_its_real_cost(
    bigquery: BigQueryStandIn, executed: Executed
) -> None:
    await executed.connect("acme", "bigquery", tools=[], base_url=bigquery.url, project="acme-analytics", datasets="support")
    event = executed.authorize("acme", "bigquery_query", {"sql": ORDERS, "params": {"customer": "cus_1002"}})
    # The first real run reaches BigQuery, but its answer is lost (a 500 after the job was created).
    bigquery.inject(
        500,
        {"error": {"code": 500, "message": "Backend error", "errors": [{"reason": "backendError"}], "status": "INTERNAL"}},
        method="GET",
    )
    result = await executed.run(event)
    assert isinstance(result, s.ActionSucceeded)
    assert result.data.attempts == 2
    assert len(bigquery.jobs) == 1  # the retry found the first job by its id (the action id): billed once
    assert result.data.cost.usd == pytest.approx(200 * MiB / 1024**4 * 6.25, abs=1e-6)
    assert result.data.result is not None
    assert [r["order_id"] for r in result.data.result["rows"]] == ["O-2", "O-5"]


async def test_missing_credential(bigquery: BigQueryStandIn, executed: Executed) -> None:
    failed = await executed.run(executed.authorize("acme", "bigquery_query", {"sql": ORDERS}))
    assert failed.data.error is not None
    assert failed.data.error.type == "credential_missing"
    assert bigquery.requests == []


async def test_a_dry_run_answer_that_cannot_be_read_is_retried(bigquery: BigQueryStandIn, executed: Executed) -> None:
    await executed.connect("acme", "bigquery", tools=[], base_url=bigquery.url, project="acme-analytics", datasets="support")
    bigquery.inject(200, {"kind": "bigquery#job"})  # the first dry run's answer has no jobReference
    result = await executed.run(executed.authorize("acme", "bigquery_query", {"sql": ORDERS, "params": {"customer": "cus_1002"}}))
    assert isinstance(result, s.ActionSucceeded)
    assert result.data.attempts == 2
    assert result.data.result is not None
    assert [r["order_id"] for r in result.data.result["rows"]] == ["O-2", "O-5"]
