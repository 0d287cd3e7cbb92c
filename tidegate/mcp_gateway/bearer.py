"""The streamable HTTP transport's bearer token: where it comes from, and the MCP SDK's check of it.

Whoever reaches the gateway proposes as its principal, with its signing key, and polls what it proposed:
so every HTTP request must carry the token (`Authorization: Bearer <token>`), or it is refused 401.
"""

from __future__ import annotations

import fcntl
import hmac
import ipaddress
import secrets
from pathlib import Path
from typing import Any

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from servicekit.private_files import write_private
from tidegate.client import ClientSettings
from tidegate.client._private import private_file
from tidegate.mcp_gateway.settings import GatewaySettings

__all__ = [
    "BearerToken",
    "UnprotectedHost",
    "former_token_file",
    "gateway_url",
    "http_auth",
    "http_token",
    "rotate_token",
    "token_file",
]


class UnprotectedHost(ValueError):
    """The gateway would listen beyond loopback with no token chosen for it."""


def token_file(client_settings: ClientSettings) -> Path:
    """Where the token made on first run is kept: the client's state dir, readable by its owner only."""
    return client_settings.state_dir / "mcp-gateway.token"


def former_token_file(path: Path) -> Path:
    """Where a rotation keeps the token it replaced, accepted beside the new one until the rotation is finished."""
    return path.with_name(path.name + ".former")


def rotate_token(path: Path, *, finish: bool = False, leaked: bool = False) -> str | None:
    """Rotate the token kept in `path` (the one made on first run): the new token, or None for `finish`.

    A gateway serving from `path` reads it and its former file again at each request (`BearerToken`), so nothing restarts:
    started, the new token and the former one are both accepted until `finish` (the clients switch meanwhile); `leaked`,
    the new one alone from the next request on.

    Raises:
        ValueError: `finish` with no rotation under way, a second start before `finish`, or no token in `path` yet.
    """
    former = former_token_file(path)
    if finish:
        if not former.exists():
            raise ValueError(f"no rotation under way ({former} is missing): start one with `tidegate mcp rotate-token`")
        former.unlink()
        return None
    current = path.read_text().strip() if path.is_file() else ""
    if not current:
        raise ValueError(f"no token in {path} yet: `tidegate mcp serve --http` makes it on its first run")
    if former.exists() and not leaked:
        raise ValueError(f"a rotation is under way ({former}): finish it first (`tidegate mcp rotate-token --finish`)")
    token = secrets.token_urlsafe(32)
    if leaked:
        former.unlink(missing_ok=True)
    else:
        write_private(former, f"{current}\n")
    write_private(path, f"{token}\n")
    return token


def http_token(settings: GatewaySettings, client_settings: ClientSettings) -> tuple[str, str]:
    """The token every HTTP client must send, and where a person finds it (the setting, or the file made on first run).

    Raises:
        UnprotectedHost: `http_host` is not a loopback address and `TIDEGATE_MCP_HTTP_TOKEN` is unset.
    """
    if settings.http_token is not None:
        return settings.http_token.get_secret_value(), "TIDEGATE_MCP_HTTP_TOKEN"
    if not _loopback(settings.http_host):
        raise UnprotectedHost(
            f"TIDEGATE_MCP_HTTP_HOST is {settings.http_host}, beyond this machine: set TIDEGATE_MCP_HTTP_TOKEN to a token of "
            "your own for its clients (and put TLS in front: plain HTTP shows the token to the network), or listen on 127.0.0.1"
        )
    path = token_file(client_settings)
    with private_file(path.with_name(path.name + ".lock")).open("r") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two first runs at once agree on one token: the second reads the first's
        token = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        if not token:  # first run (or a file left empty): make one, put in place whole (a reader never sees it empty)
            token = secrets.token_urlsafe(32)
            write_private(path, f"{token}\n")
    return token, str(path)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class BearerToken:
    """The SDK's `TokenVerifier` for one shared token, compared in constant time.

    With `path` (the token made on first run), the token is read from it at each request, with the former one a rotation
    keeps beside it (`rotate_token`): a rotation takes effect without a restart, and both are accepted until it is
    finished. A file that cannot be read, or is empty, accepts nothing (never every token).
    """

    def __init__(self, token: str, path: Path | None = None) -> None:
        self._token = token.encode()
        self._path = path

    def _accepted(self) -> list[bytes]:
        if self._path is None:
            return [self._token]
        accepted = []
        for path in (self._path, former_token_file(self._path)):
            try:
                text = path.read_text().strip()
            except OSError:
                continue
            if text:
                accepted.append(text.encode())
        return accepted

    async def verify_token(self, token: str) -> AccessToken | None:
        """The access of a request carrying `token`; None (refused 401) for any other."""
        given = token.encode()
        if not any([hmac.compare_digest(given, known) for known in self._accepted()]):  # each compared, in constant time
            return None
        return AccessToken(token=token, client_id="tidegate-mcp-gateway", scopes=[])


def gateway_url(settings: GatewaySettings) -> str:
    """`http://<host>:<port>`, an IPv6 host in brackets."""
    host = f"[{settings.http_host}]" if ":" in settings.http_host else settings.http_host
    return f"http://{host}:{settings.http_port}"


def http_auth(settings: GatewaySettings, token: str, path: Path | None = None) -> dict[str, Any]:
    """`streamable_http_app` keyword arguments that refuse (401) every request without `token` (`path`: as that file has it now)."""
    # The SDK mounts its bearer check only with `AuthSettings`, whose issuer it requires; no OAuth route is mounted
    # (no authorization server provider, no resource server URL), so the issuer is never shown to anyone.
    auth = AuthSettings(issuer_url=gateway_url(settings), resource_server_url=None)  # type: ignore[arg-type]
    return {"auth": auth, "token_verifier": BearerToken(token, path)}
