"""The owed-messages gauge remembers which endpoint rows it found proven, and forgets it the moment what proved them changes.

Acting as whoever would get a refused endpoint counted as sound by the gauge's memory: the database login putting back an
earlier signed row (its pin on `directory` names a newer one), and an operator's key taken away after it signed a row.
Neither changes the row the gauge remembers, so each must be refused at the next round all the same.
"""

from __future__ import annotations

from pathlib import Path

from servicekit import ControlState, KitSettings, deployment_authority, service_key
from servicekit.authority import OPERATOR, Principal
from services.approval._endpoint_rows import EndpointRows, webhook_vault
from services.approval._pins import RowPins
from services.approval._row_proofs import approval_seals
from services.approval.repository import Endpoint
from services.approval.webhooks import new_secret


class Holders:
    """The deployment's keys as the seal asks them, with a key that can be taken away (`tidegate keys deny-operator`)."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def principals(self, key_id: str) -> list[Principal]:
        return [self.principal]


def rows_of(tmp_path: Path, pins: RowPins) -> tuple[EndpointRows, Holders, tuple[Endpoint, object, str, str]]:
    kit = KitSettings(keys_dir=tmp_path / "keys")
    kit.keys_dir.mkdir()
    key = service_key(kit, "approval")
    (principal,) = deployment_authority(kit).principals(key.key_id)
    holders = Holders(Principal(OPERATOR, "oncall", principal.public))  # signed by an operator, whose key is trusted
    vault = webhook_vault(kit.keys_dir)
    vault.ensure()
    seals = approval_seals(holders, operator_key=key, vault=vault, pins=pins)
    rows = EndpointRows(seals.endpoints, vault, pins)
    endpoint = Endpoint("chat", "https://chat.example/hook", new_secret(), "acme")
    sealed = rows.sealed_endpoint(endpoint)
    proof = rows.sign(endpoint, sealed)
    pins.control.pin_endpoint("acme", "chat", 1, rows.digest(endpoint, sealed))
    unread = Endpoint("chat", endpoint.url, "", "acme")
    return rows, holders, (unread, sealed, proof.key_id, proof.signature)


def test_a_row_put_back_is_refused_though_the_row_is_the_one_remembered_proven(tmp_path: Path) -> None:
    pins = RowPins(ControlState())
    rows, _, row = rows_of(tmp_path, pins)
    assert rows.refused_among([row]) == []
    assert rows.refused_among([row]) == []  # remembered
    pins.control.pin_endpoint("acme", "chat", 2, "f" * 64)  # a newer row was written since: this one was put back
    (refused,) = rows.refused_among([row])
    assert (refused.endpoint_id, (refused.unproven or "").split(":")[0]) == ("chat", "rolled_back")


def test_a_row_signed_by_an_operator_since_denied_is_refused_though_the_row_did_not_change(tmp_path: Path) -> None:
    rows, holders, row = rows_of(tmp_path, RowPins(ControlState()))
    assert rows.refused_among([row]) == []
    assert rows.refused_among([row]) == []
    p = holders.principal
    holders.principal = Principal(p.kind, p.name, p.public, retired_at=1.0, grace=False)  # denied
    (refused,) = rows.refused_among([row])
    assert refused.unproven == "operator oncall may not sign it"
    assert [e.endpoint_id for e in rows.refused_among([row])] == ["chat"]  # and at every round after


def test_a_row_forgotten_when_it_is_no_longer_listed_is_read_again(tmp_path: Path) -> None:
    rows, _, row = rows_of(tmp_path, RowPins(ControlState()))
    assert rows.refused_among([row]) == []
    assert rows.refused_among([]) == []  # disabled meanwhile: not remembered
    reads = []
    read = rows.read
    object.__setattr__(rows, "read", lambda *a, **k: reads.append(a) or read(*a, **k))
    assert rows.refused_among([row]) == []
    assert len(reads) == 1
