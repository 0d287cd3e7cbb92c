"""Two starts that make one key at once agree on it, and no reader sees a key file half written.

A service's signing key and the approval's sealing key pair are made on first start, and a CLI command may make the
same one at the same moment (`tidegate up` starting a service while `tidegate keys` or `db migrate` runs). Each maker
wrote its private key through one temporary name shared by every maker in the process (`<name>.key.tmp`, or the pid's):
one truncated the file the other was about to link into place, or removed it first, and a start then failed with
FileNotFoundError or read a key it had not written. The public key of the sealing pair was written in place, so a
reader could find it empty.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servicekit.signing import SigningKey
from servicekit.vault import Vault


def race(make: Callable[[], Any], makers: int = 8) -> list[Any]:
    """Run `make` in `makers` threads released together; return each answer (an exception is an answer too)."""
    gate = threading.Barrier(makers)
    answers: list[Any] = [None] * makers

    def run(i: int) -> None:
        gate.wait()
        try:
            answers[i] = make()
        except BaseException as exc:  # the test reports it
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(makers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_signing_keys_made_at_once_are_one_key(tmp_path: Path) -> None:
    for round_ in range(20):
        keys = tmp_path / f"keys{round_}"
        answers = race(lambda keys=keys: SigningKey.load_or_create(keys, "policy").key_id)  # type: ignore[misc]
        failed = [a for a in answers if isinstance(a, BaseException)]
        assert not failed, f"a start failed: {failed[0]!r}"
        assert len(set(answers)) == 1, f"starts made different keys: {set(answers)}"
        assert SigningKey.load_or_create(keys, "policy").key_id == answers[0]  # the key on disk is the one each signs with
        private = keys / "policy" / "policy.key"
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
        assert sorted(p.name for p in private.parent.iterdir()) == ["policy.key"]  # no temporary file left behind


def test_sealing_keys_made_at_once_are_one_key_pair(tmp_path: Path) -> None:
    for round_ in range(20):
        keys = tmp_path / f"keys{round_}"

        def make(keys: Path = keys) -> str:
            return Vault(keys, owner="approval", key_name="webhook-secrets", purpose="webhook").ensure()

        answers = race(make)
        failed = [a for a in answers if isinstance(a, BaseException)]
        assert not failed, f"a start failed: {failed[0]!r}"
        assert len(set(answers)) == 1, f"starts made different key pairs: {set(answers)}"
        vault = Vault(keys, owner="approval", key_name="webhook-secrets", purpose="webhook")
        sealed = vault.seal("whsec_x", "acme", "endpoint-1")
        assert vault.open(sealed, "acme", "endpoint-1") == "whsec_x"
        assert stat.S_IMODE(os.stat(vault.private_path).st_mode) == 0o600
        assert sorted(p.name for p in vault.private_dir.iterdir()) == ["webhook-secrets.key"]
