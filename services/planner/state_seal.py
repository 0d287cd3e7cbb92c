"""Proof on the planner's stored task states: what the planner proposes from, sealed with a key the database does not hold.

A task's state (`planner.tasks.state`: its mode, the steps still to propose, the results so far) decides what the
planner proposes next and signs with its key, and the planner's own database login can write it. So each state the
planner writes carries its Ed25519 signature (`servicekit.row_proofs.RowSeal`, against the planner's own keys:
`ServiceKeys`, so a key retired by `tidegate keys rotate` still proves what it signed) over the task id, the
deployment (topic prefix) and the SHA-256 of the state's exact text: one signature per write. The text is stored as
`json`, which PostgreSQL keeps byte for byte, so the digest of what is read back is the digest of what was signed.
A state read without a valid proof is refused: nothing is proposed from it, one WARNING per row version names the
task and the fix, and `tidegate_rows_refused_total{service="planner",table="tasks"}` counts each read.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from servicekit.authority import Principal
from servicekit.row_proofs import Proof, RowSeal, ServiceKeys, Unproven
from servicekit.signing import SigningKey
from services.planner.domain import STATE_REFUSED

__all__ = ["StateSeal"]

_PURPOSE = "tidegate.planner.task_state/1"
_RELOAD_S = 5.0  # an unknown key id reloads the keys directory at most this often (a forged id must not read the disk each time)
_FIX = (
    "nothing is proposed from it, and the next event of an action the planner proposed for the task (or its submission) "
    f"ends the task failed `{STATE_REFUSED}`. A state written before migration 007_state_proofs carries no proof (resubmit "
    "the task); otherwise the planner's database login may have been used to write it: rotate that login's password "
    "(docs/security/database.md) and resubmit the task"
)


def _encoded(claims: dict[str, Any]) -> bytes:
    """What a state's proof signs: its purpose, task, deployment and the SHA-256 of its text, as JSON (unambiguous)."""
    return json.dumps([_PURPOSE, claims["task_id"], claims["deployment"], claims["state_sha256"]]).encode()


def _the_planner(principal: Principal, claims: dict[str, Any]) -> bool:
    """Any key of the planner's, current or retired: what a retired key signed was the planner's own."""
    return principal.kind == "service" and principal.name == "planner"


def _claims(task_id: str, deployment: str, state_json: str) -> dict[str, Any]:
    return {"task_id": task_id, "deployment": deployment, "state_sha256": hashlib.sha256(state_json.encode()).hexdigest()}


class StateSeal:
    """Signs the task states the planner writes and checks the proof of each one it reads and did not write itself."""

    def __init__(self, signer: SigningKey, keys_dir: Path, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        keys = ServiceKeys(keys_dir, signer.name, signer=signer, reload_s=_RELOAD_S, monotonic=monotonic)
        self._seal = RowSeal("planner", "tasks", b"", signer, keys, _the_planner, encode=_encoded, log_once=True)

    def sign(self, task_id: str, deployment: str, state_json: str) -> Proof:
        """The proof of a state this process writes (`state_json`: the exact text stored)."""
        return self._seal.sign(_claims(task_id, deployment, state_json))

    def check(self, task_id: str, deployment: str, state_json: str, key_id: str | None, signature: str | None) -> Unproven | None:
        """Why a stored state grants nothing (None: the planner wrote exactly this text for this task and deployment)."""
        return self._seal.check(_claims(task_id, deployment, state_json), key_id, signature)

    def refused(self, task_id: str, version: str, unproven: Unproven) -> None:
        """Tell the operator the stored state of `task_id` was refused: logged once per row version, counted at every read."""
        why = "it has no proof" if unproven.counted_as == "unsigned" else unproven.why
        self._seal.refused(f"the stored state of task {task_id}", why, _FIX, counted_as=unproven.counted_as, row=(task_id, version))
