"""`@governed`: a local Python function served as a catalog tool of kind `topic`, and proposed when called.

Calling the decorated function proposes the call; policy decides; a human approves if asked; the
executor (which alone reads authorizations and verifies their signature) sends a `tool.invocation`
to `tools.<tool>.requests` with the policy's signed authorization; the server loop in this process
verifies both signatures (the executor's on the invocation, the policy's on the authorization of
exactly these args), runs the function once per idempotency key and replies; the call returns the
function's result. Calls of different actions run at once (up to `concurrency`); one still running at its
invocation's deadline is cancelled, and nothing is sent for it (the executor stopped waiting).
The function never runs on the caller's say-so, nor on anyone's but the policy's,
nor late (after the executor stopped waiting, or the authorization expired), nor for another tenant than the
client's own unless told to (it answers such a call with an error). The server loop logs in as the tool's own
principal `tool-<tool>`; one that cannot serve raises `NotServed` to the caller.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
from collections.abc import Awaitable, Callable, Collection, Coroutine
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

from aiokafka.errors import KafkaError
from pydantic import SecretStr

from schemas import ToolReplyData
from schemas.tools import EVERY_TENANT
from tidegate.client._answering import Answering as _Answering
from tidegate.client._answering import InOrderAcks, Run, Turn, signed_reply
from tidegate.client._serving import NotServed, ServeGate
from tidegate.client.client import Tidegate
from tidegate.client.ledger import CallLedger, SqliteLedger
from tidegate.client.outcomes import Decided, Escalated, Executed, Outcome
from tidegate.client.served import call_function, without_call_parameter
from tidegate.client.settings import RUN_DIR, ClientSettings
from tidegate.client.transport import Delivery, KafkaTransport, TopicsMissing, Transport

__all__ = [
    "CREDENTIALS_DIR",
    "SERVE_CONCURRENCY",
    "GovernanceError",
    "GovernedTool",
    "NotServed",
    "governed",
    "logins_dir",
    "serve_tool",
    "tool_login",
]

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

# Where `tidegate infra up` writes the bus's logins, beside the run dir (`.tidegate`): `tool-<tool>.properties` is a tool's own.
CREDENTIALS_DIR = RUN_DIR.parent / ".infra" / "kafka" / "credentials"
_JAAS = re.compile(r'(username|password)="([^"]*)"')
_MECHANISM = re.compile(r"^sasl\.mechanism=(\S+)\s*$", re.MULTILINE)
# The mechanisms the bus accepts (servicekit.bus_auth.MECHANISMS; the client installs without servicekit): a rotation
# (`tidegate infra rotate-login`) moves a login from one to the other and writes it in the file's `sasl.mechanism`.
_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")

SERVE_CONCURRENCY = 8
"""Calls of different actions one serve loop runs at once, by default: a slow call does not hold up a quick one."""


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
        concurrency: int = SERVE_CONCURRENCY,
    ) -> None:
        self.fn = fn
        self.tool = tool
        self.client = client
        self.ledger = ledger
        self.login = login
        self.tenants = tenants
        self.concurrency = concurrency
        self._signature = without_call_parameter(inspect.signature(fn))  # `tidegate_call` is the serve loop's to fill
        self._gate: ServeGate | None = None  # this process serves the function: whether it can
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", tool)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Propose the call (args bound by name), wait for policy and any human, return the function's result.

        Raises:
            NotServed: This process serves the function but cannot (the bus refused its login, no such tool topic), or
                its serve loop stopped: nothing is proposed, since no executor's invocation of it would run.
        """
        if self._gate is not None:
            await self._gate.check()
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        outcome = await self.client.propose(self.tool, dict(bound.arguments), wait_for_human=True)
        return unwrap(outcome)  # type: ignore[no-any-return]

    async def run(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run the function itself on authorized arguments (a sync one in a worker thread); the result as the tool's JSON result."""
        return {"value": await call_function(self.fn, arguments)}  # arguments arrive by name, from JSON

    def start_serving(self) -> None:
        """Answer this tool's invocations in the background while the client runs (see `serve_tool`).

        Raises:
            NotServed: Its replies cannot be signed (checked before any request is taken); a failure on the bus
                is raised by the next call of the function instead.
        """
        gate = ServeGate(self.tool)
        serving = serve_tool(
            self.client,
            self.tool,
            self.run,
            self._ledger(),
            login=self.login,
            started=gate.started,
            tenants=self.tenants,
            concurrency=self.concurrency,
        )
        self._gate = self.client.serve_gates[self.tool] = gate
        self.client.run_in_background(gate.watch(serving))

    async def serve(self) -> None:
        """Answer this tool's invocations until cancelled (see `serve_tool`)."""
        await serve_tool(
            self.client, self.tool, self.run, self._ledger(), login=self.login, tenants=self.tenants, concurrency=self.concurrency
        )

    def _ledger(self) -> CallLedger:
        """The ledger given, or SQLite under the client's state dir: each idempotency key's answer, kept across restarts."""
        return self.ledger or SqliteLedger(self.client.settings.state_dir / f"{self.tool}.sqlite3")


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
    concurrency: int = SERVE_CONCURRENCY,
) -> Callable[[Callable[P, R] | Callable[P, Awaitable[R]]], GovernedTool[P, R]]:
    """Turn a function into a governed tool named `tool` (declare it in the catalog with kind `topic` and its `tenants`).

    With `serve` (default), the client answers the tool's invocations while it runs, logged in on the bus as
    `login` (default: see `serve_tool`), for the tenants `tenants` (default: the client's own; see `serve_tool`),
    `concurrency` calls of different actions at once; the ledger (default: SQLite under the client's state dir)
    keeps each idempotency key's answer across restarts. A function whose replies cannot be signed raises `NotServed` here.
    The function raises `ToolFailed` to say a call may be retried or may have taken effect; it gets the `ServedCall`
    (the action id to pass on as an idempotency key) when it declares a `tidegate_call` parameter.
    """

    def wrap(fn: Callable[P, R] | Callable[P, Awaitable[R]]) -> GovernedTool[P, R]:
        governed_tool = GovernedTool(fn, tool, client, ledger, login, tenants, concurrency)
        if serve:
            governed_tool.start_serving()
        return governed_tool

    return wrap


