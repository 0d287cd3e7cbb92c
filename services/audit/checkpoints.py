"""Signed checkpoints of the chain heads: what makes a truncated tail detectable.

A chain alone proves that no row inside it was changed, but not that rows were not cut off at the
end. A checkpoint is the audit service's Ed25519 signature over every chain head at a moment; it is
kept in the database and published on `audit.checkpoints`, so a copy lives outside the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from schemas import AuditCheckpoint, AuditCheckpointData, canonical_json
from servicekit import Keyring, SigningKey
from services.audit.chain import Head

__all__ = [
    "CHECKPOINT_TOPIC",
    "RETIRED_SLACK_S",
    "Checkpoint",
    "Prune",
    "Restore",
    "UnreadableCheckpoint",
    "chain_name",
    "checkpoint_needed",
    "heads_document",
    "read_checkpoint",
    "rows_past",
    "sign_checkpoint",
    "signature_valid",
    "signed_after_retirement",
    "signed_message",
    "signed_message_v2",
    "signed_time",
    "signed_version",
    "split_chain_name",
    "to_event",
]

CHECKPOINT_TOPIC = "audit.checkpoints"
"""Catalog name of the topic checkpoints are published on."""

SIGNING_CONTEXT = b"tidegate.audit.checkpoint.v1\n"
"""What checkpoints taken before Tidegate 21 signed: id, heads and rows (not the time they were taken, nor the scope)."""
SIGNING_CONTEXT_V2 = b"tidegate.audit.checkpoint.v2\n"
"""What a checkpoint signs since: id, heads, rows, its scope and the time it was taken (`signed_message_v2`)."""
RETIRED_SLACK_S = 60.0
"""How long after its retirement a checkpoint an audit key signed is still taken: a running service reads its key file
every second (`servicekit.signing.RECHECK_S`), and the rotating host's clock and the service's may be apart."""


class Checkpoint(BaseModel):
    """One signed set of chain heads, as stored in `audit.checkpoints`."""

    model_config = ConfigDict(frozen=True)

    scope: str = ""
    checkpoint_id: int
    taken_at: datetime
    heads: dict[str, dict[str, Any]]
    rows: int
    key_id: str
    signature: str

    @field_validator("heads")
    @classmethod
    def _chain_heads(cls, heads: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Every head as the service signs one (`heads_document`), so no reader of a checkpoint meets a head it cannot read."""
        for name, head in heads.items():
            if (problem := _head_problem(name, head)) is not None:
                raise ValueError(f"chain {name!r}: {problem}")
        return heads


def _head_problem(name: str, head: dict[str, Any]) -> str | None:
    """What keeps `name` → `head` from being a chain head (`topic:partition` → {seq, hash (hex), offset}); None: it is one."""
    topic, _, partition = name.rpartition(":")
    if not topic or not partition.isdecimal():
        return "not a topic:partition name"
    if any(type(head.get(field)) is not int for field in ("seq", "offset")):
        return "its seq and offset must be whole numbers"
    digest = head.get("hash")
    if type(digest) is not str or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return "its hash must be 64 lowercase hex digits"
    return None


class UnreadableCheckpoint(BaseModel):
    """A row of `audit.checkpoints` that does not read as a checkpoint (a row the audit service did not write): refused."""

    model_config = ConfigDict(frozen=True)

    scope: str
    checkpoint_id: int
    problem: str
    """Which of its columns is wrong and how (never its content)."""


def read_checkpoint(row: Mapping[str, Any]) -> Checkpoint | UnreadableCheckpoint:
    """A stored row of `audit.checkpoints` (its heads already parsed) as a checkpoint, or as the refusal of one that is not."""
    try:
        return Checkpoint.model_validate(dict(row))
    except ValidationError as exc:
        problem = "; ".join(
            f"{e['loc'][0] if e['loc'] else 'row'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors(include_input=False)
        )
        return UnreadableCheckpoint(scope=row["scope"], checkpoint_id=row["checkpoint_id"], problem=problem)


