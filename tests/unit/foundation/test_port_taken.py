"""A service whose port is taken says which port and which setting in its one `not started:` line (an on-call probe got
`policy: not started: OSError: [Errno 98] Address already in use` from each of five services, and had to guess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_producer import KeepingProducer
from fastapi import FastAPI

from servicekit import REPO_ROOT, Bus, ServiceProcess
from servicekit.runner import NotStarted


class Nowhere(KeepingProducer):
    """A producer that neither connects nor disconnects: these services consume nothing."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def approval(port: int) -> ServiceProcess:
    return ServiceProcess(name="approval", bus=Bus(Nowhere(), "approval", "unused:1", "p."), http_app=FastAPI(), http_port=port)


@pytest.fixture
def taken() -> Iterator[int]:
    """A port another process listens on (an orphaned service, say)."""
    with socket.create_server(("127.0.0.1", 0)) as held:
        yield held.getsockname()[1]


def test_a_taken_metrics_port_is_named_with_its_setting(tmp_path: Path, taken: int) -> None:
    (tmp_path / "keys").mkdir()  # a keys folder that is not there is refused before any port is bound
    env = os.environ | {"TIDEGATE_METRICS_PORT": str(taken), "TIDEGATE_KEYS_DIR": str(tmp_path / "keys")}
    command = [sys.executable, "-m", "tidegate.cli", "service", "run", "policy"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]  # restarted with backoff: the port may be freed
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"policy: not started: OSError: [Errno 98] cannot listen on 127.0.0.1:{taken} (set by TIDEGATE_METRICS_PORT): "
        "Address already in use; is another copy still running? `tidegate status` shows those of `tidegate up`"
    ), done.stderr[-2000:]


async def test_a_taken_http_port_is_named_with_its_setting(taken: int) -> None:
    process = approval(taken)
    said = rf"cannot listen on 127\.0\.0\.1:{taken} \(set by TIDEGATE_APPROVAL_HTTP_PORT\): Address already in use"
    with pytest.raises(NotStarted, match=said):
        await process.run_until_signalled()


async def test_a_free_http_port_is_served_as_before() -> None:
    process = approval(0)
    await process.start()
    try:
        assert process.http_url.startswith("http://127.0.0.1:")
    finally:
        await process.stop()
