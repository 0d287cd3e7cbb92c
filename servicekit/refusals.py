"""What Kafka refuses for the record itself, whenever it is sent: the errors, and the reason a dead letter gives for them.

A record larger than the topic's `max.message.bytes` (or, at send, than the producer's `max_request_size`), one the
topic's rules refuse (INVALID_RECORD: a compacted topic's record without a key), a corrupt one, or one a policy refuses
is refused again however often it is sent: retried, it would stall its partition for ever. `servicekit.intake.classify`
takes these for the record's; the producer gives back a refused batch's sequence numbers (`servicekit.producer`); the
bus dead-letters the input whose handling published such a record (`Bus.acknowledged_at_end`).
"""

from __future__ import annotations

from aiokafka.errors import (
    BrokerResponseError,
    CorruptRecordException,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    kafka_errors,
)

from schemas import ReasonCode

__all__ = ["INVALID_RECORD", "REFUSED_FOR_GOOD", "REFUSED_FOR_SIZE", "InvalidRecordError", "refusal_code", "refusal_name"]


class InvalidRecordError(BrokerResponseError):  # type: ignore[misc]  # aiokafka's errors are untyped
    """INVALID_RECORD (87), which aiokafka 0.14 does not know (its records failed with `UnknownError`)."""

    errno = 87
    message = "INVALID_RECORD"
    description = "This record has failed the validation on the broker and hence will be rejected."


# Registered in aiokafka's table of broker error codes, so that a produce answer of 87 fails its records with this class
# rather than `UnknownError` (what any code it does not know becomes, a server's unexpected error included). A later
# aiokafka that knows the code keeps its own class.
INVALID_RECORD: type[BrokerResponseError] = kafka_errors.setdefault(InvalidRecordError.errno, InvalidRecordError)

REFUSED_FOR_SIZE: tuple[type[BaseException], ...] = (MessageSizeTooLargeError, RecordListTooLargeError)
REFUSED_FOR_GOOD: tuple[type[BaseException], ...] = (*REFUSED_FOR_SIZE, INVALID_RECORD, CorruptRecordException, PolicyViolationError)


def refusal_code(exc: BaseException) -> ReasonCode | None:
    """The dead letter's reason for an input whose event Kafka refuses for good (`output_too_large`, `output_refused`); None otherwise."""
    if isinstance(exc, REFUSED_FOR_SIZE):
        return ReasonCode.OUTPUT_TOO_LARGE
    if isinstance(exc, REFUSED_FOR_GOOD):
        return ReasonCode.OUTPUT_REFUSED
    return None


def refusal_name(exc: BaseException) -> str:
    """The broker's name of the error (`MESSAGE_SIZE_TOO_LARGE`) and the client's (`MessageSizeTooLargeError`)."""
    return f"{getattr(exc, 'message', None) or 'refused'} ({type(exc).__name__})"
