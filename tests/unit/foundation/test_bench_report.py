"""The benchmark report's rendering, from fake figures (the measurement itself is never a test: nothing fails on time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import db_profile
from bench.broker_profile import summarise as broker_summarise
from bench.db_profile import Statement
from bench.profile import summarise
from bench.report import BENCHES, others_running, render, rows

MACHINE: dict[str, Any] = {
    "cores": 2,
    "memory_gib": 23.5,
    "cpu_model": "Test CPU",
    "load_average": [3.5, 2.0, 1.0],
    "python": "3.11.9",
    "started": "x",
}
FIGURES: dict[str, dict[str, Any]] = {
    "bare_hop": {"hop_p50_ms": 3.0, "hop_p99_ms": 9.0, "hop_burst_per_s": 8000.0, "hop_cpu_us_per_message": 80.0},
    "bare_hop_signed": {"signed_hop_burst_per_s": 4000.0, "signed_hop_cpu_us_per_message": 250.0},
    "bare_copy_signed": {"copy_events_per_s": 7500.0, "copy_us_per_event": 130.0},
    "kit_hop": {"hop_p50_ms": 6.0, "hop_burst_per_s": 2000.0, "hop_cpu_us_per_message": 400.0},
    "bare_copy": {"copy_events_per_s": 25000.0, "copy_us_per_event": 20.0},
    "policy": {"seq_p50_ms": 18.0, "burst_per_s": 800.0},
    "signing": {"sign_us": 100.0, "check_us": 200.0, "ed25519_sign_us": 60.0, "ed25519_verify_us": 130.0},
    "audit": {"ingest_events_per_s": 6000.0, "ingest_us_per_event": 140.0, "append_events_per_s": 10000.0, "append_us_per_event": 90.0},
    "e2e_burst": {
        "tasks": 400,
        "actions_per_s": 40.0,
        "cpu_ms_per_action": 25.0,
        "infra_cpu_ms_per_action_kafka": 5.0,
        "infra_cpu_ms_per_action_postgres": 10.0,
        "machine_cpu_ms_per_action": 40.0,
        "machine_ceiling_actions_per_s": 50.0,
        "db_cpu_ms_per_action_policy": 2.0,
        "db_cpu_ms_per_action_planner": 6.5,
    },
    "e2e": {
        "rate_tasks_per_s": 5.0,
        "actions_per_s": 21.0,
        "tasks_per_s": 5.0,
        "p50_ms": 60.0,
        "p99_ms": 240.0,
        "cpu_ms_per_action": 18.0,
        "light_rate_tasks_per_s": 2.0,
        "light_p50_ms": 45.0,
        "light_p99_ms": 200.0,
        "peak_rss_mib_policy": 94.0,
        "profiled_service": "policy",
    },
}


def by_figure(full: bool = False) -> dict[str, list[str]]:
    return {r.figure: [r.tidegate, r.bare, r.ratio, r.target, r.command] for r in rows(FIGURES, full)}


def test_each_figure_stands_beside_its_bare_limit_with_the_ratio() -> None:
    table = by_figure()
    light = next(v for k, v in table.items() if k.startswith("light load"))
    assert light[1].startswith("three bare hops: 9.0 ms")
    assert light[2] == "5.0×"  # 45 ms against a floor of 3 × 3 ms
    assert table["policy, one process, burst: decisions/s"][2] == "10 %"  # 800 of 8,000
    assert table["audit ingest from Kafka, synchronous commit"][2] == "24 %"  # 6,000 of 25,000
    assert table["policy, one at a time: published → decision consumed"][2] == "6.0×"
    assert table["service CPU per governed action (five services, /proc)"][0] == "18.0 ms"
    burst = next(v for k, v in table.items() if k.startswith("end to end, a burst of 400 tasks"))
    assert burst[0] == "40.0 actions/s; 25.0 ms of CPU per action"
    machine = next(v for k, v in table.items() if k.startswith("same burst, the whole machine"))
    # the broker and the database beside the services; the database's share by service, largest first; 2 cores / 40 ms
    assert machine[0] == "40.0 ms (services 25.0 ms, Kafka 5.0 ms, PostgreSQL 10.0 ms: planner 6.50, policy 2.00); at most 50 actions/s"
    kit = next(v for k, v in table.items() if k.startswith("one hop through the kit (") and k.endswith("CPU per event"))
    assert kit[:3] == ["400 µs (2,000 events/s in a burst)", "bare hop: 80 µs (8,000 messages/s)", "5.0×"]


def test_the_kit_policy_and_audit_also_stand_beside_bare_limits_that_check_signatures() -> None:
    table = by_figure()
    kit = next(v for k, v in table.items() if k.startswith("same, against the bare hop that trusts no topic"))
    assert kit[1:3] == ["signed bare hop: 250 µs (4,000 messages/s)", "1.6×"]  # 400 µs against 250
    assert kit[4].endswith("python -m bench.bare_hop --signed`")
    assert table["same, against the signed bare hop"][2] == "20 %"  # 800 of 4,000
    audit = next(v for k, v in table.items() if k.startswith("same, against a bare COPY that checks"))
    assert audit[1:3] == ["signed bare COPY: 7,500 events/s, 130 µs CPU/event", "80 %"]  # 6,000 of 7,500


def test_the_report_prices_the_signatures_of_a_governed_action() -> None:
    text = render(MACHINE, FIGURES, None, full=False, failed=[])
    # 3.9 signatures x 100 µs + 11.6 checks x 200 µs = 2.71 ms; Ed25519 alone 3.9 x 60 + 11.6 x 130 = 1.74 ms
    assert "**2.7 ms of CPU per action for the signatures alone, 1.7 ms of it the Ed25519 operations**" in text
    assert "of the 18.0 ms the whole path cost in this run" in text
    assert "the Ed25519 operations alone take 87% of that budget in this run" in text  # 1.74 of 2 ms
    assert "## What trusting no topic costs" not in render(MACHINE, {"bare_hop": FIGURES["bare_hop"]}, None, full=False, failed=[])


def test_the_report_sets_the_broker_and_the_database_beside_the_services() -> None:
    text = render(MACHINE, FIGURES, None, full=False, failed=[])
    # 25 + 5 + 10 = 40 ms an action: 2 cores allow 50 actions/s; 500 actions/s on 2 cores needs 4 ms, the infrastructure takes 15
    assert "beside the services' 25.0 ms: 40.0 ms, so at these costs this machine can govern at most ~50 actions/s" in text
    assert "were the services' own work cut to nothing, ~133." in text  # 2,000 / (5 + 10)
    assert "at or under 4 ms on 2 cores: the broker and the database alone take 375% of that" in text
    assert "(by the service whose backends spent it: planner 6.50, policy 2.00)" in text
    assert "## What the whole machine spends" not in render(MACHINE, {"bare_hop": FIGURES["bare_hop"]}, None, full=False, failed=[])


def test_the_steady_row_shows_its_worst_minute_and_the_command_make_bench_ran() -> None:
    steady = {"rate_tasks_per_s": 30.0, "tasks": 9000, "actions_per_s": 126.0, "p50_ms": 108.0, "p99_ms": 379.0}
    figures = FIGURES | {"e2e_steady": steady | {"worst_minute_p99_ms": 495.0}}
    row = next(r for r in rows(figures, False) if r.figure.startswith("same run, then open loop at 30 tasks/s for 300 s"))
    assert "p50 108 ms, p99 379 ms (the worst minute's p99 495 ms)" in row.tidegate
    args = next(a for name, _, a in BENCHES if name == "e2e_steady")
    assert row.command == f"`.venv/bin/python -m bench.e2e_bench {' '.join(args)}`"
    short = next(r for r in rows(FIGURES | {"e2e_steady": steady}, False) if r.figure.startswith("same run, then open loop at 30"))
    assert "p99 379 ms;" in short.tidegate  # a run of a minute or less has no minute to single out


def test_the_capacity_row_names_the_rate_the_ramp_held_and_every_step() -> None:
    ramp = {"ramp_steps": 3, "capacity_tasks_per_s": 14.0, "capacity_actions_per_s": 58.8}
    for k, (rate, p99, held) in enumerate([(10.0, 61.0, 1.0), (14.0, 190.0, 1.0), (18.0, 2400.0, 0.0)]):
        ramp |= {f"ramp_{k}_rate": rate, f"ramp_{k}_p99_ms": p99, f"ramp_{k}_held": held}

    def capacity_row(steady: dict[str, float]) -> str:
        figures = FIGURES | {"e2e_steady": steady}
        return next(r for r in rows(figures, False) if r.figure.startswith("end to end, the most this machine holds")).tidegate

    assert capacity_row(ramp) == (
        "14 tasks/s (58.8 actions/s); steps: 10 tasks/s p99 61 ms held, 14 tasks/s p99 190 ms held, 18 tasks/s p99 2400 ms not held"
    )
    first_lost = {k: v for k, v in ramp.items() if not k.startswith("capacity")} | {"ramp_0_held": 0.0}
    assert capacity_row(first_lost).startswith("no step held; steps: 10 tasks/s p99 61 ms not held")


def test_the_report_sets_a_steady_rates_cost_beside_the_burst_and_the_bare_hop_one_at_a_time() -> None:
    hop = FIGURES["bare_hop"] | {"hop_sequential_net_cpu_us_per_message": 1200.0}
    steady = {"rate_tasks_per_s": 25.0, "tasks": 7500, "cpu_ms_per_action": 9.7}
    text = render(MACHINE, FIGURES | {"bare_hop": hop, "e2e_steady": steady}, None, full=False, failed=[])
    assert "At 25 tasks/s the five services spent 9.7 ms of CPU per governed action, in the burst 25.0 ms." in text
    assert "1,200 µs of CPU a message one at a time (beyond its idle polling) against 80 µs in a burst, 15×" in text
    assert "## Why an action costs more" not in render(MACHINE, FIGURES, None, full=False, failed=[])  # no steady run


def test_each_row_names_the_command_that_reproduces_it_short_or_full() -> None:
    assert all("python -m bench." in command and "--full" not in command for *_, command in by_figure().values())
    assert all(command.count("--full") == command.count("python -m") for *_, command in by_figure(full=True).values())


def test_a_benchmark_that_failed_reads_not_measured_and_is_named() -> None:
    text = render(MACHINE, {"bare_hop": FIGURES["bare_hop"]}, None, full=False, failed=["e2e", "audit"])
    assert "not measured" in text
    assert "Not measured in this run (the benchmark failed; its output is above `make bench`'s): e2e, audit." in text
    assert "Not profiled in this run" in text


def test_the_report_states_the_machine_and_that_it_was_shared() -> None:
    text = render(MACHINE, FIGURES, None, full=False, failed=[])
    assert "2 cores (Test CPU), 23.5 GiB of memory" in text
    assert "load average at the start: 3.5 / 2.0 / 1.0" in text
    assert "shared with other work" in text
    quiet = render(MACHINE | {"load_average": [0.2, 0.1, 0.1]}, FIGURES, None, full=False, failed=[])
    assert "shared with other work" not in quiet


def fake_proc(root: Path, processes: dict[int, tuple[int, list[str]]]) -> Path:
    """A /proc of `pid: (parent, argv)`."""
    for pid, (parent, argv) in processes.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(f"{pid} (python (x)) S {parent} 1 1 0")
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    return root


def test_the_report_names_other_tidegate_processes_that_share_the_cores(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            10: (1, ["/usr/bin/make", "bench"]),
            11: (10, ["/repo/.venv/bin/python", "-m", "bench.report"]),  # this run
            12: (11, ["/repo/.venv/bin/python", "-m", "bench.kit_hop"]),  # this run's own benchmark
            20: (1, ["/repo/.venv/bin/python", "-m", "tidegate.cli", "service", "run", "policy"]),  # a stack left running
            21: (1, ["/repo/.venv/bin/python", "/repo/.venv/bin/tidegate", "up"]),
            22: (1, ["/repo/.venv/bin/python", "-m", "pytest", "tests/integration"]),  # a CI run beside
            23: (1, ["/repo/.venv/bin/python", "-m", "tidegate.cli", "approvals", "list"]),  # a quick command: not load
            24: (1, ["java", "-cp", "kafka.jar", "kafka.Kafka", "server.properties"]),  # the infrastructure measured
        },
    )
    found = others_running(proc, me=11)
    assert [f.split(":")[0] for f in found] == ["20", "21", "22"]
    text = render(MACHINE | {"others": found}, FIGURES, None, full=False, failed=[])
    assert "Other Tidegate processes ran beside this one at the start** (3:" in text
    assert "tidegate.cli service run policy" in text
    assert "Other Tidegate processes" not in render(MACHINE | {"others": []}, FIGURES, None, full=False, failed=[])


def test_the_profile_is_summarised_by_self_and_total_time() -> None:
    collapsed = "\n".join(
        [
            "main (app.py:1);run (asyncio/base_events.py:10);decide (/x/services/policy/engine.py:5) 6",
            "main (app.py:1);run (asyncio/base_events.py:10);encode (/v/site-packages/schemas/envelope.py:7) 3",
            "main (app.py:1);run (asyncio/base_events.py:10) 1",
        ]
    )
    hot = summarise(collapsed)
    assert hot["samples"] == 10
    assert hot["self"][0] == ("decide (/x/services/policy/engine.py)", 60.0)
    assert ("encode (schemas/envelope.py)", 30.0) in hot["self"]
    assert [frame for frame, _ in hot["total"]] == ["decide (/x/services/policy/engine.py)", "encode (schemas/envelope.py)"]


def test_the_event_loops_spine_is_not_what_time_is_spent_under() -> None:
    """A service under light load: the CLI and the loop are on every sample's stack; the work is below `Handle._run`."""
    spine = (
        "main (tidegate/cli.py:9);BaseEventLoop.run_forever (asyncio/base_events.py:1);BaseEventLoop._run_once (asyncio/base_events.py:2)"
    )
    collapsed = "\n".join(
        [
            f"{spine};Handle._run (asyncio/events.py:3);handle (/x/servicekit/bus.py:4);decide (/x/services/policy/engine.py:5) 5",
            f"{spine};Handle._run (asyncio/events.py:3);handle (/x/servicekit/bus.py:4);check (/x/servicekit/authority.py:6) 3",
            f"{spine};select (selectors.py:7) 2",
        ]
    )
    hot = summarise(collapsed)
    under = dict(hot["total"])
    assert under == {
        "handle (/x/servicekit/bus.py)": 80.0,
        "decide (/x/services/policy/engine.py)": 50.0,
        "check (/x/servicekit/authority.py)": 30.0,
        "select (selectors.py)": 20.0,
    }


