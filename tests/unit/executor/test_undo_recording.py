"""The executor records what undoing a call needs: the state before it (read once, kept across a crash) and the plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from policy_authorizations import policy_authorized

import schemas as s
from servicekit import EventOutlet, Keyring, Reject, SigningKey, ToolCatalog
from servicekit.toolcontract import ToolContext, ToolError
from services.executor.claims import InMemoryClaimStore
from services.executor.credentials import CredentialStore
from services.executor.executor import Executor
from services.executor.tools import ToolAnswer, ToolInvokers
from services.executor.undo import InMemoryUndoStore, UndoKey

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
CATALOG = ToolCatalog.load(Path(__file__).parents[3] / "catalog" / "tools")


class Systems:
    """Answers as the demo helpdesk would: a ticket with tags, and the calls made, in order."""

    def __init__(self, tags: list[str]) -> None:
        self.tags = list(tags)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_reads = False
        self.during_read: Any = None  # what else happens while the read before the call is in flight

    async def invoke(self, spec: s.ToolSpec, ctx: ToolContext, args: dict[str, Any]) -> ToolAnswer:
        self.calls.append((spec.name, args))
        if spec.name == "get_ticket":
            if self.during_read is not None:
                self.during_read()
            if self.fail_reads:
                raise ToolError("unavailable", "helpdesk down", retryable=True)
            return ToolAnswer({"ticket_id": args["ticket_id"], "tags": sorted(self.tags), "status": "open"})
        if spec.name == "tag_ticket":
            self.tags = sorted(set(self.tags) | set(args["tags"]))
            return ToolAnswer({"ticket_id": args["ticket_id"], "tags": self.tags})
        if spec.name == "add_internal_note":
            return ToolAnswer({"ticket_id": args["ticket_id"], "note_id": 41, "created": True})
        return ToolAnswer({"ok": True})


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return SigningKey.load_or_create(tmp_path, "policy")


def executor(tmp_path: Path, systems: Systems, published: list[s.Envelope], undo: InMemoryUndoStore) -> Executor:
    async def publish(topic: str, event: s.Envelope) -> None:
        published.append(event)

    return Executor(
        catalog=CATALOG,
        keyring_loader=lambda: Keyring.load(tmp_path, "policy"),
        claims=InMemoryClaimStore(),
        invokers=ToolInvokers(python=systems, http=systems, topic=systems),
        credentials=CredentialStore({}, {}),
        out=EventOutlet(publish),
        killed=lambda tenant, tool: None,
        clock=lambda: NOW,
        undo=undo,
    )


def authorize(key: SigningKey, tool: str, args: dict[str, Any], action_id: str = "a-1") -> s.ActionAuthorized:
    """Issued at NOW, the executor's clock."""
    return policy_authorized(key, tool, args, action_id=action_id, issued_at=NOW)


async def test_tagging_reads_the_tags_before_and_plans_to_remove_only_those_it_added(tmp_path: Path, key: SigningKey) -> None:
    published: list[s.Envelope] = []
    systems, undo = Systems(["vip"]), InMemoryUndoStore()
    await executor(tmp_path, systems, published, undo).handle(authorize(key, "tag_ticket", {"ticket_id": "T-1", "tags": ["refund", "vip"]}))
    assert [name for name, _ in systems.calls] == ["get_ticket", "tag_ticket"]
    [result] = published
    assert result.data.undo == s.UndoPlan(status="ready", tool="untag_ticket", args={"ticket_id": "T-1", "tags": ["refund"]})
    assert undo.plans["a-1"] == result.data.undo
    assert undo.befores["a-1"]["tags"] == ["vip"]


async def test_a_call_that_added_nothing_has_nothing_to_undo(tmp_path: Path, key: SigningKey) -> None:
    published: list[s.Envelope] = []
    systems = Systems(["vip"])
    await executor(tmp_path, systems, published, InMemoryUndoStore()).handle(
        authorize(key, "tag_ticket", {"ticket_id": "T-1", "tags": ["vip"]})
    )
    assert published[0].data.undo.status == "nothing_to_undo"


async def test_after_a_crash_the_state_kept_before_the_first_attempt_is_what_the_undo_restores(tmp_path: Path, key: SigningKey) -> None:
    published: list[s.Envelope] = []
    systems, undo = Systems(["refund", "vip"]), InMemoryUndoStore()  # the first attempt added "refund", then the process died
    await undo.keep_prior_state(UndoKey("a-1", "acme", "t-1", "tag_ticket"), {"ticket_id": "T-1", "tags": ["vip"]})
    await executor(tmp_path, systems, published, undo).handle(authorize(key, "tag_ticket", {"ticket_id": "T-1", "tags": ["refund"]}))
    assert [name for name, _ in systems.calls] == ["tag_ticket"]  # not read again: it would see the call's own effect
    assert published[0].data.undo.args == {"ticket_id": "T-1", "tags": ["refund"]}


