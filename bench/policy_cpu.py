"""The policy's CPU per decision in process, through its real handler path: the figure to A/B a cut by on a shared machine.

Prints figures; never asserts. No Kafka, no PostgreSQL: the service is built by its wiring point (`services.policy.build`)
over the in-memory repository, with a producer that connects nowhere, and its polled batches are handed to the kit's
batch path (`servicekit.consume`) as aiokafka would hand them: bounds, contract and each producer's signature checked,
the task's request learned, the proposals decided (Cedar), their records built, signed and queued on the producer.
What is timed is this process's CPU (`time.process_time`), not the wall clock: other work on the machine moves it less.
The in-memory repository stands in for PostgreSQL, so the database's share (asyncpg, the statements) is not in it.

    .venv/bin/python -m bench.policy_cpu                    # 5 rounds of 2,000 proposals (500 tasks of 4), medians
    .venv/bin/python -m bench.policy_cpu --profile out.prof  # and cProfile one more round into out.prof

For an A/B on a loaded machine count instructions instead: with `--callgrind` the process switches callgrind's
instrumentation on for one round's batches only (its tasks learned and its proposals decided, once they are made), and
prints the command that reads the count. The key files' looks (every 0.1 s for the keys that check, every 1 s for the
signing key) are left out of that round (set to an hour): they are time-based, so a slower process would count more.

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=cg.out .venv/bin/python -m bench.policy_cpu --callgrind
    callgrind_annotate cg.out | head -30   # "PROGRAM TOTALS" / decisions measured: instructions a decision
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from schemas import ActionProposed, ActionProposedData, Envelope, TaskSubmitted, TaskSubmittedData, encode, headers_for
from servicekit import REPO_ROOT, KitSettings, Producer, sign_as_producer
from servicekit.consume import _handle_batch
from servicekit.runner import tune_gc
from services.policy import InMemoryPolicyRepository, PolicyDeps, PolicyHandlers, build

PREFIX = "bench."
BATCH = 500  # the policy's `max_records`: a burst's polled batch


class NowhereProducer(Producer):
    """A producer that connects nowhere: each record is delivered at once (kept only as a count)."""

    def __init__(self) -> None:
        super().__init__("unused:1", "policy")
        self.sent: dict[str, int] = {}

    async def send(self, topic: str, value: bytes, *, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self.sent[topic] = self.sent.get(topic, 0) + 1


def _record(topic: str, offset: int, event: Envelope) -> ConsumerRecord[Any, Any]:
    value = encode(event)
    headers = [(k, v.encode()) for k, v in headers_for(event).items()]
    return ConsumerRecord(PREFIX + topic, 0, offset, int(time.time() * 1000), 0, event.key, value, None, 0, len(value), headers)


def callgrind(on: bool) -> None:
    """Switch callgrind's instrumentation of this process on or off (a no-op outside valgrind)."""
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=False, capture_output=True)


def workload(kit: KitSettings, tasks: int, per_task: int) -> tuple[list[ConsumerRecord[Any, Any]], list[ConsumerRecord[Any, Any]]]:
    """`tasks` signed task requests (a support ticket each) and `per_task` signed refund proposals of each, as records."""
    run = uuid.uuid4().hex[:6]
    task_records, proposal_records = [], []
    for t in range(tasks):
        task_id = f"bench-{run}-{t}"
        data = TaskSubmittedData(
            task_id=task_id,
            tenant_id="acme",
            workflow="support_triage",
            input={
                "ticket_id": f"T-{t}",
                "customer_id": "cus_1001",
                "subject": f"Refund for order O-{t}",
                "body": f"Hello, my order O-{t} arrived damaged. Please refund the 40 USD I paid. Thanks, customer {t}",
            },
            requested_by="bench",
            mode="autonomous",
        )
        task_records.append(_record("tasks", t, sign_as_producer(kit, TaskSubmitted.build(data, source="bench"))))
        for s in range(per_task):
            proposal = ActionProposedData(
                action_id=f"{task_id}-{s}",
                task_id=task_id,
                tenant_id="acme",
                step=s,
                tool="issue_refund",
                # known payees, small amounts: every refund is allowed, within the tenant's and each payee's daily bounds
                args={"payee_id": f"cus_100{1 + t % 5}", "amount_usd": round(0.1 + 0.01 * s, 2), "order_id": f"O-{t}"},
                proposer="bench",
                mode="autonomous",
            )
            event = sign_as_producer(kit, ActionProposed.build(proposal, source="tidegate/planner"))
            proposal_records.append(_record("actions.proposed", len(proposal_records), event))
    return task_records, proposal_records


