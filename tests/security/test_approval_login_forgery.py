"""The approval service's own database login, in an attacker's hands, tries to stand in for a person (security3 F3).

The attacker holds only `tidegate_approval`'s login (no key): it inserts approver and operator tokens of its own,
alters a genuine token's tenant, groups, role or expiry, and adds an approver to a request that needs two. Each is
refused through the real HTTP API of the real service (401 as an unknown token gets; the approval not counted),
while tokens the operator's CLI made and tokens the API rotated keep working, also after `tidegate keys rotate`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, StartApproval, bearer

from servicekit import KitSettings, deployment_authority, operator_key
from servicekit.dbroles import service_database_url
from servicekit.metrics import ROWS_REFUSED
from servicekit.signing import rotate
from services.approval import PgApprovalRepository, approval_seals, auth

pytestmark = pytest.mark.integration

GROUPS = """
default:
  risk_groups: {financial: [finance], write_low: [support], unknown: [security]}
  required_approvals: {financial: 2}
"""
WaitFor = Callable[..., Awaitable[Any]]


def refused(table: str, reason: str) -> float:
    """How many rows of `table` the approval service refused for `reason` so far (`tidegate_rows_refused_total`)."""
    return ROWS_REFUSED.labels("approval", table, reason)._value.get()


@pytest.fixture
async def attacker(kit: KitSettings) -> AsyncIterator[asyncpg.Connection]:
    """The approval service's own login, exactly as the service builds its DSN: all the attacker holds."""
    conn = await asyncpg.connect(service_database_url(kit, "approval"))
    yield conn
    await conn.close()


async def start(start_approval: StartApproval, tmp_path: Path) -> ApprovalHarness:
    groups = tmp_path / "groups.yaml"
    groups.write_text(GROUPS)
    return await start_approval(groups_file=groups)


async def insert_token(db: asyncpg.Connection, token: str, approver: str, tenant: str, groups: list[str], **extra: Any) -> str:
    """What security3's probe/mint_tokens.sh did: a row of the attacker's own, with a 10-year expiry."""
    token_id = "tok_" + uuid.uuid4().hex[:12]
    columns = {"token_id": token_id, "token_sha256": auth.hash_token(token), "approver": approver, "tenant_id": tenant, "groups": groups}
    columns |= {"operator": tenant == "*", "expires_at": datetime.now(UTC) + timedelta(days=3650)} | extra
    names = ", ".join(columns)
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await db.execute(f"INSERT INTO approval.approver_tokens ({names}) VALUES ({marks})", *columns.values())
    return token_id