class Restore(BaseModel):
    """A restore of the database to an earlier backup, as the audit service found it on starting (`audit.restores`).

    The checkpoints `superseded_from`..`checkpoint_id` - 1 were published on the bus before the restore
    and are not in the database; checkpoint `checkpoint_id` signs the heads the restored database held,
    before any record was read again.
    """

    model_config = ConfigDict(frozen=True)

    checkpoint_id: int
    superseded_from: int

    def supersedes(self, checkpoint_id: int) -> bool:
        """Whether the published checkpoint `checkpoint_id` was taken before this restore and is not in the database."""
        return self.superseded_from <= checkpoint_id < self.checkpoint_id


class Prune(BaseModel):
    """A prune of the log (`audit.prunes`): every row before the heads checkpoint `checkpoint_id` signed left the database.

    Those head rows stayed: they are the anchor each kept chain is verified from. The rows removed are in the
    archive whose sha256 is `archive_sha256` (`tidegate audit archive`).
    """

    model_config = ConfigDict(frozen=True)

    checkpoint_id: int
    rows_removed: int
    archive_sha256: str
    pruned_at: datetime
    pruned_by: str


def chain_name(topic: str, partition: int) -> str:
    """`topic:partition`, the key of a chain in a checkpoint."""
    return f"{topic}:{partition}"


def split_chain_name(name: str) -> tuple[str, int]:
    """Inverse of `chain_name`."""
    topic, _, partition = name.rpartition(":")
    return topic, int(partition)


def heads_document(heads: Mapping[tuple[str, int], Head]) -> dict[str, dict[str, Any]]:
    """Chain heads as a checkpoint holds them: `topic:partition` → {seq, hash (hex), offset}."""
    return {
        chain_name(topic, partition): {"seq": h.seq, "hash": h.hash.hex(), "offset": h.offset}
        for (topic, partition), h in sorted(heads.items())
    }


def signed_message(checkpoint_id: int, heads: Mapping[str, Any], rows: int) -> bytes:
    """The exact bytes a v1 checkpoint signature covers (checkpoints taken before Tidegate 21; none is signed so now)."""
    return SIGNING_CONTEXT + canonical_json({"checkpoint_id": checkpoint_id, "heads": heads, "rows": rows})


def signed_time(taken_at: datetime) -> str:
    """`taken_at` as a v2 checkpoint signs it: UTC, microseconds, `Z` (`2026-12-07T00:01:02.345678Z`)."""
    return taken_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def signed_message_v2(checkpoint_id: int, heads: Mapping[str, Any], rows: int, scope: str, taken_at: datetime) -> bytes:
    """The exact bytes a v2 checkpoint signature covers: v1's, its scope (the topic prefix) and the time it was taken."""
    doc = {"checkpoint_id": checkpoint_id, "heads": heads, "rows": rows, "scope": scope, "taken_at": signed_time(taken_at)}
    return SIGNING_CONTEXT_V2 + canonical_json(doc)


def sign_checkpoint(
    key: SigningKey, checkpoint_id: int, heads: Mapping[tuple[str, int], Head], taken_at: datetime, *, scope: str = ""
) -> Checkpoint:
    """A new checkpoint of `heads`, signed by `key`; `rows` is the sum of the chain lengths."""
    doc = heads_document(heads)
    rows = sum(h.seq for h in heads.values())
    return Checkpoint(
        scope=scope,
        checkpoint_id=checkpoint_id,
        taken_at=taken_at,
        heads=doc,
        rows=rows,
        key_id=key.key_id,
        signature=key.sign(signed_message_v2(checkpoint_id, doc, rows, scope, taken_at)),
    )


