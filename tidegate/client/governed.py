"""`@governed`: a local Python function served as a catalog tool of kind `topic`, and proposed when called.

Calling the decorated function proposes the call; policy decides; a human approves if asked; the
executor (which alone reads authorizations and verifies their signature) sends a `tool.invocation`
to `tools.<tool>.requests` with the policy's signed authorization; the server loop in this process
verifies both signatures (the executor's on the invocation, the policy's on the authorization of
exactly these args), runs the function once per idempotency key and replies; the call returns the
function's result. The function never runs on the caller's say-so, nor on anyone's but the policy's,
nor late (after the executor stopped waiting, or the authorization expired), nor for another tenant than the
client's own unless told to (it answers such a call with an error). The server loop logs in as the tool's own
principal `tool-<tool>`; one that cannot serve raises `NotServed` to the caller.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Coroutine
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

from aiokafka.errors import KafkaError
from pydantic import SecretStr

from schemas import ErrorInfo, ToolInvocationData, ToolReply, ToolReplyData
from schemas.tools import EVERY_TENANT
from tidegate.client.client import Tidegate
from tidegate.client.ledger import CallLedger, SqliteLedger
from tidegate.client.outcomes import Decided, Escalated, Executed, Outcome
from tidegate.client.settings import RUN_DIR, ClientSettings
from tidegate.client.transport import Delivery, KafkaTransport, TopicsMissing, Transport

__all__ = ["CREDENTIALS_DIR", "GovernanceError", "GovernedTool", "NotServed", "governed", "serve_tool", "tool_login"]

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

# Where `tidegate infra up` writes the bus's logins, beside the run dir (`.tidegate`): `tool-<tool>.properties` is a tool's own.
CREDENTIALS_DIR = RUN_DIR.parent / ".infra" / "kafka" / "credentials"
_JAAS = re.compile(r'(username|password)="([^"]*)"')


class NotServed(RuntimeError):
    """A governed function cannot be served (so no call of it would ever run), or its serve loop stopped; the message says why."""

    def __init__(self, tool: str, why: str) -> None:
        super().__init__(f"tool {tool} is not served: {why}")
        self.tool = tool


class GovernanceError(Exception):
    """The call did not run (denied, rejected, expired) or did not succeed; `outcome` says which and why."""

    def __init__(self, outcome: Outcome) -> None:
        codes = getattr(outcome, "codes", None) or [getattr(outcome, "status", "failed")]
        super().__init__(f"{outcome.tool}: {type(outcome).__name__.lower()} ({', '.join(codes)})")
        self.outcome = outcome


class GovernedTool(Generic[P, R]):
    """A function behind Tidegate: `await tool(...)` proposes it; the client's server loop runs it when authorized."""

    def __init__(
        self,
        fn: Callable[P, R] | Callable[P, Awaitable[R]],
        tool: str,
        client: Tidegate,
        ledger: CallLedger | None,
        login: ClientSettings | None = None,
        tenants: Collection[str] | None = None,
    ) -> None:
        self.fn = fn
        self.tool = tool
        self.client = client
        self.ledger = ledger
        self.login = login
        self.tenants = tenants
        self._signature = inspect.signature(fn)
        self._serving: asyncio.Event | None = None  # set once this process serves the function, or once serving failed
        self._failure: NotServed | None = None
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", tool)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Propose the call (args bound by name), wait for policy and any human, return the function's result.

        Raises:
            NotServed: This process serves the function but cannot (the bus refused its login, no such tool topic), or
                its serve loop stopped: nothing is proposed, since no executor's invocation of it would run.
        """
        if self._serving is not None:
            await self._serving.wait()
            if self._failure is not None:
                raise self._failure
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        outcome = await self.client.propose(self.tool, dict(bound.arguments), wait_for_human=True)
        return unwrap(outcome)  # type: ignore[no-any-return]

    async def run(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run the function itself on authorized arguments; the result as the tool's JSON result."""
        fn: Callable[..., Any] = self.fn  # arguments arrive by name, from JSON
        value = fn(**arguments)
        if inspect.isawaitable(value):
            value = await value
        return {"value": value}

    def start_serving(self) -> None:
        """Answer this tool's invocations in the background while the client runs (see `serve_tool`).

        Raises:
            NotServed: Its replies cannot be signed (checked before any request is taken); a failure on the bus
                is raised by the next call of the function instead.
        """
        self._serving = asyncio.Event()
        self._failure = None
        serving = serve_tool(
            self.client, self.tool, self.run, self._ledger(), login=self.login, started=self._serving, tenants=self.tenants
        )
        self.client.run_in_background(self._watched(serving))

    async def serve(self) -> None:
        """Answer this tool's invocations until cancelled (see `serve_tool`)."""
        await serve_tool(self.client, self.tool, self.run, self._ledger(), login=self.login, tenants=self.tenants)

    def _ledger(self) -> CallLedger:
        """The ledger given, or SQLite under the client's state dir: each idempotency key's answer, kept across restarts."""
        return self.ledger or SqliteLedger(self.client.settings.state_dir / f"{self.tool}.sqlite3")

    async def _watched(self, serving: Coroutine[Any, Any, None]) -> None:
        """Run the serve loop; when it fails, the next call of the function raises why (and the client's log says so at once)."""
        try:
            await serving
        except NotServed as exc:
            self._failure = exc
            raise
        except Exception as exc:
            self._failure = NotServed(self.tool, f"its serve loop stopped: {exc!r}")
            raise self._failure from exc
        finally:
            assert self._serving is not None
            self._serving.set()


