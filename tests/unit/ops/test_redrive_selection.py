"""What `tidegate dead-letters redrive` picks and refuses, and the original record it would send (no broker, no database)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

import schemas as s
from servicekit.bus_rights import redrive_principal
from services.audit.rows import LogRow
from tidegate.ops.redrive import (
    DeadLetter,
    Redriven,
    Selection,
    as_json,
    dead_letter_of,
    original_of,
    original_problem,
    ran_asked,
    ran_of,
    redriven_of,
    select,
    why_not,
)

PREFIX = "tidegate."
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
VALUE = b'{"type": "tidegate.action.proposed", "id": "e-1", "tenantid": "acme", "subject": "t-1"}'  # acme t-1, as dead letters name


def row(topic: str, offset: int, value: bytes | None, *, valid: bool = True, headers: list[dict[str, str]] | None = None) -> LogRow:
    return LogRow(
        topic, 0, offset, offset + 1, T0 + timedelta(minutes=offset), 1, b"t-1", headers or [], value, valid, None,
        None, None, None, None, None, None, None, [], None, None, None, False, T0, b"", b"",
    )  # fmt: skip


def dead(
    code: str = "handler_error", *, topic: str = "actions.proposed", service: str = "policy", offset: int = 41, minutes: int = 0
) -> DeadLetter:
    data = s.EventRejectedData(
        tenant_id="acme", task_id="t-1", topic=PREFIX + topic, partition=0, offset=offset, key="t-1", raw_value=VALUE.decode(),
        size=len(VALUE), sha256=hashlib.sha256(VALUE).hexdigest(), code=code, error="boom", service=service,
    )  # fmt: skip
    event = s.EventRejected.build(data, source=f"tidegate/{service}")
    return DeadLetter(event.id, T0 + timedelta(minutes=minutes), "deadletter[0]@7", event)


@pytest.mark.parametrize(
    "code",
    ["signature_invalid", "signature_missing", "signer_not_allowed", "digest_mismatch", "action_id_reused", "authorization_replayed"],
)
def test_a_refusal_for_authority_is_never_redriven_whatever_is_asked(code: str) -> None:
    why = why_not(dead(code), PREFIX, allow_unknown_key=True, again=True)
    assert why is not None
    assert "refusal for authority" in why


@pytest.mark.parametrize(
    ("code", "says"),
    [("authorization_expired", "expired"), ("invalid_event", "same check"), ("too_deep", "same check"), ("no_permit", "not a cause")],
)
def test_expired_malformed_and_unknown_codes_are_refused_saying_why(code: str, says: str) -> None:
    why = why_not(dead(code), PREFIX)
    assert why is not None
    assert says in why


def test_unknown_key_is_redriven_only_when_asked() -> None:
    why = why_not(dead("unknown_key"), PREFIX)
    assert why is not None
    assert "--allow-unknown-key" in why
    assert why_not(dead("unknown_key"), PREFIX, allow_unknown_key=True) is None


def test_a_handler_error_is_redriven_once_unless_asked_again() -> None:
    first = dead()
    assert why_not(first, PREFIX) is None
    done = DeadLetter(first.id, first.at, first.where, first.data, None, (Redriven("oncall", T0, "INC-1"),))
    why = why_not(done, PREFIX)
    assert why is not None
    assert "already redriven by oncall" in why
    assert why_not(done, PREFIX, again=True) is None


@pytest.mark.parametrize("topic", ["control", "directory"])
def test_ordered_state_is_never_redriven(topic: str) -> None:
    why = why_not(dead(topic=topic), PREFIX)
    assert why is not None
    assert "issue the command again" in why


def test_a_dead_letter_whose_row_does_not_verify_or_of_another_prefix_is_refused() -> None:
    d = dead()
    forged = DeadLetter(d.id, d.at, d.where, d.data, "signature_invalid: …")
    assert "does not verify" in (why_not(forged, PREFIX) or "")
    assert "not a topic of this deployment" in (why_not(d, "acme.") or "")


def test_the_principal_is_one_that_already_writes_the_topic_never_admin() -> None:
    assert redrive_principal("actions.proposed") == "agent"  # the least of planner, approval and agent
    assert redrive_principal("tasks") == "agent"
    assert redrive_principal("actions.authorized") == "policy"
    assert redrive_principal("approvals") == "approval"
    assert redrive_principal("actions.results") == "executor"
    assert redrive_principal("tools.update_inventory.replies") == "tool-update_inventory"
    for topic in ("control", "directory", "deadletter", "tools.update_inventory.requests"):
        assert redrive_principal(topic) is None, topic


def test_selection_by_filters_and_by_a_unique_beginning_of_an_id() -> None:
    a, b, c = dead(minutes=1), dead("unknown_key", service="executor", topic="actions.authorized", minutes=2), dead(minutes=3)
    every = [a, b, c]
    assert select(every, Selection(service="executor"), PREFIX) == [b]
    assert select(every, Selection(code="handler_error"), PREFIX) == [a, c]
    assert select(every, Selection(topic="actions.authorized"), PREFIX) == [b]
    assert select(every, Selection(topic=PREFIX + "actions.authorized"), PREFIX) == [b]
    assert select(every, Selection(since=T0 + timedelta(minutes=2)), PREFIX) == [b, c]
    picked = Selection(ids=[c.id[:14], "nope"])
    assert select(every, picked, PREFIX) == [c]
    assert picked.unknown_ids == ["nope"]
    vague = Selection(ids=[""])
    assert select(every, vague, PREFIX) == []
    assert "names 3 dead letters" in vague.unknown_ids[0]


def test_the_original_is_sent_only_when_it_is_the_record_refused() -> None:
    d = dead()
    good = row(PREFIX + "actions.proposed", 41, VALUE)
    assert original_problem(d, good) is None
    assert "not the one refused" in (original_problem(d, row(PREFIX + "actions.proposed", 41, VALUE + b" ")) or "")
    assert "holds no record" in (original_problem(d, None) or "")


def test_the_original_keeps_its_key_and_headers_as_the_bus_had_them() -> None:
    headers = [
        {"k": "content-type", "v": "application/cloudevents+json"},
        {"k": "bin", "b64": base64.b64encode(b"\xff\x00").decode()},
        {"k": "none"},
    ]
    original = original_of(row(PREFIX + "actions.proposed", 41, VALUE, headers=headers))
    assert (original.value, original.key) == (VALUE, b"t-1")
    assert original.headers == [("content-type", b"application/cloudevents+json"), ("bin", b"\xff\x00"), ("none", None)]


def test_rows_become_dead_letters_and_redrives() -> None:
    d = dead()
    got = dead_letter_of(row(PREFIX + "deadletter", 7, s.encode(d.data)))
    assert got is not None
    assert (got.id, got.where, got.original) == (d.id, "deadletter[0]@7", f"{PREFIX}actions.proposed[0]@41")
    assert dead_letter_of(row(PREFIX + "deadletter", 8, b"not json")) is None
    invalid = dead_letter_of(row(PREFIX + "deadletter", 9, s.encode(d.data), valid=False))
    assert invalid is not None
    assert invalid.unverified == "not valid"
    record = s.ControlRedrive.build(
        s.ControlRedriveData(
            dead_letter_id=d.id, topic=PREFIX + "actions.proposed", partition=0, offset=41, sha256="0" * 64,
            code="handler_error", service="policy", reason="INC-1", set_by="oncall",
        ),
        source="tidegate/cli",
    )  # fmt: skip
    rows = [row(PREFIX + "control", 3, s.encode(record)), row(PREFIX + "control", 4, s.encode(record), valid=False)]
    assert redriven_of(rows) == {d.id: (Redriven("oncall", T0 + timedelta(minutes=3), "INC-1"),)}


def test_the_json_line_says_whether_and_why_not() -> None:
    d = dead("signature_invalid")
    line = json.loads(as_json(d, PREFIX, why_not(d, PREFIX)))
    assert (line["id"], line["topic"], line["code"], line["redrivable"], line["redriven"]) == (
        d.id,
        "actions.proposed",
        "signature_invalid",
        False,
        [],
    )
    assert "refusal for authority" in line["why_not"]


class _FakeProducer:
    """A producer that acknowledges each send, but the `fail_at`-th send of the original records (no broker)."""

    sends: list[tuple[str, bytes | None]] = []

    def __init__(self, fail_at: int | None) -> None:
        self.fail_at = fail_at

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def dead(self) -> bool:
        return False

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None, headers: object = None) -> asyncio.Future[object]:
        """The kit `Producer`'s: the delivery, already acknowledged (or the broker gone at the `fail_at`-th original)."""
        self.sends.append((topic, value))
        originals = [t for t, _ in self.sends if not t.endswith("control")]
        if self.fail_at is not None and not topic.endswith("control") and len(originals) == self.fail_at:
            raise ConnectionError("broker gone")
        delivery: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        delivery.set_result(SimpleNamespace(topic=topic, partition=0, offset=len(self.sends)))
        return delivery


