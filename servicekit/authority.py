"""Who may produce which event, how a producer signs it, and the one check every consumer runs first.

Every Tidegate event carries two CloudEvents extension attributes: `keyid` (the producer's Ed25519
key) and `signature` (over the canonical JSON of the whole event without `signature`: every
attribute and all of `data`). `AUTHORITY` maps each event type to the signers allowed to produce
it; `Authority.check` refuses an event before any handler sees it when its signature is missing or
wrong, its key unknown, or its signer not allowed for that type (a client key of another tenant,
a requester that is not the client key's principal, a tool reply signed by another tool's key).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas import SERVICE_PROPOSERS, Envelope, ReasonCode, ToolSpec, canonical_json, mixed_scripts, proposer_problem, skeleton
from servicekit.bus_rights import rights_of
from servicekit.intake import named_mismatch, named_tenant_and_task_of
from servicekit.key_files import client_key, holder_of, operator_key
from servicekit.settings import KitSettings
from servicekit.signing import (
    SigningKey,
    key_id_of,
    load_public,
    retired_at,
    retired_without_grace,
    unb64url,
    verifies_raw,
)

__all__ = [
    "AUTHORITY",
    "LOG_APPEND_TIME",
    "SERVICES",
    "Authority",
    "Principal",
    "Refusal",
    "appended_ms",
    "authority_for",
    "broker_time_ms",
    "carried_authority",
    "dead_letter_problem",
    "deployment_authority",
    "encode_signed",
    "next_sequence",
    "sign_as_client",
    "sign_as_operator",
    "sign_as_producer",
    "sign_event",
    "signed_bytes",
]

E = TypeVar("E", bound=Envelope)

SERVICES = ("planner", "policy", "approval", "executor", "audit")
OPERATOR, CLIENT, TOOL, ANY_SERVICE = "operator", "client", "tool", "service"
DEAD_LETTER_TYPE = "tidegate.event.rejected"

# Event type → who may sign it: a service's name, or a kind of outside key.
AUTHORITY: dict[str, frozenset[str]] = {
    "tidegate.task.submitted": frozenset({CLIENT}),
    "tidegate.action.proposed": frozenset({"planner", "approval", CLIENT}),  # approval: an approver's undo (docs/autonomy.md)
    "tidegate.action.decided": frozenset({"policy"}),
    "tidegate.action.authorized": frozenset({"policy"}),
    "tidegate.approval.requested": frozenset({"approval"}),
    "tidegate.approval.granted": frozenset({"approval"}),
    "tidegate.approval.rejected": frozenset({"approval"}),
    "tidegate.approval.expired": frozenset({"approval"}),
    "tidegate.approval.resolved": frozenset({"approval"}),
    "tidegate.action.succeeded": frozenset({"executor"}),
    "tidegate.action.failed": frozenset({"executor"}),
    "tidegate.action.unknown": frozenset({"executor"}),
    "tidegate.tool.invocation": frozenset({"executor"}),
    "tidegate.tool.reply": frozenset({TOOL}),
    "tidegate.task.completed": frozenset({"planner"}),
    "tidegate.task.failed": frozenset({"planner"}),
    "tidegate.control.killswitch": frozenset({OPERATOR}),
    "tidegate.control.policy": frozenset({OPERATOR}),
    "tidegate.control.budget": frozenset({OPERATOR}),
    "tidegate.control.tenant": frozenset({OPERATOR}),
    "tidegate.control.redrive": frozenset({OPERATOR}),
    "tidegate.control.connector_grant": frozenset({OPERATOR}),
    "tidegate.control.token_revoked": frozenset({OPERATOR}),  # an approver token an operator revoked (`tidegate approvals token`)
    # A tenant's directory, as its admins keep it over the approval service's API: who is internal, nothing more.
    "tidegate.directory.updated": frozenset({OPERATOR, "approval"}),
    # The current row of a webhook endpoint, and approver tokens revoked: what the approval's database login cannot roll back.
    "tidegate.directory.endpoint": frozenset({OPERATOR, "approval"}),
    "tidegate.directory.token_revoked": frozenset({OPERATOR, "approval"}),
    "tidegate.audit.checkpoint": frozenset({"audit"}),
    DEAD_LETTER_TYPE: frozenset({ANY_SERVICE}),
}


def signed_bytes(document: dict[str, Any]) -> bytes:
    """The bytes a signature covers: canonical JSON of the event document without `signature`."""
    if type(document) is dict:  # a parsed or dumped event: copied in C, its signature taken out (a comprehension cost 5x)
        unsigned = document.copy()
        unsigned.pop("signature", None)
        return canonical_json(unsigned)
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


def next_sequence() -> int:
    """A fresh, monotonic `sequence` for an operator's control record (nanoseconds since the epoch)."""
    return time.time_ns()