def unwrap(outcome: Outcome) -> Any:
    """The function's value from an `Executed` outcome; anything else raises `GovernanceError`."""
    if isinstance(outcome, Executed):
        return outcome.result.get("value", outcome.result)
    raise GovernanceError(outcome)


def governed(
    tool: str,
    *,
    client: Tidegate,
    ledger: CallLedger | None = None,
    serve: bool = True,
    login: ClientSettings | None = None,
    tenants: Collection[str] | None = None,
) -> Callable[[Callable[P, R] | Callable[P, Awaitable[R]]], GovernedTool[P, R]]:
    """Turn a function into a governed tool named `tool` (declare it in the catalog with kind `topic` and its `tenants`).

    With `serve` (default), the client answers the tool's invocations while it runs, logged in on the bus as
    `login` (default: see `serve_tool`), for the tenants `tenants` (default: the client's own; see `serve_tool`);
    the ledger (default: SQLite under the client's state dir) keeps each idempotency key's answer across restarts.
    A function whose replies cannot be signed raises `NotServed` here.
    """

    def wrap(fn: Callable[P, R] | Callable[P, Awaitable[R]]) -> GovernedTool[P, R]:
        governed_tool = GovernedTool(fn, tool, client, ledger, login, tenants)
        if serve:
            governed_tool.start_serving()
        return governed_tool

    return wrap


Run = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def serve_tool(
    client: Tidegate,
    tool: str,
    run: Run,
    ledger: CallLedger,
    *,
    login: ClientSettings | None = None,
    started: asyncio.Event | None = None,
    tenants: Collection[str] | None = None,
) -> Coroutine[Any, Any, None]:
    """Answer `tools.<tool>.requests`: run once per idempotency key, reply, then ack (a crash means a redelivery).

    Only an invocation the executor signed, carrying the policy's signed authorization of exactly
    that call, still on time (its deadline, the authorization's expiry), runs the function (`Trust.refuses`);
    anything else is logged and dropped unanswered.

    Only a call of one of `tenants` runs it (default: the client's own tenant, whose client key it holds; `["*"]`:
    every tenant). A genuine call of another tenant (the catalog entry's `tenants` name it, or the policy is older)
    is answered `tenant_not_served` without running, so the executor records the action failed and says why.

    A key begun but never answered (the process died while the function ran) is answered
    `outcome_unknown`, never run again: the executor reports the action unknown and a human follows up.

    The loop logs in on the bus as `login`: the tool's own principal `tool-<tool>`, which alone may read the
    tool's requests and write its replies. Default: `tool_login` of `CREDENTIALS_DIR/tool-<tool>.properties`
    when the client logs in and that file exists, else the client's own login. Every process serving a tool
    shares its consumer group: it gets every agent's and every tenant's calls of the tool, with their args
    (one of another tenant fails, answered `tenant_not_served`: serve a tool for one tenant from one place).

    Raises:
        NotServed: At once (before the coroutine is awaited) when the tool's replies cannot be signed; from the
            coroutine, before it takes any request, when the bus refuses the login or has no requests topic for the
            tool (it is not a catalog tool of kind `topic`), or later when the bus refuses the consumer.
    """
    _check_signs(client, tool)
    served = frozenset(tenants) if tenants is not None else frozenset({client.settings.tenant})
    return _serve(client, tool, run, ledger, login or _own_login(client.settings, tool), started, served)


