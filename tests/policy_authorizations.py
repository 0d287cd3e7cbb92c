"""A test helper: an `action.authorized` as the policy service issues it, signed with the key the test's executor trusts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import schemas as s
from servicekit import SigningKey, action_digest, authorization_message

__all__ = ["policy_authorized"]


def policy_authorized(
    key: SigningKey, tool: str, args: dict[str, Any], *, action_id: str = "a-1", issued_at: datetime | None = None
) -> s.ActionAuthorized:
    """`tool` with `args` authorized by policy `v1` for acme's task `t-1`, issued at `issued_at` (now) for five minutes."""
    issued = issued_at or s.utcnow()
    data = s.ActionAuthorizedData(
        action_id=action_id,
        task_id="t-1",
        tenant_id="acme",
        tool=tool,
        args=args,
        authorization=s.Authorization(
            via="policy",
            policy_version="v1",
            action_digest=action_digest("acme", tool, args),
            issued_at=issued,
            expires_at=issued + timedelta(minutes=5),
            key_id=key.key_id,
            signature="",
        ),
    )
    auth = data.authorization.model_copy(update={"signature": key.sign(authorization_message(data))})
    return s.ActionAuthorized.build(data.model_copy(update={"authorization": auth}), source="tidegate/policy")
