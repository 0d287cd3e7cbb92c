"""The executor's pure decisions: authenticity, what to do with a claim, backoff, final status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import schemas as s
from servicekit import Keyring, SigningKey, action_digest, authorization_message
from services.executor.domain import (
    Call,
    ClaimRecord,
    Finish,
    backoff_s,
    check_authenticity,
    decide,
    end_of_interrupted,
    final_status,
    safe_to_repeat,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ARGS = {"payee_id": "cus_1", "amount_usd": 40.0, "order_id": "O-1"}


def signed(key: SigningKey, *, digest: str | None = None, args: dict | None = None) -> s.ActionAuthorizedData:
    data = s.ActionAuthorizedData(
        action_id="a-1",
        task_id="t-1",
        tenant_id="acme",
        tool="issue_refund",
        args=args or ARGS,
        authorization=s.Authorization(
            via="policy",
            policy_version="v1",
            action_digest=digest or action_digest("acme", "issue_refund", args or ARGS),
            issued_at=NOW,
            expires_at=NOW + timedelta(minutes=5),
            key_id=key.key_id,
            signature="",
        ),
    )
    auth = data.authorization.model_copy(update={"signature": key.sign(authorization_message(data))})
    return data.model_copy(update={"authorization": auth})


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return SigningKey.load_or_create(tmp_path, "policy")


@pytest.fixture
def keyring(key: SigningKey, tmp_path: Path) -> Keyring:
    return Keyring.load(tmp_path, "policy")


def test_a_genuine_authorization_passes(key: SigningKey, keyring: Keyring) -> None:
    assert check_authenticity(signed(key), keyring) is None


def test_each_kind_of_forgery_has_its_reason_code(key: SigningKey, keyring: Keyring, tmp_path: Path) -> None:
    other = SigningKey.load_or_create(tmp_path / "other", "policy")
    assert check_authenticity(signed(other), keyring).code == "unknown_key"  # type: ignore[union-attr]
    genuine = signed(key)
    tampered = genuine.model_copy(update={"args": {**ARGS, "amount_usd": 4000.0}})
    assert check_authenticity(tampered, keyring).code == "signature_invalid"  # type: ignore[union-attr]
    garbage = genuine.model_copy(update={"authorization": genuine.authorization.model_copy(update={"signature": "!!not base64!!"})})
    assert check_authenticity(garbage, keyring).code == "signature_invalid"  # type: ignore[union-attr]
    assert check_authenticity(signed(key, digest="f" * 64), keyring).code == "digest_mismatch"  # type: ignore[union-attr]


def spec(**kw: object) -> s.ToolSpec:
    base = {"name": "t", "description": "d", "args_schema": {"type": "object"}, "risk": "financial", "kind": "python", "entrypoint": "m:f"}
    return s.ToolSpec.model_validate(base | kw)


def record(status: str = "claimed") -> ClaimRecord:
    return ClaimRecord("a-1", "e-1", "acme", "t-1", 0, "t", {}, "d", status)  # type: ignore[arg-type]


def test_a_fresh_claim_is_called() -> None:
    assert decide(record(), spec(), now=NOW, expires_at=NOW + timedelta(seconds=1), killed=None) == Call()


def test_expiry_and_kill_switch_refuse_before_the_call() -> None:
    expired = decide(record(), spec(), now=NOW, expires_at=NOW, killed=None)
    assert isinstance(expired, Finish)
    assert (expired.status, expired.error_type, expired.dead_letter) == ("failed", "authorization_expired", "authorization_expired")
    killed = decide(record(), spec(), now=NOW, expires_at=NOW + timedelta(seconds=1), killed="fraud")
    assert isinstance(killed, Finish)
    assert (killed.status, killed.error_type, killed.dead_letter) == ("failed", "kill_switch", None)


def test_args_that_break_the_schema_are_refused_before_the_call() -> None:
    refused = decide(record(), spec(), now=NOW, expires_at=NOW + timedelta(seconds=1), killed=None, arg_errors=["amount_usd: too big"])
    assert isinstance(refused, Finish)
    assert (refused.status, refused.error_type, refused.dead_letter) == ("failed", "invalid_args", "invalid_args")
    assert "amount_usd: too big" in refused.message


def test_an_unknown_tool_is_refused() -> None:
    unknown = decide(record(), None, now=NOW, expires_at=NOW + timedelta(seconds=1), killed=None)
    assert isinstance(unknown, Finish)
    assert (unknown.error_type, unknown.dead_letter) == ("unknown_tool", "unknown_tool")


def test_an_interrupted_call_is_repeated_only_when_that_is_safe() -> None:
    later = NOW + timedelta(seconds=1)
    unsafe = decide(record("running"), spec(), now=NOW, expires_at=later, killed=None)
    assert isinstance(unsafe, Finish)
    assert (unsafe.status, unsafe.error_type) == ("unknown", "interrupted")
    assert decide(record("running"), spec(accepts_idempotency_key=True), now=NOW, expires_at=later, killed=None) == Call(recovering=True)
    assert decide(record("running"), spec(idempotent=True), now=NOW, expires_at=later, killed=None) == Call(recovering=True)
    # Safe to repeat, but no longer allowed to: the first call may have happened, so the outcome is unknown.
    stopped = decide(record("running"), spec(idempotent=True), now=NOW, expires_at=later, killed="ops")
    assert isinstance(stopped, Finish)
    assert stopped.status == "unknown"


def test_reads_are_always_safe_to_repeat_and_never_unknown() -> None:
    read = spec(risk="read")
    assert safe_to_repeat(read)
    assert final_status(read, maybe_applied=True) == "failed"
    assert final_status(spec(), maybe_applied=True) == "unknown"
    assert final_status(spec(), maybe_applied=False) == "failed"


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = s.RetryPolicy(max_attempts=5, backoff_initial_s=0.2, backoff_max_s=1.0, backoff_multiplier=2.0)
    assert [backoff_s(policy, n) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.0]


def test_a_retry_after_lengthens_the_wait_within_the_policys_cap() -> None:
    policy = s.RetryPolicy(max_attempts=5, backoff_initial_s=0.2, backoff_max_s=5.0, backoff_multiplier=2.0)
    assert backoff_s(policy, 1, retry_after_s=3) == 3.0
    assert backoff_s(policy, 1, retry_after_s=60) == 5.0  # the catalog's policy stays the bound
    assert backoff_s(policy, 3, retry_after_s=0.1) == 0.8


def test_an_interrupted_call_is_not_repeated_once_its_attempts_are_used_up() -> None:
    later = NOW + timedelta(seconds=1)
    used_up = replace(record("running"), attempts=3)
    for tool, status in ((spec(accepts_idempotency_key=True), "unknown"), (spec(risk="read"), "failed")):
        ended = decide(used_up, tool, now=NOW, expires_at=later, killed=None)
        assert isinstance(ended, Finish)
        assert (ended.status, ended.error_type) == (status, "interrupted")
        assert end_of_interrupted(used_up, tool) == ended
    assert decide(replace(used_up, attempts=2), spec(idempotent=True), now=NOW, expires_at=later, killed=None) == Call(recovering=True)
    assert end_of_interrupted(replace(used_up, attempts=2), spec(idempotent=True)) is None


def test_an_interrupted_call_refused_now_ends_as_interrupted_and_is_never_dead_lettered() -> None:
    """The interrupted attempt may have happened: the authorization was used, so no refusal of it is dead-lettered."""
    later = NOW + timedelta(seconds=1)
    running = replace(record("running"), attempts=1)
    for tool, status in ((spec(accepts_idempotency_key=True), "unknown"), (spec(risk="read"), "failed")):
        refusals = (
            (dict(expires_at=NOW, killed=None), "authorization expired at"),
            (dict(expires_at=later, killed="fraud"), "kill switch set for t: fraud"),
            (dict(expires_at=later, killed=None, arg_errors=["amount_usd: too big"]), "amount_usd: too big"),
        )
        for kw, why in refusals:
            ended = decide(running, tool, now=NOW, **kw)  # type: ignore[arg-type]
            assert isinstance(ended, Finish)
            assert (ended.status, ended.error_type, ended.dead_letter) == (status, "interrupted", None)
            assert "stopped during attempt 1 of a call to t; since then: " in ended.message
            assert why in ended.message
            assert "may or may not have taken effect" in ended.message
