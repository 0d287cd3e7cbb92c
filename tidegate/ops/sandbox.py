"""Sandboxes (replay, eval): their prefix, login, keys and topics; and the replay's stand-ins (producer, executor, humans).

A sandbox runs under a fresh prefix of the `sandbox.` family and logs in as `ops`, whose standing ACLs there
(`servicekit.bus_rights.sandbox_bindings`, made by `infra up` / `tidegate topics ensure`) let it create, use
and delete the sandbox's topics and groups: it creates no ACL and needs no `admin` login. The replay's
stand-ins are its producer, an executor that answers from the record, and the recorded humans.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas import (
    ActionAuthorized,
    ActionDecided,
    ActionFailed,
    ActionProposed,
    ActionResultData,
    ActionSucceeded,
    ActionUnknown,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    Envelope,
    ErrorInfo,
    ReasonCode,
    action_identity,
    encode,
    headers_for,
)
from servicekit import (
    OPS,
    Keyring,
    KitSettings,
    Reject,
    SigningKey,
    action_digest,
    approval_document,
    authorization_message,
    current_traceparent,
    drop_prefix,
    ensure_topics,
    kafka_options,
    sign_as_producer,
)
from servicekit.bus_rights import SANDBOX_ROOT
from tidegate.ops.recorded import Window

__all__ = [
    "SANDBOX_SOURCE",
    "UNANSWERABLE",
    "RecordedAnswers",
    "RecordedHumans",
    "SandboxExecutor",
    "SandboxProducer",
    "drop_sandbox",
    "make_sandbox",
    "sandbox_prefix",
    "sandbox_settings",
]

UNANSWERABLE = "unanswerable"
SANDBOX_SOURCE = "tidegate/replay-executor"


def sandbox_prefix(label: str) -> str:
    """A fresh sandbox prefix, `sandbox.<label>-<random>.` (e.g. `sandbox.replay-1f2e3d4c5b.`)."""
    return f"{SANDBOX_ROOT}{label}-{uuid.uuid4().hex[:10]}."


def sandbox_settings(kit: KitSettings, prefix: str, keys_dir: Path, **update: Any) -> KitSettings:
    """`kit` for a sandbox (replay, eval) on `prefix` that signs with and trusts only keys of its own, under `keys_dir`.

    Services', operators' and clients' keys all live there: a sandbox must never sign with the deployment's
    keys nor register keys in its trust folders, because a signature does not cover the topic prefix, so
    an event signed in a sandbox could be copied onto the live topics and verify there. No metrics port
    and no ready files either: a sandbox is not one of the deployment's services. Every client of the
    sandbox, its services' included, logs in as `ops` (or as the principal `kit` names), the principal of
    the sandboxes' standing rights: a service's own principal has none under `sandbox.`.
    """
    if not prefix.startswith(SANDBOX_ROOT):
        raise ValueError(f"a sandbox prefix starts with {SANDBOX_ROOT!r} (sandbox_prefix makes one), not {prefix!r}")
    own = {
        "topic_prefix": prefix,
        "kafka_principal": kit.kafka_principal or OPS,
        "keys_dir": keys_dir,
        "operator_keys_dir": keys_dir / "operators",
        "client_keys_dir": keys_dir / "clients",
        "operator_private_keys_dir": keys_dir / "operator-keys",
        "client_private_keys_dir": keys_dir / "client-keys",
        "metrics_port": None,
        "ready_dir": None,
    }
    return kit.model_copy(update={**own, **update})


async def make_sandbox(kit: KitSettings, prefix: str, names: Iterable[str]) -> None:
    """Create the topics `names` (catalog names) under sandbox `prefix`, as `ops`, on its standing rights (no ACL is made)."""
    await ensure_topics(
        kit.kafka_bootstrap, prefix, names, client_options=kafka_options(kit, OPS), grant=False, partitions=kit.topic_partitions
    )


async def drop_sandbox(kit: KitSettings, prefix: str) -> None:
    """Delete every topic under sandbox `prefix`, as `ops` (there are no ACLs of the sandbox to drop)."""
    if not prefix.startswith(SANDBOX_ROOT):
        raise ValueError(f"not a sandbox prefix: {prefix!r}")
    await drop_prefix(kit.kafka_bootstrap, prefix, client_options=kafka_options(kit, OPS), revoke=False)


class SandboxProducer:
    """Publishes into the sandbox without waiting for each acknowledgement (a replay is not a record of anything).

    The kit's `Bus.publish` waits for every write (acks=all), right for services and ~100x too slow to
    re-publish a day of traffic; here writes are batched and flushed when the replay ends.
    """

    def __init__(
        self, bootstrap: str, prefix: str, signer_kit: KitSettings | None = None, client_options: dict[str, Any] | None = None
    ) -> None:
        self.prefix = prefix
        self.signer_kit = signer_kit  # the sandbox's keys: every event is signed again as its producer there
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024, **(client_options or {}))

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush what is buffered and disconnect."""
        await self._producer.flush()
        await self._producer.stop()

    async def publish(self, topic: str, event: Envelope) -> None:
        """Queue `event` on sandbox topic `topic`, carrying the current trace context if it has none."""
        if event.traceparent is None:
            tp = current_traceparent()
            if tp:
                event = event.model_copy(update={"traceparent": tp})
        if self.signer_kit is not None:
            event = sign_as_producer(self.signer_kit, event)
        headers = [(k, v.encode()) for k, v in headers_for(event).items()]
        await self._producer.send(self.prefix + topic, encode(event), key=event.key, headers=headers)


