"""The bare limit of one Python Kafka hop: aiokafka consume → JSON parse → produce (acks=all, idempotent) → commit.

With `--signed`, the bare limit of a hop that trusts no topic: the same hop, plus one Ed25519 check of each
message it consumes and one Ed25519 signature of each it produces (libsodium through PyNaCl, what the kit uses,
over the raw bytes: no canonical JSON, no key folder, no envelope). Every Tidegate consumer has to do at least this
much since every event is signed (docs/security/signatures.md), so it is the floor a kit hop is fairly compared with.

Prints figures; never asserts. The hop runs in a process of its own (one core at most, like a service),
whose CPU time per message is read from /proc over the burst;
this process drives it: light load (one message at a time, published → its hop's output consumed, the way
`policy_bench.py` times one decision) and a burst (messages encoded beforehand, all sent at once).
Its topics are deleted at the end.

    .venv/bin/python -m bench.bare_hop            # short: 200 one at a time, a burst of 20,000
    .venv/bin/python -m bench.bare_hop --full     # 1,000 one at a time, a burst of 100,000
    .venv/bin/python -m bench.bare_hop --partitions 1   # what a consumer pays per partition it holds
    .venv/bin/python -m bench.bare_hop --signed   # the same, each message checked and each output signed
    .venv/bin/python -m bench.bare_hop --client librdkafka   # the same hop on librdkafka (confluent-kafka), the C client

The services use aiokafka, the bare limit issue #12 names; the librdkafka hop (confluent-kafka, a dev dependency) is
the floor of a Python hop on the C client, kept beside it because a port of the kit's consumers to it was measured
and not kept (docs/benchmarks.md, "Tried and not kept").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from nacl.signing import SigningKey

from bench.clients import emit_figures, kafka_options
from schemas import ActionProposed, ActionProposedData, encode
from servicekit import KitSettings

PARTITIONS = 6
IDLE_S = 3.0  # seconds the hop is left without messages, to measure what it spends idle
SEED_VARIABLE = "TIDEGATE_BENCH_HOP_SEED"  # a signed hop's key, made for the run (hex seed): the driver signs, the hop checks


def payload(i: int, run: str) -> tuple[bytes, bytes]:
    """(key, value) of a message shaped like a real proposal (the same JSON a policy hop parses)."""
    data = ActionProposedData(
        action_id=f"bare-{run}-{i}",
        task_id=f"bare-{run}-{i}",  # the Kafka key a kit hop publishes with (the envelope's subject): one per message
        tenant_id="acme",
        step=i % 20,
        tool="issue_refund",
        args={"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": f"O-{i}"},
        rationale="customer asked for a refund of a duplicate charge",
        proposer="bench",
    )
    return data.action_id.encode(), encode(ActionProposed.build(data, source="bench"))


async def hop(source: str, sink: str, group: str, partitions_n: int = PARTITIONS) -> None:
    """The hop itself: every record parsed, re-encoded and produced, offsets committed once the batch is acknowledged.

    With a key in `SEED_VARIABLE` each record is a signed message (signature and bytes, libsodium's combined form):
    its signature is checked before it is parsed, and what the hop produces is signed the same way.
    """
    kit = KitSettings()
    seed = os.environ.get(SEED_VARIABLE)
    key = SigningKey(bytes.fromhex(seed)) if seed else None
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **kafka_options(kit))
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=1, **kafka_options(kit))
    await consumer.start()
    await producer.start()
    try:
        partitions = [TopicPartition(source, p) for p in range(partitions_n)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        print("ready", flush=True)
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=500)
            sends = []
            for records in batch.values():
                for record in records:
                    value: bytes = record.value  # type: ignore[assignment]
                    event = json.loads(key.verify_key.verify(value) if key is not None else value)
                    event["type"] = "tidegate.action.decided"
                    out = json.dumps(event).encode()
                    sends.append(await producer.send(sink, bytes(key.sign(out)) if key is not None else out, key=record.key))
            if sends:
                await asyncio.gather(*sends)
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def hop_librdkafka(source: str, sink: str, group: str, partitions_n: int = PARTITIONS) -> None:
    """The same hop on librdkafka: poll (waiting for the first record), take what else is fetched, produce, flush, commit."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka import TopicPartition as RdTopicPartition

    options = kafka_options(KitSettings())
    login = {"bootstrap.servers": options["bootstrap_servers"]}
    if "sasl_plain_username" in options:
        login |= {
            "security.protocol": options["security_protocol"],
            "sasl.mechanisms": options["sasl_mechanism"],
            "sasl.username": options["sasl_plain_username"],
            "sasl.password": options["sasl_plain_password"],
        }
    seed = os.environ.get(SEED_VARIABLE)
    key = SigningKey(bytes.fromhex(seed)) if seed else None
    consumer = Consumer(login | {"group.id": group, "enable.auto.commit": False})
    producer = Producer(login | {"acks": "all", "enable.idempotence": True, "linger.ms": 1})
    consumer.assign([RdTopicPartition(source, p, 0) for p in range(partitions_n)])
    print("ready", flush=True)
    while True:
        first = consumer.poll(1.0)
        if first is None:
            continue
        for record in [first, *consumer.consume(499, 0)]:
            if record.error() is not None:
                continue
            value: bytes = record.value()
            event = json.loads(key.verify_key.verify(value) if key is not None else value)
            event["type"] = "tidegate.action.decided"
            out = json.dumps(event).encode()
            producer.produce(sink, bytes(key.sign(out)) if key is not None else out, key=record.key())
        producer.flush()
        consumer.commit(asynchronous=False)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(
    sequential: int,
    burst: int,
    hop_module: str = "bench.bare_hop",
    sign: Callable[[bytes], bytes] | None = None,
    env: dict[str, str] | None = None,
    hop_args: Sequence[str] = (),
    partitions: int = PARTITIONS,
) -> dict[str, Any]:
    """Time the hop `hop_module --hop SOURCE SINK GROUP` runs (with `env` added to its environment);
    `sign` turns each message into what that hop accepts."""
    kit = KitSettings()
    run = uuid.uuid4().hex[:8]
    prefix = f"bench-hop-{run}."
    source, sink = prefix + "actions.proposed", prefix + "actions.decided"
    admin = AIOKafkaAdminClient(**kafka_options(kit))
    await admin.start()
    await admin.create_topics([NewTopic(t, partitions, 1) for t in (source, sink, prefix + "deadletter")])
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", hop_module, "--hop", source, sink, f"bench-hop-{run}", *hop_args, stdout=asyncio.subprocess.PIPE,
        env=os.environ | (env or {}),
    )  # fmt: skip
    message = (lambda i, r: (lambda kv: (kv[0], sign(kv[1])))(payload(i, r))) if sign is not None else payload
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=1, max_batch_size=256 * 1024, **kafka_options(kit))
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **kafka_options(kit))
    seen: dict[bytes, float] = {}
    arrived = asyncio.Event()

    async def collect() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=100, max_records=5000)).values():
                now = time.perf_counter()
                for record in records:
                    seen[record.key] = now  # type: ignore[index]
                arrived.set()

    async def wait_for(keys: set[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not keys <= seen.keys():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(keys - seen.keys())} messages never came out of the hop")
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 1)

    await producer.start()
    await consumer.start()
    collector = asyncio.create_task(collect())
    try:
        assert child.stdout is not None
        await asyncio.wait_for(child.stdout.readline(), 120)
        sink_partitions = [TopicPartition(sink, p) for p in range(partitions)]
        consumer.assign(sink_partitions)
        await consumer.seek_to_beginning(*sink_partitions)
        warm = [message(i, run + "w") for i in range(50)]
        await asyncio.gather(*[await producer.send(source, value, key=key) for key, value in warm])
        await wait_for({key for key, _ in warm}, 60)

        idle_cpu0, idle_t0 = cpu_seconds(child.pid), time.perf_counter()
        await asyncio.sleep(IDLE_S)  # nothing to read: what the hop spends polling
        idle_ms_per_s = 1000 * (cpu_seconds(child.pid) - idle_cpu0) / (time.perf_counter() - idle_t0)

        latencies = []
        sequential_cpu0, sequential_t0 = cpu_seconds(child.pid), time.perf_counter()
        for i in range(sequential):
            key, value = message(i, run + "s")
            t0 = time.perf_counter()
            await (await producer.send(source, value, key=key))
            await wait_for({key}, 30)
            latencies.append((seen[key] - t0) * 1000)
        sequential_cpu = cpu_seconds(child.pid) - sequential_cpu0
        sequential_wall = time.perf_counter() - sequential_t0

        messages = [message(i, run + "b") for i in range(burst)]  # encoded (and signed) before the clock starts
        cpu0 = cpu_seconds(child.pid)
        t0 = time.perf_counter()
        futures = [await producer.send(source, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
        await wait_for({key for key, _ in messages}, 300)
        elapsed = max(seen[key] for key, _ in messages) - t0
        cpu = cpu_seconds(child.pid) - cpu0
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        child.terminate()
        await child.wait()
        await consumer.stop()
        await producer.stop()
        with contextlib.suppress(Exception):
            await admin.delete_topics([source, sink, prefix + "deadletter"])
        await admin.close()
    ordered = sorted(latencies)
    return {
        "hop_p50_ms": statistics.median(latencies),
        "hop_p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "hop_sequential_n": sequential,
        "hop_burst_per_s": burst / elapsed,
        "hop_burst_n": burst,
        "hop_cpu_us_per_message": 1e6 * cpu / burst,
        # each message its own poll, fetch, commit and produce request (a service at a low, steady rate), with and
        # without what the hop spends idle over the same time
        "hop_sequential_cpu_us_per_message": 1e6 * sequential_cpu / sequential,
        "hop_sequential_net_cpu_us_per_message": 1e6 * (sequential_cpu - idle_ms_per_s / 1000 * sequential_wall) / sequential,
        "hop_idle_cpu_ms_per_s": idle_ms_per_s,
        "message_bytes": len(messages[0][1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000 one at a time and a burst of 100,000.")
    parser.add_argument("--signed", action="store_true", help="Check each consumed message's Ed25519 signature and sign each produced one.")
    parser.add_argument("--client", choices=("aiokafka", "librdkafka"), default="aiokafka", help="The Kafka client of the hop.")
    parser.add_argument(
        "--partitions",
        type=int,
        default=PARTITIONS,
        help="Partitions of the hop's topics, all held by its one consumer (default 6, the catalog's): each fetch names every "
        "one, so one at a time the hop's CPU a message grows with them (docs/operations.md, 'Partitions').",
    )
    parser.add_argument("--hop", nargs=3, metavar=("SOURCE", "SINK", "GROUP"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.partitions < 1:
        parser.error("--partitions must be at least 1")
    if opts.hop:
        with contextlib.suppress(KeyboardInterrupt):
            if opts.client == "librdkafka":
                hop_librdkafka(*opts.hop, opts.partitions)
            else:
                asyncio.run(hop(*opts.hop, opts.partitions))
        return
    hop_args = ("--client", opts.client, "--partitions", str(opts.partitions))
    sequential, burst = (1000, 100_000) if opts.full else (200, 20_000)
    if opts.signed:
        key = SigningKey.generate()
        signed = asyncio.run(
            drive(
                sequential,
                burst,
                sign=lambda value: bytes(key.sign(value)),
                env={SEED_VARIABLE: bytes(key).hex()},
                hop_args=hop_args,
                partitions=opts.partitions,
            )
        )
        figures = {name.replace("hop_", "signed_hop_", 1): value for name, value in signed.items()}
    else:
        figures = asyncio.run(drive(sequential, burst, hop_args=hop_args, partitions=opts.partitions))
    hop_ = "signed_hop_" if opts.signed else "hop_"
    print(
        f"one bare {opts.client} hop{' (each message checked, each output signed: Ed25519, libsodium)' if opts.signed else ''} "
        f"({figures['message_bytes']} bytes a message, {opts.partitions} partitions), one process:\n"
        f"  one at a time: p50 {figures[hop_ + 'p50_ms']:.2f} ms, p99 {figures[hop_ + 'p99_ms']:.2f} ms "
        f"(n={figures[hop_ + 'sequential_n']}); three hops ≈ {3 * figures[hop_ + 'p50_ms']:.1f} ms; "
        f"{figures[hop_ + 'sequential_cpu_us_per_message']:.0f} µs of the hop's CPU a message "
        f"({figures[hop_ + 'sequential_net_cpu_us_per_message']:.0f} µs beyond its idle {figures[hop_ + 'idle_cpu_ms_per_s']:.1f} ms/s)\n"
        f"  burst of {figures[hop_ + 'burst_n']}: {figures[hop_ + 'burst_per_s']:,.0f} messages/s, "
        f"{figures[hop_ + 'cpu_us_per_message']:.0f} µs of the hop's CPU a message"
    )
    name = "bare_hop" + ("_librdkafka" if opts.client == "librdkafka" else "") + ("_signed" if opts.signed else "")
    emit_figures(name, figures)


if __name__ == "__main__":
    main()
