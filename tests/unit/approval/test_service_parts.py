"""The approval service, split by job, stays one `ApprovalService`: its public names where they were, each method in one part, one logger.

`ApprovalService` (`services.approval.service`) is composed of one part a job (`_bus_intake`, `_callbacks`, `_voting`,
`_people`, `_sweep`, `_reads`, `_undo_proposals`, `_announcing`, `_webhook_side`, `_webhook_endpoints_admin`); these tests
hold that what the API, the handlers and the tests import from `services.approval.service` is still there, that no two
parts define the same method (which would let the order of the composition pick one silently), and that every part logs
under the service's one logger name, as the single module did.
"""

from __future__ import annotations

import importlib
import inspect
import logging

import pytest
from test_approval_service_api import World, bearer, decided, world  # noqa: F401  (the fixture)

import services.approval.service as service_module
from services.approval._people import People
from services.approval._webhook_side import WebhookSide
from services.approval.service import ApprovalService

PARTS = [part for part in ApprovalService.__mro__ if part not in (ApprovalService, object)]
LOGGER = "services.approval.service"


def own_methods(cls: type) -> set[str]:
    """The methods `cls` itself defines (not those it inherits)."""
    return {name for name, value in vars(cls).items() if inspect.isfunction(value)}


def test_the_service_module_keeps_its_public_names() -> None:
    kept = "LINK_USED ApprovalService AuthError CallbackDecision Publisher Session"
    assert sorted(service_module.__all__) == sorted(kept.split())  # as the single module declared them
    for name in service_module.__all__:
        assert hasattr(service_module, name), name


def test_each_method_lives_in_exactly_one_part() -> None:
    names = [part.__name__ for part in PARTS]
    assert names == [
        "BusIntake",
        "Callbacks",
        "Voting",
        "People",
        "Sweeping",
        "Reads",
        "UndoProposals",
        "Announcing",
        "ServiceBase",
        "WebhookSide",
        "WebhookEndpoints",
    ]
    homes: dict[str, list[str]] = {}
    for part in [ApprovalService, *PARTS]:
        for name in own_methods(part) - {"__init__", "__repr__", "__eq__"}:  # the dataclass's own
            homes.setdefault(name, []).append(part.__name__)
    # The one name in two parts, as before the split: the webhook side's own `access` is shadowed by the service's, which
    # also narrows it to the groups the tenant's settings count (`People.counted`).
    assert {name: where for name, where in homes.items() if len(where) != 1} == {"access": ["People", "WebhookSide"]}
    assert ApprovalService.access is People.access is not WebhookSide.access


def test_every_part_module_logs_as_the_service() -> None:
    for part in PARTS:
        module = importlib.import_module(part.__module__)
        if part is not WebhookSide and hasattr(module, "log"):  # the webhook side logs as its own module, as before the split
            assert module.log is logging.getLogger(LOGGER), module.__name__


async def test_a_request_and_its_vote_are_logged_by_the_service(world: World, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """The request (`_bus_intake`) and the vote (`_voting`) are the service's lines, as they were."""
    with caplog.at_level(logging.INFO, logger=LOGGER):
        record = await world.service.on_decided(decided(), event_id="e1", at=world.clock())
        assert record is not None
        url = f"/api/v1/approvals/{record.approval_id}/approve"
        granted = await world.client.post(url, json={"action_digest": record.action_digest}, headers=bearer(world.tokens["bob"]))
        assert granted.status_code == 200, granted.text
    said = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("services.approval")]
    assert said == [
        (LOGGER, f"approval {record.approval_id} requested for acme/a-1 (issue_refund)"),
        (LOGGER, f"approval {record.approval_id}: approve by bob@acme.example -> granted"),
    ]
