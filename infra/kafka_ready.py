#!/usr/bin/env python3
"""Is a Kafka broker ready? Standard library only (runs before the project venv exists).

Ready means: an ApiVersions v0 request gets error_code 0, then a Metadata v1 request lists at
least one broker. With --cluster-id, Metadata v2 is used and the broker must also report that
cluster id (so a different Kafka on the same port does not pass for ours).

    python3 infra/kafka_ready.py                     # one attempt against 127.0.0.1:$TIDEGATE_KAFKA_PORT
    python3 infra/kafka_ready.py --wait 90 --pid N   # poll until ready, the deadline, or pid N dies

With --properties (a client properties file written by infra.sh: SASL_PLAINTEXT, SCRAM-SHA-512),
the Metadata request is sent after a SCRAM-SHA-512 login as that file's principal.

Exit status: 0 ready, 1 not ready (deadline passed), 2 the watched pid exited.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import re
import secrets
import socket
import struct
import sys
import time

API_METADATA = 3
API_VERSIONS = 18
API_SASL_HANDSHAKE = 17
API_SASL_AUTHENTICATE = 36
CLIENT_ID = b"tidegate-ready"


class NotReady(Exception):
    """The broker answered, but not (yet) as a ready broker does."""


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
    header = struct.pack(">hhih", api_key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    if size < 4 or size > 64 * 1024 * 1024:
        raise NotReady(f"implausible response size {size}")
    data = _recv_exact(sock, size)
    (got_corr,) = struct.unpack_from(">i", data, 0)
    if got_corr != corr:
        raise NotReady(f"correlation id {got_corr} != {corr}")
    return data[4:]  # response header v0 is only the correlation id


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise NotReady("connection closed by broker")
        buf += chunk
    return bytes(buf)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _int(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def int16(self) -> int:
        return self._int(">h")

    def int32(self) -> int:
        return self._int(">i")

    def string(self) -> str | None:
        n = self.int16()
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode("utf-8")
        self.pos += n
        return s


def read_properties(path: str) -> tuple[str, str, str]:
    """(username, password, mechanism) from a Java client properties file (`sasl.jaas.config`, `sasl.mechanism`).

    The mechanism is SCRAM-SHA-512 unless the file names SCRAM-SHA-256 (a login rotated: `tidegate infra rotate-login`).
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    user = re.search(r'username="([^"]*)"', text)
    password = re.search(r'password="([^"]*)"', text)
    if not user or not password:
        raise SystemExit(f"{path}: no username/password in sasl.jaas.config")
    mechanism = re.search(r"^sasl\.mechanism=(\S+)", text, re.MULTILINE)
    named = mechanism.group(1) if mechanism else "SCRAM-SHA-512"
    if named not in HASHES:
        raise SystemExit(f"{path}: sasl.mechanism={named}: one of {', '.join(HASHES)}")
    return user.group(1), password.group(1), named


