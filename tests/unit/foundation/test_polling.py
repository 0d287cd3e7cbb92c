"""How the kit's consumers poll: inside the fetch, never in a sleep between polls; each batch handed over as it came.

The loop is the kit's own (`servicekit.polling`): these tests drive it with a consumer that answers
`getmany` from a script, as aiokafka's would, and hold what a service relies on: the records reach
the handler untouched (binary headers included), a failing batch does not end the loop, a broker
error is waited out, and a stop lets the batch in hand finish before the consumer leaves.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError

from servicekit import polling
from servicekit.polling import POLL_WAIT_MS, Poller, poll

TP = TopicPartition("tidegate.tasks", 0)


def _record(partition: int, offset: int, headers: list[tuple[str, bytes | None]] | None = None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("tidegate.tasks", partition, offset, 0, 0, None, b"{}", None, 0, 2, headers or [])


class _Consumer:
    """Answers `getmany` from a script of polls, and keeps the arguments of each call."""

    def __init__(self, *polls: dict[TopicPartition, list[Any]]) -> None:
        self.polls = list(polls)
        self.calls: list[tuple[int, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.calls.append((timeout_ms, max_records))
        return self.polls.pop(0) if self.polls else {}


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return slept


async def test_a_poll_waits_in_the_fetch_and_returns_what_it_found_without_sleeping(no_sleep: list[float]) -> None:
    first, second = _record(0, 5), _record(0, 6)
    consumer = _Consumer({TP: [first, second]}, {})

    assert await poll(consumer, max_records=10) == (first, second)  # type: ignore[arg-type]
    assert await poll(consumer, max_records=10) == ()  # type: ignore[arg-type]  # nothing within the long wait: poll again
    assert consumer.calls == [(POLL_WAIT_MS, 10), (POLL_WAIT_MS, 10)]
    assert POLL_WAIT_MS >= 500  # an idle consumer wakes up rarely
    assert no_sleep == []


async def test_a_lingering_batch_waits_once_for_more_and_keeps_each_partitions_order(no_sleep: list[float]) -> None:
    p0, p1 = TopicPartition("tidegate.tasks", 0), TopicPartition("tidegate.tasks", 1)
    consumer = _Consumer({p0: [_record(0, 1)], p1: [_record(1, 7)]}, {p0: [_record(0, 2)], p1: [_record(1, 8)]})

    records = await poll(consumer, max_records=10, linger_ms=100)  # type: ignore[arg-type]

    assert [(r.partition, r.offset) for r in records if r.partition == 0] == [(0, 1), (0, 2)]
    assert [(r.partition, r.offset) for r in records if r.partition == 1] == [(1, 7), (1, 8)]
    assert no_sleep == [0.1]
    assert consumer.calls == [(POLL_WAIT_MS, 10), (0, 8)]  # the second poll takes what is there, up to a full batch


async def test_a_full_batch_does_not_linger(no_sleep: list[float]) -> None:
    consumer = _Consumer({TP: [_record(0, 1), _record(0, 2)]})

    assert len(await poll(consumer, max_records=2, linger_ms=100)) == 2  # type: ignore[arg-type]
    assert no_sleep == []
    assert len(consumer.calls) == 1


class _Broker:
    """A consumer whose fetch waits, as aiokafka's does, until a batch is given to it (or the poll's wait ends)."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[list[Any] | BaseException] = asyncio.Queue()
        self.subscribed: dict[str, Any] = {}
        self.started = self.stopped = False

    def subscribe(self, *, topics: Any = (), pattern: str | None = None, listener: Any = None) -> None:
        self.subscribed = {"topics": list(topics), "pattern": pattern, "listener": listener}

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        try:
            batch = await asyncio.wait_for(self.batches.get(), timeout_ms / 1000)
        except TimeoutError:
            return {}
        if isinstance(batch, BaseException):
            raise batch
        return {TP: batch}


