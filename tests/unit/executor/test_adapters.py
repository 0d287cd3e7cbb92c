"""Tool adapters and credentials: HTTP status mapping, topic request/reply matching, where secrets come from."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

import schemas as s
from servicekit.toolcontract import ToolContext, ToolError
from services.executor.credentials import CredentialStore, env_var_name
from services.executor.tools import HttpTools, PythonTools, TopicTools


def http_spec(**kw: Any) -> s.ToolSpec:
    base = {
        "name": "label",
        "description": "d",
        "args_schema": {"type": "object"},
        "risk": "write_low",
        "kind": "http",
        "url": "http://carrier.test/labels",
    }
    return s.ToolSpec.model_validate(base | kw)


def ctx(**kw: Any) -> ToolContext:
    return ToolContext(pool=None, tenant_id="acme", action_id="a-1", idempotency_key="a-1", task_id="t-1", **kw)  # type: ignore[arg-type]


async def call_with(
    status: int,
    body: dict[str, Any] | None = None,
    *,
    raise_: Exception | None = None,
    headers: dict[str, str] | None = None,
    **ctx_kw: Any,
) -> Any:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if raise_ is not None:
            raise raise_
        return httpx.Response(status, json=body or {}, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        try:
            return await HttpTools(client).invoke(http_spec(), ctx(**ctx_kw), {"order_id": "O-1"}), seen
        except ToolError as exc:
            return exc, seen


async def test_a_2xx_answer_is_the_result_and_the_request_carries_key_and_credential() -> None:
    answer, [request] = await call_with(201, {"tracking": "1Z"}, credential_scope="shipping", credential="sk")
    assert answer.result == {"tracking": "1Z"}
    assert request.headers["Idempotency-Key"] == "a-1"
    assert request.headers["Authorization"] == "Bearer sk"


@pytest.mark.parametrize(
    ("status", "retryable", "maybe_applied"),  # a 503 may come after the work (a gateway): may have been applied
    [(400, False, False), (404, False, False), (429, True, False), (503, True, True), (500, True, True), (502, True, True)],
)
async def test_http_errors_map_to_retryable_and_maybe_applied(status: int, retryable: bool, maybe_applied: bool) -> None:
    error, _ = await call_with(status, {"error": "nope"})
    assert (error.type, error.retryable, error.maybe_applied, error.message) == (f"http_{status}", retryable, maybe_applied, "nope")


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_s"),
    [
        (429, "7", 7.0),
        (503, "2", 2.0),
        (503, "2.5", None),  # delay-seconds are whole (RFC 9110): not readable, the backoff alone
        (429, "in 60 s", 60.0),  # an HTTP-date a minute ahead (written when the test runs)
        (429, "Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date gone by: no wait beyond the backoff
        (429, "soon", None),  # not a number nor a date: the backoff alone
        (429, "-3", None),
    ],
)
async def test_a_refusal_says_how_long_to_wait_through_retry_after(status: int, retry_after: str, expected_s: float | None) -> None:
    if retry_after == "in 60 s":
        retry_after = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    error, _ = await call_with(status, {"error": "slow down"}, headers={"Retry-After": retry_after})
    if expected_s is None:
        assert error.retry_after_s is None
    else:
        assert error.retry_after_s == pytest.approx(expected_s, abs=2.0)


async def test_a_2xx_answer_that_is_not_a_json_object_is_the_result_s_value() -> None:
    async def answered(response: httpx.Response) -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: response)) as client:
            return (await HttpTools(client).invoke(http_spec(), ctx(), {"order_id": "O-1"})).result

    assert await answered(httpx.Response(201, text="<html>created</html>")) == {"value": "<html>created</html>"}  # the write was done
    assert await answered(httpx.Response(200, json=[1, 2])) == {"value": [1, 2]}
    assert await answered(httpx.Response(204)) == {}


async def test_connection_failures_were_never_applied_but_read_timeouts_may_have_been() -> None:
    refused, _ = await call_with(0, raise_=httpx.ConnectError("refused"))
    timed_out, _ = await call_with(0, raise_=httpx.ReadTimeout("slow"))
    assert (refused.type, refused.retryable, refused.maybe_applied) == ("unreachable", True, False)
    assert (timed_out.type, timed_out.retryable, timed_out.maybe_applied) == ("timeout", True, True)


async def test_a_scope_without_a_secret_never_sends_the_request() -> None:
    error, seen = await call_with(200, credential_scope="shipping", credential=None)
    assert (error.type, seen) == ("missing_credential", [])


async def test_a_missing_secret_names_the_variable_to_set_and_that_the_executor_reads_it_when_it_starts() -> None:
    """Connectors probe F12: the developer exported a variable of another spelling, restarted the executor under `tidegate
    up` (which keeps the environment `up` had) and read only "no secret for credential scope"."""
    error, _ = await call_with(200, credential_scope="crm:notes", credential=None)
    said = error.message
    assert "TIDEGATE_CREDENTIAL_ACME__CRM_NOTES" in said
    assert "TIDEGATE_EXECUTOR_CREDENTIALS_FILE" in said
    assert "nothing was sent" in said
    assert "when it starts" in said
    assert "`tidegate restart executor` keeps the environment" in said
    assert env_var_name("acme", "crm:notes") == "TIDEGATE_CREDENTIAL_ACME__CRM_NOTES"


async def test_topic_tools_match_the_reply_to_the_waiting_call() -> None:
    sent: list[tuple[str, s.ToolInvocation]] = []
    tools: TopicTools

    async def publish(topic: str, event: s.Envelope) -> None:
        assert isinstance(event, s.ToolInvocation)
        sent.append((topic, event))
        d = event.data
        reply = s.ToolReplyData(
            action_id=d.action_id, task_id=d.task_id, tenant_id=d.tenant_id, tool=d.tool, ok=True, result={"on_hand": 7}, cost_usd=0.1
        )
        asyncio.get_running_loop().call_soon(asyncio.ensure_future, tools.on_reply(s.ToolReply.build(reply, source="warehouse")))

    tools = TopicTools(publish, "pfx.")
    spec = s.ToolSpec.model_validate({"name": "inv", "description": "d", "args_schema": {}, "risk": "write_low", "kind": "topic"})
    answer = await asyncio.wait_for(tools.invoke(spec, ctx(), {"sku": "A"}), timeout=2)
    assert (answer.result, answer.cost_usd) == ({"on_hand": 7}, 0.1)
    [(topic, invocation)] = sent
    assert topic == "tools.inv.requests"
    assert (invocation.data.idempotency_key, invocation.data.reply_topic) == ("a-1", "pfx.tools.inv.replies")


async def test_a_reply_with_an_error_raises_it_with_its_retryability() -> None:
    tools: TopicTools

    async def publish(topic: str, event: s.Envelope) -> None:
        d = event.data  # type: ignore[attr-defined]
        err = s.ErrorInfo(type="warehouse_busy", message="later", retryable=True)
        reply = s.ToolReplyData(action_id=d.action_id, task_id=d.task_id, tenant_id=d.tenant_id, tool=d.tool, ok=False, error=err)
        asyncio.get_running_loop().call_soon(asyncio.ensure_future, tools.on_reply(s.ToolReply.build(reply, source="warehouse")))

    tools = TopicTools(publish, "pfx.")
    spec = s.ToolSpec.model_validate({"name": "inv", "description": "d", "args_schema": {}, "risk": "write_low", "kind": "topic"})
    with pytest.raises(ToolError) as raised:
        await asyncio.wait_for(tools.invoke(spec, ctx(), {}), timeout=2)
    assert (raised.value.type, raised.value.retryable) == ("warehouse_busy", True)


async def test_a_missing_python_entrypoint_is_a_final_error() -> None:
    spec = s.ToolSpec.model_validate(
        {"name": "x", "description": "d", "args_schema": {}, "risk": "read", "kind": "python", "entrypoint": "systems.nope:f"}
    )
    with pytest.raises(ToolError) as raised:
        await PythonTools().invoke(spec, ctx(), {})
    assert (raised.value.type, raised.value.retryable) == ("entrypoint_missing", False)


def test_credentials_come_from_the_file_and_the_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "credentials.yaml"
    path.write_text("acme:\n  shipping:labels: from-file\n  payments:refund: file-only\n")
    store = CredentialStore.load(path, {env_var_name("acme", "shipping:labels"): "from-env", "UNRELATED": "x"})
    assert env_var_name("acme", "shipping:labels") == "TIDEGATE_CREDENTIAL_ACME__SHIPPING_LABELS"
    assert store.secret("acme", "shipping:labels") == "from-env"
    assert store.secret("acme", "payments:refund") == "file-only"
    assert store.secret("globex", "payments:refund") is None


async def test_a_reply_naming_another_tenant_tool_or_attempt_is_refused_and_the_call_keeps_waiting() -> None:
    from servicekit import Reject

    tools: TopicTools
    sent: list[s.ToolInvocation] = []

    async def publish(topic: str, event: s.Envelope) -> None:
        assert isinstance(event, s.ToolInvocation)
        sent.append(event)

    tools = TopicTools(publish, "pfx.")
    spec = s.ToolSpec.model_validate({"name": "inv", "description": "d", "args_schema": {}, "risk": "write_low", "kind": "topic"})
    call = asyncio.create_task(tools.invoke(spec, ctx(attempt=2), {}))
    while not sent:
        await asyncio.sleep(0)
    d = sent[0].data
    genuine = {"action_id": d.action_id, "task_id": d.task_id, "tenant_id": d.tenant_id, "tool": d.tool, "attempt": d.attempt}
    for wrong in ({"tenant_id": "globex"}, {"tool": "wire_money"}, {"attempt": 1}):
        forged = s.ToolReply.build(s.ToolReplyData(**(genuine | wrong), ok=True, result={"on_hand": 0}), source="attacker")
        with pytest.raises(Reject) as refused:
            await tools.on_reply(forged)
        assert refused.value.code == "tool_reply_mismatch"
    assert not call.done()
    await tools.on_reply(s.ToolReply.build(s.ToolReplyData(**genuine, ok=True, result={"on_hand": 7}), source="warehouse"))
    assert (await asyncio.wait_for(call, timeout=2)).result == {"on_hand": 7}


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (asyncpg.TooManyConnectionsError("too many connections"), ("database_unavailable", True, False)),
        (asyncpg.InvalidPasswordError("password authentication failed"), ("database_unavailable", True, False)),
        (asyncpg.DeadlockDetectedError("deadlock detected"), ("database_unavailable", True, False)),
        (asyncpg.AdminShutdownError("terminating connection"), ("connection_lost", True, True)),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), ("connection_lost", True, True)),
        (asyncpg.UniqueViolationError("duplicate key"), ("database_error", False, False)),
    ],
)
async def test_an_in_process_tool_s_database_error_says_whether_to_try_again_and_whether_it_may_have_applied(
    raised: Exception, expected: tuple[str, bool, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused login or too many connections was a final `database_error`: a tool the pool could not serve failed for good."""

    async def tool(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
        raise raised

    tools = PythonTools()
    spec = s.ToolSpec.model_validate(
        {"name": "t", "description": "d", "args_schema": {}, "risk": "write_low", "kind": "python", "entrypoint": "m:f"}
    )
    monkeypatch.setattr(tools, "resolve", lambda spec: tool)
    with pytest.raises(ToolError) as failed:
        await tools.invoke(spec, ctx(), {})
    assert (failed.value.type, failed.value.retryable, failed.value.maybe_applied) == expected
