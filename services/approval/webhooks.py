"""Standard Webhooks (https://www.standardwebhooks.com): signing outgoing messages, verifying inbound ones.

A message is signed as `v1,<base64 HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")>`
where the secret is the base64 part of `whsec_<base64>`. Pure functions, plus the httpx sender.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import httpx

__all__ = [
    "HttpxSender",
    "SendResult",
    "WebhookSender",
    "WebhookVerificationError",
    "backoff",
    "new_secret",
    "sign",
    "signed_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh endpoint secret, `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of a message: `v1,<base64 signature>`."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers (and the JSON content type) of a message."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


class WebhookVerificationError(ValueError):
    """An inbound message that must be refused; `code` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float, tolerance_s: float) -> tuple[str, int]:
    """Check headers, timestamp tolerance and signature; return (webhook-id, timestamp).

    Replay protection by id is the caller's (it needs storage). Several space-separated signatures
    are accepted, as the spec allows during secret rotation.
    """
    msg_id, ts_text, sig_header = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not msg_id or not ts_text or not sig_header:
        raise WebhookVerificationError("missing_headers", "webhook-id, webhook-timestamp and webhook-signature are required")
    try:
        timestamp = int(ts_text)
    except ValueError as exc:
        raise WebhookVerificationError("bad_timestamp", "webhook-timestamp is not an integer") from exc
    if abs(now - timestamp) > tolerance_s:
        raise WebhookVerificationError("stale_timestamp", f"webhook-timestamp is more than {tolerance_s:.0f} s away from now")
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for candidate in sig_header.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return msg_id, timestamp
    raise WebhookVerificationError("bad_signature", "webhook-signature does not match")


def backoff(attempt: int, *, initial_s: float, max_s: float) -> timedelta:
    """Delay before attempt `attempt + 1` (attempt counts from 1): exponential, capped."""
    return timedelta(seconds=min(max_s, initial_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class SendResult:
    """What one delivery attempt got."""

    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


class WebhookSender(Protocol):
    """Sends one signed message; never raises for network errors (they are a failed attempt)."""

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        """POST `body` to `url`."""
        ...


class HttpxSender:
    """The real sender: one shared httpx client, a timeout, 2xx counts as delivered."""

    def __init__(self, timeout_s: float) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        """POST the message; a non-2xx answer or a network error is a failed attempt."""
        import time

        started = time.perf_counter()
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return SendResult(False, None, f"{type(exc).__name__}: {exc}"[:500], (time.perf_counter() - started) * 1000)
        ok = 200 <= response.status_code < 300
        error = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
        return SendResult(ok, response.status_code, error, (time.perf_counter() - started) * 1000)

    async def close(self) -> None:
        """Close the client."""
        await self._client.aclose()
