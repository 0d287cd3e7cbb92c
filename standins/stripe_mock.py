"""Stripe's own `stripe-mock` (a Go program), built with `go install` on first use and run on a free loopback port.

stripe-mock answers every call of Stripe's API with a valid, fixed response (a charge of 100 cents,
an invoice of 1000) and checks requests against Stripe's OpenAPI spec. It is stateless: it does not
honour idempotency keys; what a client sends is observed through `RecordingProxy`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

__all__ = ["MODULE", "StripeMock", "ensure_stripe_mock"]

MODULE = "github.com/stripe/stripe-mock@v0.203.0"


def ensure_stripe_mock(bin_dir: Path, timeout_s: float = 900) -> Path:
    """The stripe-mock binary in `bin_dir` (or on PATH), built with `go install` into `bin_dir` if missing."""
    local = bin_dir / "stripe-mock"
    if local.exists():
        return local
    found = shutil.which("stripe-mock")
    if found:
        return Path(found)
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("stripe-mock is not installed and Go is not on PATH to build it")
    bin_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(bin_dir.resolve())}
    subprocess.run([go, "install", MODULE], env=env, check=True, timeout=timeout_s, capture_output=True)
    return local


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StripeMock:
    """A running stripe-mock; `url` is its HTTP base URL."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 30) -> StripeMock:
        """Start it and wait (polling, with a deadline) until it answers."""
        self._proc = subprocess.Popen(
            [str(self.binary), "-http-port", str(self.port), "-https-port", str(_free_port())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + ready_timeout_s
        while True:
            try:
                httpx.get(f"{self.url}/v1/charges/ch_ready", headers={"Authorization": "Bearer sk_test_ready"}, timeout=2)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"stripe-mock did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the process this object started."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