def test_a_redrive_that_half_fails_says_which_were_sent_and_which_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """The on-call redrives three; the broker goes away at the second: the first is named sent, the two others not sent."""
    from typer.testing import CliRunner

    from tidegate.cli import app
    from tidegate.commands import dead_letters as cli

    letters = [dead(minutes=n) for n in range(3)]
    original = original_of(row(PREFIX + "actions.proposed", 41, VALUE))
    producer = _FakeProducer(fail_at=2)
    _FakeProducer.sends = []

    async def load(*_: object) -> list[DeadLetter]:
        return letters

    async def plan(*_: object) -> object:
        return cli._Plan(send=[(dl, original, "agent") for dl in letters])

    monkeypatch.setattr(cli, "_load", load)
    monkeypatch.setattr(cli, "_plan", plan)
    monkeypatch.setattr(cli, "_record", lambda kit, dl, reason: s.ControlRedrive.build(
        s.ControlRedriveData(dead_letter_id=dl.id, topic=dl.data.data.topic, partition=0, offset=41, sha256="0" * 64,
                             code="handler_error", service="policy", reason=reason, set_by="operator"), source="tidegate/cli"))  # fmt: skip
    monkeypatch.setattr(cli, "_producer", lambda kit, principal: producer)
    result = CliRunner().invoke(app, ["dead-letters", "redrive", "--code", "handler_error", "--reason", "INC-1", "--yes"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"sent {letters[0].id} (handler_error, by policy): {PREFIX}actions.proposed[0]@41 sent again as" in text
    assert "1 of 3 sent" in text
    stopped = f"{letters[1].id}'s record to {PREFIX}actions.proposed (its redrive is recorded on control: send it with --again)"
    assert f"{stopped} was not sent" in text
    assert f"not sent: {letters[1].id}, {letters[2].id}" in text
    assert "The dead letters stay" in text
    assert [t.removeprefix(PREFIX) for t, _ in _FakeProducer.sends] == ["control", "actions.proposed", "control", "actions.proposed"]


def test_a_record_the_consumers_would_refuse_now_is_not_sent(tmp_path: Path) -> None:
    """Checked as the consumers check: a key still on no file, or bytes outside the contract, say why; a known key passes."""
    from servicekit import KitSettings, SigningKey, deployment_authority, sign_event
    from tidegate.ops.redrive import Original, refused_now

    kit = KitSettings(keys_dir=tmp_path / "keys")
    (tmp_path / "keys").mkdir()
    data = s.ActionProposedData(
        action_id="a-1", task_id="t-1", tenant_id="acme", step=1, tool="get_ticket", args={"ticket_id": "T-1"}, rationale="r",
        proposer="p", cost=s.ProposalCost(usd=0.0), mode="autonomous", requested_by="alice@acme.example",
    )  # fmt: skip
    outside = SigningKey.load_or_create(tmp_path / "elsewhere", "alice@acme.example", tmp_path / "elsewhere-private")
    signed = sign_event(s.ActionProposed.build(data, source="agent"), outside)
    now = int(datetime.now(UTC).timestamp() * 1000)
    why = refused_now(deployment_authority(kit), "actions.proposed", Original(s.encode(signed), b"t-1", []), now)
    assert why is not None
    assert "unknown_key" in why
    garbage = refused_now(deployment_authority(kit), "actions.proposed", Original(b'{"not": "an event"}', None, []), now)
    assert "contract" in (garbage or "")
    (kit.client_keys_dir / "acme").mkdir(parents=True)
    (kit.client_keys_dir / "acme" / "alice@acme.example.pub").write_bytes((tmp_path / "elsewhere" / "alice@acme.example.pub").read_bytes())
    assert refused_now(deployment_authority(kit), "actions.proposed", Original(s.encode(signed), b"t-1", []), now) is None


@pytest.mark.parametrize("width", [80, 200])
def test_the_list_shows_each_id_and_why_whole_at_any_width(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The id is what `redrive` takes: at 80 columns seven columns cut it to `677e5ee…` and wrapped each reason a word a line."""
    from typer.testing import CliRunner

    from tidegate.cli import app
    from tidegate.commands import dead_letters as cli
    from tidegate.commands._common import console

    letters = [dead(), dead("signature_invalid", minutes=1)]

    async def load(*_: object) -> list[DeadLetter]:
        return letters

    monkeypatch.setattr(cli, "_load", load)
    monkeypatch.setattr(console, "_width", width)
    result = CliRunner().invoke(app, ["dead-letters", "list"])
    assert result.exit_code == 0, result.output
    for dl in letters:
        assert dl.id in result.stdout
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "redrivable" in text
    assert "actions.proposed[0]@41" in text
    assert "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= width


def test_a_login_missing_sends_nothing_not_even_the_record_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine holds the `ops` login but not the topic writer's: refused before anything is sent, the record of it included."""
    from typer.testing import CliRunner

    from tidegate.cli import app
    from tidegate.commands import dead_letters as cli

    letters = [dead()]
    original = original_of(row(PREFIX + "actions.proposed", 41, VALUE))
    _FakeProducer.sends = []

    async def load(*_: object) -> list[DeadLetter]:
        return letters

    async def plan(*_: object) -> object:
        return cli._Plan(send=[(dl, original, "agent") for dl in letters])

    def producer(kit: object, principal: str) -> _FakeProducer:
        if principal == "agent":
            raise ConnectionError("no Kafka login of `agent`")
        return _FakeProducer(fail_at=None)

    monkeypatch.setattr(cli, "_load", load)
    monkeypatch.setattr(cli, "_plan", plan)
    monkeypatch.setattr(cli, "_record", lambda kit, dl, reason: s.ControlRedrive.build(
        s.ControlRedriveData(dead_letter_id=dl.id, topic=dl.data.data.topic, partition=0, offset=41, sha256="0" * 64,
                             code="handler_error", service="policy", reason=reason, set_by="operator"), source="tidegate/cli"))  # fmt: skip
    monkeypatch.setattr(cli, "_producer", producer)
    result = CliRunner().invoke(app, ["dead-letters", "redrive", letters[0].id, "--reason", "INC-1", "--yes"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "0 of 1 sent" in text
    assert "cannot log in to Kafka as `agent`" in text
    assert _FakeProducer.sends == []  # no control.redrive either: it would say redriven while nothing was


def _of_action(topic: str, event_type: str, *, tenant: str = "acme", task: str = "t-1", action: str = "a-1") -> LogRow:
    return row(topic, 41, VALUE)._replace(event_type=event_type, tenant_id=tenant, task_id=task, action_id=action)


def test_a_result_its_consumer_failed_on_is_redrivable_though_its_action_succeeded() -> None:
    """The planner (or the policy, counting what a payee was paid) dead-lettered the executor's success on a handler error.

    The record is the success itself: the search for the action's success finds that very record. Its consumer's handling
    is still owed, and a redrive is the on-call's way to give it: never "its record was handled" (review62).
    """
    success = _of_action(PREFIX + "actions.results", "tidegate.action.succeeded")
    assert ran_asked(success, PREFIX) is None  # nothing to look for
    assert ran_of(success, [success]) is None
    dl = dead(topic="actions.results", service="planner")
    assert why_not(dataclasses.replace(dl, ran=ran_of(success, [success])), PREFIX) is None


def test_only_the_success_of_that_very_action_says_its_authorization_ran() -> None:
    """An agent picks its action ids: another tenant's (or another task's) success under the same id is not this call's."""
    authorization = _of_action(PREFIX + "actions.authorized", "tidegate.action.authorized")
    asked = ran_asked(authorization, PREFIX)
    assert asked is not None
    assert (asked.tenant, asked.task_id, asked.action_id, asked.event_type) == ("acme", "t-1", "a-1", "tidegate.action.succeeded")
    theirs = _of_action(PREFIX + "actions.results", "tidegate.action.succeeded", tenant="globex", task="t-9")
    other_task = _of_action(PREFIX + "actions.results", "tidegate.action.succeeded", task="t-2")
    assert ran_of(authorization, [theirs, other_task]) is None
    mine = _of_action(PREFIX + "actions.results", "tidegate.action.succeeded")
    assert ran_of(authorization, [mine]) == (
        f"action a-1 succeeded: the executor's signed result at {mine.kafka_ts:%Y-%m-%d %H:%M:%S}Z (`tidegate audit explain a-1`)"
    )
