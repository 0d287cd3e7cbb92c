"""An outside tool service: the warehouse's `update_inventory`, served over Kafka with a plain client.

It talks to Kafka with a plain client, to show what any team (in any language) has to do to plug a
system into Tidegate as a `topic` tool; from Tidegate it uses only the client library's checks of
signatures (`tidegate.client.trust`), which a team in another language writes with its Ed25519 library:

1. consume CloudEvents `tidegate.tool.invocation` from `<prefix>tools.update_inventory.requests`, and
   run only an invocation signed by the executor's key that carries the policy's signed authorization
   of exactly that call (tenant, task, tool, args) and names this tool's reply topic: anyone else who
   can write the topic (a leaked login, a misconfigured ACL) moves no stock and gets no answer;
2. apply the change at most once per `data.idempotency_key` (here: one SQLite transaction records
   the key together with the stock change, and a repeated key gets the first answer again);
3. publish a `tidegate.tool.reply` to `data.reply_topic`, keyed by the task id, signed with the
   service's own Ed25519 key (CloudEvents extensions `keyid` and `signature` over the canonical
   JSON of the whole event): the executor accepts only replies signed by the key the tool's
   catalog entry names (`reply_key_file`, here `<keys-dir>/tools/update_inventory.pub`);
4. commit the request's offset only after replying, so a crash means a redelivery, never a loss.

It logs in as its own Kafka principal, `tool-update_inventory`, which may read only its requests
and write only its replies (docs/security/bus.md); `--properties` is the client file `infra up` made.

Run it:  python examples/outside_tool_service/inventory_service.py --bootstrap 127.0.0.1:19092 --keys-dir .tidegate/keys
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import signal
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas import decode
from tidegate.client.trust import Trust

TOOL = "update_inventory"
DEFAULT_PROPERTIES = Path(__file__).resolve().parents[2] / ".infra" / "kafka" / "credentials" / f"tool-{TOOL}.properties"
log = logging.getLogger("inventory")

SEED_STOCK = {"KB-MECH-01": 40, "HUB-USBC-7": 120, "CHAIR-ERGO-2": 12, "STAND-LAP-20": 300}


class Inventory:
    """Stock levels and the answers already given, per idempotency key, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS stock (tenant TEXT, sku TEXT, on_hand INTEGER NOT NULL, PRIMARY KEY (tenant, sku));
            CREATE TABLE IF NOT EXISTS applied (
                tenant TEXT, idempotency_key TEXT, reply TEXT NOT NULL, PRIMARY KEY (tenant, idempotency_key)
            );
            """
        )

    def apply(self, tenant: str, key: str, args: dict[str, Any]) -> dict[str, Any]:
        """Apply one stock change once; the same key returns the first answer (success or failure)."""
        with self.db:  # one transaction: the change and the key that records it
            row = self.db.execute("SELECT reply FROM applied WHERE tenant = ? AND idempotency_key = ?", (tenant, key)).fetchone()
            if row is not None:
                first = json.loads(row[0])
                if first["ok"]:
                    first["result"]["duplicate"] = True  # same answer, flagged for whoever is curious
                return first
            for sku, qty in SEED_STOCK.items():
                self.db.execute("INSERT OR IGNORE INTO stock (tenant, sku, on_hand) VALUES (?, ?, ?)", (tenant, sku, qty))
            current = self.db.execute("SELECT on_hand FROM stock WHERE tenant = ? AND sku = ?", (tenant, args["sku"])).fetchone()
            if current is None:
                answer = {"ok": False, "error": {"type": "unknown_sku", "message": f"no SKU {args['sku']}", "retryable": False}}
            elif current[0] + args["delta"] < 0:
                answer = {
                    "ok": False,
                    "error": {"type": "insufficient_stock", "message": f"{args['sku']} has {current[0]} on hand", "retryable": False},
                }
            else:
                on_hand = current[0] + args["delta"]
                self.db.execute("UPDATE stock SET on_hand = ? WHERE tenant = ? AND sku = ?", (on_hand, tenant, args["sku"]))
                answer = {"ok": True, "result": {"sku": args["sku"], "on_hand": on_hand, "movement_id": f"mv_{uuid.uuid4().hex[:10]}"}}
            self.db.execute("INSERT INTO applied (tenant, idempotency_key, reply) VALUES (?, ?, ?)", (tenant, key, json.dumps(answer)))
            return answer


class ReplyKey:
    """The service's Ed25519 key: private in `<keys_dir>/tools/<tool>/<tool>.key` (made on first run), public beside the folder."""

    def __init__(self, keys_dir: Path) -> None:
        folder = keys_dir / "tools" / TOOL
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_path = folder / f"{TOOL}.key"
        if private_path.exists():
            loaded = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
            assert isinstance(loaded, Ed25519PrivateKey)
            self.private = loaded
        else:
            self.private = Ed25519PrivateKey.generate()
            pem = self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        public = self.private.public_key()
        (keys_dir / "tools" / f"{TOOL}.pub").write_bytes(
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = f"{TOOL}-{hashlib.sha256(raw).hexdigest()[:12]}"

    def sign(self, event: dict[str, Any]) -> dict[str, Any]:
        """`event` with `keyid` and `signature` (base64url, no padding) over its canonical JSON without `signature`."""
        unsigned = {**event, "keyid": self.key_id}
        canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        signature = base64.urlsafe_b64encode(self.private.sign(canonical)).rstrip(b"=").decode()
        return {**unsigned, "signature": signature}


def reply_event(invocation: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvents `tidegate.tool.reply` answering `invocation`."""
    data = invocation["data"]
    body = {
        "action_id": data["action_id"],
        "task_id": data["task_id"],
        "tenant_id": data["tenant_id"],
        "tool": TOOL,
        "attempt": data.get("attempt", 1),
        "ok": answer["ok"],
        "cost_usd": 0.0002,
    }
    body["result" if answer["ok"] else "error"] = answer.get("result") if answer["ok"] else answer["error"]
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "warehouse/inventory-service",
        "type": "tidegate.tool.reply",
        "subject": data["task_id"],
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "tenantid": data["tenant_id"],
        "data": body,
    }


async def serve(bootstrap: str, prefix: str, db_path: Path, keys_dir: Path, login: dict[str, Any] | None = None) -> None:
    """Serve invocations until SIGTERM/SIGINT."""
    inventory = Inventory(db_path)
    key = ReplyKey(keys_dir)
    trust = Trust.load(keys_dir)  # the executor's and policy's public keys (read again when an unknown key id arrives)
    reply_topic = f"{prefix}tools.{TOOL}.replies"
    consumer = AIOKafkaConsumer(
        f"{prefix}tools.{TOOL}.requests",
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}tool-{TOOL}",  # its principal may join only the group tool-<tool> (or tool-<tool>.<anything>)
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **(login or {}),
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **(login or {}))
    try:
        await consumer.start()
        await producer.start()
    except KafkaError as exc:  # a wrong address or login: one line, not a traceback
        await consumer.stop()
        await producer.stop()
        user = (login or {}).get("sasl_plain_username") or "no login"
        raise SystemExit(f"error: cannot connect to Kafka at {bootstrap} as {user}: {exc} (check --bootstrap and --properties)") from None
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print("inventory service ready", flush=True)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    await handle(record.value, inventory, producer, key, trust, reply_topic)
            if batches:
                await consumer.commit()  # only after every reply of the batch went out
    finally:
        await consumer.stop()
        await producer.stop()


async def handle(
    raw: bytes | None, inventory: Inventory, producer: AIOKafkaProducer, key: ReplyKey, trust: Trust, reply_topic: str
) -> None:
    """Answer an invocation the executor signed for a call the policy authorized; ignore anything else (a real service dead-letters it)."""
    try:
        refusal = trust.refuses(decode(f"tools.{TOOL}.requests", raw or b""))
        invocation = json.loads(raw or b"")
        data = invocation["data"]
        if refusal is None and (data["tool"] != TOOL or data["reply_topic"] != reply_topic):
            refusal = f"it names tool {data['tool']} and reply topic {data['reply_topic']}"
        if refusal is not None:
            raise ValueError(f"refusing invocation {invocation.get('id')} (action {data.get('action_id')}): {refusal}")
        deadline = datetime.fromisoformat(data["deadline"].replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError) as exc:  # a pydantic ValidationError is a ValueError
        log.warning("ignoring a message: %s", exc)
        return
    if datetime.now(UTC) > deadline:
        log.info("invocation %s arrived after its deadline; the executor has stopped waiting", data["action_id"])
        return
    answer = inventory.apply(data["tenant_id"], data["idempotency_key"], data["args"])
    event = key.sign(reply_event(invocation, answer))
    await producer.send_and_wait(
        data["reply_topic"],
        json.dumps(event).encode(),
        key=data["task_id"].encode(),
        headers=[("content-type", b"application/cloudevents+json")],
    )
    log.info("%s %s -> %s", data["action_id"], data["args"], "ok" if answer["ok"] else answer["error"]["type"])


def kafka_login(properties: Path | None, *, given: bool = False) -> dict[str, Any]:
    """aiokafka options from a Java client properties file (security.protocol, sasl.mechanism, sasl.jaas.config).

    A file given (`--properties`) that is not there is an error in one line; the default one missing means a broker
    without logins (testcontainers), said in a warning: a copy of this file elsewhere once tried PLAINTEXT on the SASL
    listener and died in a traceback saying only "Unable to bootstrap".
    """
    if properties is None or not properties.is_file():
        if given:
            raise SystemExit(
                f"error: no Kafka login file {properties}: `tidegate infra up` writes tool-{TOOL}.properties in .infra/kafka/credentials/"
            )
        log.warning(
            "no Kafka login file %s: connecting without a login (give --properties <tool-%s.properties> for a broker that asks one)",
            properties,
            TOOL,
        )
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
    """Parse arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers")
    parser.add_argument("--prefix", default="tidegate.", help="Tidegate's topic prefix")
    parser.add_argument("--properties", type=Path, default=None, help=f"Kafka client properties file (login; default {DEFAULT_PROPERTIES})")
    parser.add_argument("--db", type=Path, default=Path("inventory.sqlite3"), help="SQLite file of the warehouse")
    parser.add_argument(
        "--keys-dir", type=Path, default=Path(".tidegate/keys"), help="Tidegate's keys directory (the reply key goes in tools/)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    asyncio.run(
        serve(
            args.bootstrap,
            args.prefix,
            args.db,
            args.keys_dir,
            kafka_login(args.properties or DEFAULT_PROPERTIES, given=args.properties is not None),
        )
    )


if __name__ == "__main__":
    main()
