"""Replay and what-if speed over 100,000 recorded events (prints figures; never fails on time).

Writes N recorded events (half `action.proposed`, half the matching `action.decided`) under a bench
prefix with a batch producer, then measures:
- reading the window back (offsets by timestamp, every event validated and its signature verified);
- what-if: every proposal decided again with a candidate pack (the policy service's pure decision);
- replay: the proposals re-published into a sandbox prefix, decided by the real policy service, the
  allowed calls answered by the sandbox executor (here: unanswerable, nothing was executed).

Usage: python -m bench.replay_bench [--full] [--events N] [--no-replay]   (short: 20,000 events; --full: 100,000)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer

from bench.clients import drop_bench_prefix, emit_figures, kafka_options
from schemas import ActionDecided, ActionProposed
from servicekit import (
    REPO_ROOT,
    KitSettings,
    SigningKey,
    action_digest,
    catalog_topic_names,
    deployment_authority,
    ensure_topics,
    service_key,
)
from servicekit.authority import signed_bytes
from tidegate.ops.recorded import read_window
from tidegate.ops.replay import ReplayOptions, run_replay
from tidegate.ops.whatif import evaluate, load_pack

TENANT = "acme"


def _signed(document: dict[str, Any], key: SigningKey) -> bytes:
    """`document` signed by `key`, as its producer signs it (the operator tools skip what the deployment's keys refuse)."""
    document["keyid"] = key.key_id
    document["signature"] = key.sign(signed_bytes(document))
    return json.dumps(document).encode()


def event_pair(i: int, now: str, planner: SigningKey, policy: SigningKey) -> tuple[bytes, bytes, bytes]:
    """One signed proposal and its recorded decision, as raw JSON (fast to generate); one task in five is acme's, the rest globex's."""
    task = f"bench-task-{i // 5}"
    tenant = TENANT if (i // 5) % 5 == 0 else "globex"
    action = f"{task}:{i % 5 + 1}"
    if i % 5 == 3:
        tool, args = "issue_refund", {"payee_id": "cus_1001", "amount_usd": float(20 + (i * 37) % 900), "order_id": "O-5001", "reason": "b"}
        outcome, code = ("allow", "within_threshold") if args["amount_usd"] < 500 else ("escalate", "needs_human_approval")
    else:
        tool, args = "tag_ticket", {"ticket_id": f"T-{i}", "tags": ["billing"]}
        outcome, code = "allow", "low_risk_write_allowed"
    common = {
        "specversion": "1.0",
        "source": "bench",
        "subject": task,
        "time": now,
        "datacontenttype": "application/json",
        "tenantid": tenant,
    }
    proposed = {
        **common, "id": str(uuid.uuid4()), "type": "tidegate.action.proposed",
        "data": {"action_id": action, "task_id": task, "tenant_id": tenant, "step": i % 5 + 1, "tool": tool, "args": args,
                 "proposer": "tidegate/planner/playbook", "mode": "autonomous"},
    }  # fmt: skip
    decided = {
        **common, "id": str(uuid.uuid4()), "type": "tidegate.action.decided", "source": "tidegate/policy",
        "data": {"action_id": action, "task_id": task, "tenant_id": tenant, "step": i % 5 + 1, "tool": tool, "args": args,
                 "action_digest": action_digest(tenant, tool, args), "outcome": outcome,
                 "reasons": [{"code": code, "policy_id": "bench"}], "policy_version": "sha256:bench", "latency_ms": 0.1,
                 "facts": {"payee": args.get("payee_id"), "payee_is_new": False, "spend_task_usd": 0, "spend_tenant_usd": 0}},
    }  # fmt: skip
    return task.encode(), _signed(proposed, planner), _signed(decided, policy)


async def produce(kit: KitSettings, events: int) -> float:
    """Write `events` recorded events; returns events/s of the batch producer."""
    producer = AIOKafkaProducer(linger_ms=20, max_batch_size=512 * 1024, acks=1, **kafka_options(kit))
    await producer.start()
    started = time.perf_counter()
    try:
        now = datetime.now(UTC).isoformat()
        planner, policy = service_key(kit, "planner"), service_key(kit, "policy")
        pending = []
        for i in range(events // 2):
            key, proposed, decided = event_pair(i, now, planner, policy)
            pending.append(await producer.send(f"{kit.topic_prefix}actions.proposed", proposed, key=key))
            pending.append(await producer.send(f"{kit.topic_prefix}actions.decided", decided, key=key))
            if len(pending) >= 20000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return events / (time.perf_counter() - started)


def candidate_pack(tmp: Path) -> Path:
    """The default pack with acme's refund threshold lowered to 100 USD (flips many recorded refunds)."""
    target = tmp / "candidate"
    shutil.copytree(REPO_ROOT / "policies" / "default", target)
    settings = yaml.safe_load((target / "settings.yaml").read_text())
    settings["tenants"][TENANT]["refund_threshold_usd"] = 100
    settings["tenants"][TENANT]["budget_usd"] = None
    (target / "settings.yaml").write_text(yaml.safe_dump(settings))
    return target


async def main(events: int, replay: bool) -> None:
    figures: dict[str, float] = {"events": events}
    tmp = Path(tempfile.mkdtemp(prefix="tidegate-bench-"))
    (tmp / "keys").mkdir()  # a service refuses a keys folder that is not there (a mistyped TIDEGATE_KEYS_DIR)
    kit = KitSettings(topic_prefix=f"bench-ops-{uuid.uuid4().hex[:8]}.", keys_dir=tmp / "keys")
    await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names())
    try:
        start = datetime.now(UTC) - timedelta(seconds=1)
        rate = await produce(kit, events)
        end = datetime.now(UTC) + timedelta(seconds=1)
        print(f"recorded events written:   {events:>8,}  ({rate:,.0f} events/s, batch producer)")

        t0 = time.perf_counter()
        opts_kafka = {k: v for k, v in kafka_options(kit).items() if k != "bootstrap_servers"}  # logged in, as the operator tools are
        window = await read_window(
            kit.kafka_bootstrap,
            kit.topic_prefix,
            start,
            end,
            authority=deployment_authority(kit, history=True),
            topics=("actions.proposed", "actions.decided"),
            client_options=opts_kafka,
        )
        read_s = time.perf_counter() - t0
        n = len(window.events)
        figures["read_events_per_s"] = n / read_s
        print(f"read + verify window:      {n:>8,}  events in {read_s:6.2f} s = {n / read_s:>9,.0f} events/s")

        pack = load_pack(candidate_pack(tmp), kit.tools_dir)
        proposals = [e.data for e in window.of(ActionProposed)]
        decisions = [e.data for e in window.of(ActionDecided)]
        live = load_pack(kit.policy_dir, kit.tools_dir)  # the baseline, as `tidegate whatif` decides it: two decisions a proposal
        report = evaluate(pack, proposals, decisions, live=live)
        total = read_s + report.seconds
        figures |= {"whatif_per_s": report.evaluated / report.seconds, "whatif_end_to_end_events_per_s": len(window.events) / total}
        print(
            f"what-if decide:            {report.evaluated:>8,}  proposals in {report.seconds:6.2f} s = "
            f"{report.evaluated / report.seconds:>9,.0f} proposals/s ({len(report.flips):,} flips)"
        )
        print(
            f"what-if end to end:        {len(window.events):>8,}  events in {total:6.2f} s = {len(window.events) / total:>9,.0f} events/s"
        )

        if replay:
            # The replay re-runs one tenant's traffic (a fifth) out of the whole window it reads.
            opts = ReplayOptions(start, end, tenant=TENANT, timeout_s=150.0, idle_s=15.0)
            t0 = time.perf_counter()
            done = await run_replay(kit, opts)
            replay_s = time.perf_counter() - t0
            decided = sum(1 for t in done.tasks for a in t.now.actions if a["decision"])
            figures["replay_events_per_s"] = n / replay_s
            print(
                f"replay --tenant {TENANT}:       {n:>8,}  events read ({done.recorded_events:,} {TENANT}'s) in {replay_s:6.2f} s = "
                f"{n / replay_s:>9,.0f} events/s; {decided:,} of {done.inputs:,} proposals decided again in the sandbox "
                f"({decided / (replay_s - done.read_seconds):,.0f}/s after a {done.read_seconds:.2f} s read), "
                f"{done.unanswerable:,} calls unanswerable"
            )
    finally:
        await drop_bench_prefix(kit)
        shutil.rmtree(tmp, ignore_errors=True)
    emit_figures("replay", figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="100,000 events instead of 20,000.")
    parser.add_argument("--events", type=int, default=None, help="Events to record (overrides --full).")
    parser.add_argument("--no-replay", action="store_true", help="Measure reading and what-if only.")
    args = parser.parse_args()
    asyncio.run(main(args.events or (100_000 if args.full else 20_000), not args.no_replay))
