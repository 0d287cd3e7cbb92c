"""Approval: puts escalations in front of humans and records their signed decisions.

Its public face: what `tidegate/` and `bench/` may import (`from services.approval import …`); every other module
of the service is private to it (tests/unit/foundation/test_import_rules.py). Names load on first use, so
importing one does not import the whole service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.approval._approval_record import UnreadableRequest, read_record
    from services.approval._decision_proofs import adoption_refusal
    from services.approval._pins import RowPins
    from services.approval._row_proofs import Seals, approval_seals
    from services.approval._token_store import TokenInfo
    from services.approval.app import ApprovalDeps, ApprovalProcess, build
    from services.approval.auth import hash_token, new_token
    from services.approval.domain import ApprovalRecord, GroupsConfig
    from services.approval.repository import UNADOPTED, UNADOPTED_ORDER, PgApprovalRepository
    from services.approval.restored import DECIDED, Restoration
    from services.approval.reviews import Review, review_report, reviews_from_events
    from services.approval.settings import ApprovalSettings

__all__ = [
    "DECIDED",
    "UNADOPTED",
    "UNADOPTED_ORDER",
    "ApprovalDeps",
    "ApprovalProcess",
    "ApprovalRecord",
    "ApprovalSettings",
    "GroupsConfig",
    "PgApprovalRepository",
    "Restoration",
    "Review",
    "RowPins",
    "Seals",
    "TokenInfo",
    "UnreadableRequest",
    "adoption_refusal",
    "approval_seals",
    "build",
    "hash_token",
    "new_token",
    "read_record",
    "review_report",
    "reviews_from_events",
]

_HOME = {
    "ApprovalDeps": "app",
    "ApprovalProcess": "app",
    "build": "app",
    "hash_token": "auth",
    "new_token": "auth",
    "PgApprovalRepository": "repository",
    "UNADOPTED": "repository",
    "UNADOPTED_ORDER": "repository",
    "Review": "reviews",
    "review_report": "reviews",
    "reviews_from_events": "reviews",
    "ApprovalSettings": "settings",
    "RowPins": "_pins",
    "Seals": "_row_proofs",
    "approval_seals": "_row_proofs",
    "TokenInfo": "_token_store",
    "GroupsConfig": "domain",
    "ApprovalRecord": "domain",
    "adoption_refusal": "_decision_proofs",
    "UnreadableRequest": "_approval_record",
    "read_record": "_approval_record",
    "DECIDED": "restored",
    "Restoration": "restored",
}


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
