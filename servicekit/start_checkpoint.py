"""Where a start resumes `control` and `directory`: the records a service accepted there, sealed with its own key.

Both topics are kept forever and every service reads them whole before it serves, so junk appended with the `ops` (or
`approval`) login cost every start again: 100,000 unsigned records made each start of the policy read (and dead-letter)
for two minutes. A service that caught up writes, per topic, the records it accepted (their bytes, offset and append
time), how far it read (`next_offset`) and the SHA-256 of the last record it read, sealed with an HMAC under a secret
derived from its signing key. A start with such a checkpoint runs the kept records through the whole consume path again
(bounds, contract, signature against today's keys, sequence: one refused now is dead-lettered, as a re-read would) and
reads the topic from `next_offset` on: what was refused before it is not read again.

Why it is sound, not trusting the file: without the service's key no one can add a record to it or drop one (a kill
switch) from it; an older checkpoint of the service's only makes the start read more of a topic that is never deleted;
and the broker must still hold, at `next_offset - 1`, the record read last (else the topic was recreated or cut: the
start reads it whole). One behaviour differs from a whole read: a record refused `unknown_key` before its key was filed
stays refused (a whole read at a restart accepted it, while the copies still running did not).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servicekit.private_files import write_private
from servicekit.signing import SigningKey

__all__ = ["CHECKPOINTED", "Checkpoint", "Kept", "digest", "read_checkpoint", "write_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINTED = ("control", "directory")  # catalog topics read whole at every start
_PURPOSE = "start-checkpoint"


def digest(value: bytes | None) -> str:
    """SHA-256 of a record's value, hex."""
    return hashlib.sha256(value or b"").hexdigest()


@dataclass(frozen=True)
class Kept:
    """One record the service accepted: its bytes as the broker holds them, where, and when the broker appended it."""

    offset: int
    value: bytes
    key: bytes | None
    timestamp: int
    timestamp_type: int


@dataclass
class Checkpoint:
    """What a service read of one partition of a topic: the records it accepted below `next_offset`, and the last one's digest."""

    topic: str  # the full name
    partition: int
    next_offset: int
    last_sha256: str
    kept: list[Kept] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """What is sealed and written: JSON-ready, the records' bytes in base64."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "next_offset": self.next_offset,
            "last_sha256": self.last_sha256,
            "kept": [
                {
                    "offset": k.offset,
                    "value": base64.b64encode(k.value).decode(),
                    "key": None if k.key is None else base64.b64encode(k.key).decode(),
                    "timestamp": k.timestamp,
                    "timestamp_type": k.timestamp_type,
                }
                for k in self.kept
            ],
        }


def _seal(key: SigningKey, body: dict[str, Any]) -> str:
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key.derived_secret(_PURPOSE), message, hashlib.sha256).hexdigest()


def checkpoint_path(directory: Path, service: str, topic: str, partition: int) -> Path:
    """The file of `service`'s checkpoint of `topic` (full name) partition `partition`."""
    return directory / f"{service}.{topic}.{partition}.json"


def write_checkpoint(directory: Path, service: str, key: SigningKey, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` sealed with `key`, at once (a reader sees the old file or the new one)."""
    directory.mkdir(parents=True, exist_ok=True)
    body = checkpoint.body()
    path = checkpoint_path(directory, service, checkpoint.topic, checkpoint.partition)
    write_private(path, json.dumps({"checkpoint": body, "seal": _seal(key, body)}))


def read_checkpoint(directory: Path, service: str, key: SigningKey, topic: str, partition: int) -> Checkpoint | None:
    """`service`'s checkpoint of `topic` partition `partition` if there is one sealed with `key`; else None (read it whole)."""
    path = checkpoint_path(directory, service, topic, partition)
    try:
        document = json.loads(path.read_text())
        body, seal = document["checkpoint"], document["seal"]
        if not isinstance(seal, str) or not hmac.compare_digest(seal, _seal(key, body)):
            log.warning("%s: the checkpoint %s is not sealed with this service's key: %s is read whole", service, path, topic)
            return None
        if (body["topic"], body["partition"]) != (topic, partition):
            return None
        kept = [
            Kept(
                k["offset"],
                base64.b64decode(k["value"]),
                None if k["key"] is None else base64.b64decode(k["key"]),
                k["timestamp"],
                k["timestamp_type"],
            )
            for k in body["kept"]
        ]
        return Checkpoint(topic, partition, int(body["next_offset"]), str(body["last_sha256"]), kept)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: the checkpoint %s cannot be read (%r): %s is read whole", service, path, exc, topic)
        return None
