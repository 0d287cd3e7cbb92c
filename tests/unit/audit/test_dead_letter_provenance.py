"""A dead letter is held to its signer by every reader: a stolen service login's forgery is not a service's refusal.

bindattack B6: every service's Kafka login may write `deadletter`. With the executor's login and key, an attacker signs
dead letters in the executor's own name (the only name its key may use) that lie about the record: one of a topic the
executor never reads (the policy's proposals: the on-call chases a "lost" proposal), or a globex record filed under
acme. Before, the audit log kept them as valid events, `tidegate dead-letters list` showed them as the executor's
refusals and nothing counted them. Now the audit records them as not valid (`signer_not_allowed`), counts them in
`tidegate_audit_invalid_records_total`, and `dead-letters list` shows them as not verified, never redriven.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

import schemas as s
from servicekit import KitSettings, deployment_authority, service_key, sign_event
from services.audit._log_base import SearchFilters
from services.audit.handlers import Recorder
from services.audit.repository import InMemoryAuditLog
from tidegate.ops.redrive import DeadLetter, dead_letter_of, named_service, why_not

PREFIX = "tidegate."


class Record:
    """What aiokafka hands the audit: one record as the broker appended it (LogAppendTime)."""

    def __init__(self, topic: str, offset: int, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.value = PREFIX + topic, 0, offset, value
        self.timestamp, self.timestamp_type, self.key, self.headers = 1_790_000_000_000 + offset, 1, None, ()


def count(reason: str) -> float:
    labels = {"topic": PREFIX + "deadletter", "reason": reason, "dead_lettered": "false"}
    return REGISTRY.get_sample_value("tidegate_audit_invalid_records_total", labels) or 0.0


def record_of(tenant: str, task: str) -> bytes:
    data = s.ActionProposedData(
        action_id="a-1", task_id=task, tenant_id=tenant, step=1, tool="issue_refund", args={"amount": 10}, proposer="agent"
    )
    return s.encode(s.ActionProposed.build(data, source="agent"))


def dead_letter(kit: KitSettings, topic: str, raw: bytes, tenant: str, task: str) -> bytes:
    """A dead letter signed with the executor's key, naming the executor (what its stolen login and key can write)."""
    data = s.EventRejectedData(
        tenant_id=tenant, task_id=task, topic=PREFIX + topic, partition=0, offset=4, key=task, raw_value=raw.decode(),
        size=len(raw), sha256=hashlib.sha256(raw).hexdigest(), code="handler_error", error="lost: call us", service="executor",
    )  # fmt: skip
    return s.encode(sign_event(s.EventRejected.build(data, source="tidegate/executor"), service_key(kit, "executor")))


@pytest.fixture
def kit(tmp_path: Path) -> KitSettings:
    (tmp_path / "keys").mkdir()
    return KitSettings(keys_dir=tmp_path / "keys")


