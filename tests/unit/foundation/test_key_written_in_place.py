"""A public key a running service read while it was still being written is trusted once written (the token-rotate flake).

A service reads its key folders again when an unknown key id arrives. A key file made in place (`SigningKey.load_or_create`
wrote it so, as does `cp alice.pub operators/`) exists empty for a moment: read then, it was no key, and since writing
its bytes changes neither the folder's names nor its time, the folder was never read again: what that operator signed
(a rotated approver token) stayed "not trusted" until some other key changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from servicekit import SigningKey
from servicekit.authority import Authority
from servicekit.signing import key_id_of


def test_an_operator_key_read_while_empty_is_trusted_once_its_bytes_are_written(tmp_path: Path) -> None:
    keys, operators, clients = tmp_path / "keys", tmp_path / "operators", tmp_path / "clients"
    for folder in (keys, operators, clients):
        folder.mkdir()
    now = [0.0]
    authority = Authority(keys, operators, clients, recheck_s=1.0, monotonic=lambda: now[0])
    alice = SigningKey.load_or_create(tmp_path / "made", "alice")
    pem = alice.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_id = key_id_of("alice", alice.private.public_key())

    (operators / "alice.pub").touch()  # the copy has begun: the file is there, its bytes not yet
    assert authority.principals(key_id) == []  # an unknown id: the folders are read, the empty file is no key
    (operators / "alice.pub").write_bytes(pem)  # the copy ends
    now[0] += 1.5  # past the recheck
    assert [(p.kind, p.name) for p in authority.principals(key_id)] == [("operator", "alice")]


def test_a_key_made_by_the_kit_is_never_seen_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes | None] = []
    real_replace = os.replace

    def watching(src: str | Path, dst: str | Path) -> None:
        """What a reader could find at the key's name just before the key lands there."""
        seen.append(Path(dst).read_bytes() if Path(dst).exists() else None)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching)
    SigningKey.load_or_create(tmp_path, "bob")
    assert seen == [None]  # never an empty or partial `bob.pub`: it appears whole, by a rename
    assert (tmp_path / "bob.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
