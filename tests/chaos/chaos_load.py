"""The chaos suite's load: an open-loop stream of tasks and outside proposals, and a scripted approver on the approval API.

The mix, in turn: the demo's tickets through the planner (a refund under the threshold that runs,
one over it that a human grants, one to a new payee that is denied, an account deletion that is
human-only, ordinary triage that writes notes and reply drafts) and an outside agent's proposals
(the warehouse's `update_inventory` served over Kafka, a read, a tool that fails once then works,
a tool that always times out). Refunds get an order of their own, so each one is a fresh refund.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from schemas import ActionProposed, ActionProposedData, Envelope, TaskSubmitted, encode, headers_for
from servicekit import AGENT, KitSettings, kafka_options, sign_as_client
from servicekit.intake import DATABASE_ERRORS
from systems.seed import TICKETS
from tidegate.demo.tickets import ticket_task

REQUESTER = "demo@acme.example"
APPROVER = "bob@acme.example"
TICKET = {t.ticket_id: t for t in TICKETS}

# (kind, what): `task` is a demo ticket through the planner, `propose` a tool an outside agent proposes.
MIX: tuple[tuple[str, str], ...] = (
    ("task", "T-1007"),
    ("propose", "update_inventory"),
    ("task", "T-1001"),
    ("propose", "chaos_flaky_note"),
    ("task", "T-1002"),
    ("propose", "lookup_order"),
    ("task", "T-1008"),
    ("task", "T-1003"),
    ("propose", "chaos_slow_lookup"),
    ("task", "T-1004"),
)
PROPOSED_ARGS: dict[str, dict[str, Any]] = {
    "update_inventory": {"sku": "HUB-USBC-7", "delta": 1, "reason": "chaos restock"},
    "chaos_flaky_note": {"ticket_id": "T-1007", "note": "chaos: a note through a flaky helpdesk"},
    "lookup_order": {"order_id": "O-5001"},
    "chaos_slow_lookup": {"order_id": "O-5001"},
}


@dataclass
class Submitted:
    """What the load sent: task ids through the planner, action ids of outside proposals (with their tool)."""

    tasks: dict[str, str] = field(default_factory=dict)  # task id -> ticket
    proposals: dict[str, str] = field(default_factory=dict)  # action id -> tool
    approved: set[str] = field(default_factory=set)  # approval ids the scripted approver granted
    send_errors: int = 0


class Load:
    """Open loop: one item every 1/rate seconds whatever the stack is doing (a send that fails is retried, never dropped)."""

    def __init__(self, kit: KitSettings, admin_dsn: str, run_id: str) -> None:
        self.kit = kit
        self.admin_dsn = admin_dsn
        self.run_id = run_id
        self.sent = Submitted()
        self._mix = itertools.cycle(MIX)
        self._n = 0
        self.producer = AIOKafkaProducer(
            bootstrap_servers=kit.kafka_bootstrap, acks="all", enable_idempotence=True, **kafka_options(kit, AGENT)
        )
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        await self.producer.start()
        self.pool = await asyncpg.create_pool(self.admin_dsn, min_size=1, max_size=2)

    async def stop(self) -> None:
        await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()

    async def run(self, rate: float, duration_s: float, stop: asyncio.Event | None = None) -> None:
        """Send at `rate` items/s for `duration_s` (open loop: the schedule does not wait for the stack)."""
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < duration_s and not (stop and stop.is_set()):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            await self.send_one()
            i += 1

    async def burst(self, n: int, *, partition: int | None = None) -> None:
        """`n` items at once (a backlog the consumers must drain), all on `partition` of their topic when given.

        One partition's lag is the case that matters: its consumer must drain it while the partitions
        beside it go on, and a stalled partition must show on the liveness check rather than hide in a total.
        """
        for _ in range(n):
            await self.send_one(partition=partition)

    async def send_one(self, *, partition: int | None = None) -> None:
        kind, what = next(self._mix)
        self._n += 1
        ident = f"chaos-{self.run_id}-{self._n}"
        if kind == "task":
            event: Envelope = TaskSubmitted.build(await self._task(ident, what), source="chaos/load")
            self.sent.tasks[event.data.task_id] = what
        else:
            data = ActionProposedData(
                action_id=f"{ident}-a",
                task_id=ident,
                tenant_id="acme",
                step=1,
                tool=what,
                args=PROPOSED_ARGS[what],
                rationale="chaos suite load",
                proposer="chaos-agent",
                requested_by=REQUESTER,
                mode="autonomous",
            )
            event = ActionProposed.build(data, source="external/chaos-agent")
            self.sent.proposals[data.action_id] = what
        await self._send("tasks" if kind == "task" else "actions.proposed", sign_as_client(self.kit, event), partition=partition)

    async def _task(self, task_id: str, ticket_id: str) -> Any:
        ticket = TICKET[ticket_id]
        order_id = None
        if ticket_id in ("T-1001", "T-1002") and ticket.order_id:
            order_id = f"{ticket.order_id}{self._n:06d}"
            await self._fresh_order(ticket.order_id, order_id)
        return ticket_task(ticket, task_id=task_id, order_id=order_id, requested_by=REQUESTER)

    async def _fresh_order(self, original: str, order_id: str) -> None:
        """A copy of `original` under `order_id` (retried through a PostgreSQL restart)."""
        assert self.pool is not None
        while True:
            try:
                await self.pool.execute(
                    "INSERT INTO payments.orders (tenant_id, order_id, customer_id, payee_id, description, amount_usd) "
                    "SELECT tenant_id, $3, customer_id, payee_id, description || ' (chaos)', amount_usd FROM payments.orders "
                    "WHERE tenant_id = $1 AND order_id = $2 ON CONFLICT DO NOTHING",
                    "acme",
                    original,
                    order_id,
                )
                return
            except (OSError, asyncpg.PostgresError, *DATABASE_ERRORS):  # a connection the restart broke, however asyncpg says so
                await self.pool.expire_connections()
                await asyncio.sleep(0.5)

    async def _send(self, topic: str, event: Envelope, *, partition: int | None = None) -> None:
        headers = [(k, v.encode()) for k, v in headers_for(event).items()]
        while True:  # a broker outage delays the load; nothing it meant to send is dropped
            try:
                await self.producer.send_and_wait(
                    self.kit.topic_prefix + topic, encode(event), key=event.key, headers=headers, partition=partition
                )
                return
            except Exception:  # any send failure: count it and try again
                self.sent.send_errors += 1
                await asyncio.sleep(0.5)


class Approver:
    """A human stand-in: every second, approves each pending request of tenant acme through the HTTP API, as the CLI does."""

    def __init__(self, url: str, token: str, sent: Submitted) -> None:
        self.client = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        self.sent = sent
        self.errors = 0
        # Pending requests this approver may not decide (a 4xx other than 409), by id: the code the API gave, and the task.
        # Asked again every round; one still here at the end is a task waiting for someone else (a draft-mode write
        # needs `support`), which the run reports rather than leaving a task open unexplained.
        self.refused: dict[str, str] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                pending = (await self.client.get("/api/v1/approvals", params={"status": "pending"})).raise_for_status().json()
                for settled in set(self.refused) - {item["approval_id"] for item in pending}:
                    del self.refused[settled]  # decided or expired otherwise: no longer waiting
                for item in pending:
                    if item["approval_id"] in self.sent.approved:
                        continue
                    done = await self.client.post(
                        f"/api/v1/approvals/{item['approval_id']}/approve",
                        json={"action_digest": item["action_digest"], "comment": "chaos approver"},
                    )
                    if done.status_code < 300 or done.status_code == 409:  # 409: settled meanwhile (another copy, a retry)
                        self.sent.approved.add(item["approval_id"])
                        self.refused.pop(item["approval_id"], None)
                    elif done.status_code < 500 and done.status_code != 429:
                        self.refused[item["approval_id"]] = f"{_code(done)} ({item.get('tool')}, task {item.get('task_id')})"
            except (httpx.HTTPError, ValueError, KeyError):  # the approval service may be down right now
                self.errors += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def close(self) -> None:
        await self.client.aclose()


def _code(answer: httpx.Response) -> str:
    """The API's error code (`{"detail": {"code", "message"}}`), else the status."""
    try:
        detail = answer.json().get("detail")
        return str(detail["code"]) if isinstance(detail, dict) and "code" in detail else str(answer.status_code)
    except (ValueError, AttributeError):
        return str(answer.status_code)


def approver_token(cli_output: str) -> str:
    """The token `tidegate approvals token create` printed (its last line)."""
    return cli_output.strip().splitlines()[-1].strip()


def new_run_id() -> str:
    return uuid.uuid4().hex[:6]
