"""Client benchmark: latency of a governed call through the Python client and through the MCP gateway.

Starts the policy and executor services in process (a database and topic prefix of their own, dropped
at the end) with one governed tool served by the client; prints p50/p95 of sequential calls and the
throughput of concurrent ones. Prints figures only.

    .venv/bin/python bench/client_bench.py [--calls 200] [--concurrent 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import mcp
import yaml

from bench.clients import drop_bench_prefix
from servicekit import REPO_ROOT, KitSettings, ToolCatalog, catalog_topic_names, ensure_topics
from servicekit.dbroles import with_database
from services.executor import build as build_executor
from services.policy import build as build_policy
from tidegate.client import ClientSettings, MemoryLedger, Tidegate, governed
from tidegate.database import local_superuser_url
from tidegate.mcp_gateway import GatewaySettings, build_server

TOOL = {
    "name": "bench_echo",
    "description": "Echo (a governed function of the benchmark's process).",
    "risk": "write_low",
    "kind": "topic",
    "tenants": ["acme"],  # the benchmark's client proposes for acme
    "accepts_idempotency_key": True,
    "args_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def main(calls: int, concurrent: int, admin_url: str) -> None:
    run_id = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="tidegate-client-bench-"))
    tools = tmp / "tools"
    shutil.copytree(REPO_ROOT / "catalog" / "tools", tools)
    (tools / "bench_echo.yaml").write_text(yaml.safe_dump(TOOL))
    base = KitSettings()
    dbname = f"tidegate_bench_{run_id}"
    (tmp / "keys").mkdir(exist_ok=True)  # a service refuses a keys folder that is not there
    kit = KitSettings(
        database_url=with_database(base.database_url, dbname),
        topic_prefix=f"bench-{run_id}.",
        keys_dir=tmp / "keys",
        tools_dir=tools,
    )
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"CREATE DATABASE {dbname} OWNER tidegate")
    await admin.close()
    services = [build_policy(kit), build_executor(kit=kit)]
    try:
        await ensure_topics(kit.kafka_bootstrap, kit.topic_prefix, catalog_topic_names(["bench_echo"]))
        for svc in services:
            await svc.start()
        settings = ClientSettings(
            kafka_bootstrap=kit.kafka_bootstrap, topic_prefix=kit.topic_prefix, state_dir=tmp / "state", service_keys_dir=kit.keys_dir
        )
        async with Tidegate(settings) as client:
            echo = governed("bench_echo", client=client, ledger=MemoryLedger())(lambda n: n)
            await echo(n=-1)  # warm-up: consumers joined, partitions assigned
            latencies = []
            for i in range(calls):
                t = time.perf_counter()
                assert await echo(n=i) == i
                latencies.append((time.perf_counter() - t) * 1000)
            print(f"governed call via the client, sequential x{calls}: p50 {pct(latencies, 0.5):.1f} ms, p95 {pct(latencies, 0.95):.1f} ms")
            for label, task in (("one task", lambda i: None), ("a task each", lambda i: f"bench-task-{i}")):
                t = time.perf_counter()
                outcomes = await asyncio.gather(
                    *(client.propose("bench_echo", {"n": i}, task=task(i), timeout_s=120) for i in range(concurrent))
                )
                elapsed = time.perf_counter() - t
                assert all(o.ok for o in outcomes)
                # A task's actions share a Kafka key, so policy and executor take them one after another.
                print(
                    f"governed calls via the client, {concurrent} concurrent, {label}: {elapsed:.2f} s ({concurrent / elapsed:.0f} calls/s)"
                )

            server = build_server(client, ToolCatalog.load(tools).tools.values(), GatewaySettings(tools=["bench_echo"]))
            async with mcp.Client(server) as agent:
                mcp_latencies = []
                for i in range(calls):
                    t = time.perf_counter()
                    result = await agent.call_tool("bench_echo", {"n": i})
                    assert not result.is_error
                    mcp_latencies.append((time.perf_counter() - t) * 1000)
            p50, p95 = pct(mcp_latencies, 0.5), pct(mcp_latencies, 0.95)
            print(f"governed call via the MCP gateway, sequential x{calls}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
            print(f"(mean client {statistics.mean(latencies):.1f} ms, gateway {statistics.mean(mcp_latencies):.1f} ms)")
    finally:
        for svc in reversed(services):
            with contextlib.suppress(Exception):
                await svc.stop()
        await drop_bench_prefix(kit)
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(admin_url)
            await admin.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--admin-url", default=None, help="a superuser's DSN (default: the local cluster's superuser, over its socket)")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.concurrent, args.admin_url or local_superuser_url(KitSettings())))
