"""Check a Tidegate audit archive or export without Tidegate: Python's standard library and `cryptography` only.

An auditor's own, independent reading of the file format docs/audit.md ("The archive format, byte for byte") lays
down, in one file to read before running it. It checks what `tidegate audit verify --archive` checks of one file:

1. the header's checkpoints are signed (Ed25519) by an audit key the auditor trusts, by the SHA-256 fingerprint of its
   raw public key (`--trust-key`, learnt apart from the file: `tidegate audit export` prints it) or by its PEM file
   (`--key audit.pub`); a key the file carries is never trusted for being there;
2. each checkpoint's ids run on from the one the file starts after, and its row count is the sum of its heads' seqs;
   from the one the file starts after on, none signed by a retired key after its retirement, none signs a time before an
   earlier one's (backdated), none is signed v1 after one signed v2;
3. every row's hash is recomputed from its columns, and each links to the row before it (the chain's first to the head
   the starting checkpoint signed, or 32 zero bytes);
4. every head each checkpoint signed is a row of the file, with that hash (a cut file is named), and no row runs past
   the heads of the checkpoint the file ends at (a row linked and hashed after them is signed by none);
5. each policy pack the file carries hashes to its version;
6. the header is as the audit key attested it (`attestation`): the signature of a trusted key over a SHA-256 of each
   part of the header, so a key added, a key's `retired_at` dropped or a pack swapped after the file was written is
   named; a file without an attestation (written before Tidegate 21, or one whose attestation was removed) is said to
   be not attested: the retirement times and packs it carries are then not proven. An attestation proves the other
   keys' retirement times, never its own key's (a retired key's holder drops its retirement and attests again with it):
   with `--attested-by SHA256` (the key current when the file was written, learnt apart from the file) a header
   attested by another key, or not attested, is a problem. The signing keys of the rows'
   producers (`signers`) are attested parts too; each event's own signature is not checked here (`tidegate audit
   explain … --offline --trust-key` does, with those keys).

Restores (ids a database restore skipped) are not followed here: such a file is named, and `tidegate audit verify
--archive` checks it. Exit 0 when the file checks out, 1 when anything does not (with `--require-attested`, a header
not attested too), 2 when it cannot be read.

Run it:  python3 verify_audit_export.py evidence.jsonl.gz --trust-key <sha256 of the audit key, 64 hex digits>
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import struct
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

COLUMNS = (
    "topic", "partition", "kafka_offset", "seq", "kafka_ts", "ts_type", "key", "headers", "value", "valid", "invalid_reason",
    "event_id", "event_type", "tenant_id", "task_id", "action_id", "tool", "outcome", "reasons", "trace_id", "traceparent",
    "event_time", "duplicate", "recorded_at", "prev_hash", "hash",
)  # fmt: skip
BYTES, TIMES = {"key", "value"}, {"kafka_ts", "event_time", "recorded_at"}
SIGNING_CONTEXT = b"tidegate.audit.checkpoint.v1\n"  # checkpoints taken before Tidegate 21: id, heads, rows
SIGNING_CONTEXT_V2 = b"tidegate.audit.checkpoint.v2\n"  # since: id, heads, rows, scope and taken_at
GENESIS = bytes(32)
HEADER_CONTEXT = b"tidegate.audit.archive.header.v1\n"  # a header's attestation: this, then {"key_id", "parts"}
ITEMS = {"keys": "key_id", "policies": "version"}  # header members attested item by item, each named by this field; others whole
RETIRED_SLACK = timedelta(seconds=60)  # a retired audit key's checkpoints are taken until a minute after its retirement


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes of every digest and signature (the file holds no floats where it matters)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def checkpoint_messages(cp: dict[str, Any]) -> list[bytes]:
    """What a checkpoint's signature may cover: v2 (its scope and taken_at too, UTC to the microsecond with `Z`), or v1."""
    taken_at = datetime.fromisoformat(cp["taken_at"]).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    v1 = {"checkpoint_id": cp["checkpoint_id"], "heads": cp["heads"], "rows": cp["rows"]}
    return [SIGNING_CONTEXT_V2 + canonical_json(v1 | {"scope": cp["scope"], "taken_at": taken_at}), SIGNING_CONTEXT + canonical_json(v1)]


