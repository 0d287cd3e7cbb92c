"""Proof on the planner's stored task states: what the planner proposes from, sealed with a key the database does not hold.

A task's state (`planner.tasks.state`: its mode, the steps still to propose, the results so far) decides what the
planner proposes next and signs with its key, and the planner's own database login can write it. So each state the
planner writes carries its Ed25519 signature (`servicekit.row_proofs.RowSeal`, against the planner's own keys:
`ServiceKeys`, so a key retired by `tidegate keys rotate` still proves what it signed) over the tenant, the task id,
the deployment (topic prefix) and the SHA-256 of the state's exact text: one signature per write. A task id is its
tenant's (two tenants may both have a `T-1001`): a state of one tenant's task never proves another's of the same id.
The text is stored as `json`, which PostgreSQL keeps byte for byte, so the digest of what is read back is the digest
of what was signed.
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
from servicekit.row_proofs import ALTERED, Proof, RowSeal, ServiceKeys, Unproven
from servicekit.signing import SigningKey
from services.planner.domain import STATE_REFUSED

__all__ = ["StateSeal"]

_PURPOSE = "tidegate.planner.task_state/2"
_PURPOSE_1 = "tidegate.planner.task_state/1"  # before migration 008: the tenant was bound by the state's text alone
_RELOAD_S = 5.0  # an unknown key id reloads the keys directory at most this often (a forged id must not read the disk each time)
_FIX = (
    "nothing is proposed from it, and the next event of an action the planner proposed for the task (or its submission) "
    f"ends the task failed `{STATE_REFUSED}`. A state written before migration 007_state_proofs carries no proof (resubmit "
    "the task under a new id); otherwise the planner's database login may have been used to write it: rotate that login's password "
    "(docs/security/database.md) and resubmit the task under a new id"
)


def _encoded(claims: dict[str, Any]) -> bytes:
    """What a state's proof signs: its purpose, tenant, task, deployment and the SHA-256 of its text, as JSON (unambiguous)."""
    return json.dumps([_PURPOSE, claims["tenant_id"], claims["task_id"], claims["deployment"], claims["state_sha256"]]).encode()


def _encoded_1(claims: dict[str, Any]) -> bytes:
    """What a proof made before migration 008 signed: the same without the tenant."""
    return json.dumps([_PURPOSE_1, claims["task_id"], claims["deployment"], claims["state_sha256"]]).encode()


def _names(state_json: str, tenant_id: str, task_id: str) -> bool:
    """Whether the state's text is of this tenant's task (what a proof made before migration 008 leaves to the text)."""
    try:
        state = json.loads(state_json)
    except ValueError:
        return False
    return isinstance(state, dict) and state.get("tenant_id") == tenant_id and state.get("task_id") == task_id


def _the_planner(principal: Principal, claims: dict[str, Any]) -> bool:
    """Any key of the planner's, current or retired: what a retired key signed was the planner's own."""
    return principal.kind == "service" and principal.name == "planner"


def _claims(tenant_id: str, task_id: str, deployment: str, state_json: str) -> dict[str, Any]:
    digest = hashlib.sha256(state_json.encode()).hexdigest()
    return {"tenant_id": tenant_id, "task_id": task_id, "deployment": deployment, "state_sha256": digest}


class StateSeal:
    """Signs the task states the planner writes and checks the proof of each one it reads and did not write itself."""

    def __init__(self, signer: SigningKey, keys_dir: Path, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        keys = ServiceKeys(keys_dir, signer.name, signer=signer, reload_s=_RELOAD_S, monotonic=monotonic)
        self._seal = RowSeal("planner", "tasks", b"", signer, keys, _the_planner, encode=_encoded, log_once=True)
        self._before = RowSeal("planner", "tasks", b"", None, keys, _the_planner, encode=_encoded_1)  # checks only, never signs

    def sign(self, tenant_id: str, task_id: str, deployment: str, state_json: str) -> Proof:
        """The proof of a state this process writes (`state_json`: the exact text stored)."""
        return self._seal.sign(_claims(tenant_id, task_id, deployment, state_json))

    def check(
        self, tenant_id: str, task_id: str, deployment: str, state_json: str, key_id: str | None, signature: str | None
    ) -> Unproven | None:
        """Why a stored state grants nothing (None: the planner wrote exactly this text for this tenant's task and deployment).

        A proof made before migration 008 signed no tenant; it still proves the state when the text it signed names this
        tenant and task (every state the planner writes does), so tasks running across the upgrade go on.
        """
        claims = _claims(tenant_id, task_id, deployment, state_json)
        unproven = self._seal.check(claims, key_id, signature)
        if unproven is not None and unproven.reason == ALTERED and self._before.check(claims, key_id, signature) is None:
            return None if _names(state_json, tenant_id, task_id) else unproven
        return unproven

    def refused(self, tenant_id: str, task_id: str, version: str, unproven: Unproven) -> None:
        """Tell the operator the stored state of a task was refused: logged once per row version, counted at every read."""
        why = "it has no proof" if unproven.counted_as == "unsigned" else unproven.why
        what = f"the stored state of task {task_id} of tenant {tenant_id}"
        self._seal.refused(what, why, _FIX, counted_as=unproven.counted_as, row=(tenant_id, task_id, version))
