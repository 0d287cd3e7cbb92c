"""An endpoint's secret rotated on the real service, database and bus; the approval login tries to keep a leaked one alive.

The receiver (a listener on loopback) checks each message it gets with the secret it holds; the chat tool posts bob's
decisions back signed with the former secret or the new one. After a rotation `leaked`, the thief holding the former
secret is refused, and the service's own database login, which can write every column of `webhook_endpoints`, cannot
bring it back: neither by putting back the row as it was before the rotation (a signed row that is no longer the one
named current on `directory`) nor by reading the former secret out of a row in its overlap (it is sealed).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from approval_harness import Receiver, StartApproval
from test_approval_login_endpoints import BOB, COLUMNS, GROUPS, WaitFor, attacker, bearer, callback, chat_endpoint, pending  # noqa: F401

from services.approval import webhooks


async def test_the_former_secret_works_until_the_overlap_ends_and_is_never_readable(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    attacker: asyncpg.Connection,  # noqa: F811
    wait_for: WaitFor,
    tmp_path: Path,
) -> None:
    (groups := tmp_path / "groups.yaml").write_text(GROUPS)
    async with Receiver.listening(failures=0) as chat:
        h = await start_approval(groups_file=groups)
        old, bob = await chat_endpoint(h, http, chat.url)
        admin = await h.token("ops@acme.example", ["admin"])
        rotated = await http.post(f"{h.url}/api/v1/webhooks/endpoints/chat/rotate", json={"overlap_s": 600}, headers=bearer(admin))
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        row = await attacker.fetchrow(f"SELECT {COLUMNS} FROM approval.webhook_endpoints WHERE tenant_id = $1", h.tenant)
        for secret in (old, new):  # neither secret, nor its fingerprint, in any column the login reads
            assert not [c for c, v in row.items() if secret.encode() in (v if isinstance(v, bytes) else str(v).encode())]
            assert webhooks.secret_fingerprint(secret) not in str(dict(row))

        record = await pending(h, wait_for)
        await wait_for(lambda: chat.got, what="the message sent during the overlap")
        for secret in (old, new):  # the receiver verifies it with whichever secret it holds
            webhooks.verify(secret, *chat.got[-1], now=time.time(), tolerance_s=300)
        answer = await callback(h, http, record, old)  # bob's chat tool, not switched yet
        assert (answer.status_code, answer.json()["status"]) == (200, "granted"), answer.text
        enrolled = await http.post(
            f"{h.url}/api/v1/webhooks/endpoints/chat/enrol",
            json={"url": chat.url, "secret_fingerprint": webhooks.secret_fingerprint(new)},
            headers=bearer(bob),
        )
        assert enrolled.json()["approvers"] == [BOB], enrolled.text
        again = await callback(h, http, await pending(h, wait_for), new)
        assert (again.status_code, again.json()["status"]) == (200, "granted"), again.text


async def test_a_leaked_secret_is_refused_at_once_and_the_login_cannot_put_it_back(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    attacker: asyncpg.Connection,  # noqa: F811
    wait_for: WaitFor,
    tmp_path: Path,
) -> None:
    (groups := tmp_path / "groups.yaml").write_text(GROUPS)
    h = await start_approval(groups_file=groups)
    leaked, _ = await chat_endpoint(h, http, "http://127.0.0.1:9/chat")
    before = await attacker.fetchrow(f"SELECT {COLUMNS} FROM approval.webhook_endpoints WHERE tenant_id = $1", h.tenant)
    operator = await h.token("ops@platform.example", ["admin"], operator=True)
    rotated = await http.post(
        f"{h.url}/api/v1/webhooks/endpoints/chat/rotate?tenant_id={h.tenant}", json={"leaked": True}, headers=bearer(operator)
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["approvers"] == [BOB]  # an operator's rotation keeps bob
    record = await pending(h, wait_for)
    thief = await callback(h, http, record, leaked)
    assert (thief.status_code, thief.json()["detail"]["code"]) == (401, "bad_signature")

    # the login puts back the row as it was before the rotation: signed, sealed, the leaked secret in it
    await attacker.execute(
        "UPDATE approval.webhook_endpoints SET secret_key_id = $2, secret_sealed = $3, key_id = $4, signature = $5, approvers = $6 "
        "WHERE tenant_id = $1 AND endpoint_id = 'chat'",
        h.tenant,
        before["secret_key_id"],
        before["secret_sealed"],
        before["key_id"],
        before["signature"],
        before["approvers"],
    )
    thief = await callback(h, http, record, leaked)
    assert (thief.status_code, thief.json()["detail"]["code"]) == (401, "bad_signature")
    assert (await h.repo.get(record.approval_id)).status == "pending"  # type: ignore[union-attr]


async def test_once_the_overlap_has_passed_the_row_written_with_the_new_secret_alone_stays_trusted(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    wait_for: WaitFor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sweep rewrites a row past its overlap (upgrade21 F3: a rollback read the overlap's form as the secret): on the
    real database and bus, the rewritten row is pinned as a rotation's is, so the endpoint is not refused, and its
    messages verify with the new secret alone."""
    (groups := tmp_path / "groups.yaml").write_text(GROUPS)
    async with Receiver.listening(failures=0) as chat:
        h = await start_approval(groups_file=groups)
        old, _ = await chat_endpoint(h, http, chat.url)
        admin = await h.token("ops@acme.example", ["admin"])
        rotated = await http.post(f"{h.url}/api/v1/webhooks/endpoints/chat/rotate", json={"overlap_s": 1}, headers=bearer(admin))
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        caplog.set_level(logging.INFO, logger="services.approval.service")
        await wait_for(lambda: "overlap ended" in caplog.text, what="the sweep ending the overlap")
        shown = (await http.get(f"{h.url}/api/v1/webhooks/endpoints/chat", headers=bearer(admin))).json()
        assert shown["refused"] is None, shown
        assert shown["secret_fingerprint"] == webhooks.secret_fingerprint(new)
        await pending(h, wait_for)
        await wait_for(lambda: chat.got, what="a message after the overlap")
        webhooks.verify(new, *chat.got[-1], now=time.time(), tolerance_s=300)
        assert len(chat.got[-1][0]["webhook-signature"].split(" ")) == 1  # the new secret alone signs it
        assert old != new
