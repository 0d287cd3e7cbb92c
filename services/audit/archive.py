"""The archive file: rows of the audit log that left the database, in a form an auditor can verify offline.

One gzip'd file of JSON lines. The first line is the header (`ArchiveHeader`): the scope, the signed checkpoint
whose heads the archive ends at, the one it starts after (the previous prune's, or none: from seq 1), and every
checkpoint between, with their signatures. Each further line is one row of `audit.log` with every column its hash
covers (bytes in base64, hashes in hex, times to the microsecond), chain by chain in seq order. Nothing but the
file and the audit's public keys is needed to check it (`archive_check.py`). The header also carries those public keys
(`ArchiveKey`: every audit key the deployment's keys folder held, retired ones with their retirement time), so the file
can still be checked once the deployment's keys folder is gone; a key in the file is trusted only when the auditor
names its fingerprint, learnt out of band (`verify --archive FILE --trust-key SHA256`), never for being there. And it
carries the policy packs the deployment decided with (`ArchivePolicy`: each version's Cedar files and settings), so
"under which policy" is answered from the file: a pack's version is the SHA-256 of its text, which the decisions name
under their signatures, so a carried pack proves itself (`pack_version`).

It also carries every other public key its rows' signatures need (`ArchiveSigner`: the services', operators',
tenants' clients' and tool services' keys the deployment held, retired and revoked ones with when), and the settings a
row is judged with (`ArchiveReading`): with them, where the header's attestation verifies with a trusted audit key,
`explain`/`show`/`search`/`verify --signatures` check each row's own signature from the file alone
(`signer_authority`). A carried signer is never trusted otherwise: in a header not attested, or attested by a key not
trusted, or changed after it was attested, whoever rewrote the file could have put his own key there.

The header is attested (`ArchiveAttestation`): the audit key that signs checkpoints signs a digest of each of its
parts (every top-level member, each carried key and each carried pack on its own), so a header rewritten after it was
written (a key's `retired_at` dropped, a key added, a pack swapped) is refused, naming the part changed. Without that,
the carried keys' retirement times and packs would be whatever the last person to rewrite the file chose. A file
written before headers were attested reads as not attested (`header_attestation`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from schemas import canonical_json, digest
from servicekit.authority import Authority, Principal, carried_authority
from servicekit.intake import Bounds
from servicekit.signing import Keyring, SigningKey, key_id_of, load_public, retired_at
from services.audit.checkpoints import Checkpoint, Restore
from services.audit.rows import COLUMNS, LogRow

__all__ = [
    "FORMAT",
    "HEADER_CONTEXT",
    "ArchiveAttestation",
    "ArchiveError",
    "ArchiveHeader",
    "ArchiveKey",
    "ArchivePolicy",
    "ArchiveReading",
    "ArchiveSigner",
    "ArchiveWriter",
    "attest",
    "attestation_message",
    "audit_keys_of",
    "file_sha256",
    "header_attestation",
    "header_parts",
    "pack_version",
    "read_archive",
    "row_from_json",
    "row_to_json",
    "signer_authority",
    "signers_of",
]

FORMAT: Literal["tidegate.audit.archive"] = "tidegate.audit.archive"
_BYTES = frozenset({"key", "value"})
_HASHES = frozenset({"prev_hash", "hash"})
_TIMES = frozenset({"kafka_ts", "event_time", "recorded_at"})
HEADER_CONTEXT = b"tidegate.audit.archive.header.v1\n"
"""What a header's attestation signs: this, then the canonical JSON of {"key_id", "parts"} (`attestation_message`)."""
_ITEMS = {"keys": "key_id", "policies": "version"}  # list members attested item by item, each named by this field
# Every other member is one part, `signers` too: a release-21 verifier (its own and the standalone one) splits only
# `keys` and `policies`, and a part it computes otherwise than the attestation names reads to it as a rewrite. A member
# it does not know is checked as a whole part, so a newer file stays `attested` there.


class ArchiveError(ValueError):
    """A file that is not a readable archive (not gzip, not JSON lines, a header or row of the wrong shape)."""


