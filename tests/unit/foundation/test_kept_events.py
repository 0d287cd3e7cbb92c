"""`servicekit.received.proven`: the one check of a producer's signed event a service kept and reads back from its database.

The executor (a finished claim's result event) and the approval service (the result kept for an undo) both take a
kept event as authority only through it: it verifies as every consumer checks it, and it is about the very action
expected (its action, tenant, task and step).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import schemas as s
from servicekit import Authority, SigningKey, encode_signed
from servicekit.received import NotProven, proven

TOPIC = "actions.results"
SIGNED = "the executor's signed result"


def _succeeded(action_id: str = "a-1", step: int = 1) -> s.ActionSucceeded:
    data = s.ActionResultData(
        action_id=action_id, task_id="t-1", tenant_id="acme", step=step, tool="tag_ticket", status="succeeded",
        result={}, attempts=1, duration_ms=1.0,
    )  # fmt: skip
    return s.ActionSucceeded.build(data, source="tidegate/executor")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def _kept(keys: Path, event: s.Envelope, signer: str = "executor") -> str:
    return encode_signed(event, SigningKey.load_or_create(keys, signer)).decode()


def _authority(keys: Path) -> Authority:
    return Authority(keys, keys / "operators", keys / "clients", recheck_s=0.0)


def test_the_producers_signed_event_of_the_action_expected_is_proven(keys: Path) -> None:
    event = _succeeded()
    text = _kept(keys, event)
    got = proven(TOPIC, text, s.action_identity(event.data), _authority(keys), signed=SIGNED)
    assert isinstance(got, s.ActionSucceeded)
    assert (got.id, got.data) == (event.id, event.data)


@pytest.mark.parametrize(
    ("kept", "expected", "why", "counted_as"),
    [
        ("not json", "a-1", "is not an event of actions.results (ValidationError)", "invalid"),
        ("unsigned", "a-1", "is refused: tidegate.action.succeeded carries no keyid/signature", "unsigned"),
        ("another signer", "a-1", "is refused: service planner may not produce tidegate.action.succeeded", "invalid"),
        ("altered", "a-1", "is refused: signature of tidegate.action.succeeded by executor-", "invalid"),
        ("genuine", "a-2", "is the executor's signed result of another action (a-1, tenant acme, task t-1, step 1)", "invalid"),
        ("another step", "a-1", "is the executor's signed result of another action (a-1, tenant acme, task t-1, step 2)", "invalid"),
    ],
)
def test_a_kept_event_that_is_not_the_producers_for_the_action_expected_is_not_proven(
    keys: Path, kept: str, expected: str, why: str, counted_as: str
) -> None:
    event = _succeeded("a-1", step=2 if kept == "another step" else 1)
    text = {
        "not json": lambda: "{not json",
        "unsigned": lambda: s.encode(event).decode(),
        "another signer": lambda: _kept(keys, event, "planner"),
        "altered": lambda: _kept(keys, event).replace('"tag_ticket"', '"push"'),
        "genuine": lambda: _kept(keys, event),
        "another step": lambda: _kept(keys, event),
    }[kept]()
    SigningKey.load_or_create(keys, "executor")  # the deployment's executor key, whoever signed
    got = proven(TOPIC, text, s.action_identity(_succeeded(expected).data), _authority(keys), signed=SIGNED)
    assert isinstance(got, NotProven)
    assert got.why.startswith(why), got.why
    assert got.counted_as == counted_as


def test_without_the_deployments_keys_nothing_kept_is_proven(keys: Path) -> None:
    event = _succeeded()
    got = proven(TOPIC, _kept(keys, event), s.action_identity(event.data), None, signed=SIGNED)
    assert got == NotProven("cannot be verified (this service was given no public keys)", "invalid")
