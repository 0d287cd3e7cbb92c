"""What the operator reads on `tidegate mcp serve`'s stderr when the broker ends its Kafka login (every 5 minutes)."""

from __future__ import annotations

import os
import subprocess
import sys

from servicekit import REPO_ROOT

# `tidegate mcp serve` (stdio), its serving replaced by what aiokafka logs when the broker closes the gateway's connections at
# the end of a login session, then the connections back: no outage. The grace is cut so the test does not wait 10 s for it.
SERVE = """
import asyncio, logging, sys
from servicekit.session_ends import SessionEnds
import tidegate.mcp_gateway.run as run

async def serve_stdio(gateway, client):
    for handler in logging.getLogger().handlers:
        for ends in [f for f in handler.filters if isinstance(f, SessionEnds)]:
            ends.grace_s = 0.2
    logging.getLogger("aiokafka.consumer.fetcher").error(
        "Failed fetch messages from 1: KafkaConnectionError: Connection at 127.0.0.1:19092 closed")
    logging.getLogger("aiokafka.consumer.group_coordinator").warning(
        "Marking the coordinator dead (node 1)for group tidegate-mcp.")
    await asyncio.sleep(1.0)

run.serve_stdio = serve_stdio
from tidegate.entry import main
sys.argv = ["tidegate", "mcp", "serve"]
main()
"""


def test_the_broker_ending_the_gateways_login_is_one_info_line_not_aiokafkas_errors(tmp_path: os.PathLike[str]) -> None:
    """Finding (integrator2, integrator3): the gateway printed aiokafka's raw ERROR and WARNING lines at every re-login, which
    an operator grepping ERROR reads as an outage; the services hold them (`servicekit.session_ends`), the gateway did not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_LOG")}
    done = subprocess.run(
        [sys.executable, "-c", SERVE], cwd=REPO_ROOT, env=env | {"PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stderr.splitlines() if "servicekit.session_ends" in x]
    assert " INFO " in line, done.stderr
    assert "not an outage; 2 line(s) of aiokafka's about it not written" in line, done.stderr
    raw = [x for x in done.stderr.splitlines() if x != line and ("Connection at" in x or "Marking the coordinator" in x)]
    assert raw == [], done.stderr  # before: both lines as aiokafka wrote them, nothing saying it was a re-login