class ArchiveKey(BaseModel):
    """One audit public key as the archive carries it: what an auditor needs to check its checkpoints after a rotation."""

    model_config = ConfigDict(frozen=True)

    key_id: str = Field(description="The id checkpoints name (`audit-<first 12 hex of sha256>`).")
    public_key: str = Field(description="The raw 32-byte Ed25519 public key, base64.")
    sha256: str = Field(description="SHA-256 of the raw public key, hex: the fingerprint to confirm out of band.")
    retired_at: datetime | None = Field(default=None, description="When `tidegate keys rotate` retired it; None: the current key.")

    def public(self) -> Ed25519PublicKey | None:
        """The key, when it is one and is the key its id and fingerprint name (else None: a key of another id)."""
        try:
            raw = base64.b64decode(self.public_key, validate=True)
            key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            return None
        if hashlib.sha256(raw).hexdigest() != self.sha256 or key_id_of(self.key_id.rpartition("-")[0], key) != self.key_id:
            return None
        return key


def audit_keys_of(keys_dir: Path, name: str = "audit") -> list[ArchiveKey]:
    """Every `name` public key in `keys_dir` (`<name>.pub` and each retired `<name>.<hash>.pub`), as an archive carries them."""
    out: list[ArchiveKey] = []
    for path in sorted([keys_dir / f"{name}.pub", *keys_dir.glob(f"{name}.*.pub")]):
        key = load_public(path) if path.exists() else None
        if key is None:
            continue
        raw = key.public_bytes_raw()
        retired = retired_at(path)
        when = datetime.fromtimestamp(retired, UTC) if retired is not None else None
        fingerprint = hashlib.sha256(raw).hexdigest()
        out.append(ArchiveKey(key_id=key_id_of(name, key), public_key=base64.b64encode(raw).decode(), sha256=fingerprint, retired_at=when))
    return sorted(out, key=lambda k: (k.retired_at is None, k.retired_at or datetime.min.replace(tzinfo=UTC)))


class ArchiveSigner(BaseModel):
    """One public key a row's signature may need (a service's, an operator's, a client's, a tool service's), as carried."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="`<kind>:<tenant>/<name>/<key_id>`: what names it in the header's attestation.")
    kind: Literal["service", "operator", "client", "tool"]
    name: str = Field(description="The service, operator, client principal or tool it is the key of.")
    tenant: str | None = Field(default=None, description="A client's tenant.")
    key_id: str = Field(description="The id events name in `keyid` (`<name>-<first 12 hex of sha256>`).")
    public_key: str = Field(description="The raw 32-byte Ed25519 public key, base64.")
    retired_at: datetime | None = Field(
        default=None, description="When it was retired (`keys rotate`, `clients rotate`) or revoked; None: current."
    )
    grace: bool = Field(
        default=True, description="False: it verifies nothing appended after `retired_at` (revoked, denied); True: the grace window."
    )
    added_at: datetime | None = Field(
        default=None, description="When its file was put on file (a row refused `unknown_key` before then is not explained by it)."
    )

    @classmethod
    def of(cls, key_id: str, principal: Principal, added: float | None) -> ArchiveSigner:
        """The carried form of one holder of `Authority.holders`."""
        tenant = principal.tenant if principal.kind == "client" else None
        return cls(
            id=f"{principal.kind}:{tenant or ''}/{principal.name}/{key_id}", kind=principal.kind, name=principal.name,  # type: ignore[arg-type]
            tenant=tenant, key_id=key_id, public_key=base64.b64encode(principal.public.public_bytes_raw()).decode(),
            retired_at=datetime.fromtimestamp(principal.retired_at, UTC) if principal.retired_at is not None else None,
            grace=principal.grace, added_at=datetime.fromtimestamp(added, UTC) if added is not None else None,
        )  # fmt: skip

    def holder(self) -> tuple[str, Principal, float | None] | None:
        """This key as `carried_authority` takes it; None when it is not a key, or not the key its id names."""
        try:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(self.public_key, validate=True))
        except ValueError:
            return None
        if key_id_of(self.name, public) != self.key_id or self.id != f"{self.kind}:{self.tenant or ''}/{self.name}/{self.key_id}":
            return None
        retired = self.retired_at.timestamp() if self.retired_at is not None else None
        principal = Principal(self.kind, self.name, public, tenant=self.tenant, retired_at=retired, grace=self.grace)
        return self.key_id, principal, self.added_at.timestamp() if self.added_at is not None else None


class ArchiveReading(BaseModel):
    """The deployment's settings a row's signature is judged with, as carried (`TIDEGATE_RETIRED_KEY_GRACE_S`, bounds)."""

    model_config = ConfigDict(frozen=True)

    retired_key_grace_s: float | None = Field(default=600.0, description="How long a retired key verifies after its retirement.")
    max_value_bytes: int = Field(default=Bounds.max_bytes, description="`TIDEGATE_MAX_VALUE_BYTES`.")
    max_json_depth: int = Field(default=Bounds.max_depth, description="`TIDEGATE_MAX_JSON_DEPTH`.")

    @property
    def bounds(self) -> Bounds:
        """The bounds a record's value was checked against."""
        return Bounds(max_bytes=self.max_value_bytes, max_depth=self.max_json_depth)


