"""What the approval service's database login cannot roll back: each webhook endpoint's current row, and tokens revoked.

A row's signature proves who wrote it, not that it is the newest: whoever can write `approval.webhook_endpoints` (the
service's own login, the operator's, a restored backup) could put back an endpoint's earlier signed row (its earlier
URL, approvers, a secret replaced after a leak, `enabled` after an admin removed it), and clear a token's `revoked_at`,
which no signature covers. So every change is first published, signed, on `directory` (kept forever, a sequence that
must grow per key, written by the approval service's Kafka login only, never by a database login), or, for an
operator's revocation (`tidegate approvals token revoke|rotate`), on `control` (likewise, the `ops` login):

- `tidegate.directory.endpoint` names, by SHA-256 of its signed bytes, the endpoint row written last; a signed row that
  is not that one is refused `rolled_back`. A row no record names (written before this release, or by a process that
  publishes none) is trusted with a warning, or refused `unpinned` where `TIDEGATE_APPROVAL_REQUIRE_PINNED_ENDPOINTS`
  says so; the service names each one it finds at start (`pin_unpinned`), unless that setting is on.
- `tidegate.directory.token_revoked` (`tidegate.control.token_revoked`, an operator's) names a token revoked: a token
  it names is refused `rolled_back` whatever its row says. The service publishes one at start for every row revoked
  before this release.

The record goes out before the row is written: a record whose row never comes (the database failed) leaves the
endpoint refused until it is registered again, never an older row trusted. Its `sequence` is after every one known for
its key (`RowPins.next_sequence`), read up to the end of `directory` first (`caught_up`): a wall clock behind another
copy's, or stepped back, made the next change of an endpoint a record every service refused as replayed, while its row
was written anyway; the endpoint was then refused, and the row before it, the one the newest pin still named, trusted
again if the database login put it back. The records are read at start (before HTTP
is served) and followed while running (`servicekit.control.ControlState`); the bus checks each one's signature first
(`servicekit.authority.AUTHORITY`: the approval service or an operator; on `control` an operator only), so a forged
one is dead-lettered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from schemas import ControlTokenRevoked, DirectoryEndpoint, DirectoryEndpointData, DirectoryTokenRevoked, Envelope, TokenRevokedData
from servicekit.authority import next_sequence
from servicekit.control import ControlState

__all__ = ["ROLLED_BACK", "UNPINNED", "RowPins"]

log = logging.getLogger(__name__)

ROLLED_BACK = "rolled_back"  # the `tidegate_rows_refused_total` reasons, and how a refusal's `why` starts
UNPINNED = "unpinned"
SOURCE = "tidegate/approval"


@dataclass
class RowPins:
    """The records on `directory` that bind endpoint rows and token revocations, and how this process publishes them.

    `control`: the state the records are applied to (read from `directory`). `sign`: signs a record (the service's key,
    or the CLI's operator key) with the `sequence` given; `publish`: sends it on `directory`, acknowledged (None: this
    process only reads). `caught_up`: reads `directory` (and `control`) to their end, so that the records other copies
    published are known before a sequence is chosen (None: `control` is read already, as the CLI's). `set_by`: whom a
    record names (an operator's signing replaces it with their name). `operator`: revocations are an operator's,
    published on `control` (the CLI), not the service's on `directory`.
    """

    control: ControlState
    sign: Callable[[Envelope, int], Envelope] | None = None
    publish: Callable[[Envelope], Awaitable[None]] | None = None
    set_by: str = "approval"
    required: bool = False
    operator: bool = False
    caught_up: Callable[[], Awaitable[None]] | None = None
    clock: Callable[[], int] = next_sequence  # the wall clock in nanoseconds, a sequence's first choice
    # tokens whose record this process published but whose row it failed to write, with why: revoked, not rolled back
    unwritten: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _told: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False)
    _sent: dict[bytes | None, int] = field(default_factory=dict, init=False, repr=False)  # the sequence this process sent last, per key

    @property
    def publishes(self) -> bool:
        """Whether this process publishes the records of the changes it writes."""
        return self.sign is not None and self.publish is not None

    def pinned(self, tenant_id: str, endpoint_id: str) -> str | None:
        """The SHA-256 of the endpoint's row that the newest record names (None: no record names one)."""
        pin = self.control.endpoints.get((tenant_id, endpoint_id))
        return None if pin is None else pin[1]

    def endpoint_refusal(self, tenant_id: str, endpoint_id: str, row_sha256: str) -> str | None:
        """Why an endpoint's signed row is not its current one (`rolled_back: …`, `unpinned: …`), or None."""
        pin = self.pinned(tenant_id, endpoint_id)
        if pin is None:
            if self.required:
                return f"{UNPINNED}: no tidegate.directory.endpoint record names it (TIDEGATE_APPROVAL_REQUIRE_PINNED_ENDPOINTS)"
            if (tenant_id, endpoint_id) not in self._told:
                self._told.add((tenant_id, endpoint_id))
                log.warning(
                    "approval: webhook endpoint %s of tenant %s is trusted though no tidegate.directory.endpoint record names its "
                    "row (written before endpoints were pinned): an older signed copy put back in the table would be trusted too; "
                    "the service pins it at its next start, or register it again",
                    endpoint_id,
                    tenant_id,
                )
            return None
        if pin != row_sha256:
            return (
                f"{ROLLED_BACK}: it is not the row the newest tidegate.directory.endpoint record names (sha256 {pin[:12]}…): an "
                "older signed row was put back in the table"
            )
        return None

    def revoked(self, token_id: str) -> bool:
        """Whether a `tidegate.directory.token_revoked` record names this token."""
        return token_id in self.control.revoked_tokens

    def row_unwritten(self, token_id: str, tenant_id: str, error: BaseException) -> None:
        """This process revoked the token on `directory` but failed to write its row: say so, and never call it a rollback.

        The token authenticates nothing (the record names it); its row still says live until the sweep writes it
        (`PgTokenStore.write_revocations`) or the revocation is asked again, so its refusal names this failure instead of
        a login that cleared `revoked_at`. Known to this process only: another copy, or this one restarted before the row
        is written, sees a rollback.
        """
        self.unwritten[token_id] = f"{type(error).__name__}: {error}"
        then = (  # the CLI has no sweep, and the service does not know this process's failure
            f"revoke it again once the database answers (`tidegate approvals token revoke {token_id}`): until then the "
            "approval service reads its row live though control says revoked, and calls that a rollback"
            if self.operator
            else "the sweep writes it once the database answers, or revoke it again (until then its row says live; a copy of "
            "the service started meanwhile calls that a rollback)"
        )
        log.error(
            "approval: token %s of tenant %s is revoked (its token_revoked record is published: it authenticates nothing), but "
            "writing revoked_at in its row failed (%s): %s",
            token_id,
            tenant_id,
            self.unwritten[token_id],
            then,
        )

    async def pin_endpoint(self, tenant_id: str, endpoint_id: str, row_sha256: str) -> None:
        """Publish that this row is the endpoint's current one, and apply it here at once (before the row is written)."""
        data = DirectoryEndpointData(tenant_id=tenant_id, endpoint_id=endpoint_id, row_sha256=row_sha256, set_by=self.set_by)
        event = await self._publish(DirectoryEndpoint.build(data, source=SOURCE))
        assert event.sequence is not None  # `sign` sets it
        self.control.pin_endpoint(tenant_id, endpoint_id, event.sequence, row_sha256)

    async def revoke_token(self, token_id: str, tenant_id: str) -> None:
        """Publish that this token is revoked, and apply it here at once (before its row's `revoked_at` is set)."""
        data = TokenRevokedData(tenant_id=tenant_id, token_id=token_id, set_by=self.set_by)
        kind = ControlTokenRevoked if self.operator else DirectoryTokenRevoked
        await self._publish(kind.build(data, source="tidegate/cli" if self.operator else SOURCE))
        self.control.revoked_tokens[token_id] = tenant_id

    def next_sequence(self, event: Envelope) -> int:
        """A sequence after every one known for `event`'s key: read, applied here, or sent by this process.

        The wall clock's when it is later (the usual case); else one more than the newest known, so the record is never
        refused as a replay (`ControlState.apply`) because this host's clock is behind another copy's or stepped back.
        """
        key = event.key
        known = [self.control.sequences.get(key, 0), self._sent.get(key, 0)]
        if isinstance(event, DirectoryEndpoint):
            known.append(self.control.endpoints.get((event.data.tenant_id, event.data.endpoint_id), (0, ""))[0])
        return max(self.clock(), max(known) + 1)

    async def _publish(self, event: Envelope) -> Envelope:
        if self.sign is None or self.publish is None:
            raise RuntimeError("this process publishes no directory records")
        if self.caught_up is not None:
            await self.caught_up()  # what other copies published before this change is known: its sequence comes after
        sequence = self.next_sequence(event)
        # Noted before the publish is awaited: another change of the same key published meanwhile by this process comes
        # after it (noted after, both took the newest known + 1 on a clock behind, and every reader refused the second).
        self._sent[event.key] = sequence
        signed = self.sign(event, sequence)
        await self.publish(signed)
        return signed
