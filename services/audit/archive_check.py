"""`tidegate audit verify --archive FILE…`: check archives offline, each on its own and as a sequence, and against the live log's prunes.

An archive checks out when its checkpoints are validly signed with ids running on from the one it starts after, and
every chain runs from the head that checkpoint signed (or seq 1) through the head its last checkpoint signed, link by
link, every row's hash recomputed: an edited, dropped or inserted line is named by chain and seq. Consecutive archives
must follow each other (one starts after the checkpoint the other ends at); given the live log's prunes too, each
archive must be the file its prune recorded (by sha256), and the newest must end where the live log is kept from.

The audit keys checked with are the deployment's keys folder's, and those the auditor trusts by fingerprint (`trust`:
SHA-256 of the raw public key, learnt out of band) among the keys the file carries (`ArchiveHeader.keys`). A key the
file merely carries is never trusted: anyone who rewrites the file can put his own there. A checkpoint signed by a key
trusted neither way is named as not checked (which key, its fingerprint when the file carries it, how to trust it),
not as forged.

The header is checked against its attestation (`header_attestation`), with the same keys: a header changed after the
audit key signed it is broken, each changed part named; a file written before headers were attested reads as not
attested (its carried keys' retirement times and packs are not proven), and so does one whose attestation was removed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from servicekit import Keyring
from services.audit.archive import ArchiveError, ArchiveHeader, file_sha256, header_attestation, read_archive, signer_authority
from services.audit.chain_check import Break, ChainChecker
from services.audit.checkpoint_check import anchor_heads, check_checkpoints, unverified_signature
from services.audit.checkpoints import Checkpoint, Prune, chain_name, signature_valid, split_chain_name
from services.audit.signature_check import Recheck, signature_recheck

__all__ = ["ArchiveReport", "ArchiveSummary", "archive_recheck", "carried_signers", "header_keyring", "verify_archives"]


class ArchiveSummary(BaseModel):
    """One archive as checked."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    scope: str
    after_checkpoint: int | None
    through_checkpoint: int
    rows: int
    chains: int
    policies: list[str] = []
    """The versions of the policy packs it carries (each checked: it hashes to its version)."""
    header: str = "unattested"
    """Its header's attestation: `attested` (by `attested_by`), `unattested` (a file written before, or one whose
    attestation was removed: its carried keys' retirement times and packs are not proven), `untrusted` (signed by a key
    not trusted here: not checked) or `broken` (changed after it was signed: in `breaks`)."""
    attested_by: str | None = None
    attested_by_sha256: str | None = None
    """The fingerprint of the key that attested its header (when that key is trusted here)."""
    signers: int = 0
    """How many signing keys of the rows' producers it carries (used only under an attestation a trusted key made)."""


class ArchiveReport(BaseModel):
    """What the archives hold and every break found in them (empty when they check out)."""

    model_config = ConfigDict(frozen=True)

    archives: list[ArchiveSummary]
    breaks: list[Break]
    seconds: float
    unchecked: list[Break] = []
    """The breaks (also in `breaks`) that are checkpoints signed by an audit key not trusted here: not checked, not shown forged."""

    @property
    def ok(self) -> bool:
        """True when every archive checks out, alone and in sequence."""
        return not self.breaks

    @property
    def only_unchecked(self) -> bool:
        """True when nothing was found wrong, only checkpoints whose key is not trusted here (so not checked)."""
        return bool(self.breaks) and all(b in self.unchecked for b in self.breaks)


def _file_break(path: Path, problem: str, checkpoint_id: int | None = None) -> Break:
    return Break(topic=str(path), partition=-1, checkpoint_id=checkpoint_id, problem=problem)