def signers_of(authority: Authority) -> list[ArchiveSigner]:
    """Every key `authority` holds on file now, as an archive carries them (`ArchiveHeader.signers`)."""
    return [ArchiveSigner.of(key_id, principal, added) for key_id, principal, added in authority.holders()]


def signer_authority(headers: list[ArchiveHeader]) -> tuple[Authority, ArchiveReading]:
    """An `Authority` of the signers `headers` carry (each header already checked to be attested by a trusted audit key)."""
    holders = [h for header in headers for s in header.signers if (h := s.holder()) is not None]
    reading = next((header.reading for header in headers if header.reading is not None), ArchiveReading())
    return carried_authority(holders, reading.retired_key_grace_s, history=True), reading


def pack_version(files: dict[str, str], settings: dict[str, Any]) -> str:
    """A policy pack's version, as the policy service computes it (`PackSource.version`): `sha256:` over its files and settings."""
    return "sha256:" + digest({"files": files, "settings": settings})


class ArchivePolicy(BaseModel):
    """One policy pack the policy service decided with, as an archive carries it (from `policy.policy_versions`)."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(description="The `policy_version` decisions name: `sha256:` of the files and settings below.")
    files: dict[str, str] = Field(description="The pack's Cedar files, by name.")
    settings: dict[str, Any] = Field(description="The pack's settings (`settings.yaml`).")
    published_by: str = Field(description="Who published it, or `file:<dir>` for a pack a policy service loaded from its folder.")
    first_used_at: datetime | None = Field(default=None, description="When a policy service first decided with it.")

    @property
    def genuine(self) -> bool:
        """Whether the files and settings are the text of `version` (they hash to it)."""
        return pack_version(self.files, self.settings) == self.version


class ArchiveAttestation(BaseModel):
    """The audit key's signature over the header: a SHA-256 of each part (`header_parts`), signed (`attestation_message`)."""

    model_config = ConfigDict(frozen=True)

    key_id: str = Field(description="The audit key that signed it (the one signing checkpoints when the file was written).")
    parts: dict[str, str] = Field(
        description="SHA-256 (hex) of the canonical JSON of each part of the header: every top-level member but this one, "
        "`keys` and `policies` item by item (`keys/<key_id>`, `policies/<version>`)."
    )
    signature: str = Field(description="Ed25519 signature of `attestation_message(key_id, parts)`, base64url.")


