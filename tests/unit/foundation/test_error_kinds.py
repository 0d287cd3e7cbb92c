"""Which errors are the environment's (retried, never dead-lettered) and which are the record's (dead-lettered with the reason)."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, RecordListTooLargeError, RequestTimedOutError
from fake_producer import KeepingProducer

import schemas as s
from servicekit import Bus
from servicekit.intake import DATABASE_ERRORS, ErrorKind, classify

# SQLSTATE classes that say the database is down, refuses this service, or lacks what it needs: never the record's fault.
ENVIRONMENT_CLASSES = ("08", "28", "53", "55", "57", "58")


def _asyncpg_errors(*classes: str) -> list[type[asyncpg.PostgresError]]:
    found = [
        error
        for _, error in inspect.getmembers(asyncpg.exceptions, inspect.isclass)
        if issubclass(error, asyncpg.PostgresError) and str(getattr(error, "sqlstate", ""))[:2] in classes
    ]
    return sorted(found, key=lambda error: str(error.sqlstate))


@pytest.mark.parametrize("error", _asyncpg_errors(*ENVIRONMENT_CLASSES), ids=lambda error: f"{error.sqlstate}-{error.__name__}")
def test_every_error_of_an_environment_class_is_retried_and_expires_the_pool(error: type[asyncpg.PostgresError]) -> None:
    """Classes 08, 28, 53, 55, 57 and 58 whole: a password rotated before the restart, `too many connections`, a disk full, a
    database not accepting connections (a restore), a shutdown."""
    assert classify(error("from the server")) is ErrorKind.TRANSIENT
    assert isinstance(error("from the server"), DATABASE_ERRORS)  # the pool's connections are expired; the approval API says 503


def test_the_environment_classes_hold_the_errors_the_probe_met() -> None:
    found = set(_asyncpg_errors(*ENVIRONMENT_CLASSES))
    met = {asyncpg.InvalidPasswordError, asyncpg.TooManyConnectionsError, asyncpg.DiskFullError, asyncpg.OutOfMemoryError}
    assert met | {asyncpg.ObjectNotInPrerequisiteStateError} <= found  # 55000: `ALLOW_CONNECTIONS false` (platform5)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),  # a failover onto a standby
        asyncpg.DataCorruptedError("invalid page in block 7"),
        asyncpg.IndexCorruptedError("index contains unexpected zero page"),
    ],
)
def test_a_database_that_cannot_take_writes_or_is_damaged_is_retried(exc: Exception) -> None:
    assert classify(exc) is ErrorKind.TRANSIENT
    assert isinstance(exc, DATABASE_ERRORS)


@pytest.mark.parametrize(
    "exc", [asyncpg.SerializationError("could not serialize access"), asyncpg.DeadlockDetectedError("deadlock detected")]
)
def test_a_transaction_rolled_back_for_a_concurrent_one_is_run_again_without_expiring_the_pool(exc: Exception) -> None:
    assert classify(exc) is ErrorKind.TRANSIENT
    assert not isinstance(exc, DATABASE_ERRORS)  # the connections are fine


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.CheckViolationError("violates check constraint"),
        asyncpg.StringDataRightTruncationError("value too long"),
        asyncpg.InvalidTextRepresentationError("invalid input syntax for type uuid"),
        asyncpg.TransactionIntegrityConstraintViolationError("deferred constraint"),
        ValueError("a bug the record triggers"),
    ],
)
def test_an_error_the_record_causes_is_the_records(exc: Exception) -> None:
    assert classify(exc) is ErrorKind.RECORD


def test_a_record_kafka_refuses_for_its_size_is_the_records_and_a_broker_away_is_not() -> None:
    assert classify(MessageSizeTooLargeError("larger than max_request_size")) is ErrorKind.RECORD
    assert classify(RecordListTooLargeError()) is ErrorKind.RECORD
    assert classify(KafkaConnectionError("no broker")) is ErrorKind.TRANSIENT
    assert classify(RequestTimedOutError()) is ErrorKind.TRANSIENT


@dataclass
class FakeRecord:
    topic: str
    value: bytes
    partition: int = 0
    offset: int = 7
    key: bytes | None = b"t-1"
    headers: tuple[tuple[str, bytes], ...] = ()


def _proposal() -> bytes:
    data = s.ActionProposedData(
        action_id="a-1", task_id="t-1", tenant_id="acme", step=1, tool="tag_ticket", args={"ticket_id": "T-1"}, proposer="agent"
    )
    return s.encode(s.ActionProposed.build(data, source="agent"))


async def _handle(exc: Exception) -> tuple[list[str | None], KeepingProducer]:
    """One record through `Bus.handle_record` whose handler raises `exc` on its first call.

    Returns what `/health` showed as `retrying` at each call, and the producer (what was dead-lettered).
    """
    producer = KeepingProducer()
    bus = Bus(producer, "policy", "unused:1", "p.")
    shown: list[str | None] = []

    async def handler(event: Any) -> None:
        shown.append(bus.liveness.last_error)
        if len(shown) == 1:
            raise exc

    await asyncio.wait_for(bus.handle_record("actions.proposed", FakeRecord("p.actions.proposed", _proposal()), handler), 5)  # type: ignore[arg-type]
    return shown, producer


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.InvalidPasswordError('password authentication failed for user "tidegate_planner"'),
        asyncpg.TooManyConnectionsError('too many connections for role "tidegate_planner"'),
        asyncpg.DiskFullError("could not extend file: No space left on device"),
    ],
)
async def test_a_handler_that_meets_the_database_refusing_is_retried_and_shows_it_on_health(exc: Exception) -> None:
    shown, producer = await _handle(exc)
    assert shown == [None, repr(exc)]  # retried, with `/health` saying `retrying: <the error>` meanwhile
    assert producer.published == []  # nothing dead-lettered: the task is not lost


async def test_a_handler_whose_event_kafka_refuses_as_too_large_dead_letters_its_input_with_the_reason() -> None:
    shown, producer = await _handle(MessageSizeTooLargeError("The message is 2097152 bytes when serialized"))
    assert len(shown) == 1  # not retried for ever on a stalled partition
    [(topic, raw)] = producer.published
    assert topic == "p.deadletter"
    rejected = s.decode("deadletter", raw)
    assert (rejected.data.code, rejected.data.offset) == ("output_too_large", 7)
    assert "MessageSizeTooLargeError" in rejected.data.error
