"""A service started as its own process on a database behind the bus: it exits `EX_CONFIG` with one `not started` line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from servicekit import EX_CONFIG, REPO_ROOT, KitSettings

__all__ = ["refused_start"]


async def refused_start(kit: KitSettings, service: str, tmp_path: Path, *, timeout_s: float = 90) -> str:
    """Run `python -m services.<service>` on `kit`; assert it exits `EX_CONFIG` without becoming ready; its last line."""
    env = {
        **os.environ,
        "TIDEGATE_KAFKA_BOOTSTRAP": kit.kafka_bootstrap,
        "TIDEGATE_DATABASE_URL": kit.database_url,
        "TIDEGATE_TOPIC_PREFIX": kit.topic_prefix,
        "TIDEGATE_KEYS_DIR": str(kit.keys_dir),
        "TIDEGATE_READY_DIR": str(tmp_path / "ready"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{service}"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    out = proc.communicate()[0].decode()
    assert proc.returncode == EX_CONFIG, out
    assert not (tmp_path / "ready" / f"{service}.ready").exists()
    return [line for line in out.splitlines() if line.strip()][-1]
