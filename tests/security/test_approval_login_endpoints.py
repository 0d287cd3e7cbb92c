"""The approval service's own database login, in an attacker's hands, turns a webhook endpoint against its approvers (F3b).

The attacker holds only `tidegate_approval`'s login (no key, no host): it reads an endpoint's secret to sign a callback
as the approver listed on it (for a request that needs one approval, the whole decision), writes a secret of its own,
re-points the URL at its own listener or lists another approver there to collect one-time links. Each is refused through
the real service on the real database and bus, while endpoints registered, enrolled and called back through the API keep
working, also after `tidegate keys rotate approval`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from approval_harness import ApprovalHarness, Receiver, StartApproval, bearer

from servicekit import KitSettings
from servicekit.dbroles import service_database_url
from servicekit.metrics import ROWS_REFUSED
from servicekit.signing import rotate
from services.approval import webhooks
from services.approval._endpoint_rows import webhook_vault

pytestmark = pytest.mark.integration

GROUPS = "default:\n  risk_groups: {financial: [finance]}\n"  # one approval decides
BOB, EVE = "bob@acme.example", "eve@acme.example"
WaitFor = Callable[..., Awaitable[Any]]
COLUMNS = "url, approvers, enabled, source, secret, secret_key_id, secret_sealed, key_id, signature"


def refused() -> float:
    """Endpoint rows the approval service refused so far (`tidegate_rows_refused_total{table="webhook_endpoints"}`)."""
    return sum(ROWS_REFUSED.labels("approval", "webhook_endpoints", reason)._value.get() for reason in ("unsigned", "invalid"))


@pytest.fixture
async def attacker(kit: KitSettings) -> AsyncIterator[asyncpg.Connection]:
    """The approval service's own login, exactly as the service builds its DSN: all the attacker holds."""
    conn = await asyncpg.connect(service_database_url(kit, "approval"))
    yield conn
    await conn.close()


async def chat_endpoint(h: ApprovalHarness, http: httpx.AsyncClient, url: str, secret: str | None = None) -> tuple[str, str]:
    """An admin registers the tenant's chat endpoint over the API and bob enrols it: (its secret, bob's token)."""
    admin, bob = await h.token("ops@acme.example", ["admin"]), await h.token(BOB, ["finance"])
    created = await http.post(
        f"{h.url}/api/v1/webhooks/endpoints",
        json={"endpoint_id": "chat", "url": url, "approvers": []} | ({"secret": secret} if secret else {}),
        headers=bearer(admin),
    )
    assert created.status_code == 200, created.text
    secret = created.json()["secret"]
    enrolled = await http.post(
        f"{h.url}/api/v1/webhooks/endpoints/chat/enrol",
        json={"url": url, "secret_fingerprint": webhooks.secret_fingerprint(secret)},
        headers=bearer(bob),
    )
    assert enrolled.json()["approvers"] == [BOB], enrolled.text
    return secret, bob


