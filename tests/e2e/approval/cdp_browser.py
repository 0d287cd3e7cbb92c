"""A headless Chromium driven over the Chrome DevTools Protocol on a pipe (`--remote-debugging-pipe`).

No WebDriver, no websocket library: Chromium reads CDP commands from fd 3 and writes answers to
fd 4, each message a JSON document terminated by NUL. Enough for the approver page's end-to-end test:
navigate, evaluate, click at an element's centre with real mouse events, type, screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["BROWSER_DEPS", "Chromium", "chromium_path", "ensure_chromium"]

BROWSER_DEPS = Path(__file__).parent / "browser_deps.sh"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def chromium_path() -> str | None:
    """Debian's chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ensure_chromium() -> tuple[str | None, str]:
    """Chromium's path (or None) and how it was found, installing Debian's package with `browser_deps.sh` when missing."""
    found = chromium_path()
    if found is not None:
        return found, "installed"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "chromium is not installed and this is not root with apt-get; run tests/e2e/approval/browser_deps.sh"
    done = subprocess.run(["bash", str(BROWSER_DEPS)], check=False, capture_output=True, text=True, timeout=800)
    found = chromium_path()
    if found is None:
        return None, f"browser_deps.sh could not install chromium (exit {done.returncode}): {(done.stderr or done.stdout)[-400:]}"
    return found, "installed now by browser_deps.sh"


class CdpError(RuntimeError):
    """A CDP command that failed."""


class Chromium:
    """One headless browser with one page; use `async with Chromium.launch(...) as browser`."""

    def __init__(
        self, proc: subprocess.Popen[bytes], reader: asyncio.StreamReader, write_fd: int, transport: asyncio.BaseTransport
    ) -> None:
        self._proc = proc
        self._reader = reader
        self._write_fd = write_fd
        self._transport = transport
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pump = asyncio.create_task(self._read_loop())
        self.session: str | None = None
        self.console: list[str] = []

    @classmethod
    async def launch(cls, executable: str, user_data_dir: Path, *, width: int = 1280, height: int = 900) -> Chromium:
        """Start Chromium on a fresh profile and attach to its page."""
        cmd_read, cmd_write = os.pipe()  # we write commands; Chromium reads fd 3
        res_read, res_write = os.pipe()  # Chromium writes answers on fd 4; we read

        def wire_fds() -> None:  # runs in the child: move the pipe ends to 3 and 4 without clobbering each other
            a = fcntl.fcntl(cmd_read, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(res_write, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # the pipes are non-inheritable (PEP 446); only the dup2'd fds 3 and 4 reach Chromium
            preexec_fn=wire_fds,
        )
        os.close(cmd_read)
        os.close(res_write)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(res_read, "rb", buffering=0))
        browser = cls(proc, reader, cmd_write, transport)
        await browser._attach(width, height)
        return browser

    async def __aenter__(self) -> Chromium:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read_loop(self) -> None:
        while True:
            try:
                raw = await self._reader.readuntil(b"\0")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(CdpError("chromium closed the pipe"))
                return
            message = json.loads(raw[:-1])
            if "id" in message and message["id"] in self._pending:
                self._pending.pop(message["id"]).set_result(message)
            elif message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif message.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(message["params"].get("exceptionDetails", {}))[:500])

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, browser_level: bool = False, timeout: float = 30
    ) -> dict[str, Any]:
        """One CDP command; returns its result or raises CdpError."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if self.session and not browser_level:
            message["sessionId"] = self.session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = fut
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        answer = await asyncio.wait_for(fut, timeout)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def _attach(self, width: int, height: int) -> None:
        deadline = time.monotonic() + 20
        while True:
            targets = (await self.send("Target.getTargets", browser_level=True))["targetInfos"]
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise CdpError("chromium opened no page")
            await asyncio.sleep(0.1)
        attached = await self.send("Target.attachToTarget", {"targetId": pages[0]["targetId"], "flatten": True}, browser_level=True)
        self.session = attached["sessionId"]
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    async def goto(self, url: str) -> None:
        """Navigate and wait for the document to be complete."""
        await self.send("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CdpError(
                f"{expression!r} threw: {result['exceptionDetails'].get('text')} {result['exceptionDetails'].get('exception', {})}"
            )
        return result["result"].get("value")

    async def wait_for(self, expression: str, *, timeout: float = 20, what: str | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(CdpError):
                value = await self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or expression}; console: {self.console[-5:]}")
            await asyncio.sleep(0.1)

    async def click(self, selector: str) -> None:
        """Click the element's centre with real mouse events (as a person would)."""
        box = await self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e || e.offsetParent === null) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()",
            what=f"{selector} to be visible",
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1})

    async def type(self, selector: str, text: str, *, replace: bool = True) -> None:
        """Focus an input and type `text` into it."""
        await self.click(selector)
        if replace:
            await self.evaluate(
                f"document.querySelector({json.dumps(selector)}).select && document.querySelector({json.dumps(selector)}).select()"
            )
        await self.send("Input.insertText", {"text": text})

    async def text(self, selector: str) -> str:
        """The visible text of an element."""
        return str(await self.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"))

    async def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page."""
        data = await self.send("Page.captureScreenshot", {"format": "png"})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    async def close(self) -> None:
        """Close the browser and wait for it."""
        with contextlib.suppress(CdpError, asyncio.TimeoutError, OSError):
            await self.send("Browser.close", browser_level=True, timeout=5)
        try:
            await asyncio.to_thread(self._proc.wait, 10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            await asyncio.to_thread(self._proc.wait, 10)
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        self._transport.close()
        with contextlib.suppress(OSError):
            os.close(self._write_fd)
