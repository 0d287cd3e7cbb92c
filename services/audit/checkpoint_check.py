"""The checkpoints of `tidegate audit verify`: each validly signed, the ids without a gap, every signed head in its chain.

After a prune, the chains are checked from the heads the prune's signed checkpoint names (`prune_anchor`). A
checkpoint published on the bus that a restore of the database superseded is checked against what the restored
database holds and what was recorded again after it (`check_superseded`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from servicekit import Keyring
from services.audit.chain import Head
from services.audit.chain_check import Break, ChainChecker
from services.audit.checkpoints import (
    RETIRED_SLACK_S,
    Checkpoint,
    Prune,
    Restore,
    UnreadableCheckpoint,
    signature_valid,
    signed_after_retirement,
    signed_version,
    split_chain_name,
)

__all__ = [
    "anchor_heads",
    "check_checkpoints",
    "check_superseded",
    "checkpoint_break",
    "heads_checked",
    "not_a_checkpoint",
    "past_restore",
    "prune_anchor",
    "unverified_signature",
    "within_restore",
]


def anchor_heads(cp: Checkpoint) -> dict[tuple[str, int], Head]:
    """The heads `cp` signed, as chain anchors."""
    return {split_chain_name(name): Head(int(h["seq"]), bytes.fromhex(str(h["hash"])), int(h["offset"])) for name, h in cp.heads.items()}


def prune_anchor(prunes: Iterable[Prune], by_id: dict[int, Checkpoint], keyring: Keyring) -> tuple[Checkpoint | None, list[Break]]:
    """The checkpoint of the latest prune that names a validly signed checkpoint, and a break for each prune that does not.

    A prune record is only a row: a superuser can insert one. What makes it a prune is the signed checkpoint it
    names; without one it anchors nothing, and the rows it claims to have removed are missing rows.
    """
    anchor, breaks = None, []
    for prune in prunes:
        cp = by_id.get(prune.checkpoint_id)
        if cp is None or not signature_valid(keyring, cp):
            what = "no such checkpoint" if cp is None else f"its signature is not valid for a trusted audit key ({cp.key_id})"
            problem = (
                f"a prune (by {prune.pruned_by}, {prune.rows_removed} rows) names checkpoint {prune.checkpoint_id}: {what} "
                "(rows removed outside the prune path?)"
            )
            breaks.append(Break(topic="*", partition=-1, checkpoint_id=prune.checkpoint_id, problem=problem))
        else:
            anchor = cp
    return anchor, breaks


def not_a_checkpoint(row: UnreadableCheckpoint) -> str:
    """Why a row of the checkpoints table that does not read as a checkpoint is a break."""
    return (
        f"this row is not a checkpoint ({row.problem}): the audit service did not write it (its database login or a superuser "
        "did); it is not trusted, and the service numbers its checkpoints past it"
    )


def checkpoint_break(cp: Checkpoint | UnreadableCheckpoint, problem: str) -> Break:
    """A break of checkpoint `cp` as a whole (no chain of its own)."""
    return Break(topic="*", partition=-1, checkpoint_id=cp.checkpoint_id, problem=problem)


def unverified_signature(keyring: Keyring, cp: Checkpoint) -> str:
    """Why `cp`'s signature does not check out: forged (a trusted key of its id refuses it), or signed by a key not trusted here.

    A key this machine does not hold is not evidence of a forgery: the auditor is told which key to get, not that the log was
    tampered with (an auditor with only the current `audit.pub` read every checkpoint of an older export as forged).
    """
    late = signed_after_retirement(keyring, cp) if signed_version(keyring, cp) is not None else None
    if late is not None:
        return late
    if keyring.knows(cp.key_id):
        return f"signature is not valid for a trusted audit key ({cp.key_id})"
    return (
        f"signature is not valid for a trusted audit key ({cp.key_id}): no audit key trusted here has that id, so it could "
        "not be checked (not shown forged, not shown genuine); trust that key: put the deployment's audit public keys "
        "(audit.pub and every retired audit.<hash>.pub) in TIDEGATE_KEYS_DIR"
    )


def downgraded(cp: Checkpoint, first_v2: int) -> str:
    """Why a v1 checkpoint after a v2 one is refused.

    Its time and scope are not signed, so whoever holds a retired key could backdate one past `signed_after_retirement`.
    """
    return (
        f"signed the pre-Tidegate-21 way (v1: its time not signed) by {cp.key_id}, after checkpoint {first_v2} was signed v2: the "
        "audit service signs v2 only since, so this is a signature made with its key elsewhere (a leaked or retired key?)"
    )


def backdated(cp: Checkpoint, before_id: int, before: datetime) -> str:
    """Why a checkpoint whose signed time is before an earlier checkpoint's is refused."""
    return (
        f"signs the time {cp.taken_at.astimezone(UTC).isoformat(timespec='seconds')}, before checkpoint {before_id}'s "
        f"{before.astimezone(UTC).isoformat(timespec='seconds')}: checkpoints are taken in order, so this one was signed with its "
        f"key ({cp.key_id}) elsewhere and backdated (a leaked or retired key?)"
    )