def _signing(event: Envelope, key: SigningKey, sequence: int | None, traceparent: str | None = None) -> tuple[dict[str, Any], bytes, str]:
    """What `key` sets on `event` (`keyid`, and `sequence` and `traceparent` when given), the bytes it signs, and the signature."""
    update: dict[str, Any] = {"keyid": key.key_id}
    if sequence is not None:
        update["sequence"] = sequence
    if traceparent is not None:
        update["traceparent"] = traceparent
    document = event.model_dump(mode="json", exclude_none=True) | update  # the event as it will be sent, but its signature
    message = signed_bytes(document)
    return update, message, key.sign(message)


def sign_event(event: E, key: SigningKey, *, sequence: int | None = None) -> E:
    """`event` with `keyid` and `signature` set by `key` (and `sequence`, for control records)."""
    update, _, signature = _signing(event, key, sequence)
    return event.model_copy(update=update | {"signature": signature})


def encode_signed(event: Envelope, key: SigningKey, *, sequence: int | None = None, traceparent: str | None = None) -> bytes:
    """The bytes of `sign_event(event, key)` to publish, made without building the signed event or dumping it again.

    They are the signed canonical JSON with the signature appended as the last attribute: the same
    document as `encode(sign_event(...))`, in another key order (a consumer verifies the canonical form of
    what it parsed, whatever the order it came in). The signature is base64url: nothing in it needs escaping.
    With `traceparent` they are those of the event with that trace context (`Bus.publish` sets the current one so,
    without copying the event for it).
    """
    _, message, signature = _signing(event, key, sequence, traceparent)
    return b'%s,"signature":"%s"}' % (message[:-1], signature.encode())


@dataclass(frozen=True)
class Principal:
    """Who holds a public key: a service, an operator, a tenant's client, or an outside tool service."""

    kind: str  # "service", "operator", "client" or "tool"
    name: str  # service, operator, client principal or tool name
    public: Ed25519PublicKey
    tenant: str | None = None  # for clients
    retired_at: float | None = None  # epoch seconds, for a key `rotate` retired
    grace: bool = True  # False: refused from `retired_at` on, whatever the grace window (an operator denied)


@dataclass(frozen=True)
class Refusal:
    """Why an event is not accepted: a stable reason code and a message for the dead letter."""

    code: ReasonCode
    message: str


_UNKNOWN_KEYS_KEPT = 4096  # made-up key ids remembered at most (a flood of them forgets the oldest all at once)


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """A file's size and modification time; None when it is not there."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


NAMES_LISTED_S = 5.0  # how long after a key folder's time is first seen its names are listed too (`Authority._folders_stamp`)


def _same_folders(now: tuple[Any, ...], seen: tuple[Any, ...]) -> bool:
    """Whether two `_folders_stamp`s say the same: the same folders, each one's time, and its names wherever both listed them."""
    if len(now) != len(seen):
        return False
    for a, b in zip(now, seen, strict=True):
        if isinstance(a, tuple) and isinstance(b, tuple):
            if a[:2] != b[:2] or (a[2] is not None and b[2] is not None and a[2] != b[2]):
                return False
        elif a != b:
            return False
    return True


def _settled(entry: Any) -> Any:
    """A folder's entry as `_seen` keeps it once its time is no longer new: without its names (tool keys' times as they are)."""
    if isinstance(entry, tuple) and len(entry) == 5 and not entry[3]:
        return entry[0], entry[1], None, False, entry[4]
    return entry


