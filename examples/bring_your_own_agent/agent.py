"""Bring your own agent: govern any agent's tool calls with Tidegate, using only a Kafka client.

This script is an outside agent (think LangGraph, the OpenAI Agents SDK, or anything else). It
imports nothing from Tidegate: it writes CloudEvents JSON by hand with `aiokafka`, registers its
task (planner `external:byoa`, so Tidegate's own planner leaves it alone), proposes actions on
`actions.proposed`, then reads `actions.decided` and `actions.results` for its action ids.

Every event it publishes is signed with its client key (Ed25519; CloudEvents extensions `keyid`
and `signature` over the canonical JSON of the whole event): an operator registers the key for
the tenant and the requester once, `tidegate clients add acme byoa@acme.example`, which prints the
private key's path. Tidegate refuses unsigned events, and events whose `requested_by` is not the key's principal.

    python examples/bring_your_own_agent/agent.py --bootstrap 127.0.0.1:19092 --prefix tidegate. \
        --key .tidegate/client-keys/acme/byoa@acme.example.key

It logs in as the `agent` principal (`--properties`, the client file `infra up` made), which may write
`tasks` and `actions.proposed` and read the answers, nothing else (docs/security/bus.md).

Exit code 0 when every action got a decision (and every allowed one a result) before the timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

AGENT = "external:byoa"
DEFAULT_PROPERTIES = Path(__file__).resolve().parents[2] / ".infra" / "kafka" / "credentials" / "agent.properties"
REQUESTER = "byoa@acme.example"


class ClientKey:
    """The client's registered Ed25519 key; its id is `<principal>-<first 12 hex of SHA-256 of the raw public key>`."""

    def __init__(self, path: Path, principal: str) -> None:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise SystemExit(f"{path} is not an Ed25519 private key")
        self.private = loaded
        raw = loaded.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = f"{principal}-{hashlib.sha256(raw).hexdigest()[:12]}"

    def sign(self, event: dict[str, Any]) -> dict[str, Any]:
        """`event` with `keyid` and `signature` (base64url, no padding) over its canonical JSON without `signature`."""
        unsigned = {**event, "keyid": self.key_id}
        canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        return {**unsigned, "signature": base64.urlsafe_b64encode(self.private.sign(canonical)).rstrip(b"=").decode()}


def cloudevent(event_type: str, task_id: str, tenant: str, data: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvents 1.0 envelope in structured JSON mode, as Tidegate's contract wants it."""
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "urn:example:byoa-agent",
        "type": f"tidegate.{event_type}",
        "subject": task_id,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "tenantid": tenant,
        # W3C trace context: the agent's own trace continues through Tidegate's services.
        "traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        "data": data,
    }


def plan(task_id: str, tenant: str) -> list[dict[str, Any]]:
    """What this toy agent wants to do: a low-risk write, a refund to a new payee, and a big refund."""
    calls = [
        ("tag_ticket", {"ticket_id": "T-1007", "tags": ["byoa", "login"]}, [], "triage the password ticket"),
        ("issue_refund", {"payee_id": "acct_unknown_42", "amount_usd": 25.0, "order_id": "O-5007"}, ["payee_id"], "customer asked for it"),
        ("issue_refund", {"payee_id": "cus_1002", "amount_usd": 899.0, "order_id": "O-5002"}, [], "stands arrived bent"),
    ]
    return [
        {
            # Unguessable: another tenant's agent reads our decisions and could otherwise propose our next id first.
            "action_id": f"{task_id}:{i}.{secrets.token_hex(8)}",
            "task_id": task_id,
            "tenant_id": tenant,
            "step": i,
            "tool": tool,
            "args": args,
            "rationale": why,
            "proposer": AGENT,
            "tainted_args": tainted,
            "cost": {"model": "my-own-model", "tokens_in": 420, "tokens_out": 31, "usd": 0.0003},
            "mode": "autonomous",
            "requested_by": REQUESTER,
        }
        for i, (tool, args, tainted, why) in enumerate(calls, start=1)
    ]