def after_retirement(cp: dict[str, Any], retired_at: str | None) -> str | None:
    """Why a checkpoint its key signed after that key's retirement (and a minute's slack) is refused; None: it was not."""
    if retired_at is None:
        return None
    taken, retired = datetime.fromisoformat(cp["taken_at"]), datetime.fromisoformat(retired_at)
    if taken <= retired + RETIRED_SLACK:
        return None
    return f"signed by {cp['key_id']} at {cp['taken_at']}, after that key was retired at {retired_at} (a leaked key?)"


def verifies(public: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is `public`'s over `message`."""
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def field(name: str, value: Any) -> bytes:
    """One column's frame: NULL is one 0x00 byte; any other value is 0x01, its length (4 bytes, big-endian) and its bytes."""
    if value is None:
        return b"\x00"
    if name in BYTES:
        raw = base64.b64decode(value)
    elif name in TIMES:
        raw = datetime.fromisoformat(value).astimezone(UTC).isoformat(timespec="microseconds").encode()
    elif isinstance(value, bool):
        raw = b"t" if value else b"f"
    elif isinstance(value, int):
        raw = str(value).encode()
    elif isinstance(value, str):
        raw = value.encode()
    else:  # headers and reasons: lists, as canonical JSON
        raw = canonical_json(value)
    return b"\x01" + struct.pack(">I", len(raw)) + raw


def row_hash(row: dict[str, Any]) -> bytes:
    """sha256(prev_hash || the frames of every column from topic through recorded_at, in table order)."""
    content = b"".join(field(name, row[name]) for name in COLUMNS[:-2])
    return hashlib.sha256(bytes.fromhex(row["prev_hash"]) + content).digest()


def key_id(public: Ed25519PublicKey) -> str:
    return "audit-" + hashlib.sha256(public.public_bytes_raw()).hexdigest()[:12]


def trusted_keys(header: dict[str, Any], fingerprints: set[str], pem_files: list[Path]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in pem_files:
        loaded = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(loaded, Ed25519PublicKey):
            raise SystemExit(f"{path}: not an Ed25519 public key")
        keys[key_id(loaded)] = loaded
    for carried in header.get("keys") or []:
        raw = base64.b64decode(carried["public_key"])
        if hashlib.sha256(raw).hexdigest() in fingerprints:
            public = Ed25519PublicKey.from_public_bytes(raw)
            keys[key_id(public)] = public
    return keys


def header_parts(header: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """SHA-256 (hex) of the canonical JSON of each part of the header but `attestation`; and the parts named twice."""
    parts: dict[str, str] = {}
    twice: list[str] = []
    for name, value in header.items():
        if name == "attestation":
            continue
        split = name in ITEMS and isinstance(value, list) and all(isinstance(item, dict) for item in value)
        for part, item in [(f"{name}/{item.get(ITEMS[name])}", item) for item in value] if split else [(name, value)]:
            if part in parts:
                twice.append(part)
            parts[part] = hashlib.sha256(canonical_json(item)).hexdigest()
    return parts, twice


def check_attestation(
    header: dict[str, Any], keys: dict[str, Ed25519PublicKey], retired: dict[str, str], attested_by: set[str]
) -> list[str]:
    """What is wrong with the header against its attestation (a header without one: nothing; `main` says it is not attested).

    `attested_by`: fingerprints of the keys that may attest it (none: any trusted key). An attestation proves the other
    keys' retirement times, never its own key's: whoever holds a retired key drops its `retired_at` and attests again.
    """
    att = header.get("attestation")
    if att is None:
        return ["its header is not attested, and --attested-by asks for one attested by the key it names"] if attested_by else []
    public = keys.get(att["key_id"])
    if public is None:
        return [f"its header is attested by {att['key_id']}, a key not trusted here (not checked)"]
    fingerprint = hashlib.sha256(public.public_bytes_raw()).hexdigest()
    if attested_by and fingerprint not in attested_by:
        return [
            f"its header is attested by {att['key_id']} (sha256 {fingerprint}), not by a key --attested-by names: its keys' "
            "retirement times are that key's word (a retired key's holder can drop its retirement and attest again)"
        ]
    message = HEADER_CONTEXT + canonical_json({"key_id": att["key_id"], "parts": att["parts"]})
    signature = base64.urlsafe_b64decode(att["signature"] + "=" * (-len(att["signature"]) % 4))
    if not verifies(public, signature, message):
        return [f"its header's attestation is not a valid signature of {att['key_id']}: the attestation was edited"]
    problems = []
    when = retired.get(att["key_id"])
    if when and datetime.fromisoformat(header["created_at"]) > datetime.fromisoformat(when) + RETIRED_SLACK:
        problems.append(f"its header is attested by {att['key_id']} at {header['created_at']}, after that key was retired at {when}")
    parts, twice = header_parts(header)
    problems += [f"its header carries {part} twice" for part in sorted(set(twice))]
    changed = f"its header was changed after {att['key_id']} attested it: "
    problems += [changed + f"{part} was added" for part in sorted(parts.keys() - att["parts"].keys())]
    problems += [changed + f"{part} was removed" for part in sorted(att["parts"].keys() - parts.keys())]
    both = parts.keys() & att["parts"].keys()
    problems += [changed + f"{part} is not as attested" for part in sorted(p for p in both if parts[p] != att["parts"][p])]
    return problems


def verify(path: Path, fingerprints: set[str], pem_files: list[Path], attested_by: frozenset[str] = frozenset()) -> list[str]:
    """Every problem found in the file (none: it checks out)."""
    with gzip.open(path, "rb") as f:
        lines = f.read().splitlines()
    header = json.loads(lines[0])
    if header.get("format") != "tidegate.audit.archive" or header.get("version") != 1:
        return ["line 1 is not a Tidegate audit archive's header (format tidegate.audit.archive, version 1)"]
    problems: list[str] = []
    if header.get("restores"):
        problems.append("the file spans a database restore: check it with `tidegate audit verify --archive`")
    keys = trusted_keys(header, fingerprints, pem_files)
    retired = {k["key_id"]: k["retired_at"] for k in header.get("keys") or [] if k.get("retired_at")}
    problems += check_attestation(header, keys, retired, set(attested_by))
    first_v2 = None
    last_signed: tuple[int, datetime] | None = None  # the latest v2 checkpoint so far, and the time it signs
    previous = header.get("previous")
    checkpoints = header["checkpoints"]
    expected = previous["checkpoint_id"] + 1 if previous else 1
    for cp in ([previous] if previous else []) + checkpoints:
        public = keys.get(cp["key_id"])
        signature = base64.urlsafe_b64decode(cp["signature"] + "=" * (-len(cp["signature"]) % 4))
        if public is None:
            problems.append(f"checkpoint {cp['checkpoint_id']}: signed by {cp['key_id']}, a key not trusted here (not checked)")
            continue
        version = next((2 - n for n, m in enumerate(checkpoint_messages(cp)) if verifies(public, signature, m)), None)
        if version is None:
            problems.append(f"checkpoint {cp['checkpoint_id']}: its signature is not valid for {cp['key_id']}")
            continue
        late = after_retirement(cp, retired.get(cp["key_id"]))
        if late:
            problems.append(f"checkpoint {cp['checkpoint_id']}: {late}")
        if version == 1 and first_v2 is not None:
            problems.append(f"checkpoint {cp['checkpoint_id']}: signed v1 (its time not signed) after checkpoint {first_v2} was signed v2")
        first_v2 = cp["checkpoint_id"] if version == 2 and first_v2 is None else first_v2
        if version == 2:  # checkpoints are taken in order: one signing a time before an earlier one's was backdated
            taken = datetime.fromisoformat(cp["taken_at"])
            if last_signed is not None and taken < last_signed[1] - RETIRED_SLACK:
                problems.append(
                    f"checkpoint {cp['checkpoint_id']}: signs a time before checkpoint {last_signed[0]}'s ({cp['taken_at']}): "
                    f"signed with its key ({cp['key_id']}) elsewhere and backdated (a leaked or retired key?)"
                )
            else:
                last_signed = (cp["checkpoint_id"], taken)
    for cp in checkpoints:
        if cp["checkpoint_id"] != expected:
            problems.append(f"checkpoints {expected}..{cp['checkpoint_id'] - 1} are missing")
        expected = cp["checkpoint_id"] + 1
        if cp["rows"] != sum(int(h["seq"]) for h in cp["heads"].values()):
            problems.append(f"checkpoint {cp['checkpoint_id']}: its row count does not match its heads")
    if checkpoints and checkpoints[-1] != header["checkpoint"]:
        problems.append("its checkpoints do not end at the checkpoint it names")
    last: dict[str, tuple[int, str]] = {n: (int(h["seq"]), h["hash"]) for n, h in (previous or {"heads": {}})["heads"].items()}
    hashes: dict[tuple[str, int], str] = {}
    for number, line in enumerate(lines[1:], start=2):
        row = json.loads(line)
        chain = f"{row['topic']}:{row['partition']}"
        seq, prev_hash = last.get(chain, (0, GENESIS.hex()))
        where = f"line {number}, {chain} seq {row['seq']}"
        if row["seq"] != seq + 1:
            problems.append(f"{where}: expected seq {seq + 1} (a row missing or moved)")
        if row["prev_hash"] != prev_hash:
            problems.append(f"{where}: does not link to the row before it")
        if row_hash(row).hex() != row["hash"]:
            problems.append(f"{where}: its columns do not hash to its hash (row edited)")
        last[chain] = (row["seq"], row["hash"])
        hashes[chain, row["seq"]] = row["hash"]
    if len(lines) - 1 != header["rows"]:
        problems.append(f"holds {len(lines) - 1} rows, its header says {header['rows']}")
    ends, last_id = {n: int(h["seq"]) for n, h in header["checkpoint"]["heads"].items()}, header["checkpoint"]["checkpoint_id"]
    for chain, (seq, _) in sorted(last.items()):  # a row after the last signed head: anyone can link and hash one
        if chain not in ends:
            problems.append(f"{chain}: rows of a chain checkpoint {last_id} did not sign: signed by no checkpoint")
        elif seq > ends[chain]:
            problems.append(
                f"{chain}: rows seq {ends[chain] + 1}..{seq} run past the head checkpoint {last_id} signed (seq {ends[chain]}): "
                "signed by no checkpoint"
            )
    starts = {n: int(h["seq"]) for n, h in (previous or {"heads": {}})["heads"].items()}
    for cp in checkpoints:
        for chain, head in cp["heads"].items():
            if int(head["seq"]) <= starts.get(chain, 0):
                continue  # in the archive before this one
            if hashes.get((chain, int(head["seq"]))) != head["hash"]:
                problems.append(f"checkpoint {cp['checkpoint_id']}: the head it signed, {chain} seq {head['seq']}, is not in the file")
    for pack in header.get("policies") or []:
        version = "sha256:" + hashlib.sha256(canonical_json({"files": pack["files"], "settings": pack["settings"]})).hexdigest()
        if version != pack["version"]:
            problems.append(f"the policy pack carried as {pack['version']} does not hash to that version (edited)")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("archive", type=Path, help="The archive or export (gzip'd JSON lines).")
    parser.add_argument("--trust-key", action="append", default=[], metavar="SHA256", help="An audit key's fingerprint (repeat).")
    parser.add_argument("--key", action="append", default=[], type=Path, metavar="PEM", help="An audit public key file (repeat).")
    parser.add_argument("--require-attested", action="store_true", help="A header not attested is a problem, not a note.")
    parser.add_argument(
        "--attested-by", action="append", default=[], metavar="SHA256", help="The key current when the file was written (repeat)."
    )
    args = parser.parse_args()
    named = frozenset(t.strip().lower() for t in args.attested_by)
    try:
        problems = verify(args.archive, {t.strip().lower() for t in args.trust_key}, args.key, named)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        print(f"{args.archive}: cannot be read as an audit archive: {exc}", file=sys.stderr)
        return 2
    with gzip.open(args.archive, "rb") as f:
        attestation = json.loads(f.readline()).get("attestation")
    if attestation is None and args.require_attested:
        problems.append("its header is not attested (written before Tidegate 21, or its attestation was removed): --require-attested")
    for problem in problems:
        label = "NOT VERIFIED" if "a key not trusted here" in problem else "BROKEN"
        print(f"{label}: {problem}", file=sys.stderr)
    if attestation is None:
        print(
            "header NOT attested (written before Tidegate 21, or its attestation was removed): the retirement times of the keys "
            "it carries and its policy packs are not proven",
            file=sys.stderr,
        )
    if not problems:
        print(f"intact: {args.archive} checks out: every row's hash and link, every checkpoint's signature and head")
        if attestation is not None:
            print(f"header attested by {attestation['key_id']}: its keys, their retirement times and its policy packs as written")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