def _untrusted(path: Path, header: ArchiveHeader, keyring: Keyring) -> list[Break]:
    """One break per audit key not trusted here that signed a checkpoint of the file: which, and how to trust it."""
    signed: dict[str, list[int]] = {}
    for cp in [*([header.previous] if header.previous is not None else []), *header.checkpoints]:
        if not keyring.knows(cp.key_id):
            signed.setdefault(cp.key_id, []).append(cp.checkpoint_id)
    carried = {k.key_id: k for k in header.keys}
    out: list[Break] = []
    for key_id, ids in signed.items():
        problem = (
            f"checkpoint(s) {', '.join(map(str, ids))} are signed by {key_id}, an audit key not trusted here, so their "
            "signature is not valid for a trusted audit key: it could not be checked (not shown forged, not shown genuine); "
        )
        key = carried.get(key_id)
        if key is not None and key.public() is not None:
            retired = f", retired {key.retired_at:%Y-%m-%d %H:%M:%S} UTC" if key.retired_at is not None else ""
            problem += (
                f"the file carries that public key (sha256 {key.sha256}{retired}): if the deployment's operator confirms "
                f"that fingerprint (the export printed it), run again with --trust-key {key.sha256}, or put the key in "
                "TIDEGATE_KEYS_DIR"
            )
        elif key is not None:
            problem += "the file carries a key under that id which is not the key of that id (not to be trusted)"
        else:
            problem += (
                "the file does not carry it (written before archives carried their keys): put the deployment's audit "
                "public keys (audit.pub and every retired audit.<hash>.pub) in TIDEGATE_KEYS_DIR"
            )
        out.append(_file_break(path, problem, ids[0]))
    return out


def _past_the_heads(path: Path, header: ArchiveHeader, checkers: dict[tuple[str, int], ChainChecker]) -> list[Break]:
    """A break per chain whose rows run on past the head the file's last checkpoint signed: no checkpoint signed them.

    The chain's hash is no secret: anyone can link a row after the last one and hash it. A file ends at the heads of
    the checkpoint it names; a row after one is evidence of nothing, whatever the header's row count says.
    """
    out: list[Break] = []
    for (topic, partition), head in sorted(anchor_heads(header.checkpoint).items()):
        checker = checkers.get((topic, partition))
        if checker is None or checker.broken is not None or checker.last_seq <= head.seq:
            continue
        problem = (
            f"rows seq {head.seq + 1}..{checker.last_seq} run past the head checkpoint {header.checkpoint.checkpoint_id} signed "
            f"(seq {head.seq}): signed by no checkpoint (added to the file after it was written?)"
        )
        at = header.checkpoint.checkpoint_id
        out.append(Break(topic=topic, partition=partition, seq=head.seq + 1, checkpoint_id=at, problem=problem))
    return out


def header_keyring(header: ArchiveHeader, keyring: Keyring, trust: frozenset[str]) -> Keyring:
    """`keyring` and the audit keys `header` carries whose fingerprint is in `trust` (SHA-256 hex, learnt out of band)."""
    carried = [k for k in header.keys if k.sha256 in trust and k.key_id.startswith("audit-")]
    return keyring.with_keys(
        {k.key_id: public for k in carried if (public := k.public()) is not None},
        {k.key_id: k.retired_at.timestamp() for k in carried if k.retired_at is not None},  # a retired key is judged at its time
    )


def carried_signers(paths: Sequence[Path], keyring: Keyring, trust: Iterable[str] = ()) -> tuple[list[ArchiveHeader], list[str]]:
    """The headers of `paths` whose carried signing keys may be used (attested by a trusted audit key); why not, for the others.

    A key a file carries is used only so: in a header not attested, attested by a key not trusted, or changed after it was
    attested, whoever rewrote the file may have put his own key there to make a forged row verify.

    Raises:
        ArchiveError: A file is not an audit archive.
        OSError: A file cannot be read.
    """
    fingerprints = frozenset(t.strip().lower() for t in trust)
    usable: list[ArchiveHeader] = []
    notes: list[str] = []
    for path in paths:
        header, _ = read_archive(path)
        state, problems = header_attestation(header, header_keyring(header, keyring, fingerprints))
        if state == "attested":
            if header.signers:
                usable.append(header)
            else:
                notes.append(f"{path} carries no signing keys (written before archives carried them)")
            continue
        why = {
            "unattested": "its header is not attested (written before Tidegate 21, or its attestation was removed)",
            "untrusted": f"{problems[0] if problems else 'its header is attested by an audit key not trusted here'}: "
            "--trust-key SHA256 (the audit key's fingerprint `audit export` printed) trusts it",
            "broken": "its header does not check out: " + "; ".join(problems),
        }[state]
        notes.append(f"the signing keys {path} carries are not used: {why}")
    return usable, notes


def archive_recheck(paths: Sequence[Path], keyring: Keyring, prefix: str, trust: Iterable[str] = ()) -> tuple[Recheck | None, list[str]]:
    """Each row observed again from its own value with the signing keys `paths` carry (`carried_signers`); why a file's are not used.

    None when no file's may be used: the caller then checks with the keys folder of its machine, if any.
    """
    headers, notes = carried_signers(paths, keyring, trust)
    if not headers:
        return None, notes
    authority, reading = signer_authority(headers)
    hint = "the archive's attested header carries no such key: it was not on file when the archive was written"
    return signature_recheck(authority.check, prefix, reading.bounds, added_at=authority.added_at, keys_hint=hint), notes


