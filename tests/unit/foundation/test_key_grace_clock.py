"""A service whose clock is behind the broker's does not keep a retired key valid longer (game day leftover).

A retired key verifies what arrives within its grace (`TIDEGATE_RETIRED_KEY_GRACE_S`) after its retirement. A record
the broker stamped is judged at its append time; one that carries none (a topic older than the stamping), and the
approval service's links, at the service's clock: a host ten minutes behind let whoever kept a copy of the retired
private key sign for ten minutes more. A service's bus now gives its authority the later of its host's time and the
broker's as its producer last read it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from servicekit import KitSettings, deployment_authority, service_bus, service_key, sign_event
from servicekit.signing import rotate
from tests.unit.foundation.test_authority import decided, wire

BEHIND_S = 600.0
ROTATED_AT = datetime(2026, 12, 1, 4, 0, tzinfo=UTC).timestamp()


def test_a_service_ten_minutes_behind_refuses_a_retired_key_past_its_grace_at_the_brokers_time(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    kit = KitSettings(keys_dir=tmp_path / "keys")
    stolen = service_key(kit, "policy")  # a copy kept of the private key about to be retired
    rotate(kit.keys_dir, "policy", now=datetime.fromtimestamp(ROTATED_AT, UTC))
    authority = deployment_authority(kit)
    bus = service_bus(kit, "executor", signer=service_key(kit, "executor"), authority=authority)
    host = ROTATED_AT + kit.retired_key_grace_s + 300 - BEHIND_S  # 5 minutes past the grace at the broker's, 5 left at this host's
    bus.producer.clock.now = lambda: host  # type: ignore[attr-defined]
    event = sign_event(decided(), stolen)
    assert authority.check(wire(event), event) is None  # before any acknowledgement: this host's time, as before
    bus.producer.clock.offset_s = -BEHIND_S  # type: ignore[attr-defined]  # an acknowledgement showed the broker 10 min ahead
    refusal = authority.check(wire(event), event)
    assert refusal is not None
    assert refusal.code == "signer_retired"
    assert authority.service_keys_in_grace("policy", authority.clock()) == []