async def run(
    bootstrap: str, prefix: str, tenant: str, timeout_s: float, key: ClientKey, login: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Register the task, propose the actions, collect decisions and results."""
    task_id = f"byoa-{uuid.uuid4().hex[:10]}"
    actions = plan(task_id, tenant)
    wanted = {a["action_id"] for a in actions}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **(login or {}))
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **(login or {}))
    await producer.start()
    report: dict[str, Any] = {"task_id": task_id, "actions": {a["action_id"]: {"tool": a["tool"]} for a in actions}}
    try:
        # Position at the end of the answer topics first, so no answer can be missed.
        topics = [prefix + "actions.decided", prefix + "actions.results"]
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, end)

        headers = [("content-type", b"application/cloudevents+json")]
        task = {
            "task_id": task_id,
            "tenant_id": tenant,
            "workflow": "support_triage",
            "input": {"ticket_id": "T-1007", "note": "planned by an outside agent"},
            "requested_by": REQUESTER,
            "mode": "autonomous",
            "planner": AGENT,
        }
        await producer.send_and_wait(
            prefix + "tasks",
            json.dumps(key.sign(cloudevent("task.submitted", task_id, tenant, task))).encode(),
            key=task_id.encode(),
            headers=headers,
        )
        for action in actions:
            event = key.sign(cloudevent("action.proposed", task_id, tenant, action))
            tp_headers = [*headers, ("traceparent", event["traceparent"].encode())]
            await producer.send_and_wait(prefix + "actions.proposed", json.dumps(event).encode(), key=task_id.encode(), headers=tp_headers)

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not _done(report):
            batches = await consumer.getmany(timeout_ms=250)
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    data = event.get("data") or {}
                    if data.get("action_id") not in wanted:
                        continue
                    entry = report["actions"][data["action_id"]]
                    if event["type"] == "tidegate.action.decided" and data.get("via", "policy") == "policy":
                        entry["decision"] = data["outcome"]
                        entry["reasons"] = [r["code"] for r in data["reasons"]]
                    elif event["type"].startswith("tidegate.action."):
                        entry["result"] = data["status"]
        report["complete"] = _done(report)
        return report
    finally:
        await producer.stop()
        await consumer.stop()


def _done(report: dict[str, Any]) -> bool:
    entries = report["actions"].values()
    return all("decision" in e and (e["decision"] != "allow" or "result" in e) for e in entries)


def kafka_login(properties: Path | None) -> dict[str, Any]:
    """aiokafka options from a Java client properties file (security.protocol, sasl.mechanism, sasl.jaas.config)."""
    if properties is None or not properties.is_file():
        return {}
    props = dict(line.split("=", 1) for line in properties.read_text().splitlines() if "=" in line and not line.lstrip().startswith("#"))
    jaas = props.get("sasl.jaas.config", "")
    user, password = (re.search(rf'{k}="([^"]*)"', jaas) for k in ("username", "password"))
    return {
        "security_protocol": props.get("security.protocol", "PLAINTEXT"),
        "sasl_mechanism": props.get("sasl.mechanism", "PLAIN"),
        "sasl_plain_username": user.group(1) if user else None,
        "sasl_plain_password": password.group(1) if password else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--prefix", default="tidegate.")
    parser.add_argument("--properties", type=Path, default=DEFAULT_PROPERTIES, help="Kafka client properties file (login)")
    parser.add_argument("--tenant", default="acme")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    parser.add_argument("--key", type=Path, required=True, help="PEM file of the client's private key (`tidegate clients add` prints it).")
    args = parser.parse_args()
    report = asyncio.run(
        run(args.bootstrap, args.prefix, args.tenant, args.timeout, ClientKey(args.key, REQUESTER), kafka_login(args.properties))
    )
    if args.json:
        print(json.dumps(report))
    else:
        print(f"task {report['task_id']}")
        for action_id, entry in report["actions"].items():
            reasons = ", ".join(entry.get("reasons", []))
            print(f"  {action_id} {entry['tool']}: {entry.get('decision', 'no decision')} ({reasons}) → {entry.get('result', '-')}")
    sys.exit(0 if report["complete"] else 1)


if __name__ == "__main__":
    main()