async def callback(h: ApprovalHarness, http: httpx.AsyncClient, record: Any, secret: str) -> httpx.Response:
    """Bob's approval, as his chat tool posts it, signed with `secret`."""
    data = {"approval_id": record.approval_id, "approver": BOB, "decision": "approve", "action_digest": record.action_digest}
    body = json.dumps({"type": "approval.decision", "data": data}).encode()
    headers = webhooks.signed_headers(secret, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
    return await http.post(f"{h.url}/api/v1/callbacks/{h.tenant}/chat", content=body, headers=headers)


async def pending(h: ApprovalHarness, wait_for: WaitFor) -> Any:
    await h.escalate(d := h.decided())
    return await h.request_for(d.action_id, wait_for)


async def test_the_secret_column_reveals_nothing_and_a_secret_the_login_writes_is_not_used(
    start_approval: StartApproval, http: httpx.AsyncClient, attacker: asyncpg.Connection, wait_for: WaitFor, tmp_path: Path
) -> None:
    (groups := tmp_path / "groups.yaml").write_text(GROUPS)
    h = await start_approval(groups_file=groups)
    secret, _ = await chat_endpoint(h, http, "http://127.0.0.1:9/chat")
    genuine = await attacker.fetchrow(f"SELECT {COLUMNS} FROM approval.webhook_endpoints WHERE tenant_id = $1", h.tenant)
    assert genuine["secret"] is None
    raw = secret.encode()
    assert not [c for c, v in genuine.items() if raw in (v if isinstance(v, bytes) else str(v).encode())]
    assert webhooks.secret_fingerprint(secret) not in str(dict(genuine))
    record = await pending(h, wait_for)

    mine = webhooks.new_secret()
    sealed_by_me = webhook_vault(h.kit.keys_dir).seal(mine, h.tenant, "chat")  # the public key is public: sealing needs no secret
    forgeries = {
        "a clear secret of its own (the old column)": ("secret = $2", mine),
        "its own secret sealed to the service's public key": ("secret_sealed = $2", sealed_by_me.ciphertext),
        "its sealed secret altered": ("secret_sealed = $2", b"\x00" + bytes(genuine["secret_sealed"])[1:]),
    }
    before = refused()
    for what, (change, value) in forgeries.items():
        await attacker.execute(f"UPDATE approval.webhook_endpoints SET {change} WHERE tenant_id = $1", h.tenant, value)
        answer = await callback(h, http, record, mine)
        assert (answer.status_code, answer.json()["detail"]["code"]) == (401, "bad_signature"), what
        await attacker.execute(
            "UPDATE approval.webhook_endpoints SET secret = NULL, secret_sealed = $2 WHERE tenant_id = $1",
            h.tenant,
            genuine["secret_sealed"],
        )
    assert refused() >= before + 2  # the rows whose sealed secret changed fail their signature: no endpoint, told
    assert (await h.repo.get(record.approval_id)).status == "pending"  # type: ignore[union-attr]

    answer = await callback(h, http, record, secret)  # the genuine chat tool, with the row put back: the proof decided
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "granted"


async def test_a_repointed_url_or_an_added_approver_makes_the_endpoint_refused(
    start_approval: StartApproval,
    http: httpx.AsyncClient,
    attacker: asyncpg.Connection,
    wait_for: WaitFor,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (groups := tmp_path / "groups.yaml").write_text(GROUPS)
    caplog.set_level(logging.WARNING, logger="servicekit.row_proofs")
    async with Receiver.listening(failures=1) as chat, Receiver.listening(failures=0) as listener:
        h = await start_approval(groups_file=groups, webhook_backoff_initial_s=0.3, webhook_max_attempts=50)
        await h.token(EVE, ["finance"])
        await chat_endpoint(h, http, chat.url)
        genuine = await attacker.fetchrow(f"SELECT {COLUMNS} FROM approval.webhook_endpoints WHERE tenant_id = $1", h.tenant)

        # A message queued and tried once (503), then the login re-points the endpoint before the retry.
        first = await pending(h, wait_for)
        await wait_for(lambda: chat.got, what="the first attempt to the chat tool")
        await attacker.execute("UPDATE approval.webhook_endpoints SET url = $2 WHERE tenant_id = $1", h.tenant, listener.url)

        async def failed() -> Any:
            (d,) = await h.repo.deliveries(first.approval_id)
            return d if d.status == "failed" else None

        delivery = await wait_for(failed, what="the retry failed, never sent")
        assert "refused" in (delivery.last_error or "")
        assert "POST /api/v1/webhooks/endpoints" in caplog.text  # the operator's line names the endpoint and the fix

        # Requests made while the row is re-pointed, or lists an approver the login added: no message is queued at all.
        for what, change, value in [("re-pointed", "url = $2", listener.url), ("approver added", "approvers = $2", [BOB, EVE])]:
            await attacker.execute(
                "UPDATE approval.webhook_endpoints SET url = $2, approvers = $3 WHERE tenant_id = $1",
                h.tenant,
                genuine["url"],
                genuine["approvers"],
            )
            await attacker.execute(f"UPDATE approval.webhook_endpoints SET {change} WHERE tenant_id = $1", h.tenant, value)
            before = refused()
            record = await pending(h, wait_for)
            await wait_for(lambda b=before: refused() > b, what=f"the {what} endpoint refused")  # type: ignore[misc]
            assert await h.repo.deliveries(record.approval_id) == [], what
            assert (await h.repo.endpoints_of(h.tenant))[0].unproven is not None, what  # what an admin's listing shows

        # Put back as the service signed it: messages flow again, bob's link to the chat tool only.
        await attacker.execute(
            "UPDATE approval.webhook_endpoints SET url = $2, approvers = $3 WHERE tenant_id = $1",
            h.tenant,
            genuine["url"],
            genuine["approvers"],
        )
        last = await pending(h, wait_for)
        await wait_for(lambda: [m for m in chat.messages() if m["data"]["approval_id"] == last.approval_id], what="delivered")
        (message,) = [m for m in chat.messages() if m["data"]["approval_id"] == last.approval_id]
        assert list(message["data"]["links"]) == [BOB]
        assert listener.got == []


async def test_register_enrol_and_callback_work_across_keys_rotate(
    start_approval: StartApproval, http: httpx.AsyncClient, wait_for: WaitFor, tmp_path: Path
) -> None:
    (groups := tmp_path / "groups.yaml").write_text(GROUPS)
    async with Receiver.listening(failures=0) as chat:
        h = await start_approval(groups_file=groups)
        secret, bob = await chat_endpoint(h, http, chat.url)
        rotate(h.kit.keys_dir, "approval")  # `tidegate keys rotate approval`: the row was signed by the key now retired
        record = await pending(h, wait_for)
        await wait_for(lambda: chat.got, what="the message, sent after the rotation")
        webhooks.verify(secret, *chat.got[0], now=time.time(), tolerance_s=300)
        assert list(chat.messages()[0]["data"]["links"]) == [BOB]
        answer = await callback(h, http, record, secret)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "granted"

        enrol = f"{h.url}/api/v1/webhooks/endpoints/chat/enrol"
        assert (await http.delete(enrol, headers=bearer(bob))).json()["approvers"] == []  # re-signed with the new key
        back = await http.post(
            enrol, json={"url": chat.url, "secret_fingerprint": webhooks.secret_fingerprint(secret)}, headers=bearer(bob)
        )
        assert back.json()["approvers"] == [BOB], back.text
        again = await callback(h, http, await pending(h, wait_for), secret)
        assert (again.status_code, again.json()["status"]) == (200, "granted")


async def test_an_endpoint_from_before_sealing_is_refused_until_an_admin_registers_it_again(
    start_approval: StartApproval, http: httpx.AsyncClient, attacker: asyncpg.Connection, wait_for: WaitFor, tmp_path: Path
) -> None:
    (groups := tmp_path / "groups.yaml").write_text(GROUPS)
    h = await start_approval(groups_file=groups)
    admin = await h.token("ops@acme.example", ["admin"])
    await h.token(BOB, ["finance"])
    old = webhooks.new_secret()
    await attacker.execute(  # as migration 011 leaves a row registered before it: no sealed secret, no signature
        "INSERT INTO approval.webhook_endpoints (endpoint_id, url, secret, tenant_id, approvers) VALUES ('chat', $1, NULL, $2, $3)",
        "http://127.0.0.1:9/chat", h.tenant, [BOB],
    )  # fmt: skip
    listed = (await http.get(f"{h.url}/api/v1/webhooks/endpoints", headers=bearer(admin))).json()
    assert [(e["endpoint_id"], e["refused"]) for e in listed] == [("chat", "unsigned")]
    record = await pending(h, wait_for)
    assert (await callback(h, http, record, old)).status_code == 401

    again = await http.post(
        f"{h.url}/api/v1/webhooks/endpoints",
        json={"endpoint_id": "chat", "url": "http://127.0.0.1:9/chat", "approvers": [], "secret": old},
        headers=bearer(admin),
    )
    assert (again.status_code, again.json()["refused"]) == (200, None)
    assert (await callback(h, http, record, old)).status_code == 403  # in force; bob must enrol it again to decide through it
    enrolled = await http.post(
        f"{h.url}/api/v1/webhooks/endpoints/chat/enrol",
        json={"url": "http://127.0.0.1:9/chat", "secret_fingerprint": webhooks.secret_fingerprint(old)},
        headers=bearer(await h.token(BOB, ["finance"])),
    )
    assert enrolled.status_code == 200, enrolled.text
    assert (await callback(h, http, record, old)).json()["status"] == "granted"
