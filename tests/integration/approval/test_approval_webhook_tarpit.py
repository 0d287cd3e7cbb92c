"""A tarpit beside a healthy chat tool, over real HTTP and PostgreSQL (approver probe 2, finding 1).

One receiver answers its headers and then trickles its body a byte at a time; one reads the message and never answers.
The healthy receiver beside them still gets every message, and each tarpit costs one bounded attempt per message.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from approval_harness import Receiver, StartApproval, service_seals

from servicekit import REPO_ROOT, KitSettings, create_pool
from servicekit.db import apply_migrations
from services.approval import webhooks
from services.approval.repository import Delivery, Endpoint, PgApprovalRepository


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """200 with a 100 kB body, sent one byte every half second (every read finishes well inside any read timeout)."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
    try:
        for _ in range(100_000):
            await writer.drain()
            writer.write(b"x")
            await asyncio.sleep(0.5)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the message and never answers."""
    await reader.readuntil(b"\r\n\r\n")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def _serving(handler: Any) -> AsyncIterator[str]:
    """`handler` on a free loopback port until the block ends; the connections it still holds are cut then."""
    held: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        held.add(task)
        try:
            await handler(reader, writer)
        finally:
            held.discard(task)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}/hook"
    finally:
        server.close()
        for task in list(held):
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        await server.wait_closed()


async def test_the_sender_bounds_an_attempt_and_never_reads_the_answer_body() -> None:
    sender = webhooks.HttpxSender(1.0, allowed_hosts=["127.0.0.1"])
    try:
        async with _serving(_trickle) as trickle, _serving(_hang) as hang:
            trickled = await asyncio.wait_for(sender.send(trickle, {}, b"{}"), 10)
            hung = await asyncio.wait_for(sender.send(hang, {}, b"{}"), 10)
    finally:
        await sender.close()
    assert (trickled.ok, trickled.status_code) == (True, 200)  # the headers say delivered; the body is not waited for
    assert (hung.ok, hung.status_code, hung.error) == (False, None, "timeout: no answer within 1 s")
    assert hung.duration_ms < 5000


async def test_a_healthy_receiver_gets_every_message_beside_two_tarpits(
    start_approval: StartApproval, wait_for: Any, tmp_path: Path
) -> None:
    tenant = f"acme-tarpit-{uuid.uuid4().hex[:8]}"
    async with Receiver.listening(failures=0) as healthy, _serving(_trickle) as trickle, _serving(_hang) as hang:
        endpoints = tmp_path / "webhooks.yaml"
        endpoints.write_text(
            "endpoints:\n"
            + "".join(
                f"  - endpoint_id: {name}\n    url: {url}\n    secret: {webhooks.new_secret()}\n    tenant_id: {tenant}\n"
                for name, url in (("hang", hang), ("trickle", trickle), ("chat", healthy.url))
            )
        )
        h = await start_approval(webhooks_file=endpoints, webhook_timeout_s=2.0)
        h.tenant = tenant
        requests = [h.decided() for _ in range(6)]
        for decided in requests:
            await h.escalate(decided)

        def all_six() -> bool:
            return len(healthy.got) >= 6

        # One after another, the hanging receiver alone would hold the healthy one's last message for 6 x 2 s.
        await wait_for(all_six, timeout=10.0, what="the healthy receiver's six messages")
        rows = await h.repo.deliveries(tenant_id=tenant)
        await wait_for(lambda: _attempted(h, tenant, "trickle"), what="the trickler's attempts")
        trickled = await h.repo.deliveries(tenant_id=tenant)
    assert sorted(m["data"]["action_id"] for m in healthy.messages()) == sorted(d.action_id for d in requests)
    hung = [d for d in rows if d.endpoint_id == "hang" and d.attempts]
    assert len(hung) < 4  # one attempt at a time, each cut at 2 s, beside the healthy receiver's six
    assert all(d.last_error == "timeout: no answer within 2 s" for d in hung)
    assert {d.status for d in trickled if d.endpoint_id == "trickle"} == {"delivered"}  # its 200 counts; its body is never read


async def _attempted(h: Any, tenant: str, endpoint_id: str) -> bool:
    rows = [d for d in await h.repo.deliveries(tenant_id=tenant) if d.endpoint_id == endpoint_id]
    return len(rows) == 6 and all(d.status == "delivered" for d in rows)


async def test_a_claim_takes_every_endpoint_before_a_backlog(infra: Any, kit: KitSettings) -> None:
    """PostgreSQL's claim: at most `per_endpoint` of each endpoint, every endpoint's first before anyone's second, in queued order."""
    schema = f"approval_claim_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, schema, REPO_ROOT / "services" / "approval" / "migrations")
        repo = PgApprovalRepository(pool, schema, seals=service_seals(kit))
        for name in ("tarpit", "chat"):
            await repo.upsert_endpoint(Endpoint(name, f"https://{name}.example/hook", webhooks.new_secret(), "acme"))
        due = datetime.now(UTC) - timedelta(minutes=1)
        backlog = [Delivery(f"msg_t{i}", "tarpit", "acme", f"ap-{i}", "approval.requested", "{}") for i in range(8)]
        await repo._write_side(pool, [], [*backlog, Delivery("msg_c0", "chat", "acme", "ap-9", "approval.requested", "{}")])
        for i, d in enumerate(backlog):
            when = due + timedelta(seconds=i)
            await pool.execute(f'UPDATE "{schema}".webhook_deliveries SET next_attempt_at = $2 WHERE delivery_id = $1', d.delivery_id, when)

        claimed = await repo.claim_due_deliveries(datetime.now(UTC), timedelta(seconds=30), limit=4, per_endpoint=3)
        again = await repo.claim_due_deliveries(datetime.now(UTC), timedelta(seconds=30), limit=4, per_endpoint=3)
        await repo.release_deliveries(["msg_t0"], datetime.now(UTC))
        released = await repo.claim_due_deliveries(datetime.now(UTC), timedelta(seconds=30), limit=5, per_endpoint=5)
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
    assert [d.delivery_id for d, _ in claimed if d.endpoint_id == "chat"] == ["msg_c0"]
    assert [d.delivery_id for d, _ in claimed if d.endpoint_id == "tarpit"] == ["msg_t0", "msg_t1", "msg_t2"]
    assert [d.delivery_id for d, _ in again] == ["msg_t3", "msg_t4", "msg_t5"]  # the first claim's are leased
    # Due again, and queued first: an endpoint's due messages go in the order they were queued (since release 27: a
    # chat back after an outage hears of a request before its decision), no longer in the order they fell due.
    assert [d.delivery_id for d, _ in released] == ["msg_t0", "msg_t6", "msg_t7"]


