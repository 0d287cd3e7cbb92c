"""`tidegate up`'s supervisor over several copies of a service: `python supervise.py policy policy.2 executor executor.2 …`.

A copy is named `<service>.<n>`; each child runs `tidegate service run <service>` with
`TIDEGATE_CHAOS_COPY=<copy>` in its environment, which is how the harness finds the pid of a copy
to kill. Restarts, backoff and shutdown are the supervisor's own (tidegate/commands/services.py).
"""

from __future__ import annotations

import asyncio
import sys

from tidegate.commands._supervisor import service_command, supervise


def copy_command(copy: str) -> list[str]:
    """The service command of one copy, marked in its environment."""
    return ["env", f"TIDEGATE_CHAOS_COPY={copy}", *service_command(copy.split(".")[0])]


if __name__ == "__main__":
    asyncio.run(supervise(tuple(sys.argv[1:]), command=copy_command))
