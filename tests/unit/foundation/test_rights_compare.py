"""`compare_rights`: which rules the broker lacks or holds beyond the table, for one deployment prefix on a shared broker.

The rules given here stand in for what DescribeAcls answers (tests/security/test_rights_check.py asks the real broker).
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from servicekit.bus_acls import HeldRule, RightsCheck, compare_rights
from servicekit.bus_rights import acl_bindings, sandbox_bindings
from tidegate.cli import app
from tidegate.commands import topics

PREFIX = "acme."
TOOLS = ["update_inventory"]


def granted(prefix: str = PREFIX, tools: list[str] = TOOLS) -> list[HeldRule]:
    return [HeldRule.granted(b) for b in acl_bindings(prefix, tools) + sandbox_bindings()]


def test_all_the_table_grants_held_is_ok_and_a_right_dropped_is_missing() -> None:
    held = granted()
    assert compare_rights(held, PREFIX, TOOLS) == RightsCheck(True, len(held))
    executor_reads_results = HeldRule("User:executor", "READ", "TOPIC", "acme.actions.results", "LITERAL")
    check = compare_rights([r for r in held if r != executor_reads_results], PREFIX, TOOLS)
    assert check.missing == (executor_reads_results,)
    assert not check.ok
    assert str(executor_reads_results) == "User:executor READ topic acme.actions.results"


def test_other_prefixes_rules_are_not_ours_a_nested_deployments_neither() -> None:
    held = granted() + granted("acme.eu.") + granted("other.") + granted("acme-2.")
    check = compare_rights(held, PREFIX, TOOLS)
    assert check == RightsCheck(True, len(granted()))


def test_a_deployment_whose_prefix_ours_extends_reaches_our_topics_with_its_whole_prefix_reads() -> None:
    check = compare_rights(granted() + granted("acm"), PREFIX, TOOLS)
    assert [str(r) for r in check.extra] == ["User:audit READ topic acm*", "User:ops READ topic acm*"]


def test_a_rule_reaching_the_prefix_beyond_the_table_is_extra_not_a_fault() -> None:
    extras = [
        HeldRule("User:agent", "WRITE", "TOPIC", "acme.actions.authorized", "LITERAL"),  # by hand
        HeldRule("User:executor", "READ", "TOPIC", "acme.actions.results", "LITERAL", "DENY"),  # a DENY beside the ALLOW
        HeldRule("User:tool-x", "READ", "GROUP", "acme.tool-x", "PREFIXED"),  # a retired tool group
        HeldRule("User:agent", "ALL", "TOPIC", "ac", "PREFIXED"),  # a wider prefix reaches every topic of ours
        HeldRule("User:agent", "READ", "TOPIC", "*", "LITERAL"),  # Kafka's wildcard
        HeldRule("User:agent", "ALTER", "CLUSTER", "kafka-cluster", "LITERAL"),  # may make ACLs: every prefix's
        HeldRule("User:agent", "WRITE", "TOPIC", "sandbox.", "PREFIXED"),  # the sandboxes', which every deployment shares
    ]
    beside = [HeldRule("User:agent", "WRITE", "TOPIC", "other.control", "LITERAL")]
    check = compare_rights(granted() + extras + beside, PREFIX, TOOLS)
    assert check.ok
    assert check.extra == tuple(sorted(extras))
    assert str(extras[1]) == "User:executor READ topic acme.actions.results (DENY from host *)"
    assert str(extras[2]) == "User:tool-x READ group acme.tool-x*"


def test_a_broker_without_an_authorizer_is_said_and_not_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    assert compare_rights(None, PREFIX, TOOLS) == RightsCheck(False, len(granted()))

    async def no_topics(*_: Any, **__: Any) -> list[Any]:
        return []

    async def no_authorizer(_bootstrap: str, prefix: str, tools: list[str]) -> RightsCheck:
        return compare_rights(None, prefix, tools)

    monkeypatch.setattr(topics, "check_topics", no_topics)
    monkeypatch.setattr(topics, "check_rights", no_authorizer)

    async def no_quotas(*_: Any, **__: Any) -> dict[str, Any]:  # no broker here: no quota to compare either
        return {}

    monkeypatch.setattr(topics, "check_quotas", no_quotas)
    result = CliRunner().invoke(app, ["topics", "check"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("rights")]
    assert lines == ["rights: the broker has no authorizer, so it keeps no ACLs and enforces none (nothing to compare)"]