def test_a_frame_that_only_passes_its_time_on_is_not_listed() -> None:
    """A middleware chain spends all its time in the next link: only where the work forks is worth a row."""
    chain = "Handle._run (asyncio/events.py:1);consume_scope (faststream/middleware.py:2);on_batch (/x/servicekit/consume.py:3)"
    collapsed = "\n".join(
        [
            f"{chain};decide (/x/services/policy/engine.py:5) 6",
            f"{chain};check (/x/servicekit/authority.py:6) 4",
            "BaseEventLoop._run_once (asyncio/base_events.py:7);select (selectors.py:8) 10",
        ]
    )
    under = dict(summarise(collapsed)["total"])
    assert under == {
        "on_batch (/x/servicekit/consume.py)": 50.0,
        "select (selectors.py)": 50.0,
        "decide (/x/services/policy/engine.py)": 30.0,
        "check (/x/servicekit/authority.py)": 20.0,
    }


def jfr_sample(thread: str, *frames: str) -> str:
    """One event as `jfr print --events jdk.ExecutionSample` prints it, innermost frame first."""
    stack = "\n".join(f"    {frame} line: {n}" for n, frame in enumerate(frames, 1))
    head = f'jdk.ExecutionSample {{\n  startTime = 03:17:34.324\n  sampledThread = "{thread}" (javaThreadId = 83)\n'
    return f'{head}  state = "STATE_RUNNABLE"\n  stackTrace = [\n{stack}\n  ]\n}}\n'