def _check_one(
    path: Path, keyring: Keyring, trust: frozenset[str] = frozenset(), recheck: Recheck | None = None
) -> tuple[ArchiveSummary | None, ArchiveHeader | None, list[Break], list[Break]]:
    """One archive on its own: its header, its checkpoints, every chain in it; then the breaks that are keys not trusted here."""
    sha256 = file_sha256(path)
    try:
        header, rows = read_archive(path)
    except ArchiveError as exc:
        return None, None, [_file_break(path, str(exc))], []
    keyring = header_keyring(header, keyring, trust)
    breaks: list[Break] = []
    previous = header.previous
    if previous is not None and not signature_valid(keyring, previous) and keyring.knows(previous.key_id):
        breaks.append(
            _file_break(path, f"the checkpoint it starts after is not validly signed ({previous.key_id})", previous.checkpoint_id)
        )
    if not header.checkpoints or header.checkpoints[-1] != header.checkpoint:
        breaks.append(_file_break(path, "its checkpoints do not end at the checkpoint it names", header.checkpoint.checkpoint_id))
    after = anchor_heads(previous) if previous is not None else {}
    wanted: dict[tuple[str, int], set[int]] = {}
    for cp in header.checkpoints:
        for name, head in cp.heads.items():
            wanted.setdefault(split_chain_name(name), set()).add(int(head["seq"]))
    signed = set(anchor_heads(header.checkpoint))
    checkers = {tp: ChainChecker(*tp, wanted=wanted.get(tp, set()), after=after.get(tp)) for tp in signed}
    count = 0
    signed_rows: list[Break] = []  # rows that do not verify from their own value (with `recheck`)
    try:
        for number, row in rows:
            count += 1
            checker = checkers.get((row.topic, row.partition))
            if checker is None:
                name = chain_name(row.topic, row.partition)
                problem = f"line {number}: a row of {name}, a chain checkpoint {header.checkpoint.checkpoint_id} did not sign"
                breaks.append(_file_break(path, problem))
                continue
            checker.feed(row)
            if recheck is not None and (unsigned := recheck(row)) is not None:
                signed_rows.append(_file_break(path, f"line {number}: {chain_name(row.topic, row.partition)} seq {row.seq}: {unsigned}"))
    except ArchiveError as exc:
        breaks.append(_file_break(path, str(exc)))
    breaks += [c.broken for c in checkers.values() if c.broken is not None]
    breaks += _past_the_heads(path, header, checkers)
    breaks += signed_rows
    first_id = previous.checkpoint_id + 1 if previous is not None else 1
    unknown = {cp.checkpoint_id: cp for cp in header.checkpoints if not keyring.knows(cp.key_id)}
    breaks += [
        b
        for b in check_checkpoints(header.checkpoints, checkers, keyring, header.restores, first_id=first_id, after=previous)
        if b.checkpoint_id not in unknown or b.problem != unverified_signature(keyring, unknown[b.checkpoint_id])
    ]  # a key not trusted here is said once, in `unchecked`
    if count != header.rows:
        breaks.append(_file_break(path, f"holds {count} rows, its header says {header.rows}"))
    state, problems = header_attestation(header, keyring)
    untrusted_header = [_file_break(path, p + ": trust its key (--trust-key) to check it") for p in problems if state == "untrusted"]
    breaks += [_file_break(path, p) for p in problems if state == "broken"]
    breaks += [
        _file_break(path, f"the policy pack it carries as {p.version} does not hash to that version: its text was edited")
        for p in header.policies
        if not p.genuine
    ]
    summary = ArchiveSummary(
        path=str(path), sha256=sha256, scope=header.scope, after_checkpoint=previous.checkpoint_id if previous else None,
        through_checkpoint=header.checkpoint.checkpoint_id, rows=count, chains=len(checkers),
        policies=[p.version for p in header.policies], header=state,
        attested_by=header.attestation.key_id if header.attestation is not None else None,
        attested_by_sha256=keyring.fingerprint(header.attestation.key_id) if header.attestation is not None else None,
        signers=len(header.signers),
    )  # fmt: skip
    return summary, header, breaks, [*_untrusted(path, header, keyring), *untrusted_header]


