"""How the executor reaches each kind of tool: in-process Python, HTTP, or an outside service on Kafka.

Every invoker makes exactly one attempt and reports failure as `ToolError` (retryable or not, maybe
applied or not); the retry loop lives in `attempts.py` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import httpx

from connectors import ConnectorAccess
from schemas import Envelope, ReasonCode, ToolInvocation, ToolInvocationData, ToolReply, ToolReplyData, ToolSpec, storable
from servicekit import Reject
from servicekit.authority import Refusal
from servicekit.toolcontract import Tool, ToolContext, ToolError, retry_after_s
from services.executor.credentials import missing_secret

__all__ = ["ConnectorTools", "HttpTools", "Invoker", "McpTools", "PythonTools", "ToolAnswer", "ToolInvokers", "TopicTools"]

log = logging.getLogger(__name__)

Publish = Callable[[str, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class ToolAnswer:
    """A successful call: the tool's result, and what the tool itself charged (outside tools report it)."""

    result: dict[str, Any]
    cost_usd: float = 0.0


class Invoker(Protocol):
    """Makes one attempt at one tool call."""

    async def invoke(self, spec: ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        """Call the tool once; raise ToolError when it did not succeed."""
        ...


class PythonTools:
    """Kind `python`: `module:function` entrypoints, imported once, called in-process."""

    def __init__(self) -> None:
        self._functions: dict[str, Tool] = {}

    def resolve(self, spec: ToolSpec) -> Tool:
        """The function named by the entrypoint (imported on first use, then cached)."""
        assert spec.entrypoint is not None
        fn = self._functions.get(spec.entrypoint)
        if fn is None:
            module, _, name = spec.entrypoint.partition(":")
            fn = getattr(importlib.import_module(module), name)
            self._functions[spec.entrypoint] = fn
        return fn

    async def invoke(self, spec: ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        """Call the function; a lost database connection may have committed, so it is reported as maybe applied."""
        try:
            fn = self.resolve(spec)
        except (ImportError, AttributeError) as exc:
            raise ToolError("entrypoint_missing", f"cannot load {spec.entrypoint}: {exc}") from exc
        try:
            result = await fn(ctx, args)
        except ToolError:
            raise
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.OperatorInterventionError) as exc:
            # cut off mid-way (a lost connection, a backend shut down): its commit may have gone through
            raise ToolError("connection_lost", f"{type(exc).__name__}: {exc}", retryable=True, maybe_applied=True) from exc
        except _REFUSED_BEFORE_ANY_CHANGE as exc:  # rolled back or never begun, and likely to pass later
            raise ToolError("database_unavailable", f"{type(exc).__name__}: {exc}", retryable=True) from exc
        except asyncpg.PostgresError as exc:  # the tool's transaction was rolled back
            raise ToolError("database_error", f"{type(exc).__name__}: {exc}") from exc
        return ToolAnswer(result if isinstance(result, dict) else {"value": result})


# A database that refused the tool's work as a whole, for a while: a login refused (class 28: a password rotated), no
# connection or memory or disk to spare (53), a conflict with another transaction (40: serialization, deadlock), a standby
# after a failover (25006). Nothing was changed, and the same call may pass on a later attempt.
_REFUSED_BEFORE_ANY_CHANGE: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InsufficientResourcesError,
    asyncpg.TransactionRollbackError,
    asyncpg.ReadOnlySQLTransactionError,
)