def test_the_brokers_samples_are_counted_in_the_first_part_on_their_stack() -> None:
    handler = "data-plane-kafka-request-handler-4"
    printed = "".join(
        [
            # a write that makes the broker try a held fetch again: the purgatory, though it is under a produce request
            jfr_sample(
                handler,
                "java.util.HashMap.getNode(Object)",
                "kafka.server.DelayedFetch.tryComplete()",
                "kafka.server.ReplicaManager.appendRecords(long, short, boolean)",
                "kafka.server.KafkaApis.handleProduceRequest(RequestChannel$Request, RequestLocal)",
                "kafka.server.KafkaApis.handle(RequestChannel$Request, RequestLocal)",
            ),
            jfr_sample(
                handler,
                "org.apache.kafka.metadata.authorizer.StandardAuthorizerData.findAclRule(Set, String, Action)",
                "kafka.server.AuthHelper.filterByAuthorized(RequestContext, AclOperation)",
                "kafka.server.KafkaApis.handleFetchRequest(RequestChannel$Request)",
                "kafka.server.KafkaApis.handle(RequestChannel$Request, RequestLocal)",
            ),
            jfr_sample(
                "data-plane-kafka-network-thread-1-BROKER-SASL_PLAINTEXT-0",
                "java.nio.channels.spi.AbstractSelector.begin()",
                "kafka.network.Processor.poll()",
            ),
            jfr_sample("kafka-1-raft-io-thread", "org.apache.kafka.raft.KafkaRaftClient.poll()"),
            "jdk.ExecutionSample {\n  stackTrace = [\n  ]\n}\n",  # nothing sampled: not counted
        ]
    )
    found = broker_summarise(printed)
    assert found["samples"] == 4
    assert dict(found["parts"]) == {
        "trying the fetches held in purgatory again (after each write, and as each fetch comes)": 25.0,
        "checking each request against the ACLs (the authorizer)": 25.0,
        "network threads: reading requests, writing responses": 25.0,
        "the controller, metadata, log cleaning and the JVM's own threads": 25.0,
    }
    assert dict(found["requests"]) == {"produce": 25.0, "fetch": 25.0}