def header_parts(doc: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The attested parts of a header's JSON object (all but `attestation`), each to its canonical JSON's SHA-256; parts named twice."""
    parts: dict[str, str] = {}
    twice: list[str] = []
    for name, value in doc.items():
        if name == "attestation":
            continue
        items = (
            [(f"{name}/{item.get(_ITEMS[name])}", item) for item in value]
            if name in _ITEMS and isinstance(value, list) and all(isinstance(item, dict) for item in value)
            else [(name, value)]
        )
        for part, item in items:
            if part in parts:
                twice.append(part)
            parts[part] = hashlib.sha256(canonical_json(item)).hexdigest()
    return parts, twice


def attestation_message(key_id: str, parts: dict[str, str]) -> bytes:
    """The exact bytes a header's attestation signs."""
    return HEADER_CONTEXT + canonical_json({"key_id": key_id, "parts": parts})


class ArchiveHeader(BaseModel):
    """The first line of an archive: what it holds and the signed checkpoints that prove it."""

    model_config = ConfigDict(frozen=True)

    format: Literal["tidegate.audit.archive"] = FORMAT
    version: Literal[1] = 1
    scope: str = Field(description="The deployment's topic prefix whose chains the archive holds.")
    created_at: datetime
    checkpoint: Checkpoint = Field(description="The archive ends at the heads this checkpoint signed (those rows included).")
    previous: Checkpoint | None = Field(
        description="The archive starts after the heads this checkpoint signed (the previous prune's); None: at seq 1."
    )
    checkpoints: list[Checkpoint] = Field(description="Every checkpoint after `previous` through `checkpoint`, by id.")
    restores: list[Restore] = Field(default_factory=list, description="Restores among those checkpoints (their ids skip).")
    rows: int = Field(description="Rows in the file after this header.")
    keys: list[ArchiveKey] = Field(
        default_factory=list,
        description="The audit's public keys when it was written, retired ones first (none in a file written before they were "
        "carried). Trusted only by a fingerprint the auditor names (`--trust-key`).",
    )
    policies: list[ArchivePolicy] = Field(
        default_factory=list,
        description="Every policy pack the deployment's policy services decided with, when it was written (`tidegate audit "
        "policy VERSION --archive FILE` reads one); each must hash to its version.",
    )
    signers: list[ArchiveSigner] = Field(
        default_factory=list,
        description="Every other public key the rows' signatures need (services', operators', clients', tools'), when it was "
        "written; used only when the header's attestation verifies with a trusted audit key (none in a file written before).",
    )
    reading: ArchiveReading | None = Field(default=None, description="The settings a row's signature is judged with; None before.")
    attestation: ArchiveAttestation | None = Field(
        default=None, description="The audit key's signature over every other part of this header; None in a file written before."
    )
    _doc: dict[str, Any] | None = PrivateAttr(default=None)  # the header line as read: what the attestation is checked against

    def document(self) -> dict[str, Any]:
        """The header's JSON object: as read from its file, else as written."""
        return self._doc if self._doc is not None else self.model_dump(mode="json")


def attest(header: ArchiveHeader, key: SigningKey) -> ArchiveHeader:
    """`header` with its attestation by `key` (which signs checkpoints: the audit key)."""
    key_id = key.key_id
    parts, _ = header_parts(header.model_copy(update={"attestation": None}).model_dump(mode="json"))
    signed = ArchiveAttestation(key_id=key_id, parts=parts, signature=key.sign(attestation_message(key_id, parts)))
    return header.model_copy(update={"attestation": signed})


def _named(part: str) -> str:
    kind, _, name = part.partition("/")
    named = {"keys": f"audit key {name}", "policies": f"policy pack {name}", "signers": f"signing key {name}"}
    return named.get(kind, part) if name else part


def header_attestation(header: ArchiveHeader, keyring: Keyring, slack_s: float = 60.0) -> tuple[str, list[str]]:
    """Whether the header is as the audit key attested it: (`attested`, `unattested`, `untrusted`, or `broken`; what is wrong).

    `untrusted`: signed by a key `keyring` does not trust (not checked). `broken`: the attestation does not verify, the
    header was changed after it was signed (each part named: added, removed, changed), or its key had been retired
    before the file was written (by more than `slack_s`).
    """
    att = header.attestation
    if att is None:
        return "unattested", []
    if not keyring.knows(att.key_id):
        return "untrusted", [f"its header is attested by {att.key_id}, an audit key not trusted here (not checked)"]
    if not keyring.verify(att.key_id, attestation_message(att.key_id, att.parts), att.signature):
        return "broken", [f"its header's attestation is not a valid signature of {att.key_id}: the attestation was edited"]
    problems: list[str] = []
    retired = keyring.retired_at(att.key_id)
    if retired is not None and header.created_at.timestamp() > retired + slack_s:
        when = datetime.fromtimestamp(retired, UTC)
        problems.append(
            f"its header is attested by {att.key_id} at {header.created_at:%Y-%m-%d %H:%M:%S} UTC, after that key was retired "
            f"at {when:%Y-%m-%d %H:%M:%S} UTC (a leaked key?)"
        )
    parts, twice = header_parts(header.document())
    problems += [f"its header carries {_named(p)} twice" for p in sorted(set(twice))]
    for part in sorted(parts.keys() - att.parts.keys()):
        problems.append(f"its header was changed after {att.key_id} attested it: {_named(part)} was added")
    for part in sorted(att.parts.keys() - parts.keys()):
        problems.append(f"its header was changed after {att.key_id} attested it: {_named(part)} was removed")
    docs = {f"keys/{k.get('key_id')}": k for k in header.document().get("keys") or [] if isinstance(k, dict)}
    for part in sorted(p for p in parts.keys() & att.parts.keys() if parts[p] != att.parts[p]):
        problem = f"its header was changed after {att.key_id} attested it: {_named(part)} is not as attested"
        if part.startswith("keys/"):
            none = " (it now carries no retirement time: one dropped?)" if docs.get(part, {}).get("retired_at") is None else ""
            problem += f" (its public key, fingerprint or retirement time was changed){none}"
        elif part.startswith("policies/"):
            problem += " (its text, settings or provenance was changed)"
        elif part == "signers":
            problem += " (a signing key of its rows' producers was added, removed, or its holder or retirement changed)"
        problems.append(problem)
    return ("broken" if problems else "attested"), problems


def row_to_json(row: LogRow) -> dict[str, Any]:
    """`row` as one archive line's object: every column, bytes in base64, hashes in hex, times in ISO 8601 with microseconds."""
    out: dict[str, Any] = {}
    value: Any
    for name, value in zip(COLUMNS, row, strict=True):
        if value is None:
            out[name] = None
        elif name in _BYTES:
            out[name] = base64.b64encode(value).decode()
        elif name in _HASHES:
            out[name] = value.hex()
        elif name in _TIMES:
            out[name] = value.isoformat(timespec="microseconds")
        else:
            out[name] = value
    return out


def row_from_json(doc: Any) -> LogRow:
    """The row an archive line holds (the inverse of `row_to_json`).

    Raises:
        ArchiveError: Not an object of exactly the log's columns, or a value of the wrong kind.
    """
    if not isinstance(doc, dict) or set(doc) != set(COLUMNS):
        raise ArchiveError(f"a row must be an object of exactly the log's columns ({', '.join(COLUMNS)})")
    values = []
    try:
        for name in COLUMNS:
            value = doc[name]
            if value is not None and name in _BYTES:
                value = base64.b64decode(value, validate=True)
            elif value is not None and name in _HASHES:
                value = bytes.fromhex(value)
            elif value is not None and name in _TIMES:
                value = datetime.fromisoformat(value)
            values.append(value)
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"column {name}: {exc}") from exc
    return LogRow(*values)


