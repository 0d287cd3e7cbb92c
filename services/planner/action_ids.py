"""The planner's action ids: `<task_id>:<step>.<tag>`, the same on every run, impossible for a stranger to guess.

Every outside agent reads every tenant's decisions, so it learns a task's id and its step numbers. Were the
next id predictable, another tenant could propose it first and have the owner's genuine proposal refused as
`action_id_reused`. The tag is HMAC-SHA256 of (tenant, task, step) under a secret only the planner holds,
derived from its private signing key: a redelivered event or a restarted copy derives the same id, so the
outbox and every idempotency key stay stable, and no new secret needs storing or rotating on its own.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii

from servicekit import SigningKey

__all__ = ["PURPOSE", "TAG_BYTES", "ActionIds"]

PURPOSE = "action-ids/v1"  # the domain-separation label of the secret derived from the planner's key
TAG_BYTES = 10  # 80 bits: a guess is right once in 2**80


@dataclass(frozen=True)
class ActionIds:
    """Names the planner's steps under `secret`, which only the planner holds (`of_key`)."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < 32:
            raise ValueError("an action id secret has at least 32 bytes")

    @classmethod
    def of_key(cls, key: SigningKey) -> ActionIds:
        """The ids of the planner that holds `key` (its own signing key)."""
        return cls(key.derived_secret(PURPOSE))

    @classmethod
    def throwaway(cls) -> ActionIds:
        """Ids for a run inside one process (what-if, evals): unguessable, but not the same after a restart."""
        return cls(secrets.token_bytes(32))

    def of(self, tenant_id: str, task_id: str, step: int) -> str:
        """The id of `step` of `tenant_id`'s task `task_id`."""
        message = _message(tenant_id, task_id, step).encode()
        tag = hmac.digest(self.secret, message, "sha256")[:TAG_BYTES].hex()
        return f"{task_id}:{step}.{tag}"

    def owns(self, action_id: str, tenant_id: str, task_id: str) -> bool:
        """Whether `action_id` is one this planner names for a step of `tenant_id`'s task `task_id` (so the task is its own)."""
        head = f"{task_id}:"
        step = action_id[len(head) :].partition(".")[0] if action_id.startswith(head) else ""
        return step.isascii() and step.isdigit() and hmac.compare_digest(self.of(tenant_id, task_id, int(step)), action_id)


def _message(tenant_id: str, task_id: str, step: int) -> str:
    """`json.dumps([tenant_id, task_id, step])`: unambiguous, whatever characters the ids hold.

    Written with the string escaper `json.dumps` itself uses (ASCII-only, its default), without setting up an encoder per step.
    """
    return f"[{encode_basestring_ascii(tenant_id)}, {encode_basestring_ascii(task_id)}, {int(step)}]"
