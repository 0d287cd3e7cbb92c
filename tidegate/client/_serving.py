"""Whether a tool this process serves is served: its calls wait for its serve loop to read, and fail once it cannot.

Every way of serving a function (`@governed`, `serve_function` behind each adapter's `serve=`) keeps one `ServeGate` on
the client, and `Tidegate.propose` checks the tool's gate first: a call of a tool no process here can serve is never
proposed, so no person is asked to approve a call that would end `unknown` without having run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["NotServed", "ServeGate"]


class NotServed(RuntimeError):
    """A governed function cannot be served (so no call of it would ever run), or its serve loop stopped; the message says why."""

    def __init__(self, tool: str, why: str) -> None:
        super().__init__(f"tool {tool} is not served: {why}")
        self.tool = tool


class ServeGate:
    """One served tool's state: `started` once its serve loop reads (or once it failed), `failure` the reason it cannot."""

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.started = asyncio.Event()
        self.failure: NotServed | None = None

    async def check(self) -> None:
        """Wait until the serve loop reads its requests; raise `NotServed` when it could not, or stopped."""
        await self.started.wait()
        if self.failure is not None:
            raise self.failure

    async def watch(self, serving: Coroutine[Any, Any, None]) -> None:
        """Run the serve loop; when it fails, the tool's next call raises why (and the client's log says so at once)."""
        try:
            await serving
        except NotServed as exc:
            self.failure = exc
            raise
        except Exception as exc:
            self.failure = NotServed(self.tool, f"its serve loop stopped: {exc!r}")
            raise self.failure from exc
        finally:
            self.started.set()
