"""What the owed-messages gauge's round costs per endpoint row, over the real database: nothing for a row that did not change.

Acting as the performance engineer of an approval service with endpoints registered and removed over the years (a removed
endpoint's row is kept, disabled, forever) and as the database login that rewrites rows: every second the round sets
`tidegate_webhook_messages_owed` for each enabled endpoint whose row is refused. It read every row, disabled ones too, and
drew each one's verdict again (its claims encoded, its signature checked, its secret opened: the checks and secrets are
remembered by content, but a busy service's other rows push them out). A row rewritten must still be refused at once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from approval_harness import service_seals
from prometheus_client import REGISTRY

import servicekit.row_proofs
import services.approval._endpoint_rows
from servicekit import REPO_ROOT, KitSettings, create_pool
from servicekit.db import apply_migrations
from servicekit.vault import Vault
from services.approval._endpoint_rows import EndpointRows
from services.approval._webhook_side import WebhookSide
from services.approval.repository import Endpoint, PgApprovalRepository
from services.approval.webhooks import new_secret

MIGRATIONS = REPO_ROOT / "services" / "approval" / "migrations"
OWED = "tidegate_webhook_messages_owed"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Each row verdict drawn, each Ed25519 check made and each secret opened, counted."""
    counts: Counter[str] = Counter()
    read, verifies, opened = EndpointRows.read, servicekit.row_proofs.verifies, Vault.open

    def counting_read(self: EndpointRows, *args: Any, **kw: Any) -> Endpoint:
        counts["verdicts"] += 1
        return read(self, *args, **kw)

    def counting_verifies(*args: Any) -> bool:
        counts["ed25519"] += 1
        return verifies(*args)

    def counting_open(self: Vault, *args: Any) -> str:
        counts["opened"] += 1
        return opened(self, *args)

    monkeypatch.setattr(EndpointRows, "read", counting_read)
    monkeypatch.setattr(servicekit.row_proofs, "verifies", counting_verifies)
    monkeypatch.setattr(Vault, "open", counting_open)
    return counts


async def a_round(side: WebhookSide, counts: Counter[str]) -> dict[str, int]:
    """One round of the gauge, its checks and openings remembered before it forgotten (as a busy service's other rows do)."""
    servicekit.row_proofs._verifies.cache_clear()
    services.approval._endpoint_rows._opened.cache_clear()
    counts.clear()
    await side.queue_owed()
    return {k: counts[k] for k in ("verdicts", "ed25519", "opened")}


async def test_an_idle_round_draws_no_verdict_of_a_row_unchanged_and_a_row_rewritten_is_refused_at_once(
    infra: Any, kit: KitSettings, tmp_path: Path, counted: Counter[str]
) -> None:
    schema = f"approval_gauge_{uuid.uuid4().hex[:8]}"
    tenant = f"acme-gauge-{uuid.uuid4().hex[:8]}"
    pool = await create_pool(infra.database_url, max_size=2)
    try:
        await apply_migrations(pool, schema, MIGRATIONS)
        repo = PgApprovalRepository(pool, schema, seals=service_seals(kit))
        for n in range(3):
            await repo.upsert_endpoint(Endpoint(f"live-{n}", f"https://chat.example/{n}", new_secret(), tenant))
        for n in range(20):  # registered once, removed since: kept, disabled
            await repo.upsert_endpoint(Endpoint(f"gone-{n}", f"https://old.example/{n}", new_secret(), tenant))
            await repo.remove_endpoint(tenant, f"gone-{n}", "removed")
        side = WebhookSide()
        side.repo, side.clock = repo, lambda: datetime.now(UTC)

        assert await a_round(side, counted) == {"verdicts": 3, "ed25519": 3, "opened": 3}  # the enabled rows only
        assert await a_round(side, counted) == {"verdicts": 0, "ed25519": 0, "opened": 0}  # nothing changed: nothing drawn
        assert await a_round(side, counted) == {"verdicts": 0, "ed25519": 0, "opened": 0}

        s = f'"{schema}"'  # the database login re-points a live endpoint, and puts a removed one back in service
        await pool.execute(f"UPDATE {s}.webhook_endpoints SET url = 'https://mallory.example/' WHERE endpoint_id = 'live-1'")
        await pool.execute(f"UPDATE {s}.webhook_endpoints SET enabled = true WHERE endpoint_id = 'gone-7'")
        assert await a_round(side, counted) == {"verdicts": 2, "ed25519": 2, "opened": 0}  # only the two rows changed
        refused = await repo.refused_endpoints()
        assert [e.endpoint_id for e in refused] == ["gone-7", "live-1"]
        assert all("does not verify (the row was changed after it was signed)" in (e.unproven or "") for e in refused)
        for endpoint in ("live-1", "gone-7"):  # the operator sees them, refused, at once
            assert REGISTRY.get_sample_value(OWED, {"tenant": tenant, "endpoint": endpoint}) == 0
        assert REGISTRY.get_sample_value(OWED, {"tenant": tenant, "endpoint": "live-0"}) is None
        assert await a_round(side, counted) == {"verdicts": 2, "ed25519": 2, "opened": 0}  # a refused row is read at each round

        await pool.execute(f"UPDATE {s}.webhook_endpoints SET url = 'https://chat.example/1' WHERE endpoint_id = 'live-1'")
        assert await a_round(side, counted) == {"verdicts": 2, "ed25519": 2, "opened": 1}  # put back as signed: proven again
        assert [e.endpoint_id for e in await repo.refused_endpoints()] == ["gone-7"]
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
