"""What a Tidegate consumer reads from Kafka: a record whose key and value are the raw bytes (or none).

No consumer of the kit sets a deserializer, so aiokafka hands over `bytes` for a key and a value, and `None` for a
record without a key or a tombstone: `KafkaRecord` says so, where aiokafka's own `ConsumerRecord` is generic.
"""

from __future__ import annotations

from typing import TypeAlias

from aiokafka import ConsumerRecord

__all__ = ["KafkaRecord"]

KafkaRecord: TypeAlias = ConsumerRecord[bytes | None, bytes | None]
