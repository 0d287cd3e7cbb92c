"""The operator's key changes are still seen at once, and a look at unchanged key folders lists none of them.

Every consumer looks at the deployment's key folders every `recheck_s` (0.1 s) while events come. A look listed every
folder's names (the key folders, each tenant's client folder, the tool keys' folders): ~150 µs a listing on a loaded
machine, ten times a second in every service. Names are needed only while a folder's time is new (a change in the same
tick of a coarse file clock leaves the time as it was); once that has passed, the folder's time alone says whether it
changed. These tests change the folders as an operator does (a key added, a client revoked) and put the folder's time
back to what it was, as a change in the same tick leaves it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servicekit import Authority, KitSettings, SigningKey, client_key, deployment_authority, service_key
from servicekit.authority import NAMES_LISTED_S
from tests.unit.hand_clock import HandClock


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()
    return KitSettings(keys_dir=tmp_path / "keys")


def _authority(kit: KitSettings, clock: HandClock) -> Authority:
    # every check looks at the folders (as one does each 0.1 s while events come)
    return dataclasses.replace(deployment_authority(kit), recheck_s=0.0, monotonic=clock)


def _same_tick(folder: Path, change: Callable[[], Any]) -> None:
    """`change` made to `folder`, its time then put back: as a change in the tick of the folder's last one leaves it."""
    before = folder.stat()
    change()
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = os.listdir

    def counted(path: Any = ".") -> list[str]:
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", counted)
    return calls


def test_a_look_at_key_folders_unchanged_for_a_while_lists_none_of_them(kit: KitSettings, listings: list[str]) -> None:
    planner = service_key(kit, "planner")
    for tenant in ("acme", "globex", "initech"):
        client_key(kit, tenant, "crm")
    clock = HandClock()
    authority = _authority(kit, clock)
    clock.now += NAMES_LISTED_S + 1
    assert authority.principals(planner.key_id)  # the first look after the keys' times stopped being new lists them once
    listings.clear()
    for _ in range(20):
        clock.now += 0.1
        assert authority.principals(planner.key_id)
    assert listings == []  # before: 7 folders listed at every look (3 key folders, 3 tenants' and the tenants' folder itself)


def test_a_client_key_added_in_the_same_tick_is_trusted_at_the_next_look(kit: KitSettings) -> None:
    client_key(kit, "acme", "crm")
    clock = HandClock()
    authority = _authority(kit, clock)
    folder = kit.keys_dir / "clients" / "acme"
    added: list[SigningKey] = []
    _same_tick(folder, lambda: added.append(client_key(kit, "acme", "billing")))
    clock.now += 0.1
    assert [p.name for p in authority.principals(added[0].key_id)] == ["billing"]


def test_a_change_in_the_same_tick_is_seen_however_long_after_the_last_look_it_comes(kit: KitSettings) -> None:
    """The folders read while their times were new, then no event for longer than `NAMES_LISTED_S`: a change made in the
    same tick as the last one (before that reading's tick ended) is still compared by names, not missed."""
    crm = client_key(kit, "acme", "crm")
    clock = HandClock()
    authority = _authority(kit, clock)
    folder = kit.keys_dir / "clients" / "acme"
    _same_tick(folder, lambda: (folder / "crm.pub").rename(folder / "crm.pub.bak"))  # the client's key taken away
    clock.now += NAMES_LISTED_S * 10
    assert authority.principals(crm.key_id) == []


def test_a_revocation_after_the_folders_settled_is_refused_at_the_next_look(kit: KitSettings) -> None:
    crm = client_key(kit, "acme", "crm")
    planner = service_key(kit, "planner")
    clock = HandClock()
    authority = _authority(kit, clock)
    clock.now += NAMES_LISTED_S + 1
    assert authority.principals(crm.key_id)
    clock.now += 0.1
    assert authority.principals(planner.key_id)  # settled: no folder listed from here on
    folder = kit.keys_dir / "clients" / "acme"
    (folder / "crm.pub").rename(folder / "crm.pub.bak")  # a later change moves the folder's time on
    later = folder.stat().st_mtime_ns + 1_000_000
    os.utime(folder, ns=(later, later))  # (a coarse file clock may not have moved yet within this test)
    clock.now += 0.1
    assert authority.principals(crm.key_id) == []


def test_a_tenant_added_after_the_folders_settled_is_found(kit: KitSettings) -> None:
    client_key(kit, "acme", "crm")
    clock = HandClock()
    authority = _authority(kit, clock)
    clock.now += NAMES_LISTED_S + 1
    clock.now += 0.1
    assert authority.principals("nobody-000000000000") == []
    clients = kit.keys_dir / "clients"
    added = client_key(kit, "globex", "crm")  # a new tenant's folder: the tenants' folder's time moves on
    later = clients.stat().st_mtime_ns + 1_000_000
    os.utime(clients, ns=(later, later))  # (a coarse file clock may not have moved yet within this test)
    clock.now += 0.1
    assert [p.tenant for p in authority.principals(added.key_id)] == ["globex"]
