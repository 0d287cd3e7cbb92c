"""A test helper: the policy service on the default pack and the repo's catalog, in memory, its clock stopped at one time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from servicekit import REPO_ROOT, ControlState, EventOutlet, SigningKey, ToolCatalog
from services.policy import InMemoryPolicyRepository
from services.policy.pack import PackSource, compile_pack
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

__all__ = ["CATALOG", "policy_at"]

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")


async def _nowhere(topic: str, event: Any) -> None:
    return None


def policy_at(now: datetime, tmp_path: Path, settings: PolicySettings) -> PolicyService:
    """A service whose clock and repository read `now`; its keys in `tmp_path`; what it publishes goes nowhere."""
    return PolicyService(
        catalog=CATALOG,
        pack=compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG),
        repo=InMemoryPolicyRepository(clock=lambda: now),
        signer=SigningKey.load_or_create(tmp_path, "policy"),
        keys_dir=tmp_path,
        control=ControlState(),
        publish_many=EventOutlet(_nowhere).publish_many,
        settings=settings,
        clock=lambda: now,
    )