class _Hashing:
    """A binary file that also hashes what is written to it (the archive's sha256 is its bytes', as `sha256sum` gives it)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.digest = raw, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


class ArchiveWriter:
    """Writes an archive to `<path>.partial`, renamed to `path` only by `commit`: a file at `path` is always whole."""

    def __init__(self, path: Path, header: ArchiveHeader) -> None:
        self.path, self.partial = path, path.with_name(path.name + ".partial")
        self._raw = self.partial.open("wb")
        self._hashing = _Hashing(self._raw)
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._hashing, mtime=0)  # type: ignore[arg-type]
        self._line(header.model_dump(mode="json"))

    def _line(self, doc: Any) -> None:
        self._gz.write(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")

    def row(self, row: LogRow) -> None:
        """Append one row."""
        self._line(row_to_json(row))

    def commit(self) -> str:
        """Finish the file, make it durable, put it at `path`; its sha256 (hex)."""
        self._gz.close()
        self._raw.flush()
        self._raw.close()
        with self.partial.open("rb") as f:  # the data on disk before the name points at it
            os.fsync(f.fileno())
        self.partial.replace(self.path)
        return self._hashing.digest.hexdigest()

    def abort(self) -> None:
        """Drop the partial file."""
        self._gz.close()
        self._raw.close()
        self.partial.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file's bytes."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_archive(path: Path) -> tuple[ArchiveHeader, Iterator[tuple[int, LogRow]]]:
    """The header of the archive at `path`, and its rows with their line numbers, read lazily.

    Raises:
        ArchiveError: The header (at once) or a row (as it is read) is not of the archive's format.
    """
    lines = _lines(path)
    try:
        _, first = next(lines)
    except StopIteration:
        raise ArchiveError(f"{path}: empty: not an audit archive") from None
    try:
        doc = json.loads(first)
        header = ArchiveHeader.model_validate(doc)
        header._doc = doc if isinstance(doc, dict) else None
    except ValidationError as exc:
        raise ArchiveError(f"{path}: line 1 is not an audit archive's header: {exc.errors()[0]['msg']}") from exc
    except ValueError as exc:  # not JSON
        raise ArchiveError(f"{path}: line 1 is not an audit archive's header: {exc}") from exc

    def rows() -> Iterator[tuple[int, LogRow]]:
        for number, line in lines:
            try:
                yield number, row_from_json(json.loads(line))
            except (ValueError, ArchiveError) as exc:
                raise ArchiveError(f"{path}: line {number}: {exc}") from exc

    return header, rows()


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with gzip.open(path, "rb") as f:
            yield from enumerate(f, start=1)
    except (gzip.BadGzipFile, EOFError) as exc:
        raise ArchiveError(f"{path}: not a whole gzip file ({exc})") from exc