async def test_a_hanging_receiver_does_not_hold_the_next_message_of_another(
    start_approval: StartApproval, wait_for: Any, tmp_path: Path
) -> None:
    """A round used to wait for its slowest attempt: every endpoint's next message waited for the hanging one's timeout."""
    held = 0

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal held
        held += 1
        try:
            await _hang(reader, writer)
        finally:
            held -= 1

    tenant = f"acme-held-{uuid.uuid4().hex[:8]}"
    async with Receiver.listening(failures=0) as healthy, _serving(hang) as hung:
        endpoints = tmp_path / "webhooks.yaml"
        endpoints.write_text(
            "endpoints:\n"
            + "".join(
                f"  - endpoint_id: {name}\n    url: {url}\n    secret: {webhooks.new_secret()}\n    tenant_id: {tenant}\n"
                for name, url in (("hang", hung), ("chat", healthy.url))
            )
        )
        h = await start_approval(webhooks_file=endpoints, webhook_timeout_s=8.0)
        h.tenant = tenant
        await h.escalate(h.decided())
        await wait_for(lambda: len(healthy.got) >= 1 and held == 1, timeout=10.0, what="the first message, held by the hanging one")
        await h.escalate(h.decided())
        await wait_for(lambda: len(healthy.got) >= 2, timeout=10.0, what="the second message to the healthy receiver")
        assert held == 1, "the second message came only once the hanging receiver's 8 s attempt had ended"
