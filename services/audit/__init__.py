"""Audit: appends every event of every topic to a hash-chained log in PostgreSQL.

Its public face: what `tidegate/` and `bench/` may import (`from services.audit import …`); every other module
of the service is private to it (tests/unit/foundation/test_import_rules.py). Names load on first use, so
importing one does not import the whole service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.audit.app import MIGRATIONS, AuditDeps, AuditProcess, build
    from services.audit.archive import (
        ArchiveError,
        ArchivePolicy,
        ArchiveReading,
        ArchiveSigner,
        audit_keys_of,
        read_archive,
        signers_of,
    )
    from services.audit.archive_check import ArchiveReport, archive_recheck, verify_archives
    from services.audit.completeness import CompletenessReport, Missing, check_complete, recorded_missing
    from services.audit.conflict_check import AcknowledgedConflict
    from services.audit.conflicts import ConflictState, acknowledge_conflict, list_conflicts
    from services.audit.content import ContentReport, check_content
    from services.audit.credentials import approver_credentials, credential_text
    from services.audit.dead_letter_records import dead_letter_tenant_problem, named_record_problem
    from services.audit.explanation import (
        FOLLOW_UP_PENDING,
        ActionStory,
        ApprovalStep,
        Explanation,
        LateReply,
        ToolCall,
        explain_task,
    )
    from services.audit.handlers import Checkpointer
    from services.audit.ledger import ActionFilters, ActionLine, action_lines, csv_columns, csv_row
    from services.audit.pruned import PrunedBefore, pruned_before, with_archives
    from services.audit.published import read_published_checkpoints
    from services.audit.reading import SeveralTenants, StoryLine, rechecked, search, story, task_rows_of, tasks_of_action
    from services.audit.records import observe
    from services.audit.repository import AuditLog, InMemoryAuditLog, PostgresAuditLog, SearchFilters
    from services.audit.retention import Archived, ArchiveRefused, archive_log, checkpoint_after, checkpoint_before
    from services.audit.rows import LogRow
    from services.audit.settings import AuditSettings
    from services.audit.signature_check import Recheck
    from services.audit.verify import VerifyReport, signature_recheck, starting_heads, verify_log

__all__ = [
    "FOLLOW_UP_PENDING",
    "MIGRATIONS",
    "AcknowledgedConflict",
    "ActionFilters",
    "ActionLine",
    "ActionStory",
    "ApprovalStep",
    "ArchiveError",
    "ArchivePolicy",
    "ArchiveReading",
    "ArchiveRefused",
    "ArchiveReport",
    "ArchiveSigner",
    "Archived",
    "AuditDeps",
    "AuditLog",
    "AuditProcess",
    "AuditSettings",
    "Checkpointer",
    "CompletenessReport",
    "ConflictState",
    "ContentReport",
    "Explanation",
    "InMemoryAuditLog",
    "LateReply",
    "LogRow",
    "Missing",
    "PostgresAuditLog",
    "PrunedBefore",
    "Recheck",
    "SearchFilters",
    "SeveralTenants",
    "StoryLine",
    "ToolCall",
    "VerifyReport",
    "acknowledge_conflict",
    "action_lines",
    "approver_credentials",
    "archive_log",
    "archive_recheck",
    "audit_keys_of",
    "build",
    "check_complete",
    "check_content",
    "checkpoint_after",
    "checkpoint_before",
    "credential_text",
    "csv_columns",
    "csv_row",
    "dead_letter_tenant_problem",
    "explain_task",
    "list_conflicts",
    "named_record_problem",
    "observe",
    "pruned_before",
    "read_archive",
    "read_published_checkpoints",
    "rechecked",
    "recorded_missing",
    "search",
    "signature_recheck",
    "signers_of",
    "starting_heads",
    "story",
    "task_rows_of",
    "tasks_of_action",
    "verify_archives",
    "verify_log",
    "with_archives",
]

_HOME = {
    "MIGRATIONS": "app",
    "build": "app",
    "AuditDeps": "app",
    "AuditProcess": "app",
    "ArchiveError": "archive",
    "ArchivePolicy": "archive",
    "read_archive": "archive",
    "audit_keys_of": "archive",
    "ArchiveReading": "archive",
    "ArchiveSigner": "archive",
    "signers_of": "archive",
    "ArchiveReport": "archive_check",
    "archive_recheck": "archive_check",
    "verify_archives": "archive_check",
    "Archived": "retention",
    "ArchiveRefused": "retention",
    "archive_log": "retention",
    "checkpoint_before": "retention",
    "checkpoint_after": "retention",
    "CompletenessReport": "completeness",
    "check_complete": "completeness",
    "Missing": "completeness",
    "recorded_missing": "completeness",
    "AcknowledgedConflict": "conflict_check",
    "ConflictState": "conflicts",
    "acknowledge_conflict": "conflicts",
    "list_conflicts": "conflicts",
    "ContentReport": "content",
    "check_content": "content",
    "approver_credentials": "credentials",
    "credential_text": "credentials",
    "dead_letter_tenant_problem": "dead_letter_records",
    "named_record_problem": "dead_letter_records",
    "Checkpointer": "handlers",
    "ActionFilters": "ledger",
    "ActionLine": "ledger",
    "action_lines": "ledger",
    "csv_columns": "ledger",
    "csv_row": "ledger",
    "read_published_checkpoints": "published",
    "PrunedBefore": "pruned",
    "pruned_before": "pruned",
    "with_archives": "pruned",
    "StoryLine": "reading",
    "explain_task": "explanation",
    "ActionStory": "explanation",
    "ApprovalStep": "explanation",
    "Explanation": "explanation",
    "ToolCall": "explanation",
    "LateReply": "explanation",
    "FOLLOW_UP_PENDING": "explanation",
    "rechecked": "reading",
    "search": "reading",
    "story": "reading",
    "tasks_of_action": "reading",
    "task_rows_of": "reading",
    "SeveralTenants": "reading",
    "observe": "records",
    "LogRow": "rows",
    "PostgresAuditLog": "repository",
    "AuditLog": "repository",
    "InMemoryAuditLog": "repository",
    "SearchFilters": "repository",
    "AuditSettings": "settings",
    "VerifyReport": "verify",
    "verify_log": "verify",
    "starting_heads": "verify",
    "signature_recheck": "verify",
    "Recheck": "signature_check",
}


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