async def one_round(
    keys: Path, tasks: int, per_task: int, profiler: cProfile.Profile | None = None, *, instrument: bool = False
) -> dict[str, float]:
    """Build a fresh service, learn the tasks and decide their proposals a polled batch at a time: CPU µs per decision."""
    kit = KitSettings(topic_prefix=PREFIX, keys_dir=keys, policy_dir=REPO_ROOT / "policies" / "default")
    process = build(kit, deps=PolicyDeps(repo=InMemoryPolicyRepository()))
    bus, service = process.bus, process.policy
    bus.producer = NowhereProducer()
    service.ready = None  # `control` is read up to its end before the first decision; there is no `control` here
    if instrument:  # the key files' looks are time-based, not per event: a process slowed by callgrind would count more of them
        if bus.authority is not None:
            bus.authority.recheck_s = 3600.0
        service.signer._recheck_s = 3600.0
    handlers = PolicyHandlers(service)
    task_records, proposal_records = workload(kit, tasks, per_task)

    async def batches(topic: str, records: Sequence[ConsumerRecord[Any, Any]], batch: Any, one: Any) -> float:
        started = time.process_time()
        if instrument:
            callgrind(True)
        if profiler is not None:
            profiler.enable()
        for i in range(0, len(records), BATCH):
            async with bus.acknowledged_at_end():
                await _handle_batch(bus, topic, records[i : i + BATCH], batch, one)
        if profiler is not None:
            profiler.disable()
        if instrument:
            callgrind(False)
        return time.process_time() - started

    learn_s = await batches("tasks", task_records, handlers.task_batch, handlers.task)
    decide_s = await batches("actions.proposed", proposal_records, handlers.proposed_batch, handlers.proposed)
    decided = len(proposal_records)
    sent = bus.producer.sent if isinstance(bus.producer, NowhereProducer) else {}
    assert sent == {PREFIX + "actions.decided": decided, PREFIX + "actions.authorized": decided}, sent  # each allowed, none dead-lettered
    return {"learn_us_per_task": learn_s * 1e6 / tasks, "decide_us_per_decision": decide_s * 1e6 / decided,
            "us_per_decision": (learn_s + decide_s) * 1e6 / decided}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="Rounds, each on a fresh service (medians are printed).")
    parser.add_argument("--tasks", type=int, default=500, help="Tasks a round.")
    parser.add_argument("--per-task", type=int, default=4, help="Proposals a task.")
    parser.add_argument("--profile", type=Path, help="cProfile one more round into this file.")
    parser.add_argument("--callgrind", action="store_true", help="Under valgrind: instrument one round's batches only.")
    opts = parser.parse_args()
    tune_gc()  # as a running service does
    import logging

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as keys:
        await one_round(Path(keys), 50, opts.per_task)  # warm up: imports, keys made, Cedar's first calls
        if opts.callgrind:
            await one_round(Path(keys), opts.tasks, opts.per_task, instrument=True)
            decisions = opts.tasks * opts.per_task
            print(f"decisions measured under callgrind: {decisions} (instructions a decision: PROGRAM TOTALS / {decisions})")
            return
        rounds = [await one_round(Path(keys), opts.tasks, opts.per_task) for _ in range(opts.rounds)]
        for name in rounds[0]:
            values = [r[name] for r in rounds]
            print(f"  {name:<24} median {statistics.median(values):8.1f}   ({' / '.join(f'{v:.1f}' for v in values)})")
        if opts.profile is not None:
            profiler = cProfile.Profile(time.process_time)
            await one_round(Path(keys), opts.tasks, opts.per_task, profiler)
            profiler.dump_stats(str(opts.profile))
            print(f"  profile of one more round: {opts.profile}")


if __name__ == "__main__":
    asyncio.run(main())