def test_a_stolen_executor_login_s_dead_letters_are_counted_shown_as_not_verified_and_never_redriven(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(prefix=PREFIX, log=InMemoryAuditLog(), authority=deployment_authority(kit, history=True))
    before = count("signer_not_allowed")
    forged = [
        dead_letter(kit, "actions.proposed", record_of("acme", "t-1"), "acme", "t-1"),  # a topic only the policy reads
        dead_letter(kit, "actions.authorized", record_of("globex", "g-1"), "acme", "g-1"),  # globex's record, filed under acme
    ]
    honest = dead_letter(kit, "actions.authorized", record_of("acme", "t-2"), "acme", "t-2")
    asyncio.run(recorder.record_batch([Record("deadletter", n, v) for n, v in enumerate([*forged, honest])]))

    assert count("signer_not_allowed") - before == 2
    rows = asyncio.run(recorder.log.search(SearchFilters(event_type="tidegate.event.rejected", topic_prefix=PREFIX)))
    assert [r.valid for r in sorted(rows, key=lambda r: r.kafka_offset)] == [False, False, True]
    letters = [dl for r in sorted(rows, key=lambda r: r.kafka_offset) if (dl := dead_letter_of(r)) is not None]
    assert [named_service(dl) for dl in letters] == ["not verified (names executor)"] * 2 + ["executor"]
    for dl in letters[:2]:
        assert dl.unverified is not None
        assert dl.unverified.startswith("signer_not_allowed")
        why = why_not(dl, PREFIX, allow_unknown_key=True, again=True)
        assert why is not None
        assert "does not verify" in why
        assert "nothing is sent" in why

    # `tidegate dead-letters list`: the forgeries are listed (nothing hidden), not as the executor's refusals
    from tidegate.cli import app
    from tidegate.commands import dead_letters as cli
    from tidegate.commands._common import console

    async def load(*_: object) -> list[DeadLetter]:
        return letters

    monkeypatch.setattr(cli, "_load", load)
    monkeypatch.setattr(console, "_width", 200)
    result = CliRunner().invoke(app, ["dead-letters", "list"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.replace("│", " ").split())
    assert text.count("not verified (names executor)") == 2
    assert text.count("redrivable") == 1


def test_a_dead_letter_too_large_to_check_alone_is_held_to_the_tenant_of_the_logged_record_before_a_redrive(kit: KitSettings) -> None:
    """A truncated dead letter carries not the record's whole bytes: its tenant is checked against the audit log's copy."""
    from datetime import UTC, datetime

    from services.audit.rows import LogRow
    from tidegate.ops.redrive import original_problem

    big = record_of("globex", "g-1")
    data = s.EventRejectedData(
        tenant_id="acme", task_id="g-1", topic=PREFIX + "actions.authorized", partition=0, offset=4, raw_value=big[:20].decode(),
        truncated=True, size=len(big), sha256=hashlib.sha256(big).hexdigest(), code="handler_error", error="e", service="executor",
    )  # fmt: skip
    event = sign_event(s.EventRejected.build(data, source="tidegate/executor"), service_key(kit, "executor"))
    assert deployment_authority(kit, history=True).check(s.encode(event), event) is None  # nothing to check it against alone
    at = datetime(2026, 12, 7, tzinfo=UTC)
    logged = LogRow(
        PREFIX + "actions.authorized", 0, 4, 5, at, 1, None, [], big, True, None, "e-1", "tidegate.action.proposed", "globex",
        "g-1", "a-1", None, None, [], None, None, None, False, at, b"", b"",
    )  # fmt: skip
    dl = DeadLetter(event.id, at, "deadletter[0]@9", event)
    why = original_problem(dl, logged)
    assert why is not None
    assert "names tenant acme" in why
    assert "of tenant globex" in why
    theirs = event.model_copy(update={"tenantid": "globex", "data": data.model_copy(update={"tenant_id": "globex"})})
    honest = DeadLetter(event.id, at, "deadletter[0]@9", theirs)
    assert original_problem(honest, logged) is None


def _logged(kit: KitSettings, theirs: bytes | None, **forged: object) -> InMemoryAuditLog:
    """The audit log after `theirs` (at actions.authorized[0]@4) and a dead letter the executor's key signs naming that position.

    `forged`: what the attacker writes in it beside the tenant (acme), the task and the position of `theirs`.
    """
    log = InMemoryAuditLog()  # with the one look-up `dead-letters list` makes of a record by its position
    recorder = Recorder(prefix=PREFIX, log=log, authority=deployment_authority(kit, history=True))
    data = s.EventRejectedData(
        tenant_id="acme", task_id="g-1", topic=PREFIX + "actions.authorized", partition=0, offset=4, size=len(theirs or b""),
        code="handler_error", error="lost", service="executor", **forged,  # type: ignore[arg-type]
    )  # fmt: skip
    signed = s.encode(sign_event(s.EventRejected.build(data, source="tidegate/executor"), service_key(kit, "executor")))
    asyncio.run(recorder.record_batch([Record("actions.authorized", 4, theirs), Record("deadletter", 9, signed)]))
    return log


def _listed(kit: KitSettings, monkeypatch: pytest.MonkeyPatch, theirs: bytes | None, **forged: object) -> dict[str, object]:
    """`dead-letters list --json`'s line for a dead letter the executor's key signs of `theirs` (the log's record at its position)."""
    import json

    from tidegate.cli import app
    from tidegate.commands import dead_letters as cli

    log = _logged(kit, theirs, **forged)

    async def with_log(go: object) -> object:
        return await go(log)  # type: ignore[operator]

    monkeypatch.setattr(cli, "with_audit_log", with_log)
    monkeypatch.setattr(cli, "row_recheck", lambda kit: lambda row: None)
    result = CliRunner().invoke(app, ["dead-letters", "list", "--json"])
    assert result.exit_code == 0, result.output
    [line] = [json.loads(x) for x in result.stdout.splitlines()]
    return line  # type: ignore[no-any-return]


def test_a_dead_letter_that_says_it_is_truncated_is_listed_as_not_verified_when_the_record_it_names_is_another_tenants(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker marks its dead letter `truncated`, so the signer's check cannot read its tenant: `list` reads the log's copy."""
    theirs = record_of("globex", "g-1")
    line = _listed(kit, monkeypatch, theirs, raw_value=theirs[:30].decode(), truncated=True, sha256=hashlib.sha256(theirs).hexdigest())
    assert line["shown_as"] == "not verified (names executor)"
    assert "of tenant globex" in str(line["unverified"])
    assert line["redrivable"] is False


def test_a_dead_letter_whose_sha256_is_not_what_it_carries_is_listed_as_not_verified_when_the_log_holds_another_record_there(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attacker leaves `truncated` unset and carries globex's record whole, but writes a SHA-256 of nothing it carries.

    The signer's check cannot hold such a dead letter to what it carries (its bytes are not the record it names), so it
    passes it; `list` must read the log's copy, and a log whose record at that position is another one is not the record
    this dead letter says the executor refused (before, a SHA-256 that matched neither let it through as verified).
    """
    theirs = record_of("globex", "g-1")
    line = _listed(kit, monkeypatch, theirs, raw_value=theirs.decode(), sha256=hashlib.sha256(b"any other record").hexdigest())
    assert line["shown_as"] == "not verified (names executor)"
    assert "is not the one it names" in str(line["unverified"])
    assert line["redrivable"] is False


def made_up(amount: float) -> bytes:
    """An acme proposal the agent never made, whole: what a stolen key's dead letter carries to look like a refusal of it."""
    data = s.ActionProposedData(
        action_id="a-9", task_id="g-1", tenant_id="acme", step=1, tool="issue_refund", args={"amount": amount}, proposer="agent"
    )
    return s.encode(s.ActionProposed.build(data, source="agent"))


def test_a_dead_letter_made_up_whole_naming_another_records_position_is_listed_as_not_verified(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review61 F7: the attacker's dead letter carries a record it made up, whole and with its own SHA-256 (so the signer's
    check holds it, and passes it), and names the position where the log holds another record of the same tenant.

    Before, a dead letter that could be checked alone was never held to the log's copy: listed as the executor's verified
    refusal of a 9,000 USD refund nobody proposed (`redrive` refused it only when asked to send it).
    """
    lie = made_up(9000.0)
    line = _listed(kit, monkeypatch, made_up(10.0), raw_value=lie.decode(), sha256=hashlib.sha256(lie).hexdigest())
    assert line["shown_as"] == "not verified (names executor)", "listed as the executor's verified refusal of a record it never saw"
    assert "is not the one it names" in str(line["unverified"])
    assert line["redrivable"] is False


def test_audit_explain_names_a_dead_letter_whose_record_is_not_the_one_at_the_position_it_names(kit: KitSettings) -> None:
    """`audit explain` of the task lists the lying dead letter among the rows that are not evidence, and an honest one not."""
    from services.audit import explain_task

    lie = made_up(9000.0)
    log = _logged(kit, made_up(10.0), raw_value=lie.decode(), sha256=hashlib.sha256(lie).hexdigest())
    told = asyncio.run(explain_task(log, "g-1", PREFIX, recheck=lambda row: None))
    assert "handler_error" in [dl.code for dl in told.dead_letters]  # listed, as every dead letter of the task
    assert [u for u in told.unverified or [] if "is not the one it names" in u], "the lying dead letter was told as evidence"

    honest = made_up(10.0)
    log = _logged(kit, honest, raw_value=honest.decode(), sha256=hashlib.sha256(honest).hexdigest())
    assert asyncio.run(explain_task(log, "g-1", PREFIX, recheck=lambda row: None)).unverified == []


def test_a_dead_letter_carrying_a_made_up_record_whole_is_listed_as_not_verified_when_the_log_holds_another_there(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review61 F7: the attacker carries a record of its own making whole, its SHA-256 consistent, at globex's record's position.

    The signer's check holds it to what it carries (acme's, made up) and passes it; before, `list` never read the log's
    copy of such a one and showed it as the executor's verified refusal, redrivable. The log holds another record there.
    """
    theirs, made_up = record_of("globex", "g-1"), record_of("acme", "g-1")
    line = _listed(kit, monkeypatch, theirs, raw_value=made_up.decode(), sha256=hashlib.sha256(made_up).hexdigest())
    assert line["shown_as"] == "not verified (names executor)"
    assert "is not the one it names" in str(line["unverified"])
    assert line["redrivable"] is False
    assert line["ran"] is None  # nothing said of the log's record there, which is not the one it names


def test_a_dead_letter_naming_another_task_of_the_same_tenant_is_listed_as_not_verified_and_not_told_as_that_tasks_evidence(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review63: the executor's stolen key writes a dead letter of acme's record of task `t-other`, naming acme's task `g-1`.

    It marks itself truncated, carrying the record's true SHA-256, so the signer's check cannot read its task and passes
    it, and the log's record at its position is the one it names (same SHA-256, same tenant). Before, `list` showed it as the
    executor's verified refusal under task g-1, and `audit explain g-1` told it as part of that task's story.
    """
    from services.audit import explain_task

    theirs = record_of("acme", "t-other")
    forged = {"raw_value": theirs[:30].decode(), "truncated": True, "sha256": hashlib.sha256(theirs).hexdigest()}
    line = _listed(kit, monkeypatch, theirs, **forged)
    assert line["task_id"] == "g-1"
    assert line["shown_as"] == "not verified (names executor)", "listed as the executor's verified refusal of task g-1"
    assert "is of task t-other" in str(line["unverified"])
    assert line["redrivable"] is False
    told = asyncio.run(explain_task(_logged(kit, theirs, **forged), "g-1", PREFIX, recheck=lambda row: None))
    assert [u for u in told.unverified or [] if "is of task t-other" in u], "told as evidence of task g-1"


NAMES_NONE = b'{"type": "tidegate.action.authorized", "data": {"tool": "issue_refund", "args": {"amount": 9000}}}'  # no tenant, no task


@pytest.mark.parametrize("carried", ["whole", "truncated"])
def test_a_dead_letter_naming_a_task_for_a_record_that_names_none_is_not_told_as_that_tasks_refusal(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch, carried: str
) -> None:
    """review64: the executor's stolen key writes a dead letter naming acme's task g-1 of a record in the log that names no
    tenant and no task (junk a writer of the topic left there; its dead-letterer named it `unknown`, no task).

    The checks compared the task and tenant only when the record named one, so a record naming none matched any: the
    auditor's `dead-letters list` showed the executor's verified refusal under task g-1 (redrivable), and `audit explain
    g-1` told it as part of that task's story. A dead letter that names a task (a tenant) must name the record's.
    """
    from services.audit import explain_task

    forged: dict[str, object] = {"raw_value": NAMES_NONE.decode(), "sha256": hashlib.sha256(NAMES_NONE).hexdigest()}
    if carried == "truncated":
        forged.update(raw_value=NAMES_NONE[:30].decode(), truncated=True)
    line = _listed(kit, monkeypatch, NAMES_NONE, **forged)
    assert line["task_id"] == "g-1"
    assert line["shown_as"] == "not verified (names executor)", "listed as the executor's verified refusal of task g-1"
    assert "names no task" in str(line["unverified"]) or "names no tenant" in str(line["unverified"]), line["unverified"]
    assert line["redrivable"] is False
    told = asyncio.run(explain_task(_logged(kit, NAMES_NONE, **forged), "g-1", PREFIX, recheck=lambda row: None))
    # the refusal is told neither as the executor's of g-1 (whole: the audit keeps it as not valid) nor without saying why
    assert "handler_error" not in [dl.code for dl in told.dead_letters] or told.unverified, "told as evidence of task g-1"


def test_a_dead_letter_of_a_record_that_names_no_task_naming_none_is_still_the_services_refusal(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the executor itself writes of such junk (tenant `unknown`, no task) stays its verified refusal."""
    whole = {"raw_value": NAMES_NONE.decode(), "sha256": hashlib.sha256(NAMES_NONE).hexdigest()}
    log = InMemoryAuditLog()
    recorder = Recorder(prefix=PREFIX, log=log, authority=deployment_authority(kit, history=True))
    data = s.EventRejectedData(
        tenant_id="unknown", task_id=None, topic=PREFIX + "actions.authorized", partition=0, offset=4, size=len(NAMES_NONE),
        code="invalid_event", error="undecodable", service="executor", **whole,  # type: ignore[arg-type]
    )  # fmt: skip
    signed = s.encode(sign_event(s.EventRejected.build(data, source="tidegate/executor"), service_key(kit, "executor")))
    asyncio.run(recorder.record_batch([Record("actions.authorized", 4, NAMES_NONE), Record("deadletter", 9, signed)]))
    rows = asyncio.run(log.search(SearchFilters(event_type="tidegate.event.rejected", topic_prefix=PREFIX)))
    assert [r.valid for r in rows] == [True]
    [dl] = [d for r in rows if (d := dead_letter_of(r)) is not None]
    assert named_service(dl) == "executor"


def test_a_dead_letter_naming_a_task_for_a_record_with_no_value_is_not_told_as_that_tasks_refusal(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same forgery of a record with no value at all (a tombstone: any writer of the topic may append one): the log
    keeps it without a value, and the executor's stolen key names acme's task g-1 and the SHA-256 of no bytes, carried
    "truncated" so that only the readers can hold it to the log's copy. A record without a value names no tenant and no
    task, as one that names none (the readers passed any dead letter of such a row: listed as the executor's verified
    refusal of g-1, redrivable, and told in g-1's story)."""
    from services.audit import explain_task

    forged: dict[str, object] = {"raw_value": "", "sha256": hashlib.sha256(b"").hexdigest(), "truncated": True}
    line = _listed(kit, monkeypatch, None, **forged)
    assert line["task_id"] == "g-1"
    assert line["shown_as"] == "not verified (names executor)", "listed as the executor's verified refusal of task g-1"
    assert "names no tenant" in str(line["unverified"]), line["unverified"]
    assert line["redrivable"] is False
    told = asyncio.run(explain_task(_logged(kit, None, **forged), "g-1", PREFIX, recheck=lambda row: None))
    assert told.unverified, "told as evidence of task g-1"
