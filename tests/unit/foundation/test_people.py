"""One rule says who is one person (`servicekit.people`): the approval service's four eyes and quorum, and the policy's count of a grant."""

from __future__ import annotations

import pytest

from servicekit.people import same_person
from services.approval.domain import ApprovalRecord, has_approved
from services.policy._grants import distinct_approvers

SPELLINGS = [
    ("bob@acme.example", "BOB@Acme.Example", True),
    ("strasse@acme.example", "STRAßE@acme.example", True),  # case folding, not lower(): ß is ss
    ("bob@acme.example", "bob2@acme.example", False),
    ("p1@acme.example", "p1@acme.example ", True),  # surrounding whitespace (approver probe 2, finding 3a)
    ("p1@acme.example", "\tp1@acme.example", True),
    ("p1@acme.example", "ｐ1@acme.example", True),  # a fullwidth ｐ: a Unicode compatibility form (NFKC)
    ("p1@acme.example", "p1\u200b@acme.example", True),  # an invisible format character
    ("p1@acme.example", "р1@acme.example", False),  # a Cyrillic р is another letter (new tokens refuse it: `approver_name`)
]


@pytest.mark.parametrize(("a", "b", "one"), SPELLINGS)
def test_the_approval_service_and_the_policy_count_one_person_alike(a: str, b: str, one: bool) -> None:
    assert same_person(a, b) is one
    assert has_approved(ApprovalRecord.model_construct(approvers=[a]), b) is one  # the quorum, at the approval service
    assert len(distinct_approvers([a, b], {}, [])) == (1 if one else 2)  # the grant's distinct approvers, at the policy
    assert (distinct_approvers([b], {}, [a]) == {}) is one  # the requester is left out in any spelling
