"""`tidegate audit archive`: write the log's oldest rows to an archive file, checking every chain as it goes; then, on request, prune them.

An archive runs from the previous prune's anchor (or seq 1) through the heads of one signed checkpoint. Each chain is
read from its anchor row, checked link by link as `verify` does, and each row after the anchor is written; a broken
link, a checkpoint that does not check out or a prune record that names no signed checkpoint refuses the archive, and
the partial file is removed. The prune (`AuditLog.prune`, PostgreSQL's `audit.prune_log`) then removes the rows before
each head in one transaction, provided their count is the one the archive read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from servicekit import Keyring, SigningKey
from services.audit.archive import ArchiveHeader, ArchiveKey, ArchivePolicy, ArchiveReading, ArchiveSigner, ArchiveWriter, attest
from services.audit.chain_check import Break, ChainChecker
from services.audit.checkpoint_check import anchor_heads, check_checkpoints, prune_anchor
from services.audit.checkpoints import Checkpoint, signature_valid, split_chain_name
from services.audit.repository import AuditLog

__all__ = ["ArchiveRefused", "Archived", "archive_log", "checkpoint_after", "checkpoint_before"]


class ArchiveRefused(RuntimeError):
    """The log does not check out up to the checkpoint: nothing was archived (and nothing may be pruned)."""

    def __init__(self, breaks: list[Break]) -> None:
        super().__init__("; ".join(b.describe() for b in breaks[:5]) + (f" (and {len(breaks) - 5} more)" if len(breaks) > 5 else ""))
        self.breaks = breaks


class Archived(BaseModel):
    """What `archive_log` wrote."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    checkpoint_id: int
    previous_checkpoint_id: int | None
    rows: int
    chains: int
    prunable_rows: int
    """Rows before the checkpoint's heads still in the database: what a prune removes (each head row stays as the anchor)."""
    keys: list[ArchiveKey] = []
    """The audit public keys the file carries: their fingerprints are what to hand the auditor with it."""
    policies: list[str] = []
    """The versions of the policy packs the file carries."""
    policies_left_out: list[str] = []
    """Versions whose stored text does not hash to them (edited where they are kept): not carried."""
    signers: int = 0
    """How many other public keys (services', operators', clients', tools') the file carries for its rows' signatures."""
    attested_by: str | None = None
    """The audit key that signed the header (its keys, packs and checkpoints); None: not attested (no audit private key given)."""


async def checkpoint_before(log: AuditLog, prefix: str, before: datetime) -> Checkpoint | None:
    """The newest checkpoint of `prefix` taken before `before`."""
    taken = [cp for cp in await log.checkpoints(prefix) if cp.taken_at < before]
    return taken[-1] if taken else None


async def checkpoint_after(log: AuditLog, prefix: str, after: datetime) -> Checkpoint | None:
    """The oldest checkpoint of `prefix` taken at or after `after`."""
    return next((cp for cp in await log.checkpoints(prefix) if cp.taken_at >= after), None)


