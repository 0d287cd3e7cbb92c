"""An approval service restarted with the same `TIDEGATE_APPROVAL_WEBHOOKS_FILE` adds nothing to `directory`.

`directory` is kept forever and read whole by the policy and every approval copy before they serve. Each start used to
write every endpoint of the file again, and pin it again with a `tidegate.directory.endpoint` record (the secret sealed
anew, so a new row digest each time): the topic grew by one record per file endpoint per start of each copy, and a copy
restarted in a loop by its supervisor grew it without bound. A start now writes and pins only an entry whose row is not
what the file says. The restarting service here is the real one, on Kafka and PostgreSQL.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from approval_harness import StartApproval, read_topic

from schemas import DirectoryEndpoint
from servicekit import KitSettings
from services.approval import webhooks

pytestmark = pytest.mark.integration


def endpoints_file(path: Path, tenant: str, secret: str, approvers: list[str]) -> Path:
    path.write_text(
        f"endpoints:\n  - endpoint_id: chat-{tenant}\n    url: http://127.0.0.1:9/hook\n    secret: {secret}\n"
        f"    tenant_id: {tenant}\n    approvers: [{', '.join(approvers)}]\n"
    )
    return path


async def pins_of(kit: KitSettings, tenant: str) -> list[DirectoryEndpoint]:
    """The `tidegate.directory.endpoint` records on this test's `directory` naming the tenant's endpoint."""
    events = await read_topic(kit.kafka_bootstrap, kit.topic_prefix + "directory", "directory")
    return [e for e in events if isinstance(e, DirectoryEndpoint) and e.data.tenant_id == tenant]


async def test_a_restart_with_the_same_endpoints_file_appends_nothing_to_directory(
    start_approval: StartApproval, kit: KitSettings, tmp_path: Path
) -> None:
    tenant = f"acme-restart-{int(time.time() * 1000) % 10**8}"
    secret = webhooks.new_secret()
    file = endpoints_file(tmp_path / "webhooks.yaml", tenant, secret, ["bob@acme.example"])

    first = await start_approval(webhooks_file=file)
    assert len(await pins_of(kit, tenant)) == 1  # the first start writes the endpoint, and pins it
    await first.proc.stop()

    for _restart in range(3):
        again = await start_approval(webhooks_file=file)
        assert len(await pins_of(kit, tenant)) == 1, "a restart with an unchanged file pinned the endpoint again on directory"
        served = await again.repo.endpoint(tenant, f"chat-{tenant}")
        assert served is not None, "the endpoint written at the first start is no longer trusted after a restart"
        assert (served.approvers, served.secret, served.enabled) == (("bob@acme.example",), secret, True)
        await again.proc.stop()

    # what the file changes is written and pinned at the next start, and only that
    endpoints_file(file, tenant, secret, ["bob@acme.example", "carol@acme.example"])
    changed = await start_approval(webhooks_file=file)
    assert len(await pins_of(kit, tenant)) == 2
    served = await changed.repo.endpoint(tenant, f"chat-{tenant}")
    assert served is not None
    assert served.approvers == ("bob@acme.example", "carol@acme.example")
