"""`tidegate killswitch` and `tidegate budget` as an on-call engineer types them mid-incident: a typo is refused, not obeyed."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import ControlState
from tidegate.commands import budget, killswitch


class Control:
    """Stands in for the `control` and `directory` topics: the state read from them, and what is published."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, state: ControlState) -> None:
        self.state = state
        self.published: list[dict[str, Any]] = []
        monkeypatch.setattr(killswitch, "read_control", self.read)
        monkeypatch.setattr(budget, "read_control", self.read)
        monkeypatch.setattr(killswitch, "publish_killswitch", self.publish)
        monkeypatch.setattr(budget, "publish_budget", self.publish)

    async def read(self, kit: Any, name: str = "control", state: ControlState | None = None) -> ControlState:
        return self.state

    async def publish(self, kit: Any, **fields: Any) -> None:
        self.published.append(fields)


def switch(tenant: str, tool: str) -> s.ControlKillswitch:
    data = s.ControlKillswitchData(tenant_id=tenant, tool=tool, active=True, reason="incident 42", set_by="oncall")
    return s.ControlKillswitch.build(data, source="tidegate/cli")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("COLUMNS", "400")  # one line, however long

    def invoke(app: Any, *args: str) -> Any:
        return CliRunner().invoke(app, list(args))

    return invoke


def test_a_tool_in_no_catalog_is_refused_with_the_nearest_names(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState())
    done = cli(killswitch.app, "set", "--tool", "draft_replly", "--reason", "typo")
    assert done.exit_code == 2
    assert "tool 'draft_replly' is not in the tool catalog" in done.output
    assert "did you mean draft_reply" in done.output
    assert "--force" in done.output
    assert done.output.count("\n") == 1
    assert control.published == []


def test_force_sets_a_tool_registered_later(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState())
    done = cli(killswitch.app, "set", "--tool", "tool_of_tomorrow", "--reason", "before it ships", "--force")
    assert done.exit_code == 0, done.output
    assert control.published[0]["tool"] == "tool_of_tomorrow"


def test_a_catalogued_tool_and_an_onboarded_tenant_are_set(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState())
    done = cli(killswitch.app, "set", "--tool", "draft_reply", "--tenant", "acme", "--reason", "incident 42")
    assert done.exit_code == 0, done.output
    assert "kill switch set: tenant=acme tool=draft_reply" in done.output
    assert (control.published[0]["tenant"], control.published[0]["tool"], control.published[0]["active"]) == ("acme", "draft_reply", True)


def test_a_tenant_never_onboarded_is_refused(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState())
    done = cli(killswitch.app, "set", "--tool", "draft_reply", "--tenant", "acmee", "--reason", "typo")
    assert done.exit_code == 2
    assert "tenant 'acmee' is not onboarded" in done.output
    assert "did you mean acme" in done.output
    assert control.published == []


def test_clear_of_a_scope_with_no_switch_names_the_active_ones_and_clears_nothing(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState(killswitches={("acme", "draft_reply"): switch("acme", "draft_reply")}))
    done = cli(killswitch.app, "clear", "--tool", "draft_reply")
    assert done.exit_code == 1
    assert "no active kill switch has exactly tenant=* tool=draft_reply, nothing cleared" in done.output
    assert "acme/draft_reply is active: use --tenant acme --tool draft_reply" in done.output
    assert "cleared: tenant" not in done.output
    assert control.published == []


def test_clear_of_nothing_near_points_at_the_list(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState())
    done = cli(killswitch.app, "clear", "--tool", "issue_refund", "--tenant", "acme")
    assert done.exit_code == 1
    assert "`tidegate killswitch list` shows the active ones" in done.output
    assert control.published == []


def test_clear_of_the_exact_scope_clears_it(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState(killswitches={("acme", "draft_reply"): switch("acme", "draft_reply")}))
    done = cli(killswitch.app, "clear", "--tool", "draft_reply", "--tenant", "acme", "--reason", "fixed")
    assert done.exit_code == 0, done.output
    assert "kill switch cleared: tenant=acme tool=draft_reply" in done.output
    assert control.published[0]["active"] is False


@pytest.mark.parametrize("limit", ["nan", "inf", "-inf"])
def test_a_budget_that_is_not_a_finite_number_is_one_line(limit: str, monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState())
    done = cli(budget.app, "set", "acme", "--", limit)
    assert done.exit_code == 1
    assert "a budget is a finite number of USD" in done.output
    assert "Traceback" not in done.output
    assert done.output.count("\n") == 1
    assert control.published == []


def test_a_budget_is_confirmed_as_given_not_rounded(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState())
    done = cli(budget.app, "set", "acme", "0.0190")
    assert done.exit_code == 0, done.output
    assert "budget set: tenant=acme limit=0.019 USD" in done.output
    assert control.published[0]["limit_usd"] == 0.019


def test_a_budget_for_a_tenant_never_onboarded_needs_force(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    control = Control(monkeypatch, ControlState())
    refused = cli(budget.app, "set", "acmee", "0")
    assert refused.exit_code == 2
    assert "tenant 'acmee' is not onboarded" in refused.output
    assert control.published == []
    forced = cli(budget.app, "set", "initech", "5", "--force")
    assert forced.exit_code == 0, forced.output
    assert control.published[0]["tenant"] == "initech"


def test_a_tenant_onboarded_by_a_record_has_its_budget_set(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    onboarded = s.ControlTenantData(tenant_id="initech", settings={}, set_by="ops")
    control = Control(monkeypatch, ControlState(tenants={"initech": onboarded}))
    done = cli(budget.app, "set", "initech", "5")
    assert done.exit_code == 0, done.output
    assert control.published[0]["tenant"] == "initech"


def test_onboarding_a_tenant_that_can_pay_no_one_says_so_and_names_both_ways_out(monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    """Governance probe F5: `tenant add` without --payee or a new_payee trigger left every money tool denied, and said nothing."""
    from tidegate.commands import tenant

    control = Control(monkeypatch, ControlState())
    monkeypatch.setattr(tenant, "read_control", control.read)
    monkeypatch.setattr(tenant, "publish_tenant", control.publish)
    told = "tenant initrode lists no known payee and blocks new payees"
    ways_out = "give the payees it pays (--payee …) or send new payees to a human (--trigger new_payee=escalate)"

    bare = cli(tenant.app, "add", "initrode", "--autonomous", "--refund-threshold", "300")
    assert bare.exit_code == 0, bare.output
    assert told in bare.output
    assert ways_out in bare.output
    assert control.published[-1]["tenant"] == "initrode"  # onboarded all the same: the operator may mean it

    for fixed in (["--payee", "cus_1001"], ["--trigger", "new_payee=escalate"]):
        assert told not in cli(tenant.app, "add", "initrode", "--autonomous", *fixed).output

    control.state = ControlState(tenants={"initrode": s.ControlTenantData(tenant_id="initrode", settings={}, set_by="ops")})
    budget_only = cli(tenant.app, "set", "initrode", "--budget", "50")
    assert budget_only.exit_code == 0, budget_only.output
    assert told in budget_only.output  # still in that state after the change
    assert told not in cli(tenant.app, "set", "initrode", "--trigger", "new_payee=escalate").output
