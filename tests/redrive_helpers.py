"""Helpers of the redrive tests: `tidegate dead-letters` run as the on-call would, and the dead letters it lists."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner

from servicekit import KitSettings
from services.audit.app import AuditProcess
from services.audit.app import build as build_audit
from services.audit.settings import AuditSettings
from tidegate.cli import app as cli

__all__ = ["audit_service", "cli_env", "dead_letters", "listed"]


def audit_service(kit: KitSettings) -> AuditProcess:
    """The audit service on the test's prefix: the redrive reads the dead letters and their records from its log."""
    return build_audit(kit, AuditSettings(batch_max_records=500, checkpoint_interval_s=60, topic_discovery_ms=1000))


def cli_env(kit: KitSettings) -> dict[str, str]:
    """The environment of a `tidegate` command on the test's prefix, database, keys and broker."""
    return {
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
    }


async def dead_letters(kit: KitSettings, *args: str) -> Any:
    """`tidegate dead-letters ARGS` on the test's prefix, database and keys."""
    return await asyncio.to_thread(CliRunner().invoke, cli, ["dead-letters", *args], env=cli_env(kit))


async def listed(kit: KitSettings, wait_for: Any, task_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The dead letters `list --json` shows of `task_id`, once the audit log holds `count` of them."""

    async def probe() -> list[dict[str, Any]] | None:
        result = await dead_letters(kit, "list", "--json")
        assert result.exit_code == 0, result.output
        found = [line for line in map(json.loads, result.stdout.splitlines()) if line["task_id"] == task_id]
        return found if len(found) >= count else None

    found: list[dict[str, Any]] = await wait_for(probe, timeout=60, what=f"{count} dead letter(s) of {task_id} in the audit log")
    return found