def test_the_report_shows_what_the_brokers_cpu_went_to_in_the_profiled_run() -> None:
    steady = {
        "rate_tasks_per_s": 14.0,
        "infra_cpu_ms_per_action_kafka": 5.5,
        "broker_profile": {
            "samples": 2000,
            "parts": [["checking each request against the ACLs (the authorizer)", 14.0], ["reading records for fetches", 9.5]],
            "requests": [["fetch", 33.0], ["produce", 18.0]],
        },
    }
    text = render(MACHINE, FIGURES | {"e2e": FIGURES["e2e"] | steady}, None, full=False, failed=[])
    assert "## What the broker's CPU goes to" in text
    assert "At 14 tasks/s the broker spent 5.5 ms of CPU per governed action." in text
    assert "2,000 samples" in text
    assert "| 14 % | checking each request against the ACLs (the authorizer) |" in text
    assert "By request: fetch requests 33 %, produce requests 18 %." in text
    assert "--profile-broker broker.jfr" in text
    assert "What the broker's CPU goes to" not in render(MACHINE, FIGURES, None, full=False, failed=[])


def test_a_phase_costs_what_its_statements_did_between_two_readings_per_action() -> None:
    upsert = "WITH t AS (INSERT INTO planner.tasks (task_id) VALUES ($1) RETURNING 1), o AS (INSERT INTO planner.outbox SELECT 1) SELECT 1"
    reads = "SELECT ARRAY(SELECT key FROM policy.decisions WHERE key = ANY($1)), ARRAY(SELECT 1 FROM policy.spend s JOIN unnest($2) w)"
    copy = 'COPY "audit"."log"("topic") FROM STDIN'
    before = {
        ("tidegate_planner", 1, True): Statement("tidegate_planner", upsert, 100, 1, 50.0, 0.5, 100_000),
        ("tidegate_policy", 2, True): Statement("tidegate_policy", reads, 40, 40, 10.0, 12.0, 0),
        ("tidegate_executor", 3, True): Statement("tidegate_executor", "SELECT pg_advisory_unlock_all()", 7, 0, 1.0, 0.0, 0),
    }
    after = {
        ("tidegate_planner", 1, True): Statement("tidegate_planner", upsert, 300, 2, 250.0, 1.5, 2_148_000),
        ("tidegate_policy", 2, True): Statement("tidegate_policy", reads, 140, 139, 60.0, 70.0, 0),
        ("tidegate_executor", 3, True): Statement("tidegate_executor", "SELECT pg_advisory_unlock_all()", 7, 0, 1.0, 0.0, 0),  # not run
        ("tidegate_audit_writer", 4, True): Statement("tidegate_audit_writer", copy, 10, 0, 30.0, 0.0, 1_024_000),  # new since
    }
    found = db_profile.summarise(before, after, 100)
    # largest first by time executing and planning; a statement that did not run in the phase is left out
    assert [(r["service"], r["what"]) for r in found["statements"]] == [
        ("planner", "inserts into planner.tasks, planner.outbox"),
        ("policy", "reads policy.decisions, policy.spend"),
        ("audit", "copies rows into audit.log"),  # the audit's writer role is the audit's
    ]
    planner, policy, audit = found["statements"]
    assert [planner[k] for k in ("calls", "exec_ms", "plan_ms", "planned", "wal_kb")] == [2.0, 2.0, 0.01, 0.005, 20.0]
    assert (policy["planned"], policy["plan_ms"]) == (0.99, 0.58)  # a statement planned at nearly every call
    assert (audit["calls"], audit["exec_ms"]) == (0.1, 0.3)
    assert found["calls"] == 3.1
    assert found["by_service"] == {"planner": 2.01, "policy": 1.08, "audit": 0.3}
    assert db_profile.summarise(before, before, 100) == {}  # nothing ran: nothing to say