async def archive_log(
    log: AuditLog,
    keyring: Keyring,
    path: Path,
    *,
    prefix: str,
    through: int,
    after: int | None = None,
    keys: Sequence[ArchiveKey] = (),
    policies: Sequence[ArchivePolicy] = (),
    progress: Callable[[int, int], None] = lambda done, total: None,
    attest_with: SigningKey | None = None,
    signers: Sequence[ArchiveSigner] = (),
    reading: ArchiveReading | None = None,
) -> Archived:
    """Write every row after the last prune's anchor through checkpoint `through`'s heads to `path`, checking each chain.

    `after`: start after the heads checkpoint `after` signed instead (an export of a window, `tidegate audit export`: the
    same file, checked offline the same way; no prune takes it, since it does not start at the last prune's anchor).
    `keys`: the audit's public keys, carried in the header (`audit_keys_of` the deployment's keys folder). `policies`:
    the policy packs decided with (`policy.policy_versions`), carried too; one whose text does not hash to its version
    (edited in the database) is left out and named in `Archived.policies_left_out`. `signers`: every other public key
    the rows' signatures need (`signers_of` the deployment's authority), and `reading` the settings they are judged
    with, carried too. `attest_with`: the audit's private
    key, which signs the header (`attest`); None writes a header not attested (`Archived.attested_by` None).

    Raises:
        LookupError: `through` (or `after`) is not a checkpoint of `prefix`, or is not after the last prune.
        ArchiveRefused: A chain, a checkpoint or a prune record does not check out (no file is left).
    """
    by_id = {cp.checkpoint_id: cp for cp in await log.checkpoints(prefix)}
    previous, prune_breaks = prune_anchor(await log.prunes(prefix), by_id, keyring)
    if prune_breaks:
        raise ArchiveRefused(prune_breaks)
    target = by_id.get(through)
    if target is None:
        raise LookupError(f"no checkpoint {through} in the log of {prefix!r}")
    first_id = previous.checkpoint_id + 1 if previous is not None else 1
    if through < first_id:
        raise LookupError(f"the log is pruned through checkpoint {first_id - 1}: archive a later checkpoint")
    if after is not None:
        if after < first_id - 1 or after >= through:
            raise LookupError(f"checkpoint {after} is not between the last prune's ({first_id - 1}) and checkpoint {through}")
        if (previous := by_id.get(after)) is None:
            raise LookupError(f"no checkpoint {after} in the log of {prefix!r}")
        if not signature_valid(keyring, previous):
            raise ArchiveRefused([Break(topic="*", partition=-1, checkpoint_id=after, problem="signature is not valid for a trusted key")])
        first_id = after + 1
    if not signature_valid(keyring, target):
        raise ArchiveRefused([Break(topic="*", partition=-1, checkpoint_id=through, problem="signature is not valid for a trusted key")])
    between = [cp for k, cp in sorted(by_id.items()) if first_id <= k <= through]
    restores = [r for r in await log.restores(prefix) if first_id <= r.checkpoint_id <= through]
    anchors = anchor_heads(previous) if previous is not None else {}
    heads = anchor_heads(target)
    header = ArchiveHeader(
        scope=prefix, created_at=datetime.now(UTC), checkpoint=target, previous=previous, checkpoints=between, restores=restores,
        rows=sum(h.seq - (anchors[tp].seq if tp in anchors else 0) for tp, h in heads.items()), keys=list(keys),
        policies=[p for p in policies if p.genuine], signers=list(signers), reading=reading,
    )  # fmt: skip
    if attest_with is not None:
        header = attest(header, attest_with)
    wanted: dict[tuple[str, int], set[int]] = {}
    for cp in between:
        for name, signed in cp.heads.items():
            wanted.setdefault(split_chain_name(name), set()).add(int(signed["seq"]))
    writer = ArchiveWriter(path, header)
    try:
        checkers, prunable, written = {}, 0, 0
        for tp, head in sorted(heads.items()):
            anchor = anchors.get(tp)
            checker = ChainChecker(*tp, wanted=wanted.get(tp, set()), anchor=anchor, anchor_checkpoint=first_id - 1)
            checkers[tp] = checker
            async for row in log.chain_rows(*tp, first=anchor.seq if anchor is not None else 1, last=head.seq):
                if not checker.feed(row):
                    raise ArchiveRefused([checker.broken] if checker.broken else [])
                prunable += row.seq < head.seq
                if anchor is None or row.seq > anchor.seq:
                    writer.row(row)
                    written += 1
                    if written % 5000 == 0:
                        progress(written, header.rows)
            checker.finish()
        breaks = [c.broken for c in checkers.values() if c.broken is not None]
        breaks += check_checkpoints(between, checkers, keyring, restores, first_id=first_id, after=previous)
        if breaks or written != header.rows:
            raise ArchiveRefused(breaks or [Break(topic="*", partition=-1, checkpoint_id=through, problem="rows missing below the heads")])
        progress(written, header.rows)
        sha256 = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return Archived(
        path=str(path), sha256=sha256, checkpoint_id=through, previous_checkpoint_id=previous.checkpoint_id if previous else None,
        rows=written, chains=len(heads), prunable_rows=prunable, keys=list(keys), signers=len(signers),
        policies=[p.version for p in header.policies], policies_left_out=[p.version for p in policies if not p.genuine],
        attested_by=header.attestation.key_id if header.attestation is not None else None,
    )  # fmt: skip