def signed_version(keyring: Keyring, cp: Checkpoint) -> int | None:
    """Which message `cp`'s signature by a trusted audit key is valid for: 2, 1 (taken before Tidegate 21), or None.

    A signature binds one message: the service signs v2 only, so a v1 signature exists only for a checkpoint taken
    before the upgrade, and its `taken_at` and `scope` are as the database or the file says (not proven).
    """
    if keyring.verify(cp.key_id, signed_message_v2(cp.checkpoint_id, cp.heads, cp.rows, cp.scope, cp.taken_at), cp.signature):
        return 2
    return 1 if keyring.verify(cp.key_id, signed_message(cp.checkpoint_id, cp.heads, cp.rows), cp.signature) else None


def signed_after_retirement(keyring: Keyring, cp: Checkpoint) -> str | None:
    """Why `cp` is refused though its signature holds: its key had been retired when it was taken (None: it had not).

    A retired key signs nothing new, so a checkpoint it signed after its retirement is a leaked key's. Judged at the
    checkpoint's `taken_at`, which a v2 signature covers (a v1 checkpoint's is as stored: not proven), allowing
    `RETIRED_SLACK_S` for a running audit service to see the rotation and for clocks apart.
    """
    retired = keyring.retired_at(cp.key_id)
    if retired is None or cp.taken_at.timestamp() <= retired + RETIRED_SLACK_S:
        return None
    when = datetime.fromtimestamp(retired, UTC).isoformat(timespec="seconds")
    return (
        f"signed by {cp.key_id} at {cp.taken_at.astimezone(UTC).isoformat(timespec='seconds')} (the time it signs), after that key "
        f"was retired at {when}: a retired key signs nothing new (a leaked key?); find who holds it"
    )


def signature_valid(keyring: Keyring, cp: Checkpoint) -> bool:
    """Whether `cp` carries a valid signature by a trusted audit key, made while that key was not retired.

    Over its id, heads, rows, scope and time (v2), or v1; `signed_after_retirement` judges the key's retirement.
    """
    return signed_version(keyring, cp) is not None and signed_after_retirement(keyring, cp) is None


def checkpoint_needed(heads: Mapping[tuple[str, int], Head], latest: Checkpoint | None, checkpoint_topic: str) -> bool:
    """Whether the heads moved since `latest`, not counting the checkpoint topic's own chain.

    The audit records its own checkpoints too; counting that chain would make every checkpoint
    cause the next one, forever. Its head is still signed by the next checkpoint taken for a
    real change.
    """
    mine = {k: v for k, v in heads_document(heads).items() if split_chain_name(k)[0] != checkpoint_topic}
    if latest is None:
        return bool(mine)
    before = {k: v for k, v in latest.heads.items() if split_chain_name(k)[0] != checkpoint_topic}
    return mine != before


def rows_past(heads: Mapping[tuple[str, int], Head], signed: Mapping[str, Mapping[str, Any]], checkpoint_topic: str) -> int:
    """How many rows the chains `heads` hold past the heads `signed` (a checkpoint's; a chain it does not name: all its rows).

    The checkpoints' own chain (`checkpoint_topic`, the full topic name) is left out: each checkpoint is recorded a moment
    after it is taken and signed by the next only when something else moved (`checkpoint_needed`), so on an idle log its
    newest row always lies past.
    """
    return sum(
        max(0, h.seq - int(signed.get(chain_name(topic, partition), {}).get("seq", 0)))
        for (topic, partition), h in heads.items()
        if topic != checkpoint_topic
    )


def to_event(cp: Checkpoint) -> AuditCheckpoint:
    """The `audit.checkpoint` event that publishes `cp`."""
    data = AuditCheckpointData(
        tenant_id="*", checkpoint_id=cp.checkpoint_id, heads=cp.heads, rows=cp.rows, key_id=cp.key_id, signature=cp.signature,
        taken_at=cp.taken_at,
    )  # fmt: skip
    return AuditCheckpoint.build(data, source="tidegate/audit")
