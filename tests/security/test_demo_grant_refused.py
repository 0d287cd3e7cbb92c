"""The demo's connector grant left refused by an interrupted run: the next demo replaces it, and trusts nothing of it.

A Ctrl-C while `tidegate demo` connected the tenant to its stand-ins wrote the grant row and was cancelled before the
control record naming it current went out: the row the executor then reads is not the current one (grant_rolled_back),
and every later demo died on it with a traceback (`enable` refuses to build on a refused grant). The same row is what
an attacker who writes the table puts back; the demo must not sign over it (its tools and credential), only replace it.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_connector_grant_forgery import Stage, operator, stage  # noqa: F401  (the fixture)
from test_connector_grant_rollback import put_back, snapshot

from tidegate.commands.connectors import grant_writer
from tidegate.demo.standin_systems import _connect

pytestmark = pytest.mark.integration


async def test_the_next_demo_replaces_a_refused_grant_of_its_own_and_runs(stage: Stage, wait_for: Any) -> None:  # noqa: F811
    stale = await snapshot(stage.login, stage.tenant)
    operator(stage.kit, "connectors", "enable", "zendesk", "--tenant", stage.tenant, "--tool", "zendesk_tag_ticket")
    await put_back(stage.login, stage.tenant, stale)  # the row is no longer the grant `control` names current
    refused = await stage.call("zendesk_tag_ticket", {"ticket_id": 42, "tags": ["demo"]}, wait_for)
    assert refused.data.error.type == "grant_rolled_back"

    await _connect(stage.kit, stage.tenant, stripe_url="http://127.0.0.1:9", zendesk=stage.zendesk)  # raised ConnectorError

    async with grant_writer(stage.kit) as writer:
        assert [(g.connector, why.code) for g, why in await writer.unverified() if g.tenant_id == stage.tenant] == []
        grant = await writer.current(stage.tenant, "zendesk")
    assert grant is not None
    assert grant.connection["base_url"] == stage.zendesk.url
    ran = await stage.call("zendesk_tag_ticket", {"ticket_id": 42, "tags": ["demo"]}, wait_for)
    assert ran.type == "tidegate.action.succeeded", ran.data.error
