"""The Python around each Ed25519 check, cut for speed (every consumer checks every event): the same verdicts.

An attacker's signatures are refused as before: too short, too long, not bytes, over other bytes, by another key;
and the signature's base64url is read exactly as `base64.urlsafe_b64decode` reads it (or refused as it refuses it).
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from servicekit.signing import unb64url, verifies, verifies_raw

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
MESSAGE = b'{"id":"e-1","type":"tidegate.action.proposed"}'
SIGNATURE = KEY.sign(MESSAGE)


def test_a_genuine_signature_verifies_and_nothing_else_does() -> None:
    public = KEY.public_key()
    assert verifies(public, SIGNATURE, MESSAGE)
    assert verifies_raw(public.public_bytes_raw(), SIGNATURE, MESSAGE)
    forged = [
        (public, SIGNATURE, MESSAGE + b" "),  # other bytes
        (public, SIGNATURE[:63], MESSAGE),  # too short: not read as a signature over MESSAGE[1:]
        (public, SIGNATURE[:63], SIGNATURE[63:] + MESSAGE),  # the same 64 + n bytes split elsewhere
        (public, SIGNATURE + b"\x00", MESSAGE),  # too long
        (public, bytes(64), MESSAGE),
        (OTHER.public_key(), SIGNATURE, MESSAGE),  # another key
        (public, SIGNATURE.hex(), MESSAGE),  # not bytes
        (public, None, MESSAGE),
        (public, SIGNATURE, MESSAGE.decode()),  # a message that is not bytes
    ]
    for key, signature, message in forged:
        assert not verifies(key, signature, message)  # type: ignore[arg-type]
        assert not verifies_raw(key.public_bytes_raw(), signature, message)  # type: ignore[arg-type]
    assert not verifies_raw(b"\x01" * 31, SIGNATURE, MESSAGE)  # not a key


def _reference(text: str) -> bytes | type[ValueError]:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return ValueError


def _ours(text: str) -> bytes | type[ValueError]:
    try:
        return unb64url(text)
    except ValueError:
        return ValueError


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from("AZaz09-_+/=. \n\u00e9"), max_size=90) | st.text(max_size=20))
def test_base64url_is_read_as_the_standard_library_reads_it(text: str) -> None:
    assert _ours(text) == _reference(text)


# Named, not shown: the signature is new each run, and each pytest-xdist worker must collect the same ids.
@pytest.mark.parametrize("raw", [b"", b"\x00", bytes(range(256)), SIGNATURE], ids=["empty", "zero", "every-byte", "signature"])
def test_what_b64url_wrote_is_read_back(raw: bytes) -> None:
    assert unb64url(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw


def test_a_check_copies_no_message_out_of_libsodium() -> None:
    """A check holds the signed bytes once (signature and message together, as libsodium takes them), nothing more.

    PyNaCl's `crypto_sign_open` binding allocated a zeroed buffer the size of the message and copied the message out
    of it, for a result nobody read: twice the message's bytes more a check, ~19,000 instructions on an audit event.
    """
    import tracemalloc

    message = b"x" * (1 << 20)
    forged = message[:-1] + b"y"
    signature = KEY.sign(message)
    public = KEY.public_key().public_bytes_raw()
    assert verifies_raw(public, signature, message)  # the key is read once, before the measure
    tracemalloc.start()
    try:
        assert verifies_raw(public, signature, message)
        assert not verifies_raw(public, signature, forged)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(message) * 1.5, peak
