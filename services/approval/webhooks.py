"""Standard Webhooks (https://www.standardwebhooks.com): signing outgoing messages, verifying inbound ones, where they may go.

Signing and signature checks are the `standardwebhooks` reference library's (`Webhook.sign`, `Webhook.verify`);
this module adds what the service needs around it: stable error codes, the service's own clock and
tolerance, the secret's format, the rules a webhook URL must follow, and the httpx sender.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import standardwebhooks

__all__ = [
    "HEADERS",
    "LIBRARY_TOLERANCE_S",
    "MISSING_HEADERS",
    "Destination",
    "HttpxSender",
    "Resolver",
    "SendResult",
    "WebhookSender",
    "WebhookVerificationError",
    "backoff",
    "check_secret",
    "check_url",
    "new_secret",
    "secret_fingerprint",
    "sign",
    "signed_headers",
    "system_resolver",
    "url_refusal",
    "verify",
]

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")  # Standard Webhooks: a message's id, time and signature
MISSING_HEADERS = "webhook-id, webhook-timestamp and webhook-signature are required"

SECRET_PREFIX = "whsec_"
LIBRARY_TOLERANCE_S = 300.0  # standardwebhooks refuses timestamps more than 5 minutes from the real time; ours can only narrow it


def new_secret() -> str:
    """A fresh endpoint secret, `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_fingerprint(secret: str) -> str:
    """What shows which secret an endpoint holds without revealing it: the first 32 hex digits of the SHA-256 of the secret (UTF-8).

    An approver enrols an endpoint by its URL and this fingerprint (from the chat tool that holds the secret), so an
    admin who swapped in a secret of her own is refused (`409 endpoint_changed`).
    """
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def check_secret(secret: str) -> None:
    """Raise ValueError unless `secret` is `whsec_<base64>` of at least 16 bytes (the library itself accepts almost anything)."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is whsec_<base64>") from exc
    if not secret.startswith(SECRET_PREFIX) or len(key) < 16:
        raise ValueError("a webhook secret is whsec_<base64> of at least 16 random bytes")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value of a message: `v1,<base64 signature>`."""
    return standardwebhooks.Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes, *, former: str | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers (and the JSON content type) of a message.

    `former`: during a rotation's overlap, the secret before it: the message is signed with both, space-separated
    (`v1,<new> v1,<former>`), as the spec rotates a secret, so a receiver that has either one verifies it.
    """
    signatures = [sign(secret, msg_id, timestamp, body)]
    if former is not None and former != secret:
        signatures.append(sign(former, msg_id, timestamp, body))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


class WebhookVerificationError(ValueError):
    """An inbound message that must be refused; `code` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float, tolerance_s: float) -> tuple[str, int]:
    """Check headers, timestamp tolerance and signature; return (webhook-id, timestamp).

    The headers and the timestamp are checked here first (stable codes, the service's clock and
    tolerance); the signature by `standardwebhooks.Webhook.verify`, which also holds the timestamp
    to 5 minutes of the real time. Anything malformed in the signature header (not base64, not
    ASCII, no version) is a refusal, never an error. Several space-separated signatures are
    accepted, as the spec allows during secret rotation. Replay protection by id is the caller's.
    """
    msg_id, ts_text, sig_header = (headers.get(h) for h in HEADERS)
    if not msg_id or not ts_text or not sig_header:
        raise WebhookVerificationError("missing_headers", MISSING_HEADERS)
    try:
        timestamp = int(ts_text)
    except ValueError as exc:
        raise WebhookVerificationError("bad_timestamp", "webhook-timestamp is not an integer") from exc
    if abs(now - timestamp) > min(tolerance_s, LIBRARY_TOLERANCE_S):
        raise WebhookVerificationError("stale_timestamp", f"webhook-timestamp is more than {tolerance_s:.0f} s away from now")
    try:
        standardwebhooks.Webhook(secret).verify(body, {h: str(headers.get(h)) for h in HEADERS}, json_parse=False)
    except (standardwebhooks.WebhookVerificationError, ValueError, TypeError) as exc:
        raise WebhookVerificationError("bad_signature", "webhook-signature does not match") from exc
    return msg_id, timestamp


def backoff(attempt: int, *, initial_s: float, max_s: float) -> timedelta:
    """Delay before attempt `attempt + 1` (attempt counts from 1): exponential, capped."""
    return timedelta(seconds=min(max_s, initial_s * 2 ** (attempt - 1)))


def _address_refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Answers the addresses a host name has (the system's resolver, or a test's)."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, by the event loop's `getaddrinfo`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Destination:
    """Where a delivery connects: `url`, and when it was pinned to a checked address, the name it stands for.

    `host` is the Host header (name and port as registered) and `server_name` the TLS server name
    (SNI and the certificate's check); both None when `url` is sent as registered (an allow-listed host).
    """

    url: str
    host: str | None = None
    server_name: str | None = None


async def check_url(url: str, allowed_hosts: Collection[str], resolver: Resolver = system_resolver) -> Destination | str:
    """Where webhooks to `url` connect, or why they may not go there.

    A URL is https, and every address its host resolves to is public; an operator's allow-listed
    hosts (`TIDEGATE_APPROVAL_WEBHOOK_ALLOWED_HOSTS`) may also use http and private, loopback or
    link-local addresses. The name is resolved once: a delivery connects to the first checked
    address (the URL with that address as its host), never resolving the name again, so an answer
    that changes in between (DNS rebinding) cannot reach a private address.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "not a URL"
    if not host or parts.scheme not in ("https", "http"):
        return "a webhook URL is https://<host>/..."
    if host in {h.lower() for h in allowed_hosts}:
        return Destination(url)
    if parts.scheme != "https":
        return f"{host} is not allow-listed, so its URL must be https"
    try:
        addresses = await resolver(host, port or 443)
    except OSError:
        return f"{host} does not resolve"
    refused = sorted({address for address in addresses if _address_refused(address)})
    if refused or not addresses:
        return f"{host} resolves to a private, loopback or link-local address ({', '.join(refused)}) and is not allow-listed"
    registered = httpx.URL(url)
    pinned = registered.copy_with(host=addresses[0].split("%", 1)[0])
    return Destination(str(pinned), host=registered.netloc.decode("ascii"), server_name=host)


async def url_refusal(url: str, allowed_hosts: Collection[str], resolver: Resolver = system_resolver) -> str | None:
    """Why webhooks may not go to `url`, or None when they may (checked at registration and before every delivery)."""
    checked = await check_url(url, allowed_hosts, resolver)
    return checked if isinstance(checked, str) else None


@dataclass(frozen=True)
class SendResult:
    """What one delivery attempt got."""

    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


class WebhookSender(Protocol):
    """Sends one signed message within its own deadline; never raises for network errors or a timeout (a failed attempt).

    `deliver_webhooks` leases a message for three times `webhook_timeout_s`: a sender must return well within that.
    """

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        """POST `body` to `url`."""
        ...


class HttpxSender:
    """The real sender: one shared httpx client, one deadline per attempt, 2xx counts as delivered.

    The URL rules are checked again before each attempt, and the attempt connects to the address
    that was checked (Host header and TLS server name stay the URL's name; see `check_url`).
    `timeout_s` bounds the whole attempt (name resolution, connecting, sending, the answer's status
    line and headers), so a receiver that answers slowly or never costs one attempt `timeout_s` at
    most. A receiver's answer body is never read (the status says delivered or not; the delivery log
    shows the status code only: a body can hold anything the receiver chose, and a slow one trickles).
    Connections are not kept alive: a pooled connection to one address, verified for one name,
    must not carry another name's message.
    """

    def __init__(
        self,
        timeout_s: float,
        allowed_hosts: Collection[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._client = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, transport=transport, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self._timeout_s = timeout_s
        self._allowed_hosts = tuple(allowed_hosts)
        self._resolver = resolver

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        """POST the message; a refused URL, a non-2xx answer, a network error or the deadline passing is a failed attempt."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                status_code, error = await self._post(url, headers, body)
        except TimeoutError:
            status_code, error = None, f"timeout: no answer within {self._timeout_s:g} s"
        except httpx.HTTPError as exc:
            status_code, error = None, type(exc).__name__
        return SendResult(error is None, status_code, error, (time.perf_counter() - started) * 1000)

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int | None, str | None]:
        """Check the URL, POST to the checked address and close at the answer's headers: (status code, error or None)."""
        checked = await check_url(url, self._allowed_hosts, self._resolver)
        if isinstance(checked, str):
            return None, f"url_refused: {checked}"[:500]
        if checked.host is not None:
            headers = {**headers, "host": checked.host}
        extensions = {} if checked.server_name is None else {"sni_hostname": checked.server_name}
        async with self._client.stream("POST", checked.url, content=body, headers=headers, extensions=extensions) as response:
            ok = 200 <= response.status_code < 300
            return response.status_code, None if ok else f"HTTP {response.status_code}"

    async def close(self) -> None:
        """Close the client."""
        await self._client.aclose()