def tool_login(settings: ClientSettings, properties: Path) -> ClientSettings:
    """`settings` logged in as the principal of a Kafka client properties file (`tidegate infra up` makes `tool-<tool>.properties`)."""
    try:
        text = properties.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the bus login {properties}: {exc}") from exc
    found = dict(_JAAS.findall(text))
    if "username" not in found or "password" not in found:
        raise ValueError(f"{properties}: no username and password in sasl.jaas.config")
    return settings.model_copy(update={"sasl_username": found["username"], "sasl_password": SecretStr(found["password"])})


def _own_login(settings: ClientSettings, tool: str) -> ClientSettings | None:
    """The tool's own login when the client logs in at all and `infra up` made one for the tool, else None (the client's)."""
    properties = CREDENTIALS_DIR / f"tool-{tool}.properties"
    return tool_login(settings, properties) if settings.sasl_username and properties.is_file() else None


def _check_signs(client: Tidegate, tool: str) -> None:
    """Raise `NotServed` unless a reply of `tool` can be signed: found out after the function ran, its result would be lost."""
    probe = ToolReplyData(action_id="probe", task_id="probe", tenant_id=client.settings.tenant, tool=tool, ok=True, result={})
    try:
        _signed_reply(client, probe)
    except Exception as exc:  # SigningNotWired, or a key file that is not a key
        raise NotServed(
            tool,
            f"only a catalog tool of kind `topic` with a `reply_key_file` is served by a process of yours (a `python` or `http` "
            f"tool is run by the executor itself): declare {tool} so, make its key with `tidegate keys add-tool {tool}` and "
            f"point TIDEGATE_CLIENT_TOOL_KEYS_DIR at the folder it names (docs/integrations.md, 'Serving your own tools'); {exc}",
        ) from exc


async def _serve(
    client: Tidegate,
    tool: str,
    run: Run,
    ledger: CallLedger,
    login: ClientSettings | None,
    started: asyncio.Event | None,
    tenants: frozenset[str],
) -> None:
    settings = login or client.settings
    transport: Transport = client.transport if login is None else KafkaTransport(login)
    who = f"SASL user {settings.sasl_username!r}" if settings.sasl_username else "no login"
    try:
        if login is not None:
            await transport.start()
        await transport.end((f"tools.{tool}.requests",))  # the topic is there and this login may read it
    except (ConnectionError, TopicsMissing) as exc:
        if login is not None:
            await transport.stop()
        raise NotServed(tool, _why_not(tool, settings, who, exc)) from exc
    if started is not None:
        started.set()
    served = "every tenant" if EVERY_TENANT in tenants else "tenant " + ", ".join(sorted(tenants))
    # said at start: a process upgraded past tool tenancy serves only its client's tenant unless told otherwise
    log.info("serving %s as %s, for %s (another tenant's call is answered tenant_not_served)", tool, who, served)
    try:
        async for delivery in transport.serve(f"tools.{tool}.requests", f"tool-{tool}"):
            await _answer(client, transport, tool, run, ledger, delivery, tenants)
    except KafkaError as exc:  # the bus refused the consumer (its group) or went away for good: calls of the tool would never run
        raise NotServed(tool, f"the bus stopped serving it as {who}: {exc!r}") from exc
    finally:
        if login is not None:
            await transport.stop()