def _poller(broker: _Broker, **options: Any) -> Poller:
    return Poller(lambda: broker, name="test", topics=options.pop("topics", ["tidegate.tasks"]), max_records=10, **options)  # type: ignore[arg-type, return-value]


async def _until(predicate: Any, what: str) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_handler_gets_the_polled_records_as_they_came_binary_headers_and_all() -> None:
    """A plain Kafka client may send any header bytes; nothing between the fetch and the kit decodes them."""
    broker, seen = _Broker(), []
    poller = _poller(broker)

    @poller
    async def handle(records: Any) -> None:
        seen.append(records)

    await poller.start()
    binary = _record(0, 1, [("bin", b"\xff\xfe"), ("none", None)])
    plain = _record(0, 2, [("ok", b"yes")])
    await broker.batches.put([binary, plain])
    await _until(lambda: seen, "the batch")
    await poller.stop()

    assert seen == [(binary, plain)]
    assert seen[0][0] is binary
    assert seen[0][0].headers == [("bin", b"\xff\xfe"), ("none", None)]
    assert broker.subscribed["topics"] == ["tidegate.tasks"]
    assert broker.subscribed["listener"] is not None
    assert broker.stopped
    assert poller.consumer is None


async def test_a_batch_that_fails_is_logged_and_the_loop_polls_on(caplog: pytest.LogCaptureFixture) -> None:
    broker, seen = _Broker(), []
    poller = _poller(broker)

    @poller
    async def handle(records: Any) -> None:
        seen.append(records[0].offset)
        if records[0].offset == 1:
            raise RuntimeError("the handler broke")

    await poller.start()
    with caplog.at_level(logging.ERROR, logger="servicekit.polling"):
        await broker.batches.put([_record(0, 1)])
        await broker.batches.put([_record(0, 2)])
        await _until(lambda: seen == [1, 2], "the next batch after a failure")
    await poller.stop()

    assert "a batch of 1 records failed" in caplog.text
    assert "the handler broke" in caplog.text


