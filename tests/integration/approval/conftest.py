"""Fixtures of the approval service's integration tests (defined in approval_harness.py)."""

from approval_harness import http, start_approval

__all__ = ["http", "start_approval"]