@dataclass
class RecordedAnswers:
    """Recorded results of tool calls, found by (task, tool, args digest); each answers one call."""

    calls: dict[tuple[str, str, str], list[ActionResultData]] = field(default_factory=dict)

    @classmethod
    def from_window(cls, window: Window) -> RecordedAnswers:
        """Pair each recorded result with the call it answered (args from the authorization, else the proposal)."""
        args: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for p in window.of(ActionProposed):
            args.setdefault(p.data.action_id, (p.data.tenant_id, p.data.tool, p.data.args))
        for a in window.of(ActionAuthorized):
            args[a.data.action_id] = (a.data.tenant_id, a.data.tool, a.data.args)  # edited args win
        answers = cls()
        seen: set[str] = set()
        for e in window.of(ActionSucceeded, ActionFailed, ActionUnknown):
            r = e.data
            if r.action_id in seen or r.action_id not in args:
                continue
            seen.add(r.action_id)
            tenant, tool, call_args = args[r.action_id]
            answers.calls.setdefault((r.task_id, tool, action_digest(tenant, tool, call_args)), []).append(r)
        return answers

    def take(self, task_id: str, tenant_id: str, tool: str, args: dict[str, Any]) -> ActionResultData | None:
        """The recorded result of this exact call in this task, used once (a repeated call takes the next one)."""
        found = self.calls.get((task_id, tool, action_digest(tenant_id, tool, args)))
        return found.pop(0) if found else None