def _bytes_field(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


def _authenticate_step(sock: socket.socket, corr: int, message: bytes) -> bytes:
    # SaslAuthenticate v1: auth_bytes; response: error_code, error_message, auth_bytes, session_lifetime_ms.
    r = _Reader(_request(sock, API_SASL_AUTHENTICATE, 1, corr, _bytes_field(message)))
    error, text = r.int16(), r.string()
    if error != 0:
        raise NotReady(f"SCRAM login refused (error_code {error}: {text})")
    n = r.int32()
    return r.data[r.pos : r.pos + n]


HASHES = {"SCRAM-SHA-512": "sha512", "SCRAM-SHA-256": "sha256"}


def scram_login(sock: socket.socket, user: str, password: str, mechanism_name: str = "SCRAM-SHA-512") -> None:
    """SASL SCRAM-SHA-512 or -256 (RFC 5802, 7677) over SaslHandshake v1 + SaslAuthenticate v1."""
    mechanism, digest = mechanism_name.encode(), HASHES[mechanism_name]
    r = _Reader(_request(sock, API_SASL_HANDSHAKE, 1, 10, struct.pack(">h", len(mechanism)) + mechanism))
    error = r.int16()
    if error != 0:
        raise NotReady(f"SaslHandshake error_code {error} (is this listener SASL_PLAINTEXT with {mechanism_name}?)")
    client_nonce = secrets.token_urlsafe(24)
    first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={client_nonce}"
    server_first = _authenticate_step(sock, 11, f"n,,{first_bare}".encode()).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    if not fields["r"].startswith(client_nonce):
        raise NotReady("SCRAM: server nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.digest(salted, b"Client Key", digest)
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.new(digest, client_key).digest(), auth_message, digest)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    server_final = _authenticate_step(sock, 12, f"{without_proof},p={proof}".encode()).decode()
    server_key = hmac.digest(salted, b"Server Key", digest)
    expected = base64.b64encode(hmac.digest(server_key, auth_message, digest)).decode()
    if server_final != f"v={expected}":
        raise NotReady("SCRAM: the broker's signature does not verify")


def check(host: str, port: int, timeout: float, cluster_id: str | None = None, login: tuple[str, str, str] | None = None) -> str:
    """One attempt. Returns a description of the cluster, raises NotReady/OSError otherwise."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions v0: empty body; response: error_code, [api_key, min, max].
        r = _Reader(_request(sock, API_VERSIONS, 0, 1, b""))
        error = r.int16()
        if error != 0:
            raise NotReady(f"ApiVersions error_code {error}")
        versions = {}
        for _ in range(r.int32()):
            key, lo, hi = r.int16(), r.int16(), r.int16()
            versions[key] = (lo, hi)
        if login is not None:
            scram_login(sock, *login)
        if API_METADATA not in versions:
            raise NotReady("broker does not advertise Metadata")
        lo, hi = versions[API_METADATA]
        v = max(lo, 2 if cluster_id else 1)
        if v > min(hi, 8):  # 9+ are flexible versions (compact encodings); not needed here
            raise NotReady(f"no non-flexible Metadata version in {lo}..{hi}")
        # Metadata request: topics = [] (no topics; only brokers wanted).
        body = struct.pack(">i", 0)
        if v >= 4:
            body += b"\x00"  # allow_auto_topic_creation = false
        if v >= 8:
            body += b"\x00\x00"  # include cluster / topic authorized operations = false
        r = _Reader(_request(sock, API_METADATA, v, 2, body))
        if v >= 3:
            r.int32()  # throttle_time_ms
        brokers = []
        for _ in range(r.int32()):
            node_id, bhost, bport = r.int32(), r.string(), r.int32()
            r.string()  # rack
            brokers.append(f"{node_id}@{bhost}:{bport}")
        got_cluster = r.string() if v >= 2 else None
        if not brokers:
            raise NotReady("metadata lists no brokers yet")
        if cluster_id and got_cluster != cluster_id:
            raise NotReady(f"broker reports cluster id {got_cluster!r}, expected {cluster_id!r}")
        cluster = f"cluster {got_cluster}, " if got_cluster else ""
        return f"{cluster}brokers {','.join(brokers)} (Metadata v{v})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def main() -> int:
    """Parse arguments, check (or poll) once per interval, return the exit status."""
    default_port = os.environ.get("TIDEGATE_KAFKA_PORT", "19092")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default=f"127.0.0.1:{default_port}", help="host:port (default %(default)s)")
    p.add_argument("--wait", type=float, default=0.0, help="poll for up to this many seconds (default: one attempt)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between attempts")
    p.add_argument("--timeout", type=float, default=3.0, help="socket timeout per attempt")
    p.add_argument("--cluster-id", help="require this cluster id (uses Metadata v2)")
    p.add_argument("--pid", type=int, help="give up (exit 2) as soon as this process is gone")
    p.add_argument(
        "--properties", help="log in as the principal of this client properties file (its sasl.mechanism, SCRAM-SHA-512 by default)"
    )
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args()
    host, _, port = a.bootstrap.rpartition(":")
    login = read_properties(a.properties) if a.properties else None
    deadline = time.monotonic() + a.wait
    last = ""
    while True:
        try:
            info = check(host or "127.0.0.1", int(port), a.timeout, a.cluster_id, login)
            if not a.quiet:
                print(f"kafka ready at {a.bootstrap}: {info}")
            return 0
        except (OSError, NotReady, struct.error, UnicodeDecodeError) as e:
            last = f"{type(e).__name__}: {e}"
        if a.pid is not None and not _pid_alive(a.pid):
            print(f"kafka process {a.pid} exited before becoming ready ({last})", file=sys.stderr)
            return 2
        if time.monotonic() + a.interval > deadline:
            print(f"kafka not ready at {a.bootstrap} ({last})", file=sys.stderr)
            return 1
        time.sleep(a.interval)


if __name__ == "__main__":
    sys.exit(main())