def check_checkpoints(
    checkpoints: Iterable[Checkpoint],
    checkers: dict[tuple[str, int], ChainChecker],
    keyring: Keyring,
    restores: Iterable[Restore] = (),
    *,
    heads_from: int = 0,
    first_id: int = 1,
    after: Checkpoint | None = None,
    unreadable: Iterable[UnreadableCheckpoint] = (),
) -> list[Break]:
    """Each checkpoint must be validly signed, and every head it signed must still be in its chain.

    The ids of the validly signed ones run on without a gap from `first_id`, except the ones a restore superseded
    (`Restore`); a row that does not read as a checkpoint (`unreadable`) or is not validly signed is a break of its own,
    and the service passes its id over, so it is no gap. The heads of
    checkpoints before `heads_from` (the anchor) are before what the chains hold: only their signatures and ids count.
    `after`: the checkpoint these follow (an archive's `previous`, checked apart): the order of their signed times and
    versions is judged from it, else a file starting after a v2 checkpoint took a v1 or backdated one made elsewhere.
    """
    breaks: list[Break] = []
    previous: dict[str, int] = {}
    expected_id = first_id
    first_v2: int | None = None
    last_signed: tuple[int, datetime] | None = None  # the latest v2 checkpoint so far, and the time it signs
    if after is not None and signature_valid(keyring, after) and signed_version(keyring, after) == 2:
        first_v2, last_signed = after.checkpoint_id, (after.checkpoint_id, after.taken_at)
    resumed = {r.checkpoint_id: r.superseded_from for r in restores}
    checkpoints = list(checkpoints)
    signed = {cp.checkpoint_id: signature_valid(keyring, cp) for cp in checkpoints}
    passed_over = {u.checkpoint_id for u in unreadable} | {checkpoint_id for checkpoint_id, ok in signed.items() if not ok}
    breaks += [checkpoint_break(u, not_a_checkpoint(u)) for u in unreadable]
    for cp in checkpoints:
        if not signed[cp.checkpoint_id]:
            breaks.append(Break(topic="*", partition=-1, checkpoint_id=cp.checkpoint_id, problem=unverified_signature(keyring, cp)))
            continue
        while expected_id in passed_over:  # the service numbers its checkpoints past a row it refused: no gap
            expected_id += 1
        if resumed.get(cp.checkpoint_id) == expected_id:
            expected_id = cp.checkpoint_id
        if cp.checkpoint_id != expected_id:
            breaks.append(
                Break(
                    topic="*",
                    partition=-1,
                    checkpoint_id=cp.checkpoint_id,
                    problem=f"checkpoints {expected_id}..{cp.checkpoint_id - 1} are missing",
                )
            )
        expected_id = cp.checkpoint_id + 1
        version = signed_version(keyring, cp)
        if version == 1 and first_v2 is not None:  # the service signs v2 only: a v1 after one is a key's, not the service's
            breaks.append(checkpoint_break(cp, downgraded(cp, first_v2)))
            continue
        first_v2 = cp.checkpoint_id if version == 2 and first_v2 is None else first_v2
        if version == 2 and last_signed is not None and cp.taken_at < last_signed[1] - timedelta(seconds=RETIRED_SLACK_S):
            breaks.append(checkpoint_break(cp, backdated(cp, *last_signed)))  # else a retired key backdates past its retirement
            continue
        last_signed = (cp.checkpoint_id, cp.taken_at) if version == 2 else last_signed
        if cp.rows != sum(int(h["seq"]) for h in cp.heads.values()):
            breaks.append(checkpoint_break(cp, "row count does not match its heads"))
        for name, head in sorted(cp.heads.items()):
            topic, partition = split_chain_name(name)
            seq = int(head["seq"])
            if seq < previous.get(name, 0):
                breaks.append(
                    Break(
                        topic=topic,
                        partition=partition,
                        seq=seq,
                        checkpoint_id=cp.checkpoint_id,
                        problem="head went backwards since the previous checkpoint",
                    )
                )
            previous[name] = seq
            if cp.checkpoint_id >= heads_from and (found := _head_break(cp.checkpoint_id, name, head, checkers)) is not None:
                breaks.append(found)
    return breaks