@dataclass
class Authority:
    """The trusted public keys of a deployment, and the check of an event's signature against `AUTHORITY`.

    Keys are read from files: services' in `keys_dir` (`<service>.pub`, rotated `<service>.<hash>.pub`),
    operators' in `operators_dir` (the allow-list), tenants' clients in `clients_dir/<tenant>/`
    (`<principal>.pub`), and outside tool services' from the catalog (`tool_keys`, tool → file).
    The files are read again when a key folder changed, looked at when an unknown key id arrives (then
    not again for that id within `recheck_s`) and every `recheck_s`, so a key added or rotated after
    start is found at once and a revoked one is refused within `recheck_s`. A retired key (`<name>.<hash>.pub`) verifies what arrives within
    `retired_grace_s` after its retirement: an event it signs later is refused as `signer_retired`. "Arrives" is the
    broker's append time (every catalog topic is stamped by the broker, `LogAppendTime`), never the envelope's `time`
    or `sequence`, nor a producer's timestamp, which the signer chooses. A live consumer judges a record that carries
    no append time (one its topic held before it was stamped) at its wall clock; a reader of history (`history`: the
    audit log, replay) judges only at the append time, so its verdict on a record is the same whenever it reads it,
    and keeps what was appended before its topic was stamped (no time its signer could not have chosen is known).
    """

    keys_dir: Path
    operators_dir: Path
    clients_dir: Path
    tool_keys: dict[str, Path] = field(default_factory=dict)
    recheck_s: float = 0.1  # how stale a known key may be: a revocation takes effect within this
    retired_grace_s: float | None = 600.0  # how long a retired key still verifies; None: forever
    history: bool = False  # a reader of history (the audit log, replay): a retired key's grace judged at the append time only
    clock: Callable[[], float] = time.time  # wall clock, for the retirement grace
    monotonic: Callable[[], float] = time.monotonic  # for `recheck_s`
    # Told of each event `check` refuses, and why (the executor remembers the refused replies of the calls it waits on).
    on_refused: Callable[[Envelope, Refusal], None] | None = None
    _keys: dict[str, list[Principal]] = field(default_factory=dict, init=False)
    _unknown: dict[str, float] = field(default_factory=dict, init=False)  # key id → when it was last found unknown
    _checked: float = field(default=float("-inf"), init=False)
    _seen: tuple[Any, ...] = field(default=(), init=False)
    _unread: tuple[Path, ...] = field(default=(), init=False)  # key files the last reading found but could not read
    _added: dict[str, float] = field(default_factory=dict, init=False)  # key id → when its public key file was put here

    def __post_init__(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Read every trusted public key again."""
        folders = self._folders_stamp()  # before reading: whatever changes from here on is read again
        keys: dict[str, list[Principal]] = {}
        unread: dict[Path, Any] = {}
        stamps: dict[Path, tuple[int, int] | None] = {}  # each key file's size and time, as `read` found it
        added: dict[str, float] = {}

        def read(path: Path) -> Ed25519PublicKey | None:
            before = stamps[path] = _file_stamp(path)
            if (public := load_public(path)) is None and before is not None:
                unread[path] = before  # empty or half written, perhaps: its own changes are looked at (`_stamp`)
            return public

        def add(principal: Principal, path: Path) -> None:
            """`principal`'s key, read from `path` (whose time says when it was put there)."""
            key_id = key_id_of(principal.name, principal.public)
            keys.setdefault(key_id, []).append(principal)
            if (stamp := stamps.get(path)) is not None:
                added[key_id] = min(added.get(key_id, float("inf")), stamp[1] / 1e9)

        for service in SERVICES:
            for path in [self.keys_dir / f"{service}.pub", *self.keys_dir.glob(f"{service}.*.pub")]:
                if (public := read(path)) is not None:
                    add(Principal("service", service, public, retired_at=retired_at(path), grace=not retired_without_grace(path)), path)
        for path in self.operators_dir.glob("*.pub"):
            if (public := read(path)) is not None:
                add(Principal(OPERATOR, holder_of(path), public, retired_at=retired_at(path), grace=not retired_without_grace(path)), path)
        for path in self.clients_dir.glob("*/*.pub"):  # `<principal>.pub`, and `<principal>.<hash>.pub` that `clients rotate` retired
            if (public := read(path)) is not None:
                add(Principal(CLIENT, holder_of(path), public, tenant=path.parent.name, retired_at=retired_at(path)), path)
        if self.history:  # what a client signed before `tidegate clients revoke` moved its key aside still verifies, nothing after
            for path in self.clients_dir.glob("*/revoked/*.pub"):
                try:
                    revoked = path.stat().st_ctime  # the rename into revoked/ is the revocation
                except OSError:  # registered again meanwhile (the file is removed then)
                    continue
                if (public := read(path)) is not None:
                    add(Principal(CLIENT, holder_of(path), public, tenant=path.parent.parent.name, retired_at=revoked, grace=False), path)
        for tool, path in self.tool_keys.items():  # the catalog's key, and those `tidegate keys rotate-tool` retired beside it
            retired = [p for p in path.parent.glob(f"{path.stem}.*.pub") if retired_at(p) is not None]
            for key_path in [path, *retired]:
                if (public := read(key_path)) is not None:
                    add(Principal(TOOL, tool, public, retired_at=retired_at(key_path), grace=not retired_without_grace(key_path)), key_path)
        self._keys = keys
        self._added = added
        self._unread = tuple(unread)
        self._seen = (folders, tuple(unread.values()))

    def added_at(self, key_id: str) -> float | None:
        """When `key_id`'s public key file was put in its folder (its modification time, epoch seconds); None: not on file.

        What a refusal for a key unknown or a signer not allowed then is held to (`verify --signatures`): a key on file
        before a record arrived explains neither. A key copied without its times (`cp`, not `cp -p`) reads as put later.
        """
        self.principals(key_id)  # reads the folders again if they changed
        return self._added.get(key_id)

    def holders(self) -> list[tuple[str, Principal, float | None]]:
        """Every key on file now: its id, its holder, and when its file was put there (`added_at`), by key id.

        What an audit archive carries (`ArchiveHeader.signers`) so that its rows' signatures can be checked where the
        deployment's key folders are not.
        """
        if self._changed():
            self.reload()
        return [(key_id, p, self._added.get(key_id)) for key_id in sorted(self._keys) for p in self._keys[key_id]]

    def service_keys_in_grace(self, service: str, now: float) -> list[Ed25519PublicKey]:
        """`service`'s retired public keys still within their grace at `now` (epoch seconds).

        What a service's signature outside events (an approval link) is verified against after a rotation, by the rule
        events are held to: a key denied or past its grace verifies nothing new.
        """
        return self._retired_service_keys(service, now, in_grace=True)

    def service_keys_past_grace(self, service: str, now: float) -> list[Ed25519PublicKey]:
        """`service`'s retired public keys whose grace has ended at `now` (or that had none): they verify nothing new.

        Only to say why a genuine but old signature outside events (a one-time link sent before a rotation) is refused.
        """
        return self._retired_service_keys(service, now, in_grace=False)

    def _retired_service_keys(self, service: str, now: float, *, in_grace: bool) -> list[Ed25519PublicKey]:
        if self._changed():
            self.reload()
        grace = float("inf") if self.retired_grace_s is None else self.retired_grace_s
        return [
            p.public
            for holders in self._keys.values()
            for p in holders
            if p.kind == "service"
            and p.name == service
            and p.retired_at is not None
            and (p.grace and now < p.retired_at + grace) == in_grace
        ]

    def principals(self, key_id: str) -> list[Principal]:
        """Holders of `key_id`, reading the key files again when a key folder changed (looked at every `recheck_s`).

        An unknown key id makes the folders be looked at once, and is then remembered as unknown for
        `recheck_s`: records signed with made-up key ids cost no file reads, whatever their number.
        """
        now = self.monotonic()
        if key_id not in self._keys:
            if now - self._unknown.get(key_id, float("-inf")) < self.recheck_s:
                return []
            if self._changed():
                self.reload()
            if key_id not in self._keys:
                if len(self._unknown) >= _UNKNOWN_KEYS_KEPT:
                    self._unknown.clear()
                self._unknown[key_id] = now
        elif now - self._checked >= self.recheck_s:
            self._checked = now
            if self._changed():
                self.reload()
        return self._keys.get(key_id) or []

    def _stamp(self) -> tuple[Any, ...]:
        """What is in the key folders now, to compare with `_seen` (`_changed`): their stamp, and each unread key file's size and time.

        A key file the last reading found but could not read (`_unread`) is looked at by itself: one written in place
        (`cp alice.pub operators/`) is empty for a moment, and writing its bytes changes neither the folder's names nor
        its time, so, read while empty, it was never read again (what its holder signed stayed "not trusted").
        """
        return (self._folders_stamp(), tuple(_file_stamp(path) for path in self._unread))

    def _changed(self) -> bool:
        """Whether the key folders changed since the last reading (`_seen`): a folder's time, or its names where both were listed.

        When nothing changed, a folder whose names were listed at the last reading and again now, its time no longer new,
        is kept in `_seen` without them: from here on its time alone says whether it changes (`_folders_stamp`).
        """
        (folders, unread), (seen_folders, seen_unread) = self._stamp(), self._seen or ((), ())
        if unread != seen_unread or not _same_folders(folders, seen_folders):
            return True
        if any(entry[2] is not None and not entry[3] for entry in folders if isinstance(entry, tuple) and len(entry) == 5):
            self._seen = (tuple(_settled(entry) for entry in folders), seen_unread)
        return False

    def _folders_stamp(self) -> tuple[Any, ...]:
        """What is in the key folders: when each folder and tool key last changed, and the names of a folder whose time is new.

        Names, not only times: file times tick coarsely (up to 2 s on some file systems), so a key added or revoked in
        the same tick as the last change would otherwise go unseen. Such a change can only come within a tick of the one
        that set the folder's time, so before this process first saw that time ends `NAMES_LISTED_S` (this process's
        monotonic clock; no file's time is compared with it). A folder's names are listed while its time is that new, or
        while the last reading (`_seen`) holds them; once a look after that finds them the same, its time alone says
        whether it changed (`_changed`): a folder that has not changed costs one `stat`, not a listing (looked at every
        `recheck_s` while events come, ten times a second a consumer, each listing ~150 µs on a loaded machine). The
        client folders are those `clients_dir` holds, found again whenever its names are listed (a folder added or
        removed changes its time), else those the last reading found. Each folder's entry: (path, time, names or None,
        whether its time is new, when this process first saw that time). All of it is read from the last reading
        (`_seen`): a look that finds any time other than it did is followed by a reading (`_changed`), so a time that
        `_seen` holds is the one this process first saw when `_seen` says.
        """
        now = self.monotonic()
        seen_folders = self._seen[0] if self._seen else ()
        seen = {e[0]: e for e in seen_folders if isinstance(e, tuple) and len(e) == 5}

        def look(folder: str) -> tuple[str, int | None, tuple[str, ...] | None, bool, float]:
            last = seen.get(folder)
            try:
                mtime = os.stat(folder).st_mtime_ns
            except OSError:
                return folder, None, None, False, now
            first = last[4] if last is not None and last[1] == mtime else now
            new = now - first < NAMES_LISTED_S
            try:
                names = tuple(sorted(os.listdir(folder))) if new or last is None or last[2] is not None else None
            except OSError:
                return folder, None, None, False, now
            return folder, mtime, names, new, first

        clients = str(self.clients_dir)
        tools = sorted({str(p.parent) for p in self.tool_keys.values()})
        stamp: list[Any] = [look(str(self.keys_dir)), look(str(self.operators_dir)), look(clients), *(look(t) for t in tools)]
        _, clients_time, clients_names, _, _ = stamp[2]
        tenants: tuple[str, ...] = ()
        if clients_time is not None and clients_names is None:  # its time as the last reading found it: the same folders
            tenants = tuple(e[0] for e in seen_folders[3 + len(tools) :] if isinstance(e, tuple))
        elif clients_time is not None:
            with contextlib.suppress(OSError):
                tenants = tuple(sorted(e.path for e in os.scandir(clients) if e.is_dir()))
        stamp += [look(folder) for folder in tenants]
        for path in self.tool_keys.values():
            try:
                stamp.append(os.stat(path).st_mtime_ns)
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def check(
        self, raw: bytes | str, event: Envelope, document: Any = None, *, appended_ms: int | None = None, kept: bool = False
    ) -> Refusal | None:
        """None when `event` (decoded from `raw`) is signed by a key allowed to produce its type; else why not.

        `document` is `raw` already parsed by `json.loads`, when the caller has it (the audit does): it is not parsed again.
        `appended_ms` is when the broker appended the record (`appended_ms(record)`), if its topic is stamped
        by the broker (every catalog topic): a retired key's grace is then judged at that time, not now.
        `kept`: an event a service kept in a row when it received it (a request's escalation, its settled decision, a
        result kept for an undo), judged as row proofs are (`servicekit.row_proofs.operator_not_denied`): a key rotated
        with grace (its private key deleted) still proves what it signed, a key retired as leaked proves nothing.
        """
        refusal = self._refusal(raw, event, document, appended_ms, kept)
        if refusal is not None and self.on_refused is not None:
            self.on_refused(event, refusal)
        return refusal

    def _refusal(self, raw: bytes | str, event: Envelope, document: Any, appended_ms: int | None, kept: bool = False) -> Refusal | None:
        allowed = AUTHORITY.get(event.type)
        if allowed is None:
            return Refusal(ReasonCode.SIGNER_NOT_ALLOWED, f"no signer may produce {event.type}")
        if not event.signature or not event.keyid:
            return Refusal(ReasonCode.SIGNATURE_MISSING, f"{event.type} carries no keyid/signature")
        holders = self.principals(event.keyid)
        if not holders:
            return Refusal(ReasonCode.UNKNOWN_KEY, f"key {event.keyid!r} is not trusted")
        if (retired := self._retired(holders, event, appended_ms, kept)) is not None:
            return retired
        try:
            message = signed_bytes(json.loads(raw) if document is None else document)
            holders = _verified(holders, unb64url(event.signature), message)
        except (ValueError, TypeError):
            holders = []
        if not holders:
            return Refusal(ReasonCode.SIGNATURE_INVALID, f"signature of {event.type} by {event.keyid} does not verify")
        if not any(_may_sign(p, allowed, event) for p in holders):
            who = ", ".join(f"{p.kind} {p.name}" for p in holders)
            if (taken := _service_name_taken(holders, event)) is not None:
                return Refusal(ReasonCode.SIGNER_NOT_ALLOWED, f"{who} {taken}")
            problems = [dead_letter_problem(p.name, event) for p in holders if p.kind == "service" and event.type == DEAD_LETTER_TYPE]
            if problems and all(problems):
                return Refusal(ReasonCode.SIGNER_NOT_ALLOWED, f"{who} may not sign this dead letter: {problems[0]}")
            return Refusal(ReasonCode.SIGNER_NOT_ALLOWED, f"{who} may not produce {event.type} for tenant {event.tenantid}")
        if OPERATOR in allowed and event.sequence is None:  # control and directory records: their sequence must grow
            return Refusal(ReasonCode.CONTROL_REPLAYED, f"{event.type} carries no sequence")
        return None

    def _retired(self, holders: list[Principal], event: Envelope, appended_ms: int | None, kept: bool = False) -> Refusal | None:
        """Why `event` is refused when every holder of its key was retired longer before it arrived than the grace window.

        `kept` (no time it arrived that its signer could not have chosen): refused only when every holder's key was
        retired as leaked; one rotated with grace signed it while it was current, and its private key is gone (review63).
        """
        if self.retired_grace_s is None:
            return None
        if kept:
            if all(p.retired_at is not None and not p.grace for p in holders):
                return Refusal(ReasonCode.SIGNER_RETIRED, f"key {event.keyid} was retired as leaked, and proves nothing it signed")
            return None
        if appended_ms is not None:
            arrived = appended_ms / 1000
        elif self.history:
            return None  # appended before its topic was stamped by the broker: kept, as the audit recorded it then
        else:
            arrived = self.clock()
        if all(p.retired_at is not None and p.retired_at < arrived - (self.retired_grace_s if p.grace else 0) for p in holders):
            return Refusal(ReasonCode.SIGNER_RETIRED, f"key {event.keyid} was retired, and signs nothing new")
        return None


@dataclass
class _CarriedAuthority(Authority):
    """An `Authority` over a fixed set of keys, read from no folder (`carried_authority`)."""

    carried: tuple[tuple[str, Principal, float | None], ...] = ()

    def reload(self) -> None:
        keys: dict[str, list[Principal]] = {}
        added: dict[str, float] = {}
        for key_id, principal, put in self.carried:
            keys.setdefault(key_id, []).append(principal)
            if put is not None:
                added[key_id] = min(added.get(key_id, float("inf")), put)
        self._keys, self._added, self._unread = keys, added, ()
        self._seen = self._stamp()

    def _folders_stamp(self) -> tuple[Any, ...]:
        return ()


def carried_authority(
    holders: list[tuple[str, Principal, float | None]], retired_grace_s: float | None = 600.0, *, history: bool = True
) -> Authority:
    """An `Authority` that trusts exactly `holders` (key id, holder, when put on file), as `Authority.holders` lists them.

    What reads an audit archive where the deployment's key folders are not: the keys its attested header carries. Each
    key id must be the id of its holder's name and key (`key_id_of`), else it is left out: a key filed under another's id
    verifies nothing.
    """
    kept = tuple((k, p, put) for k, p, put in holders if key_id_of(p.name, p.public) == k)
    nowhere = Path("/nonexistent/tidegate-carried-keys")
    return _CarriedAuthority(nowhere, nowhere, nowhere, retired_grace_s=retired_grace_s, history=history, carried=kept)


def _verified(holders: list[Principal], signature: bytes, message: bytes) -> list[Principal]:
    """The holders whose own public key verifies `signature` (each distinct key checked once).

    A key id names a principal and 48 bits of its key's hash: two holders of one id with different keys (a client named
    as a tool, and a collision) must not lend each other their rights, so only a holder whose key signed may authorize.
    """
    if len(holders) == 1:  # the common case: one holder of the key id
        only = holders[0]
        return [only] if verifies_raw(only.public.public_bytes_raw(), signature, message) else []
    verdicts: dict[bytes, bool] = {}
    out = []
    for p in holders:
        raw = p.public.public_bytes_raw()
        if raw not in verdicts:
            verdicts[raw] = verifies_raw(raw, signature, message)
        if verdicts[raw]:
            out.append(p)
    return out


def appended_ms(record: Any) -> int | None:
    """When the broker appended a consumer `record` (ms), if its topic is stamped by the broker (LogAppendTime); else None."""
    stamped = getattr(record, "timestamp_type", None) == LOG_APPEND_TIME
    return int(record.timestamp) if stamped else None


def broker_time_ms(timestamp_ms: int, timestamp_type: int | None) -> int | None:
    """`timestamp_ms` if a record's `timestamp_type` says the broker stamped it (LogAppendTime); else None (its producer's)."""
    return int(timestamp_ms) if timestamp_type == LOG_APPEND_TIME else None


LOG_APPEND_TIME = 1  # Kafka's timestamp type of a record stamped by the broker, not by its producer (CreateTime: 0)


def _rejected_by(service: str) -> Callable[[Envelope], bool]:
    """Whether a dead letter signed by `service`'s key is one that service could have written (`dead_letter_problem`)."""
    return lambda event: dead_letter_problem(service, event) is None


def dead_letter_problem(signer: str, event: Envelope) -> str | None:
    """Why a dead letter signed by service `signer`'s key is not one that service wrote of a record it read; else None.

    A service dead-letters only records it consumed, in its own name: the dead letter must name `signer` as the refuser
    and a topic `signer`'s Kafka login reads (`bus_rights`; a topic of any prefix). When it carries the record's whole
    bytes (not truncated, their SHA-256 its `sha256`), the tenant and task it names must be those the bytes name, as the
    dead-letterer read them (`unknown` and no task always pass: a value it could not read within its bounds names none).
    With one service's stolen key and login, a dead letter saying the policy refused, or naming another tenant's record,
    is refused like any event its signer may not produce (the audit log records it as not valid).
    """
    data = getattr(event, "data", None)
    named = getattr(data, "service", None)
    if named != signer:
        return f"it names {named!r} as the service that refused the record: a service's key says so of itself only"
    topic = str(getattr(data, "topic", ""))
    reads = _service_reads(signer)
    if not any(pattern.search(topic) for pattern in reads):
        return f"{signer} reads no topic {topic!r}: a service dead-letters only records it consumed"
    raw = getattr(data, "raw_value", "")
    sha256 = getattr(data, "sha256", None)
    if getattr(data, "truncated", True) or not sha256 or hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest() != sha256:
        return None  # the bytes it carries are not the record's whole: the readers hold it to the audit log's copy
    mismatch = named_mismatch((getattr(data, "tenant_id", None), getattr(data, "task_id", None)), named_tenant_and_task_of(raw))
    if mismatch is None:
        return None
    what, named_as, theirs = mismatch
    return f"it names {what} {named_as!r}, and the record it carries " + (f"is of {what} {theirs!r}" if theirs else f"names no {what}")


@lru_cache(maxsize=16)
def _service_reads(service: str) -> tuple[re.Pattern[str], ...]:
    """The topics `service`'s Kafka login reads, as patterns of a full topic name (any prefix; `*`: any tool's, or any topic)."""
    out = []
    for name in rights_of(service).reads:
        body = ".*" if name == "*" else re.escape(name).replace(r"\*", ".+")
        out.append(re.compile(rf"(?:{body})$"))  # after whatever prefix (one need not end with a dot)
    return tuple(out)


# (service, event type) → what an event of that type signed by that service must be: the approval service
# proposes only undos an approver asked for (docs/autonomy.md), never a call of its own.
_ONLY_WHEN: dict[tuple[str, str], Callable[[Envelope], bool]] = {
    ("approval", "tidegate.action.proposed"): lambda event: bool(getattr(event.data, "undoes", None)),
    # A dead letter names the service that refused the record (`audit search --dead-letters` shows it): a service's key
    # says so of itself only, not that the policy refused what it allowed, or the executor what it ran.
    **{(service, DEAD_LETTER_TYPE): _rejected_by(service) for service in SERVICES},
}


_AUTHOR_FIELDS = ("set_by", "published_by")  # who a control record says made it


_SERVICE_SOURCES = tuple(f"{SERVICE_PROPOSERS}{service}" for service in SERVICES)


def _service_name_taken(holders: list[Principal], event: Envelope) -> str | None:
    """Why an event no service signed names, or looks like it names, one of the deployment's services; else None.

    Approvers, the audit's explanations and Cedar's principal show a proposal's `proposer`, and `audit search` an event's
    `source`, as the producer typed them: an agent's or a tool's must not read as the planner's. Judged on the name's
    skeleton (`people.skeleton` (`schemas.names`): `Tidegate/…`, `tidegate／…`, ` tidegate/…` are `tidegate/…`), and a name whose letters
    mix scripts (`tіdegate/planner`, a Cyrillic `і`) is refused whatever it spells. Operators (the CLI's `tidegate/cli`)
    are not judged here: they are the deployment's own.
    """
    if any(p.kind in ("service", OPERATOR) for p in holders):
        return None
    named = getattr(event.data, "proposer", None)
    if event.type == "tidegate.action.proposed" and isinstance(named, str) and (problem := proposer_problem(named)) is not None:
        return problem
    if skeleton(event.source).startswith(_SERVICE_SOURCES):
        return f"may not name source {event.source!r}: `{SERVICE_PROPOSERS}<service>` is the deployment's own services' (their keys alone)"
    # A source's first segment is its namespace (`urn`, `external`, `tidegate`): what follows may be an agent's name in any script.
    if mixed := mixed_scripts(re.split(r"[/:]", event.source, maxsplit=1)[0]):
        return f"may not name source {event.source!r}: its letters mix scripts ({', '.join(mixed)}), as a look-alike of another name does"
    return None


def _may_sign(principal: Principal, allowed: frozenset[str], event: Envelope) -> bool:
    if principal.kind == "service":
        condition = _ONLY_WHEN.get((principal.name, event.type))
        return (principal.name in allowed or ANY_SERVICE in allowed) and (condition is None or condition(event))
    if principal.kind not in allowed or _service_name_taken([principal], event) is not None:
        return False  # an agent calling itself `tidegate/planner/…` would be shown to approvers, the audit and Cedar as the planner
    if principal.kind == CLIENT:
        # A client acts for its own tenant only, and names itself as the requester.
        return principal.tenant == event.tenantid and getattr(event.data, "requested_by", None) == principal.name
    if principal.kind == TOOL:
        return getattr(event.data, "tool", None) == principal.name
    # An operator on the allow-list, naming itself as the record's author: `--by` cannot put words in a colleague's mouth.
    return all(getattr(event.data, f, principal.name) == principal.name for f in _AUTHOR_FIELDS)


def authority_for(
    keys_dir: Path,
    operators_dir: Path,
    clients_dir: Path,
    tools: Mapping[str, ToolSpec] | None = None,
    retired_grace_s: float | None = 600.0,
    *,
    history: bool = False,
) -> Authority:
    """The deployment's `Authority`: its key directories and the reply keys its catalog names (`history`: see `Authority`)."""
    tool_keys = {
        name: (keys_dir / spec.reply_key_file if not Path(spec.reply_key_file).is_absolute() else Path(spec.reply_key_file))
        for name, spec in (tools or {}).items()
        if spec.reply_key_file
    }
    return Authority(keys_dir, operators_dir, clients_dir, tool_keys, retired_grace_s=retired_grace_s, history=history)


def deployment_authority(kit: KitSettings, tools: Mapping[str, ToolSpec] | None = None, *, history: bool = False) -> Authority:
    """`authority_for` the key directories `kit` names; with `history`, a retired key's grace is judged at the broker's append time only.

    What the audit log and replay read with: what a retired key signed within its grace verifies forever, what it
    signed later never does, whenever it is read.
    """
    keys = (kit.keys_dir, kit.operator_keys_dir, kit.client_keys_dir)
    return authority_for(*keys, tools, kit.retired_key_grace_s, history=history)


def sign_as_operator(kit: KitSettings, event: E, *, sequence: int | None = None) -> E:
    """A `control` record signed by the CLI's operator key, with a fresh `sequence`, naming that key's holder as its author.

    `set_by`/`published_by` become `kit.operator` whatever they said: services refuse an operator's record that
    names anyone else (`_may_sign`), so the name a record shows is the key that signed it. `sequence`: the one to sign
    with (after every one known for the record's key: `services.approval._pins.RowPins.next_sequence`), else the clock's.
    """
    named = {f: kit.operator for f in _AUTHOR_FIELDS if f in type(event.data).model_fields}
    if named:
        event = event.model_copy(update={"data": event.data.model_copy(update=named)})
    return sign_event(event, operator_key(kit), sequence=next_sequence() if sequence is None else sequence)


def sign_as_client(kit: KitSettings, event: E) -> E:
    """A task or proposal signed by its tenant's client key of the requester (`data.requested_by`)."""
    requester = getattr(event.data, "requested_by", None)
    if not requester:
        raise ValueError(f"{event.type}: a client signs as its requester, and requested_by is empty")
    return sign_event(event, client_key(kit, event.tenantid, requester))


def sign_as_producer(kit: KitSettings, event: E) -> E:
    """`event` signed with the keys under `kit` of whoever rightfully produces its type (for sandboxes, demos and tests).

    Control records get the operator key and a fresh sequence; tasks and outside proposals the
    requester's client key; tool replies the tool's key at `<keys_dir>/tools/`; anything else its
    service's key. Any signature `event` carried is replaced.
    """
    event = event.model_copy(update={"keyid": None, "signature": None, "sequence": None})
    allowed = AUTHORITY[event.type]
    if OPERATOR in allowed:
        return sign_as_operator(kit, event)
    if CLIENT in allowed and getattr(event.data, "requested_by", None) and not event.source.startswith("tidegate/planner"):
        return sign_as_client(kit, event)
    if TOOL in allowed:
        return sign_event(event, SigningKey.load_or_create(kit.keys_dir / "tools", event.data.tool))
    named = getattr(event.data, "service", None) if ANY_SERVICE in allowed else None  # `event.rejected`: the service it names
    service = named if named in SERVICES else next((name for name in SERVICES if name in allowed), "executor")
    return sign_event(event, SigningKey.load_or_create(kit.keys_dir, service))