async def test_token_rows_the_approval_login_inserts_are_refused_as_an_unknown_token_is(
    start_approval: StartApproval, http: httpx.AsyncClient, attacker: asyncpg.Connection, wait_for: WaitFor, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    h = await start(start_approval, tmp_path)
    genuine = await h.token("ann@acme.example", ["finance"])  # the operator's CLI made it: signed with the operator's key
    row = await attacker.fetchrow(
        "SELECT key_id, signature FROM approval.approver_tokens WHERE token_sha256 = $1", auth.hash_token(genuine)
    )
    await h.escalate(d := h.decided())
    record = await h.request_for(d.action_id, wait_for)
    approve = f"{h.url}/api/v1/approvals/{record.approval_id}/approve"
    unknown = await http.post(approve, json={"action_digest": record.action_digest}, headers=bearer(auth.new_token()))
    assert unknown.status_code == 401

    forged = {
        "finance approver": (h.tenant, ["finance"], {}),
        "operator": ("*", ["admin", "finance", "security"], {}),
        "approver with a genuine row's proof": (h.tenant, ["finance"], {"key_id": row["key_id"], "signature": row["signature"]}),
    }
    unsigned, invalid = refused("approver_tokens", "unsigned"), refused("approver_tokens", "invalid")
    caplog.set_level(logging.WARNING, logger="servicekit.row_proofs")
    for what, (tenant, groups, proof) in forged.items():
        token = "tga_" + uuid.uuid4().hex
        await insert_token(attacker, token, f"mallory-{uuid.uuid4().hex[:4]}@acme.example", tenant, groups, **proof)
        answer = await http.post(approve, json={"action_digest": record.action_digest}, headers=bearer(token))
        assert (answer.status_code, answer.json()) == (unknown.status_code, unknown.json()), what
        listed = await http.get(f"{h.url}/api/v1/approvals", params={"tenant": h.tenant}, headers=bearer(token))
        assert listed.status_code == 401, what
    assert refused("approver_tokens", "unsigned") >= unsigned + 2
    assert refused("approver_tokens", "invalid") >= invalid + 1
    assert "tidegate approvals token rotate" in caplog.text  # the operator's line names the token and how to re-issue it
    assert (await h.repo.get(record.approval_id)).status == "pending"  # type: ignore[union-attr]
    assert not [e for e in await h.approvals() if e.data.approval_id == record.approval_id and e.type == "tidegate.approval.granted"]


async def test_a_genuine_token_altered_by_the_login_is_refused_until_put_back(
    start_approval: StartApproval, http: httpx.AsyncClient, attacker: asyncpg.Connection, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    token = await h.token("sam@acme.example", ["support"])
    sha = auth.hash_token(token)
    queue = f"{h.url}/api/v1/approvals"
    assert (await http.get(queue, headers=bearer(token))).status_code == 200
    before = await attacker.fetchrow("SELECT * FROM approval.approver_tokens WHERE token_sha256 = $1", sha)
    changes = {
        "groups": ("groups = $2", ["finance", "admin"]),
        "tenant": ("tenant_id = $2", "globex"),
        "role": ("tenant_id = '*', operator = $2", True),
        "expiry": ("expires_at = $2", before["expires_at"] + timedelta(days=3650)),
        "created_at (a longer lifetime for rotations)": ("created_at = $2", before["created_at"] - timedelta(days=3000)),
        "approver": ("approver = $2", "ceo@acme.example"),
    }
    for what, (change, value) in changes.items():
        await attacker.execute(f"UPDATE approval.approver_tokens SET {change} WHERE token_sha256 = $1", sha, value)
        assert (await http.get(queue, headers=bearer(token))).status_code == 401, what
        rotated = await http.post(f"{h.url}/api/v1/tokens/rotate", headers=bearer(token))
        assert rotated.status_code == 401, what  # nor can the altered row be laundered through a rotation the service signs
        await attacker.execute(
            "UPDATE approval.approver_tokens SET groups = $2, tenant_id = $3, operator = $4, expires_at = $5, created_at = $6, "
            "approver = $7 WHERE token_sha256 = $1",
            sha, before["groups"], before["tenant_id"], before["operator"], before["expires_at"], before["created_at"], before["approver"],
        )  # fmt: skip
        assert (await http.get(queue, headers=bearer(token))).status_code == 200, what  # the proof, not a flag, decided


async def test_an_approver_the_login_adds_to_a_request_is_not_counted(
    start_approval: StartApproval, http: httpx.AsyncClient, attacker: asyncpg.Connection, wait_for: WaitFor, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    bob = await h.token("bob@acme.example", ["finance"])
    await h.escalate(d := h.decided())
    record = await h.request_for(d.action_id, wait_for)
    assert record.required_approvals == 2
    # A second member of finance, as the groups file and token rows would have them: written into the request's row.
    await attacker.execute(
        "UPDATE approval.approvals SET record = jsonb_set(jsonb_set(record, '{approvers}', $2::jsonb), '{approver_groups}', $3::jsonb) "
        "WHERE approval_id = $1",
        record.approval_id, json.dumps(["mallory@acme.example"]), json.dumps({"mallory@acme.example": ["finance"]}),
    )  # fmt: skip
    before = refused("approvals", "unsigned")
    answer = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(bob)
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "pending"
    assert answer.json()["approvers"] == ["bob@acme.example"]
    assert refused("approvals", "unsigned") == before + 1
    assert not [e for e in await h.approvals() if e.data.approval_id == record.approval_id and e.type == "tidegate.approval.granted"]

    # A genuine second approver completes it: the approvals the service signed are counted.
    cy = await h.token("cy@acme.example", ["finance"])
    done = await http.post(
        f"{h.url}/api/v1/approvals/{record.approval_id}/approve", json={"action_digest": record.action_digest}, headers=bearer(cy)
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "granted"
    assert sorted(done.json()["approvers"]) == ["bob@acme.example", "cy@acme.example"]


async def test_cli_minted_and_api_rotated_tokens_work_across_keys_rotate(
    start_approval: StartApproval, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    queue = f"{h.url}/api/v1/approvals"
    by_cli = await h.token("ann@acme.example", ["finance"])
    operator = await h.token("ops@tidegate.example", ["admin"], operator=True)
    rotated = await http.post(f"{h.url}/api/v1/tokens/rotate", headers=bearer(await h.token("sam@acme.example", ["support"])))
    assert rotated.status_code == 200, rotated.text
    by_api = rotated.json()["token"]  # signed with the approval service's own key
    for token in (by_cli, operator, by_api):
        assert (await http.get(queue, headers=bearer(token))).status_code == 200

    rotate(h.kit.keys_dir, "approval")  # `tidegate keys rotate approval`
    rotate(h.kit.operator_keys_dir, h.kit.operator, private_dir=h.kit.operator_private_keys_dir)  # the operator's own key
    for token in (by_cli, operator, by_api):  # what the retired keys signed still verifies
        assert (await http.get(queue, headers=bearer(token))).status_code == 200
    again = await http.post(f"{h.url}/api/v1/tokens/rotate", headers=bearer(by_api))  # signed with the new key (the service follows it)
    assert again.status_code == 200
    assert (await http.get(queue, headers=bearer(again.json()["token"]))).status_code == 200
    assert (await http.get(queue, headers=bearer(await h.token("new@acme.example", ["finance"])))).status_code == 200

    # An operator token is the operator key's: the service does not sign one over the API.
    refused_rotation = await http.post(f"{h.url}/api/v1/tokens/rotate", headers=bearer(operator))
    assert refused_rotation.status_code == 403
    assert refused_rotation.json()["detail"]["code"] == "operator_token"


async def test_a_token_made_before_tokens_were_signed_is_refused_until_the_operator_reissues_it(
    start_approval: StartApproval, http: httpx.AsyncClient, attacker: asyncpg.Connection, tmp_path: Path
) -> None:
    h = await start(start_approval, tmp_path)
    old = "tga_" + uuid.uuid4().hex
    token_id = await insert_token(attacker, old, "olga@acme.example", h.tenant, ["finance"])  # as migration 010 finds it
    assert (await http.get(f"{h.url}/api/v1/approvals", headers=bearer(old))).status_code == 401
    operator = PgApprovalRepository(h.proc.pool, seals=approval_seals(deployment_authority(h.kit), operator_key=operator_key(h.kit)))  # type: ignore[arg-type]
    [listed] = [t for t in await operator.tokens() if t.token_id == token_id]
    assert listed.unproven == "unsigned"  # what `tidegate approvals token list` shows
    new = auth.new_token()
    assert await operator.rotate_token(token_id, auth.hash_token(new), datetime.now(UTC) + timedelta(days=1)) is None
    successor = await operator.rotate_token(token_id, auth.hash_token(new), datetime.now(UTC) + timedelta(days=1), reissue=True)
    assert successor is not None
    assert successor.unproven is None
    assert (await http.get(f"{h.url}/api/v1/approvals", headers=bearer(new))).status_code == 200