def _not_named(summary: ArchiveSummary) -> Break:
    """Why a header is not attested by a key `--attested-by` names."""
    if summary.header == "unattested":
        problem = "its header is not attested, and --attested-by asks for one attested by the key it names"
    else:
        problem = (
            f"its header is attested by {summary.attested_by} (sha256 {summary.attested_by_sha256}), not by a key --attested-by "
            "names: its keys' retirement times are that key's word (whoever holds a retired key can drop its retirement and "
            "attest the header again with it); ask the deployment's operator which key was current when the file was written"
        )
    return _file_break(Path(summary.path), problem)


def _same(a: Checkpoint | None, b: Checkpoint | None) -> bool:
    return a is not None and b is not None and (a.checkpoint_id, a.heads, a.signature) == (b.checkpoint_id, b.heads, b.signature)


def verify_archives(
    paths: Sequence[Path],
    keyring: Keyring,
    *,
    prunes: Sequence[Prune] | None = None,
    live_from: int | None = None,
    trust: Iterable[str] = (),
    require_attested: bool = False,
    attested_by: Iterable[str] = (),
    recheck: Recheck | None = None,
) -> ArchiveReport:
    """Check each archive, then that they follow each other.

    With the live log's `prunes` (and `live_from`, the checkpoint it is kept from), each archive against its prune's sha256.
    `trust`: fingerprints (SHA-256 hex of the raw public key) of audit keys the files carry, trusted as `keyring`'s are.
    `require_attested`: a file whose header is not attested (written before, or its attestation removed) is a break.
    `attested_by`: fingerprints of the keys that may attest the headers (the audit key current when each file was
    written, learnt out of band): a header attested by another trusted key, or not attested, is a break. An attestation
    proves the other keys' retirement times, never its own key's: whoever holds a retired key can drop its
    `retired_at` and attest the header again with that very key.
    `recheck`: each row is also observed again from its own value (`archive_recheck`); one that does not verify is a break.
    """
    started = time.perf_counter()
    fingerprints = frozenset(t.strip().lower() for t in trust)
    checked = [(path, *_check_one(path, keyring, fingerprints, recheck)) for path in paths]
    unchecked = [b for _, _, _, _, untrusted in checked for b in untrusted]
    breaks = [*unchecked, *(b for _, _, _, found, _ in checked for b in found)]
    whole = sorted(((s, h) for _, s, h, _, _ in checked if s is not None and h is not None), key=lambda sh: sh[0].through_checkpoint)
    if named := frozenset(f.strip().lower() for f in attested_by):
        breaks += [_not_named(s) for s, _ in whole if s.header in ("attested", "unattested") and s.attested_by_sha256 not in named]
    if require_attested:
        breaks += [
            _file_break(Path(s.path), "its header is not attested (written before Tidegate 21, or its attestation was removed), "
                        "and attested headers are required (--require-attested)")
            for s, _ in whole
            if s.header == "unattested"
        ]  # fmt: skip
    scopes = {s.scope for s, _ in whole}
    if len(scopes) > 1:
        breaks.append(Break(topic="*", partition=-1, problem=f"the archives are of different deployments: {', '.join(sorted(scopes))}"))
    for (a, ha), (b, hb) in itertools.pairwise(whole):
        if not _same(hb.previous, ha.checkpoint):
            problem = (
                f"{b.path} starts after checkpoint {b.after_checkpoint}, but {a.path} before it ends at checkpoint {a.through_checkpoint}"
            )
            breaks.append(_file_break(Path(b.path), problem + " (an archive between them missing, or one of them not of this log)"))
    if prunes is not None:
        recorded = {p.checkpoint_id: p for p in prunes}
        for s, _ in whole:
            prune = recorded.get(s.through_checkpoint)
            if prune is not None and prune.archive_sha256 != s.sha256:
                problem = (
                    f"is not the file the prune of checkpoint {s.through_checkpoint} recorded "
                    f"(sha256 {prune.archive_sha256[:16]}…, this file {s.sha256[:16]}…)"
                )
                breaks.append(_file_break(Path(s.path), problem, s.through_checkpoint))
        if whole and live_from is not None and whole[-1][0].through_checkpoint != live_from:
            problem = (
                f"the newest archive ends at checkpoint {whole[-1][0].through_checkpoint}, the live log is kept from checkpoint {live_from}"
            )
            breaks.append(Break(topic="*", partition=-1, checkpoint_id=live_from, problem=problem))
    return ArchiveReport(archives=[s for s, _ in whole], breaks=breaks, seconds=time.perf_counter() - started, unchecked=unchecked)
