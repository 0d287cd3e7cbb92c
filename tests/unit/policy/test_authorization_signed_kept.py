"""An authorization's signature covers exactly what it did before its message was read without building the data.

The policy signs `authorization_message` of the call and the grant before the signed data is built. It read those
from the data assembled with `model_construct`; it now reads them from the fields as they are. The executor (and a
governed function's client) verifies the signature over `authorization_message` of the data it receives: every grant
the policy signs must still verify there, and be the signature the old way made (Ed25519 is deterministic, so the same
signature is the same message).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas import ActionAuthorized, ActionAuthorizedData, Authorization, decode
from servicekit import SigningKey, action_digest, authorization_message, encode_signed
from services.policy.authorization import SOURCE, sign_authorization
from services.policy.facts import Call

KEY = SigningKey("policy", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
ISSUED = datetime(2026, 12, 7, 3, 0, 0, 123456, tzinfo=UTC)

CALLS: list[tuple[Call, str | None]] = [
    (Call("acme", "t-1", "issue_refund", {"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"}, "planner"), None),
    (Call("acme", "t-2", "send_email", {"to": ["ann@ex.example"], "subject": "Ré: ✓", "body": 'a\nb"c\\'}, "planner"), "ap-9"),
    (Call("globex", "t-3", "tag_ticket", {"ticket_id": "T-1", "tags": [], "nested": {"b": [1, 2.5, None]}}, "x"), None),
    (Call("acme", "t-4", "issue_refund", {"payee_id": "cus_1002", "amount_usd": 0.00001, "order_id": "O-4"}, "planner"), None),
]


def _the_old_way(call: Call, action_id: str, step: int, approval_id: str | None, ttl_s: float, cost: float) -> str:
    """The signature as `sign_authorization` made it before: over the message of the data built with `model_construct`."""
    grant: dict[str, Any] = {
        "via": "approval" if approval_id else "policy",
        "policy_version": "sha256:abc",
        "action_digest": action_digest(call.tenant_id, call.tool, call.args),
        "issued_at": ISSUED,
        "expires_at": ISSUED + timedelta(seconds=ttl_s),
        "key_id": KEY.key_id,
        "approval_id": approval_id,
    }
    fields: dict[str, Any] = {"action_id": action_id, "task_id": call.task_id, "tenant_id": call.tenant_id, "step": step}
    fields |= {"tool": call.tool, "args": call.args, "estimated_cost_usd": cost}
    unsigned = ActionAuthorizedData.model_construct(**fields, authorization=Authorization.model_construct(**grant, signature=""))
    return KEY.sign(authorization_message(unsigned))


@pytest.mark.parametrize(("call", "approval_id"), CALLS)
def test_an_authorization_is_signed_over_the_bytes_it_was_and_verifies_where_it_is_checked(call: Call, approval_id: str | None) -> None:
    data = sign_authorization(
        KEY,
        call=call,
        action_id=f"{call.task_id}-a",
        step=3,
        via="approval" if approval_id else "policy",
        policy_version="sha256:abc",
        approval_id=approval_id,
        issued_at=ISSUED,
        ttl_s=300.0,
        estimated_cost_usd=0.25,
    )
    assert data.authorization.signature == _the_old_way(call, f"{call.task_id}-a", 3, approval_id, 300.0, 0.25)
    # As the executor reads it: the event published, decoded, its data's message checked against the policy's key.
    received = decode("actions.authorized", encode_signed(ActionAuthorized.build(data, source=SOURCE), KEY))
    assert isinstance(received, ActionAuthorized)
    auth = received.data.authorization
    KEY.private.public_key().verify(_unb64(auth.signature), authorization_message(received.data))
    assert auth.expires_at - auth.issued_at == timedelta(seconds=300)
    assert auth.approval_id == approval_id


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
