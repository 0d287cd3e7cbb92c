"""A proposal of a call already decided is answered again at most once per `repeat_answer_interval_s` (restore8 N2).

An agent re-proposing its own decided calls had each one's decision and authorization published again, every time:
156,000 re-proposals in four minutes made the next start's check read past `tidegate restart`'s 90 s.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from schemas import ActionProposed, ActionProposedData, Envelope
from servicekit import REPO_ROOT, ControlState, EventOutlet, Recorded, Reject, SigningKey, ToolCatalog
from services.policy import InMemoryPolicyRepository
from services.policy._repeats import RepeatAnswers
from services.policy.pack import PackSource, compile_pack
from services.policy.service import PolicyService
from services.policy.settings import PolicySettings

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
PACK = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), CATALOG)
NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
ALICE = "alice@acme.example"


class Clock:
    """The service's clock, moved on by the test."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def after(self, seconds: float) -> None:
        self.now = NOW + timedelta(seconds=seconds)


class Published:
    """What the service published, by topic; `fail` makes the next publish raise (a broker away)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Envelope]] = []
        self.fail = False
        self._outlet = EventOutlet(self._publish)

    async def _publish(self, topic: str, event: Envelope) -> None:
        self.events.append((topic, event))

    async def publish_many(self, records: list[Recorded]) -> None:
        if self.fail:
            self.fail = False
            raise ConnectionError("the broker went away")
        await self._outlet.publish_many(records)

    def on(self, topic: str, action_id: str = "r-1") -> list[Any]:
        return [e for t, e in self.events if t == topic and e.data.action_id == action_id]


def _service(tmp_path: Path, published: Published, clock: Clock, interval_s: float = 60.0) -> PolicyService:
    return PolicyService(
        catalog=CATALOG,
        pack=PACK,
        repo=InMemoryPolicyRepository(),
        signer=SigningKey.load_or_create(tmp_path, "policy"),
        keys_dir=tmp_path,
        control=ControlState(),
        publish_many=published.publish_many,
        settings=PolicySettings(provenance_wait_s=0, repeat_answer_interval_s=interval_s),
        clock=clock,
    )


def _refund(action_id: str = "r-1", requested_by: str = ALICE, tenant: str = "acme") -> ActionProposed:
    data = ActionProposedData(
        action_id=action_id,
        task_id="t-1",
        tenant_id=tenant,
        step=1,
        tool="issue_refund",
        args={"payee_id": "cus_1001", "amount_usd": 40.0, "order_id": "O-1"},
        proposer="tests",
        mode="autonomous",
        requested_by=requested_by,
    )
    return ActionProposed.build(data, source="tests")


def _unanswered(tenant: str = "acme") -> float:
    return REGISTRY.get_sample_value("tidegate_policy_repeats_unanswered_total", {"tenant": tenant}) or 0.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def published() -> Published:
    return Published()


async def test_a_repeat_inside_the_interval_publishes_nothing_is_counted_and_logged_once(
    tmp_path: Path, published: Published, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    service = _service(tmp_path, published, clock)
    before = _unanswered()
    decided = await service.on_proposed(_refund())
    assert decided.outcome == "allow"
    with caplog.at_level(logging.WARNING, logger="services.policy"):
        for second in range(1, 61):  # each acknowledged (no raise, no dead letter): its answer is on the bus
            clock.after(second)
            assert await service.on_proposed(_refund()) == decided
    # The decision, and its first repeat answered (an agent restarted without its ledger reads from where it asks again).
    assert len(published.on("actions.decided")) == len(published.on("actions.authorized")) == 2
    assert _unanswered() == before + 59
    [line] = [r for r in caplog.records if "not answered again" in r.getMessage()]  # once in the interval, for alice
    assert line.levelno == logging.WARNING
    assert "1 repeats of decided calls by alice@acme.example (tenant acme)" in line.getMessage()
    assert "their answers are on actions.decided" in line.getMessage()


async def test_after_the_interval_a_repeat_is_answered_again_and_the_next_line_counts_those_held_since(
    tmp_path: Path, published: Published, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    service = _service(tmp_path, published, clock)
    await service.on_proposed(_refund())
    with caplog.at_level(logging.WARNING, logger="services.policy"):
        for second in (1, 2, 3, 4):  # the first repeat answered, the next three held
            clock.after(second)
            await service.on_proposed(_refund())
        clock.after(61)
        await service.on_proposed(_refund())  # answered again: 60 s since it was last answered again
        assert len(published.on("actions.decided")) == 3
        clock.after(63)
        await service.on_proposed(_refund())  # held again, and 61 s since the last line: logged with the three held since
    first, *again = published.on("actions.decided")
    assert {a.id for a in again} == {first.id}  # the recorded decision, not a new one
    assert [a.id for a in published.on("actions.authorized")] == [published.on("actions.authorized")[0].id] * 3
    lines = [r.getMessage() for r in caplog.records if "not answered again" in r.getMessage()]
    assert [line.split(" repeats")[0] for line in lines] == ["policy: 1", "policy: 3"]
    assert "since 2026-12-07T03:00:02+00:00" in lines[1]


async def test_interval_zero_answers_every_repeat(tmp_path: Path, published: Published, clock: Clock) -> None:
    service = _service(tmp_path, published, clock, interval_s=0)
    before = _unanswered()
    for _ in range(5):
        await service.on_proposed(_refund())
    assert len(published.on("actions.decided")) == len(published.on("actions.authorized")) == 5
    assert _unanswered() == before


async def test_a_fresh_decision_is_always_published_and_a_repeat_in_its_own_batch_once(
    tmp_path: Path, published: Published, clock: Clock
) -> None:
    service = _service(tmp_path, published, clock)
    await service.on_proposed(_refund("r-1"))
    await service.on_proposed(_refund("r-1"))  # its first repeat: answered
    before = _unanswered()
    # One batch: a repeat of r-1 (held), a fresh call r-2 and a repeat of it (the second held: r-2 answered in the batch).
    await service.on_proposed_batch([_refund("r-1"), _refund("r-2"), _refund("r-2")])
    assert len(published.on("actions.decided", "r-1")) == 2
    assert len(published.on("actions.decided", "r-2")) == len(published.on("actions.authorized", "r-2")) == 1
    assert _unanswered() == before + 2


async def test_a_publish_that_failed_is_answered_when_retried(tmp_path: Path, published: Published, clock: Clock) -> None:
    """Nothing lost: an id is remembered as answered only once its answer is on the bus."""
    service = _service(tmp_path, published, clock)
    published.fail = True
    with pytest.raises(ConnectionError):
        await service.on_proposed(_refund())  # recorded, not published: the bus retries the batch
    before = _unanswered()
    await service.on_proposed(_refund())  # the retry: recorded already, never answered
    assert len(published.on("actions.decided")) == 1
    assert _unanswered() == before


async def test_another_requesters_repeat_is_still_refused_first(tmp_path: Path, published: Published, clock: Clock) -> None:
    service = _service(tmp_path, published, clock)
    await service.on_proposed(_refund())
    with pytest.raises(Reject) as reused:
        await service.on_proposed(_refund(requested_by="mallory@acme.example"))
    assert reused.value.code == "action_id_reused"


def test_the_memory_holds_at_most_its_bound_and_forgets_the_least_recently_answered() -> None:
    repeats = RepeatAnswers(60.0, kept=3)
    proposals = [_refund(f"r-{i}").data for i in range(5)]
    repeats.answered([p.action_id for p in proposals], NOW)
    assert len(repeats._answered) == 3
    due, again, held = repeats.split([(p, p.action_id, False) for p in proposals], NOW + timedelta(seconds=1))
    assert (due, again, [p.action_id for p in held]) == (["r-0", "r-1"], ["r-0", "r-1"], ["r-2", "r-3", "r-4"])  # forgotten: answered
    repeats.held_back([_refund(requested_by=f"agent-{i}@acme.example").data for i in range(5)], NOW)
    assert len(repeats._held) == 3  # one tally a requester, as bounded


async def test_an_agent_restarted_without_its_ledger_is_answered_when_it_asks_again_at_once(
    tmp_path: Path, published: Published, clock: Clock
) -> None:
    """money9 F3: an agent restarted seconds after its call was decided, with no ledger of where it asked, asks again under the
    same action id and reads from there: its first repeat is answered at once, however soon it comes."""
    service = _service(tmp_path, published, clock)
    await service.on_proposed(_refund())
    clock.after(1)
    before = _unanswered()
    await service.on_proposed(_refund())
    assert len(published.on("actions.decided")) == len(published.on("actions.authorized")) == 2
    assert _unanswered() == before