@dataclass
class SandboxExecutor:
    """Verifies authorizations like the executor, answers from the record, and never calls a tool."""

    keys_dir: Path
    answers: RecordedAnswers
    publish: Callable[[str, Envelope], Any]
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    answered: int = 0
    unanswerable: int = 0
    refused: int = 0
    _keyring: Keyring | None = field(default=None, init=False)
    # Each action's answer by (tenant, action id), with its call's digest: as the executor, an action is answered once,
    # and a repeat of it (an agent's retry, a redelivery) gets that answer again, neither a recorded call's nor a count.
    _given: dict[tuple[str, str], tuple[str, Envelope]] = field(default_factory=dict, init=False)

    def _verify(self, event: ActionAuthorized) -> None:
        data = event.data
        auth = data.authorization
        if self._keyring is None or not self._keyring.knows(auth.key_id):
            self._keyring = Keyring.load(self.keys_dir, "policy")
        if not self._keyring.knows(auth.key_id):
            raise Reject(ReasonCode.UNKNOWN_KEY, f"authorization signed with unknown key {auth.key_id!r}")
        if not self._keyring.verify(auth.key_id, authorization_message(data), auth.signature):
            raise Reject(ReasonCode.SIGNATURE_INVALID, f"signature of authorization for {data.action_id} does not verify")
        if auth.action_digest != action_digest(data.tenant_id, data.tool, data.args):
            raise Reject(ReasonCode.DIGEST_MISMATCH, f"authorization digest does not match the call of {data.action_id}")
        if auth.expires_at <= self.clock():
            raise Reject(ReasonCode.AUTHORIZATION_EXPIRED, f"authorization of {data.action_id} expired at {auth.expires_at}")

    async def handle(self, event: ActionAuthorized) -> None:
        """Answer one authorized call from the record (or as unanswerable) on the sandbox's `actions.results`."""
        try:
            self._verify(event)
        except Reject:
            self.refused += 1
            raise
        d = event.data
        given = self._given.get((d.tenant_id, d.action_id))
        if given is not None:
            if given[0] != d.authorization.action_digest:
                self.refused += 1
                raise Reject(ReasonCode.AUTHORIZATION_REPLAYED, f"action id {d.action_id} was already answered for another call")
            await self.publish("actions.results", given[1])
            return
        recorded = self.answers.take(d.task_id, d.tenant_id, d.tool, d.args)
        common = {**action_identity(d), "tool": d.tool}
        result: Envelope
        if recorded is None:
            self.unanswerable += 1
            error = ErrorInfo(type=UNANSWERABLE, message="replay: no recorded result for this call (tool and args) in this task")
            data = ActionResultData(**common, status="failed", error=error, attempts=0, duration_ms=0.0, idempotency_key=d.action_id)
            result = ActionFailed.build(data, source=SANDBOX_SOURCE)
        else:
            self.answered += 1
            data = recorded.model_copy(update={**common, "idempotency_key": d.action_id})
            kind = {"succeeded": ActionSucceeded, "failed": ActionFailed, "unknown": ActionUnknown}[data.status]
            result = kind.build(data, source=SANDBOX_SOURCE)
        self._given[(d.tenant_id, d.action_id)] = (d.authorization.action_digest, result)
        await self.publish("actions.results", result)


@dataclass
class RecordedHumans:
    """Answers an escalation in the sandbox with the human decision recorded for the same call, signed with a sandbox key.

    Yesterday's approver decided on exactly this call (same task, tool and args digest); their decision is
    replayed, so a re-planned task goes on as it did. An escalation of a call nobody decided waits, as it would.
    """

    decisions: dict[tuple[str, str, str], list[Any]]
    key: SigningKey
    publish: Callable[[str, Envelope], Any]
    replayed: int = 0

    @classmethod
    def from_window(cls, window: Window, key: SigningKey, publish: Callable[[str, Envelope], Any]) -> RecordedHumans:
        """Index the recorded decisions (grants, rejections, expiries) by the call they decided."""
        found: dict[tuple[str, str, str], list[Any]] = {}
        for e in window.of(ApprovalGranted, ApprovalRejected, ApprovalExpired):
            d = e.data
            found.setdefault((d.task_id, d.tool, d.action_digest), []).append(e)
        return cls(found, key, publish)

    async def on_decided(self, event: ActionDecided) -> None:
        """Replay the recorded decision on a sandbox escalation, if there is one."""
        d = event.data
        if d.outcome != "escalate" or d.via != "policy":
            return
        recorded = self.decisions.get((d.task_id, d.tool, d.action_digest))
        if not recorded:
            return
        original = recorded.pop(0)
        now = datetime.now(UTC)
        base = original.data.model_copy(
            update={
                "approval_id": f"replay-{original.data.approval_id}",
                "action_id": d.action_id,
                "args": d.args,
                "reasons": d.reasons,
                "policy_version": d.policy_version,
                "expires_at": now + timedelta(minutes=10),  # the sandbox's clock, not yesterday's
                "decided_at": now,
                "key_id": self.key.key_id,
                "signature": None,
            }
        )
        requested = base.model_copy(update={"approver": None, "approvers": [], "decided_at": None, "key_id": None})
        await self.publish("approvals", ApprovalRequested.build(requested, source="tidegate/replay-humans"))
        kind = type(original)
        signed = base.model_copy(update={"signature": self.key.sign(approval_document(kind.model_fields["type"].default, base))})
        self.replayed += 1
        await self.publish("approvals", kind.build(signed, source="tidegate/replay-humans"))
