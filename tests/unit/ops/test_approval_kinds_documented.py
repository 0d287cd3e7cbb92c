"""docs/observability.md names every `kind` the approval service counts in `tidegate_approvals_total`."""

from __future__ import annotations

from servicekit import REPO_ROOT
from servicekit.metrics import _APPROVAL_KINDS


def test_every_counted_approval_kind_is_documented() -> None:
    doc = (REPO_ROOT / "docs" / "observability.md").read_text()
    [row] = [line for line in doc.splitlines() if line.startswith("| `tidegate_approvals_total`")]
    described = row.rsplit("|", 2)[-2]
    assert [kind for kind in _APPROVAL_KINDS.values() if kind not in described] == []
