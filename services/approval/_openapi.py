"""The approval API's OpenAPI document as docs/contract/openapi/approval.json commits it, written from its app.

    .venv/bin/python -m services.approval._openapi docs/contract     # what `make contract` runs after `schemas.export`

The app is the one `build` makes, given the in-memory repository as the unit tests give it (no database, no broker)
and a key folder thrown away after: the document the service serves at `/openapi.json`, which depends on its routes
and models only. tests/unit/approval/test_approval_openapi.py fails when the committed file differs, so that a change
to a route, a field or a status code is seen in review.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from servicekit import KitSettings
from services.approval.app import ApprovalDeps, build
from services.approval.repository import InMemoryApprovalRepository
from services.approval.settings import ApprovalSettings

__all__ = ["APPROVAL_OPENAPI", "approval_openapi", "document", "write"]

APPROVAL_OPENAPI = "openapi/approval.json"  # under docs/contract


def approval_openapi() -> dict[str, Any]:
    """The approval service's OpenAPI document, from its app built without a database or a broker."""
    with tempfile.TemporaryDirectory(prefix="tidegate-openapi-") as keys:
        kit = KitSettings(keys_dir=Path(keys))
        app = build(kit, ApprovalSettings(), deps=ApprovalDeps(repo=InMemoryApprovalRepository())).http_app
        assert app is not None  # the approval service always serves its API
        doc: dict[str, Any] = app.openapi()
    return doc


def document(doc: dict[str, Any]) -> str:
    """An OpenAPI document as the committed file holds it (sorted keys, so that a diff shows only what changed)."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write(out: Path) -> Path:
    """Write the approval service's document under `out` (docs/contract) and return its path."""
    path = out / APPROVAL_OPENAPI
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document(approval_openapi()))
    return path


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/contract")))