def serve_tool(
    client: Tidegate,
    tool: str,
    run: Run,
    ledger: CallLedger,
    *,
    login: ClientSettings | None = None,
    started: asyncio.Event | None = None,
    tenants: Collection[str] | None = None,
    concurrency: int = SERVE_CONCURRENCY,
) -> Coroutine[Any, Any, None]:
    """Answer `tools.<tool>.requests`: run once per idempotency key, reply, then ack (a crash means a redelivery).

    Calls of different actions run at once, at most `concurrency`; two invocations of one action (the
    executor's retry) run one after the other. A request is acked once it and every request that came
    before it are answered, so a crash redelivers every request not answered (the ledger answers them again).

    What `run` raises is the reply's error: a `ToolFailed` as it says (`retryable`, `maybe_applied`); any other
    exception as `maybe_applied`, not retryable: this loop cannot tell how far the function got, so the executor
    ends a writing tool's action `unknown` for a human to follow up (a `read` tool's ends `failed`: the catalog's
    risk is the executor's to know). A call still running at its invocation's deadline is cancelled and logged;
    nothing is sent for it (the executor stopped waiting), and the ledger answers a later attempt of that key
    "cancelled at its deadline, may have taken effect". A sync function in a worker thread cannot be stopped: it
    runs on, and the log says when it ends late.

    Only an invocation the executor signed, carrying the policy's signed authorization of exactly
    that call, still on time (its deadline, the authorization's expiry), runs the function (`Trust.refuses`);
    anything else is logged and dropped unanswered.

    Only a call of one of `tenants` runs it (default: the client's own tenant, whose client key it holds; `["*"]`:
    every tenant). A genuine call of another tenant (the catalog entry's `tenants` name it, or the policy is older)
    is answered `tenant_not_served` without running, so the executor records the action failed and says why.

    A key begun but never answered (the process died while the function ran) is answered
    `outcome_unknown`, never run again: the executor reports the action unknown and a human follows up.

    The loop logs in on the bus as `login`: the tool's own principal `tool-<tool>`, which alone may read the
    tool's requests and write its replies. Default: `tool_login` of `tool-<tool>.properties` in the deployment's
    `TIDEGATE_KAFKA_CREDENTIALS_DIR`, else `<TIDEGATE_INFRA_DIR>/kafka/credentials`, else `CREDENTIALS_DIR`,
    when the client logs in and that file exists, else the client's own login. Every process serving a tool
    shares its consumer group: it gets every agent's and every tenant's calls of the tool, with their args
    (one of another tenant fails, answered `tenant_not_served`: serve a tool for one tenant from one place).

    Raises:
        NotServed: At once (before the coroutine is awaited) when the tool's replies cannot be signed; from the
            coroutine, before it takes any request, when the bus refuses the login or has no requests topic for the
            tool (it is not a catalog tool of kind `topic`), or later when the bus refuses the consumer.
    """
    _check_signs(client, tool)
    if concurrency < 1:
        raise ValueError(f"concurrency is at least 1, not {concurrency}")
    served = frozenset(tenants) if tenants is not None else frozenset({client.settings.tenant})
    answering = _Answering(client, tool, run, ledger, served)
    return _serve(answering, login or _own_login(client.settings, tool), started, concurrency)


def tool_login(settings: ClientSettings, properties: Path) -> ClientSettings:
    """`settings` logged in as the principal of a Kafka client properties file (`tidegate infra up` makes `tool-<tool>.properties`)."""
    try:
        text = properties.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the bus login {properties}: {exc}") from exc
    found = dict(_JAAS.findall(text))
    if "username" not in found or "password" not in found:
        raise ValueError(f"{properties}: no username and password in sasl.jaas.config")
    # On the mechanism the file names: after a rotation moved the login to SCRAM-SHA-256 the broker refuses it on SCRAM-SHA-512.
    named = _MECHANISM.search(text)
    mechanism = named.group(1) if named else _MECHANISMS[0]
    if mechanism not in _MECHANISMS:
        raise ValueError(f"{properties}: sasl.mechanism={mechanism}: one of {', '.join(_MECHANISMS)}")
    login = {"sasl_username": found["username"], "sasl_password": SecretStr(found["password"]), "sasl_mechanism": mechanism}
    return settings.model_copy(update=login)


