"""The approval API's OpenAPI document is committed (docs/contract/openapi/approval.json) and checked against its app.

A route, a field or a status code changed by accident shows here: the app's document differs from the committed one.
The app is built as the service builds it, with no database or Kafka (this folder's guard fails any such connection).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from servicekit import REPO_ROOT
from services.approval._openapi import APPROVAL_OPENAPI, approval_openapi, document

COMMITTED = REPO_ROOT / "docs" / "contract" / APPROVAL_OPENAPI


def differences(committed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Where two OpenAPI documents differ: each operation (`POST /path`), each component (`schemas/Name`), any other part."""
    found: list[str] = []
    paths = committed.get("paths", {}), current.get("paths", {})
    for path in sorted(paths[0].keys() | paths[1].keys()):
        was, now = paths[0].get(path, {}), paths[1].get(path, {})
        found += [f"{method.upper()} {path}" for method in sorted(was.keys() | now.keys()) if was.get(method) != now.get(method)]
    components = committed.get("components", {}), current.get("components", {})
    for kind in sorted(components[0].keys() | components[1].keys()):
        was, now = components[0].get(kind, {}), components[1].get(kind, {})
        found += [f"{kind}/{name}" for name in sorted(was.keys() | now.keys()) if was.get(name) != now.get(name)]
    rest = sorted((committed.keys() | current.keys()) - {"paths", "components"})
    return found + [part for part in rest if committed.get(part) != current.get(part)]


def test_the_committed_openapi_document_is_the_apps() -> None:
    assert COMMITTED.is_file(), f"{COMMITTED.relative_to(REPO_ROOT)} is missing: run `make contract`"
    current = approval_openapi()
    changed = differences(json.loads(COMMITTED.read_text()), current)
    assert not changed, (
        f"the approval HTTP API differs from {COMMITTED.relative_to(REPO_ROOT)} in {changed}: if the change is meant, "
        "run `make contract` and commit the file with it; if not, undo it"
    )
    assert COMMITTED.read_text() == document(current), "run `make contract`: the committed file is not as it writes it"


def test_a_changed_route_field_or_status_code_is_named() -> None:
    """The check is not vacuous: each kind of change the snapshot guards against is found, and says where."""
    committed = approval_openapi()
    current = copy.deepcopy(committed)
    approve = current["paths"]["/api/v1/approvals/{approval_id}/approve"]["post"]
    del approve["responses"]["409"]  # a status code no longer documented
    current["components"]["schemas"]["ApproveRequest"]["properties"]["note"] = {"type": "string"}  # a field added
    current["paths"]["/api/v1/approvals/{approval_id}/undo-all"] = {"post": {"responses": {}}}  # a route added
    current["info"]["version"] = "2"
    assert differences(committed, current) == [
        "POST /api/v1/approvals/{approval_id}/approve",
        "POST /api/v1/approvals/{approval_id}/undo-all",
        "schemas/ApproveRequest",
        "info",
    ]
    assert differences(committed, copy.deepcopy(committed)) == []