class HttpTools:
    """Kind `http`: one request with the tenant's credential and the action id as `Idempotency-Key`.

    5xx and timeouts are retryable (and may have been applied: a 503 too, which a proxy gives after its backend did
    the work); 429 says "not processed"; connection failures mean the request never arrived; other 4xx are final.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def invoke(self, spec: ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        """Send the request and map the response."""
        assert spec.url is not None
        headers = {
            "Idempotency-Key": ctx.idempotency_key,
            "X-Tidegate-Tenant": ctx.tenant_id,
            "X-Tidegate-Action": ctx.action_id,
            "X-Tidegate-Attempt": str(ctx.attempt),
        }
        if ctx.credential_scope is not None:
            if ctx.credential is None:
                raise ToolError("missing_credential", missing_secret(ctx.tenant_id, ctx.credential_scope))
            headers["Authorization"] = f"Bearer {ctx.credential}"
        body: dict[str, Any] = {"params": args} if spec.method == "GET" else {"json": args}
        try:
            response = await self._client.request(spec.method, spec.url, headers=headers, timeout=spec.timeout_s, **body)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ToolError("unreachable", f"{spec.url}: {type(exc).__name__}: {exc}", retryable=True) from exc
        except httpx.TimeoutException as exc:
            raise ToolError("timeout", f"{spec.url} did not answer in {spec.timeout_s} s", retryable=True, maybe_applied=True) from exc
        except httpx.HTTPError as exc:
            raise ToolError("transport_error", f"{spec.url}: {type(exc).__name__}: {exc}", retryable=True, maybe_applied=True) from exc
        status = response.status_code
        if 200 <= status < 300:  # done: whatever the body, the call took effect; a body that is not a JSON object is its `value`
            return ToolAnswer(_answer_of(response))
        detail = _error_detail(response)
        if status >= 500 or status == 429:  # the next attempt waits at least what `Retry-After` asks (within the backoff's cap)
            wait = retry_after_s(response.headers.get("Retry-After")) if status in (429, 503) else None
            raise ToolError(f"http_{status}", detail, retryable=True, maybe_applied=status != 429, retry_after_s=wait)
        raise ToolError(f"http_{status}", detail)


def _answer_of(response: httpx.Response) -> dict[str, Any]:
    """The result of a 2xx answer: its JSON object, else `{"value": …}` with its JSON value or, not JSON, its text."""
    if not response.content:
        return {}
    try:
        payload = response.json()
    except (ValueError, RecursionError):  # text, HTML, or JSON nested deeper than json reads
        return {"value": response.text}
    return payload if isinstance(payload, dict) else {"value": payload}


def _error_detail(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(doc, dict):
        return str(doc.get("error") or doc.get("detail") or doc.get("message") or doc)[:500]
    return str(doc)[:500]


@dataclass(frozen=True)
class _Expected:
    """What a reply must name to answer a pending invocation (besides its action id)."""

    tenant_id: str
    tool: str
    attempt: int


# What an operator does about a refused reply, by the refusal's reason.
_REMEDIES: dict[str, str] = {
    ReasonCode.SIGNER_RETIRED: "restart the tool service with its new key, which `tidegate keys rotate-tool` made",
    ReasonCode.UNKNOWN_KEY: "the tool service signs with a key the catalog's `reply_key_file` does not name: give it that key",
    ReasonCode.SIGNATURE_INVALID: "its signature does not verify: the reply was altered or forged",
    ReasonCode.SIGNER_NOT_ALLOWED: "the key that signed it is not this tool's",
}


@dataclass
class _Pending:
    """A call waiting for its reply, and the replies to it refused meanwhile (how many, and the last one's reason)."""

    expected: _Expected
    future: asyncio.Future[ToolReplyData]
    refused: int = 0
    last_refusal: str = ""

    def refuse(self, code: str, message: str) -> None:
        self.refused += 1
        remedy = _REMEDIES.get(code)
        self.last_refusal = f"{code}: {message[:300]}" + (f"; {remedy}" if remedy else "")

    def why(self) -> str:
        """The refusals, as the call's error says them."""
        replied = "replied, but its reply was" if self.refused == 1 else f"replied {self.refused} times, but each reply was"
        return f"{self.expected.tool} {replied} refused: {self.last_refusal}"


class TopicTools:
    """Kind `topic`: a `tool.invocation` on `tools.<tool>.requests`, answered by a `tool.reply` on `.replies`.

    Every executor process reads every reply (no consumer group), and the one waiting for that action
    id takes it, only if the reply's tenant, tool and attempt are those of the pending invocation: a
    reply that names the action but not the call (another tenant's, a stale attempt's, a forgery) is
    refused and dead-lettered, and the call keeps waiting (bounded by the tool's timeout). So is a reply
    the bus refused before it reached `on_reply` (its signature: `refused`). The call remembers the replies
    it refused: an attempt that timed out after one says why it took no answer (`unanswered`), not only "timeout".
    """

    def __init__(self, publish: Publish, prefix: str, source: str = "tidegate/executor") -> None:
        self._publish = publish
        self._prefix = prefix
        self._source = source
        self._waiting: dict[str, _Pending] = {}
        # Calls whose wait was cut short after a refused reply: (action id, attempt) → why, until the retry loop asks.
        self._unanswered: dict[tuple[str, int], str] = {}

    async def invoke(self, spec: ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        """Publish the invocation and wait for its reply (the executor bounds the wait with the tool's timeout)."""
        future: asyncio.Future[ToolReplyData] = asyncio.get_running_loop().create_future()
        pending = _Pending(_Expected(ctx.tenant_id, spec.name, ctx.attempt), future)
        self._waiting[ctx.action_id] = pending
        self._unanswered.pop((ctx.action_id, ctx.attempt), None)
        try:
            invocation = ToolInvocation.build(
                ToolInvocationData(
                    action_id=ctx.action_id,
                    task_id=ctx.task_id,
                    tenant_id=ctx.tenant_id,
                    tool=spec.name,
                    args=args,
                    idempotency_key=ctx.idempotency_key,
                    attempt=ctx.attempt,
                    deadline=ctx.deadline or datetime.now(UTC),
                    reply_topic=f"{self._prefix}tools.{spec.name}.replies",
                    authorized=ctx.authorized,
                ),
                source=self._source,
            )
            try:
                await self._publish(f"tools.{spec.name}.requests", invocation)
            except Exception as exc:  # not sent, so not applied
                raise ToolError("unreachable", f"cannot publish to tools.{spec.name}.requests: {exc}", retryable=True) from exc
            reply = await future
        finally:
            if self._waiting.get(ctx.action_id) is pending:
                del self._waiting[ctx.action_id]
            if pending.refused and future.cancelled():  # the wait cut short (its timeout) after a refused reply: for `unanswered`
                self._unanswered[(ctx.action_id, ctx.attempt)] = pending.why()
        if reply.ok:
            return ToolAnswer(reply.result or {}, reply.cost_usd)
        err = reply.error
        if err is None:
            raise ToolError("tool_error", f"{spec.name} replied not ok without an error")
        # The service's own word: `retryable` is retried within `max_attempts`, `maybe_applied` ends a write `unknown` (attempts.py).
        raise ToolError(err.type, err.message, retryable=err.retryable, maybe_applied=err.maybe_applied)

    async def on_reply(self, event: ToolReply) -> None:
        """Handler for `tools.<tool>.replies`: hand the reply to the call waiting for it, if any."""
        reply = event.data
        pending = self._waiting.get(reply.action_id)
        if pending is None or pending.future.done():
            log.debug("reply for %s that nobody here waits for", reply.action_id)
            return
        expected = pending.expected
        got = _Expected(reply.tenant_id, reply.tool, reply.attempt)
        if got != expected:
            message = (
                f"reply for action {reply.action_id} names tenant {got.tenant_id!r}, tool {got.tool!r}, attempt {got.attempt}; "
                f"the pending invocation is tenant {expected.tenant_id!r}, tool {expected.tool!r}, attempt {expected.attempt}"
            )
            pending.refuse(ReasonCode.TOOL_REPLY_MISMATCH, message)
            raise Reject(ReasonCode.TOOL_REPLY_MISMATCH, message)
        pending.future.set_result(reply)

    def refused(self, event: Envelope, refusal: Refusal) -> None:
        """`Authority.on_refused`: a reply the bus refused (its signature) is remembered by the call waiting for it, if any."""
        if not isinstance(event, ToolReply):
            return
        pending = self._waiting.get(event.data.action_id)
        if pending is not None and not pending.future.done():
            pending.refuse(refusal.code, refusal.message)

    def unanswered(self, spec: ToolSpec, ctx: ToolContext) -> ToolError | None:
        """Why attempt `ctx.attempt`, cut short by its timeout, took no answer: a reply came and was refused; None if none came.

        Still maybe applied, as a timeout: the tool replied, so it may well have acted.
        """
        why = self._unanswered.pop((ctx.action_id, ctx.attempt), None)
        if why is None:
            return None
        return ToolError("reply_refused", f"{why} (no reply it could take came in {spec.timeout_s} s)", retryable=True, maybe_applied=True)


class ConnectorTools:
    """Tools of a connector (`connector:` in the catalog): the tenant's grant is checked and its credential opened per attempt.

    The catalog's `credential_scopes` do not apply; a tool the tenant did not enable, or a missing,
    disabled or unreadable credential, fails the attempt (not retryable, nothing sent).
    """

    def __init__(self, access: ConnectorAccess, python: Invoker) -> None:
        self.access = access
        self._python = python

    async def invoke(self, spec: ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        """Open the credential, then call the connector's function in-process."""
        assert spec.connector is not None
        granted = await self.access.for_call(ctx.tenant_id, spec.connector, spec.name)
        ctx = replace(ctx, credential_scope=spec.connector, credential=granted.secret, connection=granted.connection)
        answer = await self._python.invoke(spec, ctx, args)
        # A connector that knows what the call cost (BigQuery's bytes billed) says so in `cost.usd` of its result.
        cost = answer.result.get("cost")
        billed = cost.get("usd") if isinstance(cost, dict) else None
        return ToolAnswer(answer.result, answer.cost_usd + float(billed)) if isinstance(billed, int | float) else answer


class McpTools:
    """Kind `mcp`: one `tools/call` on an upstream MCP server (streamable HTTP, or a stdio command started per call).

    The action id travels as `_meta["io.tidegate/idempotency_key"]` for servers that honour it, and the
    call's tenant as `_meta["io.tidegate/tenant"]`, so a server that serves one tenant can refuse
    another's call (the policy already denies a tenant the catalog entry's `tenants` do not name); a
    tool error (`is_error`) is final; a server that cannot be reached never got the call; a call cut
    off mid-way may have been applied.
    """

    META_KEY = "io.tidegate/idempotency_key"
    TENANT_META = "io.tidegate/tenant"

    async def invoke(self, spec: ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        """Connect, call the upstream tool once, disconnect."""
        import mcp  # imported here: only deployments with mcp tools pay for it

        assert spec.mcp is not None
        upstream = spec.mcp
        server: Any = upstream.url or mcp.StdioServerParameters(command=upstream.command[0], args=upstream.command[1:])  # type: ignore[index]
        meta: Any = {self.META_KEY: ctx.idempotency_key, self.TENANT_META: ctx.tenant_id}
        where = upstream.url or " ".join(upstream.command or [])
        result: Any = None
        sent = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(mcp.Client(server))
                sent = True
                result = await client.call_tool(upstream.tool, args, read_timeout_seconds=spec.timeout_s, meta=meta)
        except Exception as exc:  # the client's task group raises what broke it as an ExceptionGroup, often as it closes
            if not sent:  # refused, bad command, failed handshake: the call never reached the tool
                raise ToolError("unreachable", f"mcp upstream {where}: {_described(exc)}", retryable=True) from exc
            if result is None:  # sent, and cut off before its answer: the upstream may have acted
                raise ToolError(
                    "mcp_call_failed", f"{upstream.tool} at {where}: {_described(exc)}", retryable=True, maybe_applied=True
                ) from exc
            log.warning("mcp upstream %s: closing after %s answered failed: %s", where, upstream.tool, _described(exc))
        text = "\n".join(getattr(block, "text", "") for block in result.content)
        if result.is_error:
            raise ToolError("mcp_tool_error", text[:2000] or f"{upstream.tool} returned an error")
        structured = result.structured_content
        return ToolAnswer(structured if isinstance(structured, dict) else {"text": text})


def _described(exc: BaseException) -> str:
    """What broke, in a line: an exception group's innermost errors (`unhandled errors in a TaskGroup` says nothing)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_described(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


class ToolInvokers:
    """The invoker of each tool kind, and of connector tools."""

    def __init__(
        self, python: Invoker, http: Invoker, topic: Invoker, connector: Invoker | None = None, mcp: Invoker | None = None
    ) -> None:
        self._by_kind = {"python": python, "http": http, "topic": topic, "mcp": mcp or McpTools()}
        self._connector = connector

    def unanswered(self, spec: ToolSpec, ctx: ToolContext) -> ToolError | None:
        """Why an attempt that timed out took no answer, when its invoker knows (a topic tool's refused reply); else None."""
        invoker = self._by_kind[spec.kind] if spec.connector is None else None
        return invoker.unanswered(spec, ctx) if isinstance(invoker, TopicTools) else None

    async def invoke(self, spec: ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        """Dispatch to the connector invoker for a connector's tool, else to the invoker of the tool's kind.

        What the tool answered is made `storable` here, the one door every answer comes through: a system of
        record's U+0000, lone surrogate or NaN must not leave a call that happened without a result to keep.
        """
        if spec.connector is not None:
            if self._connector is None:
                raise ToolError("credential_missing", f"this executor has no connector credentials; {spec.name} cannot be called")
            answer = await self._connector.invoke(spec, ctx, args)
        else:
            answer = await self._by_kind[spec.kind].invoke(spec, ctx, args)
        result = storable(answer.result)
        return answer if result is answer.result else ToolAnswer(result, answer.cost_usd)
