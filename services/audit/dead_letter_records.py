"""Whether a dead letter's record is the one the log holds at the position it names: a stolen key's dead letter may lie.

Every service's Kafka login may write `deadletter`, and its key signs dead letters in its own name. The signer's check
(`servicekit.authority.dead_letter_problem`) holds a dead letter to what it carries; it cannot know whether what it
carries is the record at the position it names. The audit log keeps every record's bytes as the bus held them, so a
dead letter that names a position the log holds another record at (another SHA-256, another value, another tenant) is
not that record's refusal: `tidegate dead-letters list` shows it not verified, `tidegate audit explain` names it among
the rows that are not evidence (review61 F7, attacker4).
"""

from __future__ import annotations

import hashlib

from schemas import EventRejectedData
from servicekit.intake import named_mismatch, named_tenant_and_task_of
from services.audit.rows import LogRow

__all__ = ["dead_letter_tenant_problem", "named_record_problem"]


def _where(data: EventRejectedData) -> str:
    return f"{data.topic}[{data.partition}]@{data.offset}"


def named_record_problem(data: EventRejectedData, row: LogRow | None) -> str | None:
    """Why `row`, the log's record at the position dead letter `data` names, is not the record it says was refused.

    None: it is, or the log holds no record there (not caught up, pruned: nothing to hold it to).
    """
    if row is None:
        return None
    value = row.value or b""
    if data.sha256 is not None:
        if hashlib.sha256(value).hexdigest() != data.sha256:
            return f"the log's record at {_where(data)} is not the one it names (its SHA-256 differs)"
    elif not data.truncated and data.raw_value != value.decode("utf-8", "replace"):
        return f"the log's record at {_where(data)} is not the one it names (its value differs)"
    return dead_letter_tenant_problem(data, row)


def dead_letter_tenant_problem(data: EventRejectedData, row: LogRow | None) -> str | None:
    """Why dead letter `data`'s tenant or task is not that of `row`, the log's record it names by its SHA-256 (None: it is, or unknown).

    The record's tenant and task are read from its bytes as its dead-letterer read them (`named_tenant_and_task_of`). The
    task too (review63): a dead letter that carries its record truncated is listed, and told by `audit explain`, under the
    task it names; one naming another task of the same tenant, or a task of a record that names none (review64), would
    stand in that task's story as a refusal of it.
    """
    if row is None:
        return None
    value = row.value or b""  # a record without a value (a tombstone any writer of the topic may append) names nothing
    if data.sha256 is not None and hashlib.sha256(value).hexdigest() != data.sha256:
        return None  # not the record it names: `named_record_problem` says so
    mismatch = named_mismatch((data.tenant_id, data.task_id), named_tenant_and_task_of(value))
    if mismatch is None:
        return None
    what, named_as, theirs = mismatch
    of = f"is of {what} {theirs}" if theirs else f"names no {what}"
    return f"the dead letter names {what} {named_as}, and the log's record at {_where(data)} {of}"
