"""Handlers of the audit service: thin, they turn Kafka records into log rows and checkpoint the heads.

This module owns the audit's retries (the kit's `Bus.handle_record` is not used here: the audit
never dead-letters, it records). A batch that cannot be written is retried with capped backoff,
forever, so the partition waits instead of losing a record; offsets are committed only when the
handler returns, which is after the batch's transaction committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import AuditCheckpoint, topic_spec
from servicekit import Authority, Keyring, SigningKey
from servicekit.db_outage import retry_level
from servicekit.intake import Bounds
from servicekit.kafka_record import KafkaRecord
from servicekit.liveness import Liveness
from servicekit.metrics import (
    observe_audit_checkpoint_refused,
    observe_audit_checkpoints,
    observe_audit_conflict,
    observe_audit_invalid_record,
    observe_audit_restore,
    observe_row_refused,
)
from servicekit.row_proofs import row_refused
from services.audit.acknowledgements import acknowledged_positions, detected_position
from services.audit.chain import AppendResult, Conflict, Head
from services.audit.checkpoint_check import unverified_signature
from services.audit.checkpoints import (
    Checkpoint,
    UnreadableCheckpoint,
    checkpoint_needed,
    rows_past,
    sign_checkpoint,
    signature_valid,
    to_event,
)
from services.audit.records import DEFAULT_BOUNDS, invalid_code, observe
from services.audit.repository import AuditLog
from services.audit.rows import LogRow, Observed

__all__ = ["Checkpointer", "Recorder", "observe_record"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def observe_record(record: KafkaRecord, prefix: str, bounds: Bounds = DEFAULT_BOUNDS, authority: Authority | None = None) -> Observed:
    """An aiokafka record as the audit stores it, with whether its signature verified (given the deployment's `authority`).

    Never raises: a bad value is kept raw, with the reason.
    """
    return observe(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        timestamp_type=record.timestamp_type,
        key=record.key,
        value=record.value,
        headers=record.headers,
        prefix=prefix,
        bounds=bounds,
        check=authority.check if authority is not None else None,
    )


_SERVICES = frozenset({"planner", "policy", "approval", "executor"})  # the services that consume (and dead-letter) a topic


def _read_by_a_service(name: str) -> bool:
    """Whether one of the services consumes topic `name` (without prefix): they dead-letter what they refuse."""
    try:
        return bool(_SERVICES & set(topic_spec(name).consumers))
    except KeyError:
        return False


@dataclass
class Recorder:
    """Appends batches of Kafka records to the log, retrying until they are durable."""

    prefix: str
    log: AuditLog
    bounds: Bounds = DEFAULT_BOUNDS
    # Called before each retry (the app discards the pool's connections: one broken by a restart must not be reused).
    on_retry: Callable[[BaseException], Awaitable[None]] | None = None
    authority: Authority | None = None  # records whether each event's signature verified (never drops one)
    # The process's liveness: `/health` says `retrying: <error>` while a batch is not written, and no longer once one is.
    liveness: Liveness | None = None
    recorded: int = 0
    skipped: int = 0
    conflicts: int = 0
    retries: int = 0
    max_delay_s: float = 5.0

    async def record_batch(self, records: Sequence[KafkaRecord]) -> AppendResult:
        """Write one batch in one transaction; returns only once it is committed."""
        observed = [observe_record(r, self.prefix, self.bounds, self.authority) for r in records]
        result = await self._durably(f"batch of {len(observed)} not written", lambda: self.log.append(observed))
        self.recorded += len(result.rows)
        self.skipped += result.already_recorded
        for conflict in await self._unacknowledged(result):  # stored in audit.conflicts with the batch; said here, counted, alerted on
            self.conflicts += 1
            observe_audit_conflict(conflict.record.topic)
            log.error("audit: CONFLICT %s; the genuine record is kept in audit.conflicts", conflict.describe())
        for row in result.rows:
            if not row.valid:
                self._invalid(row)
        return result

    def _invalid(self, row: LogRow) -> None:
        """Count a record stored as not valid; say it where no service reads its topic, so none dead-letters it (oncall22 F1)."""
        code = invalid_code(row.invalid_reason)
        dead_lettered = _read_by_a_service(row.topic.removeprefix(self.prefix))
        observe_audit_invalid_record(row.topic, code, dead_lettered=dead_lettered)
        if dead_lettered:
            return  # its consumers dead-letter it, counted and logged by them (`tidegate_dead_letters_total`)
        log.warning(
            "audit: %s[%d]@%d is not a valid event (%s); no service reads that topic, so none dead-letters it: only the "
            "audit log has it (`tidegate audit search --invalid`); a Kafka login that may write there wrote it",
            row.topic,
            row.partition,
            row.kafka_offset,
            row.invalid_reason or code,
        )

    async def _unacknowledged(self, result: AppendResult) -> list[Conflict]:
        """The batch's conflicts but those an operator acknowledged: a redelivery of one is not alerted on again."""
        if not result.conflicts:
            return []
        recorded = await self._durably("conflicts not read", lambda: self.log.conflicts(self.prefix))
        acks = await self._durably("acknowledgements not read", lambda: self.log.acknowledgements(self.prefix))
        known = acknowledged_positions(recorded, acks, self.authority)
        for conflict in result.conflicts:
            if detected_position(conflict) in known:
                log.warning("audit: conflict %s again; an operator acknowledged it: not alerted", conflict.describe())
        return [c for c in result.conflicts if detected_position(c) not in known]

    async def seek_to_log(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """Start each assigned partition after its last row in the log (none: the beginning), never after the group's committed offset.

        The database is the truth for what is recorded: after a restore of the database to an earlier backup, the
        records recorded since are read again and appended, not skipped. But the database's login can write rows the bus
        never delivered, past the end it reached (outside review round 3, F1): what the group committed (in Kafka, out
        of that login's reach) bounds the start, so the genuine records at those offsets are read again and each one
        the log holds otherwise is a conflict (`chain`), not skipped.
        """
        heads = await self._durably("chain heads not read", lambda: self.log.heads(self.prefix))
        fresh = []
        for tp in assigned:
            head = heads.get((tp.topic, tp.partition))
            if head is None:
                fresh.append(tp)
                continue
            committed = await consumer.committed(tp)
            consumer.seek(tp, head.offset + 1 if committed is None else min(head.offset + 1, committed))
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        log.info(
            "audit: %d partition(s) start after their last row in the log, %d at the beginning", len(assigned) - len(fresh), len(fresh)
        )

    async def _durably(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt` until it succeeds, with capped backoff: the database is down or restarting, so wait, never skip a record."""
        delay = 0.1
        while True:
            try:
                result = await attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.retries += 1
                if self.liveness is not None:
                    self.liveness.retrying(exc)
                if self.on_retry is not None:
                    await self.on_retry(exc)
                level = retry_level(exc, logging.WARNING if delay < self.max_delay_s else logging.ERROR)
                log.log(level, "audit: %s, retrying in %.1fs: %r", what, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay_s)
                continue
            if self.liveness is not None:
                self.liveness.progressed()
            return result


@dataclass
class Checkpointer:
    """Signs the chain heads when they moved, stores the checkpoint, publishes it.

    The chain of checkpoints goes on from the scope's newest checkpoint a trusted audit key signed (`_newest_signed`):
    a row above it that does not read as a checkpoint, or that no trusted audit key signed, is refused (said once,
    counted in `tidegate_rows_refused_total{service="audit",table="checkpoints"}` at every read), never taken as where
    the chain stands, and its id is passed over. After every insert the row with the checkpoint's id in its scope is
    read back, whatever the insert reported: only the checkpoint signed, read back as it was signed, is taken as stored.
    An insert that stored none is a lost race when the row there is another copy of the service's (one the audit key
    signed). Anything else (no row: a trigger or rule swallowed the insert or rewrote it into another scope or id; a row
    the key did not sign) is said once per incident at ERROR, counted at every tick
    (`tidegate_audit_checkpoints_refused_total`) and tried again at the next tick: the heads are never taken as signed.
    The gauges describe the newest signed checkpoint read back, never the one in memory.
    """

    log: AuditLog
    key: SigningKey
    publish: Callable[[AuditCheckpoint], Awaitable[None]]
    checkpoint_topic: str
    interval_s: float
    prefix: str = ""
    trusted: Callable[[], Keyring] | None = None
    """The audit keys a stored checkpoint may be signed with (`Keyring.load`: the current and the retired ones), read only
    for a row its own key does not verify (one signed before a rotation); None: its own key only."""
    unpublished: list[Checkpoint] = field(default_factory=list)
    taken: int = 0
    refused: int = 0
    """Checkpoints the database did not store though no other copy of the service had taken their id."""
    _refusing: int | None = field(default=None, repr=False)  # the first checkpoint id refused in the current incident
    _rows_refused: dict[int, str] = field(default_factory=dict, repr=False)  # rows above the newest signed one: id → why
    _started: datetime = field(default_factory=lambda: datetime.now(UTC), repr=False)
    _ticking: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def tick(self) -> Checkpoint | None:
        """Take a checkpoint if the heads moved; publish what is not yet published.

        Ticks are serialised: the timer and an explicit tick (at shutdown, or by an operator) must not
        publish the same pending checkpoint twice or pop each other's.
        """
        async with self._ticking:
            return await self._tick()

    async def _tick(self) -> Checkpoint | None:
        taken = None
        heads = await self.log.heads(self.prefix)
        latest, above = await self._newest_signed()
        if checkpoint_needed(heads, latest, self.checkpoint_topic):
            next_id = _free_after(latest.checkpoint_id if latest else 0, above)
            cp = sign_checkpoint(self.key, next_id, heads, datetime.now(UTC), scope=self.prefix)
            stored, latest = await self._store(cp, self.log.add_checkpoint(cp), latest)
            if stored:
                taken = cp
                self.taken += 1
                self.unpublished.append(cp)
        self._observe(heads, latest)
        while self.unpublished:
            await self.publish(to_event(self.unpublished[0]))
            self.unpublished.pop(0)
        return taken

    async def _newest_signed(self) -> tuple[Checkpoint | None, set[int]]:
        """The scope's newest checkpoint a trusted audit key signed (None: none), and the ids of the rows above it, each refused.

        Where the chain of checkpoints goes on: a row someone else wrote is never taken for it (one whose heads are not
        heads stopped the service at every start; a well-formed one with the current heads and no valid signature made
        it sign nothing while its gauges read fresh). The next checkpoint takes the first id after it that no row holds
        (`_free_after`): no insert collides with a row written ahead, and one written at the largest id there is stops nothing.
        """
        above: set[int] = set()
        async for row in self.log.newest_first(self.prefix):
            if isinstance(row, Checkpoint) and row.checkpoint_id not in self._rows_refused and self._signed(row):
                return row, above
            self._refuse(row)
            above.add(row.checkpoint_id)
        return None, above

    def _signed(self, cp: Checkpoint) -> bool:
        """Whether a trusted audit key signed `cp`: its own (the usual case, no file read), else one of `trusted`."""
        return signature_valid(self._own(), cp) or (self.trusted is not None and signature_valid(self.trusted_keys(), cp))

    def _own(self) -> Keyring:
        return Keyring({self.key.key_id: self.key.private.public_key()})

    def trusted_keys(self) -> Keyring:
        """The trusted audit keys and its own (which may be newer than the files read: a rotation is taken up within a second)."""
        trusted = self.trusted() if self.trusted is not None else Keyring({})
        return trusted.with_keys({self.key.key_id: self.key.private.public_key()})

    def _refuse(self, row: Checkpoint | UnreadableCheckpoint) -> None:
        """Refuse a row above the newest signed checkpoint: said the first time this process reads it, counted at every read."""
        if row.checkpoint_id in self._rows_refused:
            observe_row_refused("audit", "checkpoints", "invalid")
            return
        why = row.problem if isinstance(row, UnreadableCheckpoint) else unverified_signature(self.trusted_keys(), row)
        self._rows_refused[row.checkpoint_id] = why
        row_refused(
            "audit",
            "checkpoints",
            f"checkpoint {row.checkpoint_id} of scope {self.prefix!r}",
            f"{'it is not a checkpoint' if isinstance(row, UnreadableCheckpoint) else 'its signature does not verify'} ({why})",
            "it is not taken as where the chain of checkpoints stands and its id is passed over (the audit service did not "
            "write it: its database login or a superuser did; `tidegate audit verify` names it; rotate that login: "
            "`tidegate db rotate audit --leaked`)",
            counted_as="invalid",
        )

    async def _store(self, cp: Checkpoint, insert: Awaitable[bool], before: Checkpoint | None) -> tuple[bool, Checkpoint | None]:
        """Whether `insert` stored `cp`, with the scope's newest signed checkpoint after it (what the gauges describe).

        Stored means the row with `cp`'s id reads back as `cp` (heads, key, signature, time): the insert's own report is
        not enough, since a trigger can rewrite the row on its way in and still report one stored (auditor2 N2). One
        query, whatever the outcome. A refusal (not a lost race: `_lost_race`) is said and counted; the newest signed
        checkpoint is then still `before`.
        """
        inserted = await insert
        there = await self.log.checkpoint(self.prefix, cp.checkpoint_id)
        if there == cp:
            if self._refusing is not None:
                log.warning(
                    "audit: checkpoint %d stored: audit.checkpoints takes inserts again (%d refused since checkpoint %d was)",
                    cp.checkpoint_id, self.refused, self._refusing,
                )  # fmt: skip
                self._refusing = None
            return True, cp
        if not inserted and isinstance(there, Checkpoint) and self._lost_race(there):
            return False, there
        self.refused += 1
        observe_audit_checkpoint_refused()
        if self._refusing is None:
            self._refusing = cp.checkpoint_id
            log.error(
                "audit: checkpoint %d was not stored: something refuses inserts into audit.checkpoints (%s); the heads stay "
                "unsigned and it is tried again every %gs (counted in tidegate_audit_checkpoints_refused_total)",
                cp.checkpoint_id, self._found(inserted, there), self.interval_s,
            )  # fmt: skip
        return False, before

    def _found(self, inserted: bool, there: Checkpoint | UnreadableCheckpoint | None) -> str:
        """What the read-back found in place of the checkpoint signed, for the refusal's ERROR."""
        rewritten = "the insert reported a row stored, but " if inserted else ""
        if there is None:
            return rewritten + "no row has its id" + (": it was rewritten on its way in" if inserted else "")
        if isinstance(there, UnreadableCheckpoint):
            return rewritten + f"the row with its id is not a checkpoint ({there.problem})"
        if not self._lost_race(there):
            return rewritten + f"the row with its id is not one the audit key signed ({there.key_id})"
        return rewritten + "the row with its id is not the one signed"

    def _lost_race(self, there: Checkpoint) -> bool:
        """Whether `there`, the row with the id of a checkpoint not stored, is another copy of the service's: one the audit key signed."""
        return signature_valid(self._own(), there)

    def _observe(self, heads: dict[tuple[str, int], Head], latest: Checkpoint | None) -> None:
        """Export the newest stored checkpoint's age and the rows past it (the checkpoint topic's own chain left out)."""
        since = latest.taken_at if latest is not None else self._started
        unsigned = rows_past(heads, latest.heads if latest is not None else {}, self.checkpoint_topic)
        observe_audit_checkpoints((datetime.now(UTC) - since).total_seconds(), unsigned, self.interval_s)

    async def continue_after(self, published: Checkpoint | None) -> Checkpoint | None:
        """Called at start with the latest checkpoint published on the bus; returns the restore's checkpoint, or None.

        If the database's latest checkpoint is older than the bus's, the database was restored from a backup, or its newest
        checkpoints were deleted: nothing in the database tells the two apart (docs/audit.md, "A database restored"). Then
        the heads it holds now are signed at once, numbered after the published one (before any record is read again), and
        stored as the restore's checkpoint: the ids continue, and `verify` names the restore and the published checkpoints
        it superseded. It is said at ERROR and counted (`tidegate_audit_restores_total`, an alert): one nobody did is tampering.
        """
        async with self._ticking:
            latest, above = await self._newest_signed()
            stored = latest.checkpoint_id if latest else 0
            if published is None or published.checkpoint_id <= stored:
                return None
            heads = await self.log.heads(self.prefix)
            cp = sign_checkpoint(self.key, _free_after(published.checkpoint_id, above), heads, datetime.now(UTC), scope=self.prefix)
            restored, newest = await self._store(cp, self.log.add_restore(cp, superseded_from=stored + 1), latest)
            if not restored:  # another copy found it first, or refused
                return None
            observe_audit_restore()
            log.error(
                "audit: the database is behind the bus (its latest checkpoint is %d, the bus's %d): taken for a restore from a "
                "backup; checkpoint %d signs the heads it holds, and the records since are read again from the bus. If nobody "
                "restored the database, checkpoints %d..%d were deleted from it: tampering (`tidegate audit verify --bus` names "
                "the restore and what it superseded)",
                stored, published.checkpoint_id, cp.checkpoint_id, stored + 1, published.checkpoint_id,
            )  # fmt: skip
            self.taken += 1
            self.unpublished.append(cp)
            self._observe(heads, newest)
            return cp

    async def run(self) -> None:
        """Tick every `interval_s` (the first after one interval, once the broker is up) until cancelled.

        A failed tick is logged and tried again at the next one.
        """
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.log(retry_level(exc), "audit: checkpoint not taken or not published: %r", exc)


def _free_after(checkpoint_id: int, taken: set[int]) -> int:
    """The first id after `checkpoint_id` that no row of `taken` (the ids stored above the newest signed checkpoint) holds."""
    free = checkpoint_id + 1
    while free in taken:
        free += 1
    return free
