"""The audit log's repository, split by job, stays one contract: one abstract base both implementations complete.

`PostgresAuditLog` is composed of one part a job (`_pg_append`, `_pg_reads`, `_pg_checkpoints`, `_pg_conflicts`);
these tests hold that no method of the base is left out of either implementation, and that no two parts
define the same method (which would let the order of the composition pick one silently).
"""

from __future__ import annotations

import inspect

import pytest

from services.audit._pg_rows import PgPart
from services.audit.repository import AuditLog, InMemoryAuditLog, PostgresAuditLog

PARTS = [part for part in PostgresAuditLog.__mro__ if part is not PostgresAuditLog and part is not PgPart and issubclass(part, PgPart)]


def own_methods(cls: type) -> set[str]:
    """The public methods `cls` itself defines (not those it inherits)."""
    return {name for name, value in vars(cls).items() if inspect.isfunction(value) and not name.startswith("_")}


def test_every_method_of_the_base_is_abstract() -> None:
    assert AuditLog.__abstractmethods__ == own_methods(AuditLog)


@pytest.mark.parametrize("implementation", [PostgresAuditLog, InMemoryAuditLog])
def test_both_implementations_complete_the_one_base(implementation: type) -> None:
    assert AuditLog in implementation.__mro__  # subclassed, not only matched: a Protocol allows either
    assert not getattr(implementation, "__abstractmethods__", frozenset())


def test_each_method_of_the_base_lives_in_exactly_one_postgres_part() -> None:
    assert len(PARTS) == 4
    homes = {name: [part.__name__ for part in PARTS if name in own_methods(part)] for name in AuditLog.__abstractmethods__}
    assert {name: where for name, where in homes.items() if len(where) != 1} == {}


@pytest.mark.parametrize("left_out", PARTS, ids=lambda part: part.__name__)
def test_a_composition_missing_a_part_cannot_be_made(left_out: type) -> None:
    partial = type("Partial", tuple(part for part in PARTS if part is not left_out), {})
    with pytest.raises(TypeError, match="abstract"):
        partial()