def test_a_statement_is_told_by_the_tables_it_writes_else_those_it_reads() -> None:
    assert db_profile.what("UPDATE executor.actions SET status = $2 WHERE action_id = $1") == "updates executor.actions"
    upsert = "INSERT INTO policy.spend AS s (k) SELECT k FROM policy.reserved ON CONFLICT (k) DO UPDATE SET amount = s.amount + 1"
    assert db_profile.what(upsert) == "inserts into policy.spend"  # an upsert's update is of the table it inserts into
    ending = "WITH o AS (INSERT INTO policy.call_outcomes VALUES ($1)), r AS (UPDATE policy.reservations SET s = $2) SELECT 1"
    assert db_profile.what(ending) == "inserts into policy.call_outcomes; updates policy.reservations"
    assert db_profile.what("DELETE FROM planner.outbox USING (SELECT 1) AS x WHERE id = ANY($1)") == "deletes from planner.outbox"
    assert db_profile.what("SELECT state FROM planner.tasks WHERE task_id = $1") == "reads planner.tasks"
    assert db_profile.what("SELECT   pg_advisory_xact_lock(hashtext($2 || $1))") == "SELECT pg_advisory_xact_lock(hashtext($2 || $1))"
    roles = ("tidegate_policy", "tidegate", "tidegate_audit_writer")
    assert [db_profile.service(role) for role in roles] == ["policy", "operator", "audit"]


