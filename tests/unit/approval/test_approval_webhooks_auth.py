"""Standard Webhooks signing and verification, token hashing and one-time links."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import standardwebhooks

from servicekit import SigningKey
from services.approval import auth, webhooks

# The example of the Standard Webhooks reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_spec_example() -> None:
    assert webhooks.sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE


@pytest.fixture
def now_ts() -> int:
    """The real time when the test runs: the reference library holds a timestamp to 5 minutes of it, whatever `now` says.

    Taken per test, not once when the module is collected: a slow full unit run reached these tests more than
    5 minutes after collection, and they failed.
    """
    return int(time.time())


def test_the_reference_library_verifies_our_signature(now_ts: int) -> None:
    headers = webhooks.signed_headers(SPEC_SECRET, SPEC_ID, now_ts, SPEC_BODY)
    standardwebhooks.Webhook(SPEC_SECRET).verify(SPEC_BODY, headers, json_parse=False)  # raises if it does not


def test_verify_accepts_a_genuine_message_and_one_of_several_signatures(now_ts: int) -> None:
    headers = webhooks.signed_headers(SPEC_SECRET, SPEC_ID, now_ts, SPEC_BODY)
    assert webhooks.verify(SPEC_SECRET, headers, SPEC_BODY, now=now_ts + 10, tolerance_s=300) == (SPEC_ID, now_ts)
    rotated = headers | {"webhook-signature": "v1,AAAA " + headers["webhook-signature"]}
    assert webhooks.verify(SPEC_SECRET, rotated, SPEC_BODY, now=now_ts, tolerance_s=300)[0] == SPEC_ID


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF="}, "bad_signature"),
        ({"webhook-id": "msg_other"}, "bad_signature"),
        ({"webhook-timestamp": -301}, "stale_timestamp"),  # an int: seconds from the test's now
        ({"webhook-timestamp": 301}, "stale_timestamp"),
        ({"webhook-timestamp": "soon"}, "bad_timestamp"),
        ({"webhook-id": ""}, "missing_headers"),
        ({"webhook-signature": "v1,\u00e9\u00e9\u00e9"}, "bad_signature"),  # non-ASCII: a refusal, not an error
        ({"webhook-signature": "v1"}, "bad_signature"),
        ({"webhook-signature": "v1,not base64!"}, "bad_signature"),
        ({"webhook-signature": "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}, "bad_signature"),
    ],
)
def test_verify_refuses(change: dict[str, str | int], code: str, now_ts: int) -> None:
    changed = {k: str(now_ts + v) if isinstance(v, int) else v for k, v in change.items()}
    headers = webhooks.signed_headers(SPEC_SECRET, SPEC_ID, now_ts, SPEC_BODY) | changed
    with pytest.raises(webhooks.WebhookVerificationError) as caught:
        webhooks.verify(SPEC_SECRET, headers, SPEC_BODY, now=now_ts, tolerance_s=300)
    assert caught.value.code == code


def test_a_tampered_body_or_another_secret_fails(now_ts: int) -> None:
    headers = webhooks.signed_headers(SPEC_SECRET, SPEC_ID, now_ts, SPEC_BODY)
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(SPEC_SECRET, headers, b'{"test": 1}', now=now_ts, tolerance_s=300)
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(webhooks.new_secret(), headers, SPEC_BODY, now=now_ts, tolerance_s=300)
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(SPEC_SECRET, headers, b"\xff\xfe not UTF-8", now=now_ts, tolerance_s=300)


@pytest.mark.parametrize(
    ("url", "allowed", "refused"),
    [
        ("https://93.184.216.34/hook", (), False),
        ("https://127.0.0.1/hook", (), True),
        ("https://[::1]/hook", (), True),
        ("https://[::ffff:10.0.0.1]/hook", (), True),
        ("https://10.1.2.3/hook", (), True),
        ("https://192.168.1.1/hook", (), True),
        ("https://169.254.169.254/latest/meta-data", (), True),
        ("https://0.0.0.0/hook", (), True),
        ("http://93.184.216.34/hook", (), True),
        ("ftp://93.184.216.34/hook", (), True),
        ("http://127.0.0.1:9/hook", ("127.0.0.1",), False),
        ("https://169.254.169.254/", ("127.0.0.1",), True),
        ("https://localhost/hook", (), True),
    ],
)
async def test_webhook_urls_are_https_to_public_addresses_unless_allow_listed(url: str, allowed: tuple[str, ...], refused: bool) -> None:
    assert (await webhooks.url_refusal(url, allowed) is not None) == refused


async def test_the_sender_refuses_a_url_at_delivery_and_never_keeps_a_response_body() -> None:
    answered: list[str] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        answered.append(str(request.url))
        return httpx.Response(500, text="db password is hunter2")

    sender = webhooks.HttpxSender(1.0, ["hooks.test"], transport=httpx.MockTransport(receiver))
    try:
        refused = await sender.send("https://169.254.169.254/latest", {}, b"{}")
        failed = await sender.send("http://hooks.test/hook", {}, b"{}")
    finally:
        await sender.close()
    assert not refused.ok
    assert refused.error is not None
    assert refused.error.startswith("url_refused")
    assert answered == ["http://hooks.test/hook"]  # the refused URL was never called
    assert (failed.ok, failed.status_code, failed.error) == (False, 500, "HTTP 500")


def test_secrets_must_be_whsec_base64() -> None:
    webhooks.check_secret(webhooks.new_secret())
    for bad in ("whsec_", "whsec_%%%", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_AAAA"):
        with pytest.raises(ValueError, match="whsec_"):
            webhooks.check_secret(bad)


def test_backoff_doubles_and_caps() -> None:
    delays = [webhooks.backoff(n, initial_s=1, max_s=10).total_seconds() for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 10, 10]


def test_tokens_are_random_and_only_their_hash_is_kept() -> None:
    a, b = auth.new_token(), auth.new_token()
    assert a != b
    assert a.startswith("tga_")
    assert len(auth.hash_token(a)) == 64
    assert auth.hash_token(a) != auth.hash_token(b)
    assert a not in auth.hash_token(a)


def test_one_time_links_verify_and_refuse_forgery_and_expiry(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path, "approval")
    now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    link = auth.issue_link(key, approval_id="ap-1", approver="bob@acme.example", tenant_id="acme", expires_at=now + timedelta(minutes=5))
    claims = auth.verify_link(key, link, now=now)
    assert (claims.approval_id, claims.approver, claims.tenant_id) == ("ap-1", "bob@acme.example", "acme")
    with pytest.raises(auth.LinkError, match="expired"):
        auth.verify_link(key, link, now=now + timedelta(minutes=5))
    prefix, _body, sig = link.split(".")
    other = auth.issue_link(key, approval_id="ap-2", approver="bob@acme.example", tenant_id="acme", expires_at=now + timedelta(minutes=5))
    with pytest.raises(auth.LinkError, match="signature"):
        auth.verify_link(key, f"{prefix}.{other.split('.')[1]}.{sig}", now=now)
    stranger = SigningKey.load_or_create(tmp_path / "other", "approval")
    with pytest.raises(auth.LinkError):
        auth.verify_link(stranger, link, now=now)
    with pytest.raises(auth.LinkError):
        auth.verify_link(key, "tga_not_a_link", now=now)


async def test_the_sender_connects_to_the_address_it_checked_so_a_rebinding_answer_reaches_nothing_private() -> None:
    answers = [["93.184.216.34"], ["127.0.0.1"]]  # a rebinding name: public when checked, loopback on the next lookup
    asked: list[tuple[str, int]] = []
    received: list[httpx.Request] = []

    async def rebinding_resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return answers.pop(0)

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204)

    sender = webhooks.HttpxSender(1.0, transport=httpx.MockTransport(receiver), resolver=rebinding_resolver)
    try:
        first = await sender.send("https://hooks.example.com:8443/hook?x=1", {"webhook-id": "msg_1"}, b"{}")
        second = await sender.send("https://hooks.example.com:8443/hook?x=1", {"webhook-id": "msg_2"}, b"{}")
    finally:
        await sender.close()
    assert first.ok
    assert asked == [("hooks.example.com", 8443), ("hooks.example.com", 8443)]  # one lookup per attempt, none by httpx
    [request] = received
    assert str(request.url) == "https://93.184.216.34:8443/hook?x=1"  # the connection goes to the checked address
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"  # TLS name and certificate check stay the name's
    assert request.headers["webhook-id"] == "msg_1"
    assert not second.ok
    assert second.error is not None
    assert second.error.startswith("url_refused")  # the loopback answer was refused, and nothing was sent