async def test_a_failed_poll_is_waited_out_then_polling_goes_on(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(polling, "KAFKA_ERROR_PAUSE_S", 0.01)
    broker, seen = _Broker(), []
    poller = _poller(broker)

    @poller
    async def handle(records: Any) -> None:
        seen.append(records[0].offset)

    await poller.start()
    with caplog.at_level(logging.ERROR, logger="servicekit.polling"):
        await broker.batches.put(KafkaConnectionError("the broker went away"))
        await broker.batches.put(AssertionError("the client's own state"))  # not a Kafka error: the loop goes on all the same
        await broker.batches.put([_record(0, 3)])
        await _until(lambda: seen == [3], "the batch after the errors")
    await poller.stop()

    assert caplog.text.count("polling failed") == 2  # each logged, neither the end of the consumer


async def test_a_stop_lets_the_batch_in_hand_finish_before_the_consumer_leaves() -> None:
    broker, finished = _Broker(), asyncio.Event()
    release = asyncio.Event()
    poller = _poller(broker)

    @poller
    async def handle(records: Any) -> None:
        await release.wait()
        finished.set()

    await poller.start()
    await broker.batches.put([_record(0, 1)])
    await _until(lambda: broker.batches.empty(), "the batch taken")
    await asyncio.sleep(0.02)
    stopping = asyncio.get_running_loop().create_task(poller.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    assert not broker.stopped
    release.set()
    await asyncio.wait_for(stopping, 5)

    assert finished.is_set()
    assert broker.stopped


async def test_a_stop_while_waiting_in_a_fetch_does_not_wait_for_the_fetch() -> None:
    broker = _Broker()
    poller = _poller(broker)

    @poller
    async def handle(records: Any) -> None:
        raise AssertionError("nothing was polled")

    await poller.start()
    await asyncio.sleep(0.02)
    started = asyncio.get_running_loop().time()
    await poller.stop()

    assert asyncio.get_running_loop().time() - started < POLL_WAIT_MS / 1000 / 2
    assert broker.stopped


async def test_a_poller_reads_named_topics_or_a_pattern_and_has_one_handler() -> None:
    broker = _Broker()
    with pytest.raises(ValueError, match="either named topics or a pattern"):
        Poller(lambda: broker, name="x", topics=["a"], pattern="^a", max_records=1)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="either named topics or a pattern"):
        Poller(lambda: broker, name="x", max_records=1)  # type: ignore[arg-type, return-value]
    poller = Poller(lambda: broker, name="x", pattern="^tidegate\\..*", max_records=1)  # type: ignore[arg-type, return-value]
    with pytest.raises(RuntimeError, match="no handler"):
        await poller.start()

    async def handle(records: Any) -> None:
        pass

    poller(handle)
    with pytest.raises(RuntimeError, match="one handler"):
        poller(handle)
    await poller.start()
    assert broker.subscribed["pattern"] == "^tidegate\\..*"
    assert broker.subscribed["topics"] == []
    await poller.stop()


async def test_a_rebalance_that_takes_the_partitions_runs_the_pollers_hook_before_the_consumer_rejoins() -> None:
    broker, calls = _Broker(), []
    poller = _poller(broker)

    @poller
    async def handle(records: Any) -> None:
        pass

    async def before_revoke() -> None:
        calls.append("flushed")

    poller.before_revoke = before_revoke
    await poller.start()
    listener = broker.subscribed["listener"]
    await listener.on_partitions_revoked(set())  # the first join revokes nothing: nothing to do
    assert calls == []
    await listener.on_partitions_revoked({TP})
    assert calls == ["flushed"]
    await listener.on_partitions_assigned({TP})
    await poller.stop()


async def test_a_bus_stops_its_consumers_together_so_a_stop_waits_for_the_longest_batch_not_their_sum() -> None:
    """A supervisor gives a stopping process a deadline: three batches in hand, each up to the grace, must not triple it."""
    from fake_producer import make_bus

    bus, _ = make_bus()
    brokers, release, steps = [_Broker() for _ in range(3)], asyncio.Event(), []
    for n, broker in enumerate(brokers):
        poller = Poller(lambda broker=broker: broker, name=f"c{n}", topics=["tidegate.tasks"], max_records=10)  # type: ignore[misc]
        bus.pollers.append(poller)

        @poller
        async def handle(records: Any) -> None:
            await release.wait()

        stop = poller.stop

        async def stopping(*, graceful_timeout_s: float, name: str = poller.name, stop: Any = stop) -> None:
            steps.append(f"stopping {name}")
            await stop(graceful_timeout_s=graceful_timeout_s)
            steps.append(f"stopped {name}")

        poller.stop = stopping  # type: ignore[method-assign]
        await poller.start()
        await broker.batches.put([_record(0, n)])
    await _until(lambda: all(b.batches.empty() for b in brokers), "every batch taken")
    await asyncio.sleep(0.02)

    task = asyncio.get_running_loop().create_task(bus.stop())
    await _until(lambda: len(steps) == 3, "every consumer told to stop")
    assert steps == ["stopping c0", "stopping c1", "stopping c2"]  # all at once, none waiting on another's batch
    release.set()
    await asyncio.wait_for(task, 5)
    assert all(b.stopped for b in brokers)


async def test_a_consumer_loop_that_ends_while_not_stopped_makes_the_service_stalled() -> None:
    """The watchdog (`Liveness.stalled`) exits the process for its supervisor to restart: a dead loop reads nothing more."""
    from servicekit.liveness import Liveness

    broker = _Broker()
    poller = _poller(broker)

    class Fatal(BaseException):
        """Not an Exception: the loop lets it through (as it must a cancellation)."""

    @poller
    async def handle(records: Any) -> None:
        raise Fatal("the loop ends")

    live = Liveness()
    live.watch(poller)
    await poller.start()
    assert poller.ended is None
    assert await live.stalled(stall_after_s=30, handler_limit_s=300) is None
    await broker.batches.put([_record(0, 1)])
    await _until(lambda: poller.ended is not None, "the loop's end")

    reason = await live.stalled(stall_after_s=30, handler_limit_s=300)
    assert reason is not None
    assert "test: its consumer loop ended" in reason
    assert "Fatal" in reason
    await poller.stop()
    assert poller.ended is None  # stopped on purpose: nothing to report


async def test_topics_a_process_reads_alone_share_one_consumer_from_the_beginning_and_one_from_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each consumer fetches, and wakes while idle, on its own: `control` and `directory` need one, not one each."""
    from fake_producer import make_bus

    async def started(self: Poller) -> None:  # nothing connects
        pass

    monkeypatch.setattr(Poller, "start", started)
    bus, _ = make_bus()

    async def handler(event: Any) -> None:
        pass

    bus.consume("actions.proposed", handler, group_id="p.policy")
    bus.consume("approvals", handler, group_id="p.policy")
    bus.consume("actions.results", handler, group_id="p.policy-results")
    bus.consume("control", handler, group_id=None)
    bus.consume("directory", handler, group_id=None)
    bus.consume("tools.a.replies", handler, group_id=None, from_latest=True)
    bus.consume("tools.b.replies", handler, group_id=None, from_latest=True)
    await bus.start()

    def options(poller: Poller) -> tuple[Any, ...]:
        made = poller._make_consumer.keywords  # type: ignore[attr-defined]  # the consumer's options (functools.partial)
        return (poller.topics, made["group_id"], made["auto_offset_reset"])

    assert sorted(map(options, bus.pollers), key=str) == sorted(
        [
            (("p.actions.proposed", "p.approvals"), "p.policy", "earliest"),
            (("p.actions.results",), "p.policy-results", "earliest"),
            (("p.control", "p.directory"), None, "earliest"),
            (("p.tools.a.replies", "p.tools.b.replies"), None, "latest"),
        ],
        key=str,
    )


class _Fetcher:
    def __init__(self, wait_ms: int) -> None:
        self._fetch_max_wait_ms = wait_ms


class _Paced:
    """What `FetchPace` sets: aiokafka's fetcher's wait (read as each fetch request is built)."""

    def __init__(self, wait_ms: int) -> None:
        self._fetcher = _Fetcher(wait_ms)

    @property
    def wait_ms(self) -> int:
        return self._fetcher._fetch_max_wait_ms


class _PacedConsumer(_Consumer, _Paced):
    """A scripted consumer with aiokafka's fetch wait (2,000 ms to begin with)."""

    def __init__(self, *polls: dict[TopicPartition, list[Any]]) -> None:
        _Consumer.__init__(self, *polls)
        _Paced.__init__(self, 2000)


def _pace(now: list[float]) -> polling.FetchPace:
    return polling.FetchPace(2000, 100, clock=lambda: now[0])


def test_a_consumer_that_keeps_up_keeps_the_long_wait() -> None:
    now = [0.0]
    pace, consumer = _pace(now), _Paced(2000)
    for _ in range(5):
        now[0] += 0.3
        pace.after(consumer, took_s=0.01)  # quick batches: records never wait in the client long enough to split its fetches
        pace.after(consumer)  # and empty polls
    assert consumer.wait_ms == 2000


def test_a_long_batch_shortens_the_wait_until_two_seconds_pass_without_one() -> None:
    now = [0.0]
    pace, consumer = _pace(now), _Paced(2000)
    pace.after(consumer, took_s=polling.FetchPace.BUSY_BATCH_S)
    assert consumer.wait_ms == 100  # no partition waits behind a fetch held for two seconds
    now[0] += 1.5
    pace.after(consumer, took_s=0.01)
    assert consumer.wait_ms == 100  # still within the busy spell
    now[0] += 0.6
    pace.after(consumer)
    assert consumer.wait_ms == 2000  # two seconds without a long batch: idle again, fetching seldom


def test_a_full_batch_is_a_backlog_and_shortens_the_wait_however_fast_it_went() -> None:
    now = [0.0]
    pace, consumer = _pace(now), _Paced(2000)
    pace.after(consumer, took_s=0.001, full=True)
    assert consumer.wait_ms == 100


def test_a_consumer_without_the_wait_keeps_its_own_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    pace = _pace(now)
    with caplog.at_level(logging.WARNING, logger="servicekit.polling"):
        for _ in range(3):
            pace.after(object(), took_s=1.0)  # an aiokafka whose fetcher moved its wait: never an error in the loop
    assert [r.getMessage() for r in caplog.records] == ["this aiokafka's consumer has no fetch wait to set; its fetches keep 2000 ms"]
    assert pace.current_ms == 2000


async def test_the_loop_paces_the_consumer_by_how_long_each_batch_took() -> None:
    consumer = _PacedConsumer({TP: [_record(0, 1)]}, {TP: [_record(0, 2)]})
    waits: list[int] = []
    times = [0.0, 0.2, 0.2, 1.0, 1.001, 1.001]  # each batch: its start, its end, the pace's now; the first takes 200 ms, the second 1 ms
    pace = polling.FetchPace(2000, 100, clock=lambda: times.pop(0) if len(times) > 1 else times[0])
    poller = Poller(lambda: consumer, name="paced", topics=["tidegate.tasks"], max_records=10, pace=pace)

    @poller
    async def handle(records: Any) -> None:
        waits.append(consumer.wait_ms)
        if len(waits) == 2:
            poller._running = False

    poller._running = True
    await poller._run(consumer)  # type: ignore[arg-type]
    assert waits == [2000, 100]  # the second batch was fetched with the short wait the long first one set
    assert consumer.wait_ms == 100  # and a quick batch within the busy spell keeps it


async def test_a_batch_still_in_hand_after_fifty_ms_shortens_the_wait_before_it_ends() -> None:
    """The fetch that holds a partition back is built during a long batch: it must carry the short wait already."""

    consumer = _PacedConsumer({TP: [_record(0, 1)]}, {TP: [_record(0, 2)]})
    seen: list[tuple[int, int]] = []  # (the wait as the batch began, the wait late in it)
    poller = Poller(lambda: consumer, name="paced", topics=["tidegate.tasks"], max_records=10, pace=polling.FetchPace(2000, 100))

    @poller
    async def handle(records: Any) -> None:
        began = consumer.wait_ms
        await asyncio.sleep(polling.FetchPace.BUSY_BATCH_S * 2 if not seen else 0.001)
        seen.append((began, consumer.wait_ms))
        if len(seen) == 2:
            poller._running = False

    poller._running = True
    await poller._run(consumer)  # type: ignore[arg-type]
    assert seen[0] == (2000, 100)  # the first batch began idle and was busy before it ended
    assert seen[1] == (100, 100)  # a quick one right after stays within the busy spell


async def test_a_quick_batch_leaves_the_long_wait_alone_even_after_it() -> None:
    """The timer a batch starts is cancelled as it ends: it never makes an idle consumer busy later."""
    consumer = _PacedConsumer({TP: [_record(0, 1)]})
    poller = Poller(lambda: consumer, name="paced", topics=["tidegate.tasks"], max_records=10, pace=polling.FetchPace(2000, 100))

    @poller
    async def handle(records: Any) -> None:
        poller._running = False

    poller._running = True
    await poller._run(consumer)  # type: ignore[arg-type]
    await asyncio.sleep(polling.FetchPace.BUSY_BATCH_S * 2)
    assert consumer.wait_ms == 2000
