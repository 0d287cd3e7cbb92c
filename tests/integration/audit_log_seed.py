"""A test helper: events written straight into the session database's audit log, and the CLI environment that reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemas as s
from servicekit import KitSettings, apply_migrations
from services.audit.app import MIGRATIONS
from services.audit.records import observe
from services.audit.repository import PostgresAuditLog

__all__ = ["seed_audit_log"]


async def seed_audit_log(infra: Any, prefix: str, tmp_path: Path, events: list[tuple[str, s.Envelope]]) -> dict[str, str]:
    """Append `events` ((topic, event), in order, offsets 0, 1, … of partition 0) under `prefix`; the `tidegate` env to read them."""
    kit = KitSettings(database_url=infra.database_url, topic_prefix=prefix, keys_dir=tmp_path / "keys")
    log = await PostgresAuditLog.connect(kit.database_url)
    try:
        await apply_migrations(log.pool, "audit", MIGRATIONS)
        await log.append(
            [
                observe(topic=prefix + topic, partition=0, offset=n, timestamp_ms=1_790_000_000_000 + n, timestamp_type=0,
                        key=event.key, value=s.encode(event), headers=[], prefix=prefix)
                for n, (topic, event) in enumerate(events)
            ]
        )  # fmt: skip
    finally:
        await log.close()
    return {"TIDEGATE_DATABASE_URL": kit.database_url, "TIDEGATE_TOPIC_PREFIX": prefix, "TIDEGATE_KEYS_DIR": str(kit.keys_dir)}