def test_the_report_shows_what_postgresqls_time_went_to_in_the_hold() -> None:
    hold = {
        "rate_tasks_per_s": 26.0,
        "infra_cpu_ms_per_action_postgres": 4.0,
        "db_statements": {
            "actions": 1000,
            "calls": 9.5,
            "exec_ms": 2.5,
            "plan_ms": 0.5,
            "wal_kb": 35.0,
            "by_service": {"policy": 1.5, "planner": 1.0},
            "statements": [
                {"service": "policy", "what": "reads policy.decisions", "calls": 0.5, "exec_ms": 0.2, "plan_ms": 0.25, "planned": 1.0,
                 "wal_kb": 0.0},
            ],
        },
    }  # fmt: skip
    text = render(MACHINE, FIGURES | {"e2e_steady": hold}, None, full=False, failed=[])
    assert "## What PostgreSQL's time goes to" in text
    assert "At 26 tasks/s PostgreSQL spent 4.0 ms of CPU per governed action (/proc)." in text
    assert "counted 9.5 statements an action over the same phase, 2.50 ms executing them and 0.50 ms planning them" in text
    assert "(they sum to 75% of the database's CPU;" in text
    assert "By service, executing and planning, ms an action: policy 1.50, planner 1.00." in text
    assert "| 0.45 (0.20 + 0.25) | 0.50 | 100% | 0.0 KB | policy | reads policy.decisions |" in text
    assert "--ramp 10,14,18,22,26,30" in text
    assert "What PostgreSQL's time goes to" not in render(MACHINE, FIGURES, None, full=False, failed=[])  # nor a pointer to it