async def test_a_failed_read_before_leaves_the_undo_unavailable_and_the_call_still_runs(tmp_path: Path, key: SigningKey) -> None:
    published: list[s.Envelope] = []
    systems = Systems([])
    systems.fail_reads = True
    await executor(tmp_path, systems, published, InMemoryUndoStore()).handle(
        authorize(key, "tag_ticket", {"ticket_id": "T-1", "tags": ["x"]})
    )
    [result] = published
    assert (result.type, result.data.undo.status) == ("tidegate.action.succeeded", "unavailable")


async def test_a_note_is_undone_by_deleting_the_note_the_result_names(tmp_path: Path, key: SigningKey) -> None:
    published: list[s.Envelope] = []
    await executor(tmp_path, Systems([]), published, InMemoryUndoStore()).handle(
        authorize(key, "add_internal_note", {"ticket_id": "T-1", "note": "hi"})
    )
    assert published[0].data.undo.args == {"ticket_id": "T-1", "note_id": 41}


async def test_an_irreversible_tool_says_so_and_what_a_person_must_do(tmp_path: Path, key: SigningKey) -> None:
    published: list[s.Envelope] = []
    args = {"ticket_id": "T-1", "to": "c@example.com", "body": "hello"}
    await executor(tmp_path, Systems([]), published, InMemoryUndoStore()).handle(authorize(key, "send_reply", args))
    plan = published[0].data.undo
    assert plan.status == "irreversible"
    assert "correction" in plan.message


async def test_a_tool_without_an_undo_declared_carries_no_plan(tmp_path: Path, key: SigningKey) -> None:
    published: list[s.Envelope] = []
    await executor(tmp_path, Systems([]), published, InMemoryUndoStore()).handle(authorize(key, "get_ticket", {"ticket_id": "T-1"}))
    assert published[0].data.undo is None


def _crash_reading() -> None:
    raise KeyError("ticket")  # e.g. an answer of 200 without the body expected: a connector's bug, not a ToolError


async def test_a_read_before_that_raises_anything_leaves_the_undo_unavailable_and_the_call_still_runs(
    tmp_path: Path, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    published: list[s.Envelope] = []
    systems = Systems([])
    systems.during_read = _crash_reading
    await executor(tmp_path, systems, published, InMemoryUndoStore()).handle(
        authorize(key, "tag_ticket", {"ticket_id": "T-1", "tags": ["x"]})
    )
    assert [name for name, _ in systems.calls] == ["get_ticket", "tag_ticket"]
    [result] = published
    assert (result.type, result.data.undo.status) == ("tidegate.action.succeeded", "unavailable")
    assert "KeyError: 'ticket'" in caplog.text


async def test_a_kill_switch_set_during_the_read_before_stops_the_call(tmp_path: Path, key: SigningKey) -> None:
    published: list[s.Envelope] = []
    systems, switches = Systems([]), {}
    systems.during_read = lambda: switches.update({("acme", "tag_ticket"): "incident: stop tagging"})
    run = executor(tmp_path, systems, published, InMemoryUndoStore())
    run.killed = lambda tenant, tool: switches.get((tenant, tool))
    await run.handle(authorize(key, "tag_ticket", {"ticket_id": "T-1", "tags": ["x"]}))
    assert [name for name, _ in systems.calls] == ["get_ticket"]
    [result] = published
    assert (result.type, result.data.error.type, result.data.attempts) == ("tidegate.action.failed", "kill_switch", 0)


async def test_an_authorization_that_expires_during_the_read_before_is_not_called(tmp_path: Path, key: SigningKey) -> None:
    published: list[s.Envelope] = []
    systems, now = Systems([]), [NOW]
    systems.during_read = lambda: now.__setitem__(0, NOW + timedelta(minutes=10))  # the read outlasted the authorization
    run = executor(tmp_path, systems, published, InMemoryUndoStore())
    run.clock = lambda: now[0]
    with pytest.raises(Reject) as refused:
        await run.handle(authorize(key, "tag_ticket", {"ticket_id": "T-1", "tags": ["x"]}))
    assert refused.value.code == "authorization_expired"
    assert [name for name, _ in systems.calls] == ["get_ticket"]
    assert (published[0].type, published[0].data.error.type) == ("tidegate.action.failed", "authorization_expired")