def logins_dir() -> Path:
    """Where `infra up` wrote the bus's logins: the deployment's own folder where its shell sets it, as the services read it.

    `TIDEGATE_KAFKA_CREDENTIALS_DIR`, else `<TIDEGATE_INFRA_DIR>/kafka/credentials`, else `CREDENTIALS_DIR` (the checkout's):
    a new release's checkout pointed at a running deployment's `.infra` (docs/operations.md, "Upgrading", step 2) serves
    a tool as the tool's own principal, not as the client's login, which the broker refuses the tool's topics.
    """
    own = os.environ.get("TIDEGATE_KAFKA_CREDENTIALS_DIR", "").strip()
    if own:
        return Path(own)
    infra = os.environ.get("TIDEGATE_INFRA_DIR", "").strip()
    return Path(infra) / "kafka" / "credentials" if infra else CREDENTIALS_DIR


def _own_login(settings: ClientSettings, tool: str) -> ClientSettings | None:
    """The tool's own login when the client logs in at all and `infra up` made one for the tool, else None (the client's)."""
    properties = logins_dir() / f"tool-{tool}.properties"
    return tool_login(settings, properties) if settings.sasl_username and properties.is_file() else None


def _check_signs(client: Tidegate, tool: str) -> None:
    """Raise `NotServed` unless a reply of `tool` can be signed: found out after the function ran, its result would be lost."""
    probe = ToolReplyData(action_id="probe", task_id="probe", tenant_id=client.settings.tenant, tool=tool, ok=True, result={})
    try:
        signed_reply(client, probe)
    except Exception as exc:  # SigningNotWired, or a key file that is not a key
        raise NotServed(
            tool,
            f"only a catalog tool of kind `topic` with a `reply_key_file` is served by a process of yours (a `python` or `http` "
            f"tool is run by the executor itself: to govern the agent's calls of such a catalog tool, do not serve it, `serve=False` "
            f"or leave it out of `serve=`, and call it with the args its catalog entry takes): to serve your own function, declare "
            f"{tool} so, make its key with `tidegate keys add-tool {tool}` and "
            f"point TIDEGATE_CLIENT_TOOL_KEYS_DIR at the folder it names (docs/integrations.md, 'Serving your own tools'); {exc}",
        ) from exc


async def _serve(answering: _Answering, login: ClientSettings | None, started: asyncio.Event | None, concurrency: int) -> None:
    client, tool = answering.client, answering.tool
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
    served = "every tenant" if EVERY_TENANT in answering.tenants else "tenant " + ", ".join(sorted(answering.tenants))
    # said at start: a process upgraded past tool tenancy serves only its client's tenant unless told otherwise
    log.info(
        "serving %s as %s, %d calls at once, for %s (another tenant's call is answered tenant_not_served)", tool, who, concurrency, served
    )
    try:
        await _answer_requests(answering, transport, concurrency)
    except KafkaError as exc:  # the bus refused the consumer (its group) or went away for good: calls of the tool would never run
        raise NotServed(tool, f"the bus stopped serving it as {who}: {exc!r}") from exc
    finally:
        if login is not None:
            await transport.stop()


async def _answer_requests(answering: _Answering, transport: Transport, concurrency: int) -> None:
    """Answer each request in a task of its own, at most `concurrency` at once; the first failure to reply stops the loop."""
    slots = asyncio.Semaphore(concurrency)
    acks = InOrderAcks()

    async def answered(delivery: Delivery, turn: Turn) -> None:
        try:
            await answering.answer(transport, delivery.event)
        finally:
            slots.release()
        await acks.answered(turn)  # only once replied: a crash before it means a redelivery

    try:
        async with asyncio.TaskGroup() as calls:
            async for delivery in transport.serve(f"tools.{answering.tool}.requests", f"tool-{answering.tool}"):
                await slots.acquire()  # a full loop reads no further: the requests wait on the bus
                calls.create_task(answered(delivery, acks.arrived(delivery)))
    except BaseExceptionGroup as failed:  # a reply not sent (or acked): the loop stops, with the first reason
        raise _first(failed) from failed


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


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
        "a catalog tool of another kind is run by the executor itself and never reaches this function: to govern the agent's "
        "calls of such a tool, do not serve it (`serve=False`, or leave it out of `serve=`)"
    )


async def decided(outcome: Outcome, timeout_s: float | None = None) -> Decided:
    """The final outcome: `outcome` itself, or the human's decision when it is `Escalated`."""
    if isinstance(outcome, Escalated):
        return await outcome.decision(timeout_s)
    return outcome