def _why_not(tool: str, settings: ClientSettings, who: str, exc: Exception) -> str:
    topic = f"{settings.topic_prefix}tools.{tool}.requests"
    if isinstance(exc, ConnectionError):
        return str(exc)
    if settings.sasl_username not in (None, "admin", f"tool-{tool}"):
        return (
            f"{who} may not read {topic} (or it does not exist): serve it as the tool's own principal `tool-{tool}`, "
            f"`login=tool_login(settings, <.infra/kafka/credentials/tool-{tool}.properties>)`, which `tidegate infra up` makes "
            "for a catalog tool of kind `topic` (docs/integrations.md)"
        )
    return (
        f"{topic} is not on the broker: declare {tool} in the deployment's catalog with kind `topic` and run `tidegate topics ensure`; "
        "a catalog tool of another kind is run by the executor itself and never reaches this function"
    )


async def _answer(
    client: Tidegate, transport: Transport, tool: str, run: Run, ledger: CallLedger, delivery: Delivery, tenants: frozenset[str]
) -> None:
    """Run one invocation (unless refused, or answered before, or of a tenant not served) and reply, then ack."""
    expected_reply_topic = f"{client.settings.topic_prefix}tools.{tool}.replies"
    invocation = delivery.event
    data: ToolInvocationData = invocation.data
    refusal = client.trust.refuses(invocation)
    if refusal is None and (data.tool != tool or data.reply_topic != expected_reply_topic):
        refusal = f"it names tool {data.tool} and reply topic {data.reply_topic}"
    if refusal is not None:  # nothing runs and nothing answers: the executor alone may ask, for a call the policy signed, in time
        log.warning("refusing invocation %s of %s (action %s, tenant %s): %s", invocation.id, tool, data.action_id, data.tenant_id, refusal)
        await delivery.ack()
        return
    if EVERY_TENANT in tenants or data.tenant_id in tenants:
        reply = await _once(run, ledger, data)
    else:  # a genuine call the policy authorized, so it is answered (not dropped): the executor records the action failed, and why
        log.warning(
            "refusing invocation %s of %s (action %s): tenant %s is not served here", invocation.id, tool, data.action_id, data.tenant_id
        )
        # The reply reaches the calling tenant: it names neither this client's tenant nor the tenants served.
        reply = _error("tenant_not_served", f"the process serving {tool} does not serve tenant {data.tenant_id}: nothing ran")
    answer = ToolReplyData(
        action_id=data.action_id, task_id=data.task_id, tenant_id=data.tenant_id, tool=tool, attempt=data.attempt, **reply
    )
    await transport.publish(f"tools.{tool}.replies", _signed_reply(client, answer))
    await delivery.ack()


async def _once(run: Run, ledger: CallLedger, data: ToolInvocationData) -> dict[str, Any]:
    """The reply to `data`: the ledger's for a key answered before, `outcome_unknown` for one begun and never answered, else a run."""
    begun, reply = ledger.lookup(data.idempotency_key)
    if reply is None:
        if begun:
            reply = _error("outcome_unknown", "the process died while this call ran; it is not run again")
        else:
            ledger.begin(data.idempotency_key)
            reply = await _attempt(run, data.args)
        ledger.finish(data.idempotency_key, reply)
    return reply


def _signed_reply(client: Tidegate, answer: ToolReplyData) -> ToolReply:
    """`answer` as the reply this client sends: from its proposer, signed with its tool key (what `_check_signs` tries first)."""
    return client.signer.sign(ToolReply.build(answer, source=f"urn:tidegate:client:{client.settings.proposer}"))


async def _attempt(run: Run, args: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "result": await run(args)}
    except Exception as exc:  # the function's failure is the tool's reply, not the server's
        return _error(type(exc).__name__, str(exc))


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": ErrorInfo(type=kind, message=message[:2000], retryable=False).model_dump()}


async def decided(outcome: Outcome, timeout_s: float | None = None) -> Decided:
    """The final outcome: `outcome` itself, or the human's decision when it is `Escalated`."""
    if isinstance(outcome, Escalated):
        return await outcome.decision(timeout_s)
    return outcome
