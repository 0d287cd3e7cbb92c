"""Run the chaos suite: its own stack, a steady open-loop load, one fault at a time, then the checks, printed as counts.

    python tests/chaos/chaos_run.py                       # the full run on one broker (what `make test-chaos` runs first)
    python tests/chaos/chaos_run.py --brokers 3           # the full run on a three-node cluster (kills one node of three)
    python tests/chaos/chaos_run.py --faults kill:executor,postgres --rate 2 --gap 30   # any selection, 30 s apart

Faults (each at a random moment, one at a time, the load never pausing):
  kill:<copy>    SIGKILL one service copy (policy, policy.2, executor, executor.2, planner, approval, audit);
                 the supervisor restarts it and the group rebalances
  broker         one node: SIGKILL the broker and start it again; three nodes: SIGKILL node 2, bring it back 20 s later
  postgres       `pg_ctl restart -m fast` (every connection of every service is cut)
  pause:<copy>   SIGSTOP a copy past its consumer session timeout (10 s), then SIGCONT: its partitions move, it comes back fenced
  lag            a burst of 60 items at once on one partition, on top of the steady load (its consumer must drain the backlog)
Exit status 0 when every check held.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chaos_checks import Report, check, read_topics, wait_for_no_lag
from chaos_explain import explain_open, render_explained
from chaos_load import APPROVER, Approver, Load, approver_token, new_run_id
from chaos_stack import COPIES, ChaosStack

SESSION_TIMEOUT_S = 10.0  # aiokafka's default session.timeout.ms, which the services keep (docs/operations.md)
FULL = (
    *(f"kill:{c}" for c in COPIES),
    "broker",
    "postgres",
    "pause:executor.2",
    "pause:policy",
    "lag",
)
SHORT = ("kill:executor", "postgres")


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def inject(stack: ChaosStack, load: Load, fault: str) -> None:
    """One fault, and (for the ones that take something away) giving it back."""
    kind, _, target = fault.partition(":")
    if kind == "kill":
        log(f"SIGKILL {target} (pid {stack.signal_service(target, signal.SIGKILL)})")
    elif kind == "pause":
        pid = stack.signal_service(target, signal.SIGSTOP)
        log(f"SIGSTOP {target} (pid {pid}) for {SESSION_TIMEOUT_S + 5:.0f}s")
        await asyncio.sleep(SESSION_TIMEOUT_S + 5)
        stack.signal_service(target, signal.SIGCONT)
        log(f"SIGCONT {target}")
    elif kind == "broker":
        node = 2 if stack.brokers >= 3 else 1
        await stack.kill_broker(node)
        log(f"SIGKILL Kafka node {node} of {stack.brokers}")
        if stack.brokers >= 3:
            await asyncio.sleep(20)  # the cluster carries on with two nodes (min.insync.replicas 2)
        t = time.monotonic()
        await stack.start_brokers()
        log(f"Kafka node {node} back in {time.monotonic() - t:.0f}s")
    elif kind == "postgres":
        t = time.monotonic()
        await stack.restart_postgres()
        log(f"PostgreSQL restarted (fast) in {time.monotonic() - t:.1f}s")
    elif kind == "lag":
        await load.burst(60, partition=0)
        log("burst of 60 items sent, all on partition 0 of `tasks` and `actions.proposed`")
    else:
        raise ValueError(f"unknown fault {fault!r}")


async def wait_until(probe: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await probe():
            return True
        await asyncio.sleep(3)
    log(f"gave up waiting for {what} after {timeout_s:.0f}s")
    return False


async def run(
    brokers: int,
    faults: tuple[str, ...],
    rate: float,
    gap_s: float,
    settle_s: float,
    seed: int,
    keep: bool,
    root: Path | None = None,
    alongside: Callable[[ChaosStack], Awaitable[dict[str, Any]]] | None = None,
) -> Report:
    """The whole run: stack up, load with faults, settle, check, stack down.

    `alongside`, if given, runs beside the load from its start (an attacker, a probe); what it returns joins the counts.
    A task left open is explained from the live stack before it goes down (`chaos_explain`: the planner's rows, every
    record naming it, each group's committed offsets), and a run whose checks failed keeps its scratch directory (the
    services' logs, Kafka's and PostgreSQL's data) whatever `keep` says; the report says where.
    """
    rng = random.Random(seed)
    stack = ChaosStack(root or Path(tempfile.mkdtemp(prefix="tidegate-chaos-")), brokers=brokers)
    started = time.monotonic()
    failed = True  # until the checks held: an error on the way keeps the directory too
    log(f"stack in {stack.root} (brokers {brokers}, Kafka {stack.bootstrap}, PostgreSQL {stack.pg_port}); seed {seed}")
    try:
        await stack.up()
        log(f"stack up in {time.monotonic() - started:.0f}s: {', '.join(sorted(stack.service_pids()))}")
        token = approver_token(
            stack.cli("approvals", "token", "create", "--approver", APPROVER, "--tenant", "acme", "--groups", "finance").stdout
        )
        load = Load(stack.kit, stack.admin_dsn, new_run_id())
        await load.start()
        approver = Approver(f"http://127.0.0.1:{stack.approval_port}", token, load.sent)
        stop = asyncio.Event()
        approving = asyncio.create_task(approver.run(stop))
        duration = gap_s * (len(faults) + 1)
        log(f"load: {rate:g} items/s open loop for {duration:.0f}s; faults in turn: {', '.join(faults)}")
        loading = asyncio.create_task(load.run(rate, duration))
        beside = asyncio.create_task(alongside(stack)) if alongside is not None else None
        for fault in faults:
            await asyncio.sleep(gap_s * rng.uniform(0.5, 1.0))
            await inject(stack, load, fault)
        await loading
        seen = await beside if beside is not None else {}
        log(
            f"load done: {len(load.sent.tasks)} tasks, {len(load.sent.proposals)} outside proposals ({load.sent.send_errors} sends retried)"
        )

        async def all_closed() -> bool:
            outcomes = (await read_topics(stack.kit, ("tasks.outcomes",)))["tasks.outcomes"]
            closed = {e.data.task_id for _, e in outcomes if e is not None}
            return set(load.sent.tasks) <= closed

        await wait_until(all_closed, settle_s, "every task to close")
        await wait_for_no_lag(stack.kit, 120)
        stop.set()
        await approving
        await approver.close()
        await load.stop()
        verify = await asyncio.to_thread(stack.cli, "audit", "verify", "--complete", check=False)
        report = await check(stack.kit, stack.admin_dsn, stack.inventory_db, load.sent, (verify.returncode, verify.stdout + verify.stderr))
        restarts = (stack.run_dir / "logs" / "supervisor.log").read_text(errors="replace").count("restarting in")
        report.counts = (
            {
                "brokers": brokers,
                "faults": ", ".join(faults),
                "load": f"{rate:g} items/s for {duration:.0f}s",
                "service restarts by the supervisor": restarts,
                "approver API errors (service down)": approver.errors,
                "pending requests the approver may not decide": approver.refused,
            }
            | seen
            | report.counts
        )
        report.counts["wall time"] = f"{time.monotonic() - started:.0f}s"
        if report.open_tasks:
            report.explained = render_explained(await explain_open(stack.kit, stack.admin_dsn, report.open_tasks[:5]))
        failed = bool(report.failures)
        if failed or keep:
            report.kept = str(stack.root)
        return report
    finally:
        if failed:
            log(f"kept {stack.root} (a check failed or the run stopped): the services' logs are in run/logs")
        await stack.down(keep=keep or failed)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--brokers", type=int, choices=(1, 3), default=1, help="Kafka nodes of the suite's own cluster.")
    parser.add_argument("--faults", default="full", help="`full`, `short`, or a comma-separated list (see below).")
    parser.add_argument("--rate", type=float, default=2.0, help="Items (tasks and outside proposals) per second, open loop.")
    parser.add_argument("--gap", type=float, default=25.0, help="Seconds between faults (the load runs one gap longer than the faults).")
    parser.add_argument("--settle", type=float, default=420.0, help="Seconds to wait, after the load, for every task to close.")
    parser.add_argument("--seed", type=int, default=None, help="Random seed of the fault moments (printed).")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch directory (logs, data) afterwards.")
    args = parser.parse_args()
    faults = FULL if args.faults == "full" else SHORT if args.faults == "short" else tuple(args.faults.split(","))
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    report = asyncio.run(run(args.brokers, faults, args.rate, args.gap, args.settle, seed, args.keep))
    print(f"\nchaos suite ({' '.join(sys.argv[1:]) or 'defaults'}):\n{report.render()}", flush=True)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