def _head_break(checkpoint_id: int, name: str, head: dict[str, Any], checkers: dict[tuple[str, int], ChainChecker]) -> Break | None:
    """What is wrong with the row a checkpoint signed as the head `name` (None: it is in its chain, unchanged)."""
    topic, partition = split_chain_name(name)
    seq, digest, offset = int(head["seq"]), str(head["hash"]), int(head["offset"])
    checker = checkers.get((topic, partition))
    if checker is not None and checker.broken is not None and checker.broken.seq is not None and checker.broken.seq <= seq:
        return None  # already reported as a broken link inside the chain
    if checker is not None and checker.anchor is not None and seq < checker.anchor.seq:
        return None  # before the anchor: archived, or not checked on request
    if checker is not None and checker.after is not None and seq <= checker.after.seq:
        return None  # in the archive before this one
    row = checker.at.get(seq) if checker else None
    if row is None:
        end = checker.last_seq if checker else 0
        problem = (
            f"signed head seq {seq} (offset {offset}) is missing: the chain ends at seq {end} (tail truncated: {seq - end} row(s) gone)"
        )
        return Break(topic=topic, partition=partition, seq=seq, offset=offset, checkpoint_id=checkpoint_id, problem=problem)
    if row.hash.hex() != digest or row.kafka_offset != offset:
        problem = "row differs from the signed head (chain rewritten after the checkpoint)"
        return Break(topic=topic, partition=partition, seq=seq, offset=row.kafka_offset, checkpoint_id=checkpoint_id, problem=problem)
    return None


def check_superseded(
    superseded: Iterable[tuple[Checkpoint, Checkpoint]], checkers: dict[tuple[str, int], ChainChecker], keyring: Keyring
) -> list[Break]:
    """Published checkpoints a restore superseded, each with the restore's checkpoint (the heads the restored database held).

    What such a checkpoint signed up to the restored heads is in the restored database: it must be there,
    unchanged (checked by hash, as any head: `heads_checked`). What it signed past them was recorded again
    from the bus after the restore, with a new `recorded_at` and so a new hash: each chain must hold again
    as many rows between the two heads' offsets as the checkpoint counted. A row short is a record that
    was recorded before the restore and that the bus no longer held when the audit read it again.
    """
    breaks: list[Break] = []
    for cp, restored in superseded:
        if not signature_valid(keyring, cp):
            breaks.append(checkpoint_break(cp, f"signature is not valid for a trusted audit key ({cp.key_id})"))
            continue
        for name, (window, signed) in sorted(past_restore(cp, restored).items()):
            topic, partition = split_chain_name(name)
            checker = checkers.get((topic, partition))
            found = checker.windows.get(window, 0) if checker else 0
            if found < signed:
                problem = (
                    f"{signed - found} of the {signed} record(s) at offsets {window[0] + 1}..{window[1]} recorded before the database was "
                    f"restored (to checkpoint {restored.checkpoint_id}) are not in the log again: the bus no longer held them (a gap the "
                    "restore left)"
                )
                breaks.append(Break(topic=topic, partition=partition, offset=window[1], checkpoint_id=cp.checkpoint_id, problem=problem))
    return breaks


def heads_checked(checkpoints: Iterable[Checkpoint], checkers: dict[tuple[str, int], ChainChecker]) -> list[Break]:
    """Every head of `checkpoints` in its chain, unchanged (their signatures are checked elsewhere)."""
    found = (_head_break(cp.checkpoint_id, name, head, checkers) for cp in checkpoints for name, head in sorted(cp.heads.items()))
    return [b for b in found if b is not None]


def past_restore(cp: Checkpoint, restored: Checkpoint) -> dict[str, tuple[tuple[int, int], int]]:
    """The chains `cp` signed past the heads `restored` signed: the offset window (after, through] and how many rows it held."""
    past = {}
    for name, head in cp.heads.items():
        before = restored.heads.get(name, {"seq": 0, "offset": -1})
        if int(head["seq"]) > int(before["seq"]):
            past[name] = ((int(before["offset"]), int(head["offset"])), int(head["seq"]) - int(before["seq"]))
    return past


def within_restore(cp: Checkpoint, restore: Checkpoint) -> Checkpoint:
    """`cp` with only the heads up to those `restore` signed: what the restored database must hold unchanged."""
    past = past_restore(cp, restore)
    return cp.model_copy(update={"heads": {name: head for name, head in cp.heads.items() if name not in past}})
