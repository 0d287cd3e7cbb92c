"""Every event's id is the text `str(uuid.uuid4())` gave, made without building a `uuid.UUID`.

`new_id` fills the id of every event each service builds (a decision's two events, a result, a task's request). It is
now made from the 16 random bytes directly, as `uuid.UUID(bytes=..., version=4)` sets its bits and `str` writes it: a
consumer, the audit and every reader that parses an id as a UUID read the same kind of id.
"""

from __future__ import annotations

import os
import re
import uuid

import pytest

from schemas import ActionProposed, ActionProposedData
from schemas.envelope import new_id, uuid4_text

CANONICAL = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
EDGES = [bytes(16), b"\xff" * 16, bytes(range(16)), bytes(range(255, 239, -1)), b"\x00\xff" * 8, b"\x5a" * 16]


# Ids by position, not by the random bytes: each pytest-xdist worker draws its own, and the workers must collect the same ids.
@pytest.mark.parametrize("raw", EDGES + [os.urandom(16) for _ in range(200)], ids=lambda raw: None if raw in EDGES else "random")
def test_an_id_is_the_text_uuid_gives_for_the_same_random_bytes(raw: bytes) -> None:
    assert uuid4_text(raw) == str(uuid.UUID(bytes=raw, version=4))


def test_a_new_id_is_a_random_version_4_uuid_as_a_reader_parses_it() -> None:
    ids = [new_id() for _ in range(500)]
    assert len(set(ids)) == 500
    for text in ids:
        assert CANONICAL.match(text), text
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_an_event_built_in_code_gets_such_an_id() -> None:
    data = ActionProposedData(action_id="a-1", task_id="t-1", tenant_id="acme", step=1, tool="x", args={}, proposer="p")
    event = ActionProposed.build(data, source="tests")
    assert CANONICAL.match(event.id)
    assert uuid.UUID(event.id).version == 4
