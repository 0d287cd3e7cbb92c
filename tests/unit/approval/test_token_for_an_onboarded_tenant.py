"""`tidegate approvals token create` as the platform engineer onboarding a tenant's approvers (platform probe F2).

Before, `--tenant betta --groups fnance` (two typos) made a token, exit 0, without a word: its approver saw an empty queue
for ever while `beta`'s escalations waited for approvers nobody had made.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import ControlState
from tidegate.commands import _approvals_tokens, approvals, killswitch


class Made:
    """Stands in for the control topics (beta onboarded by a record) and for the approval schema (the tokens written)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        groups = {"approver_groups": {"financial": ["finance", "finance-leads"]}}
        beta = s.ControlTenantData(tenant_id="beta", settings=groups, set_by="ops")
        self.state = ControlState(tenants={"beta": beta})
        self.tokens: list[tuple[Any, ...]] = []
        monkeypatch.setattr(killswitch, "read_control", self.read)
        monkeypatch.setattr(_approvals_tokens, "repo_call", self.repo_call)

    async def read(self, kit: Any, name: str = "control", state: ControlState | None = None) -> ControlState:
        return self.state

    async def repo_call(self, what: str, *args: Any, **kwargs: Any) -> Any:
        assert what == "add_token"
        self.tokens.append(args)
        return SimpleNamespace(token_id="tok_1", expires_at=kwargs["expires_at"])


def create(*args: str) -> Any:
    return CliRunner().invoke(approvals.app, ["token", "create", "--approver", "ann@beta.example", *args], env={"COLUMNS": "400"})


def test_a_token_for_a_tenant_nothing_onboarded_is_refused_with_the_nearest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    made = Made(monkeypatch)
    done = create("--tenant", "betta", "--groups", "finance")
    assert done.exit_code == 2, done.output
    assert "tenant 'betta' is not onboarded" in done.output
    assert "did you mean beta" in done.output
    assert made.tokens == []  # before: a token, exit 0, for a tenant no request will ever be in


def test_a_group_none_of_the_tenants_approver_groups_names_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    made = Made(monkeypatch)
    done = create("--tenant", "beta", "--groups", "fnance")
    assert done.exit_code == 0, done.output
    assert "warning: group fnance (did you mean finance" in done.output
    assert "is in none of beta's approver_groups" in done.output
    assert "financial: finance, finance-leads" in done.output
    assert len(made.tokens) == 1  # a group of no class still counts where any approver does: warned, not refused


def test_a_token_for_an_onboarded_tenant_and_its_groups_is_made_without_a_word(monkeypatch: pytest.MonkeyPatch) -> None:
    made = Made(monkeypatch)
    done = create("--tenant", "beta", "--groups", "finance,admin")
    assert done.exit_code == 0, done.output
    assert "warning" not in done.output
    assert len(made.tokens) == 1


def test_force_makes_a_token_for_a_tenant_onboarded_later(monkeypatch: pytest.MonkeyPatch) -> None:
    made = Made(monkeypatch)
    made.state = ControlState()
    done = create("--tenant", "gamma", "--groups", "finance", "--force")
    assert done.exit_code == 0, done.output
    assert len(made.tokens) == 1
