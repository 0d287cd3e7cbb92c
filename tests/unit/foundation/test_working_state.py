"""`tidegate db usage` names the same working state as the services' sweeps forget, each found by the sweep's own index."""

from __future__ import annotations

import re

from servicekit import REPO_ROOT
from services.policy._pg_repository import _WORKING_STATE as POLICY_SWEEP
from tidegate.usage import WORKING_STATE


def test_the_policy_rows_are_the_ones_its_sweep_forgets() -> None:
    listed = [(s.table, s.written_at, s.only) for s in WORKING_STATE if s.schema == "policy"]
    assert listed == [(table, written_at, only.removeprefix(" AND ")) for table, written_at, only in POLICY_SWEEP]


def test_every_swept_table_has_the_brin_index_its_sweep_and_the_count_of_rows_due_use_kept_summarized() -> None:
    """Unsummarized page ranges are read page by page: without `autosummarize`, every page written since the last VACUUM."""
    for swept in WORKING_STATE:
        migrations = "\n".join(p.read_text() for p in sorted((REPO_ROOT / "services" / swept.schema / "migrations").glob("*.sql")))
        found = re.search(rf"CREATE INDEX (\w+) ON {swept.table} USING brin \({swept.written_at}\)", migrations)
        assert found, f"{swept.name}: no BRIN index on {swept.written_at}"
        assert f"ALTER INDEX {found[1]} SET (autosummarize = on)" in migrations, f"{found[1]} is not kept summarized"


def test_each_setting_is_read_as_its_service_reads_it(monkeypatch) -> None:
    for swept in WORKING_STATE:
        monkeypatch.setenv(swept.setting, "7200")
        assert swept.kept_s() == 7200.0, swept.setting
        monkeypatch.delenv(swept.setting)
