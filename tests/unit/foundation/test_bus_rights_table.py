"""The one rights table: the ACLs it makes for a prefix, and the documentation that shows it."""

from __future__ import annotations

import pytest

from schemas import TOPICS
from servicekit import REPO_ROOT
from servicekit.bus_rights import (
    PRINCIPALS,
    SANDBOX_ROOT,
    AclBinding,
    Operation,
    Pattern,
    Resource,
    acl_bindings,
    rights_table_markdown,
    sandbox_bindings,
)

PREFIX = "acme."


def writers(bindings: list[AclBinding], topic: str) -> set[str]:
    return {b.principal for b in bindings if b.resource is Resource.TOPIC and b.operation is Operation.WRITE and b.name == topic}


def test_authority_is_written_by_its_one_owner() -> None:
    bindings = acl_bindings(PREFIX, ["update_inventory"])
    assert writers(bindings, "acme.actions.authorized") == {"User:policy"}
    assert writers(bindings, "acme.actions.decided") == {"User:policy"}
    assert writers(bindings, "acme.approvals") == {"User:approval"}
    assert writers(bindings, "acme.control") == {"User:ops"}
    assert writers(bindings, "acme.actions.results") == {"User:executor"}
    assert writers(bindings, "acme.tools.update_inventory.requests") == {"User:executor"}
    assert writers(bindings, "acme.tools.update_inventory.replies") == {"User:tool-update_inventory"}
    assert writers(bindings, "acme.tasks") == {"User:agent"}


def test_no_write_is_granted_on_a_whole_prefix() -> None:
    for b in acl_bindings(PREFIX, ["update_inventory"]):
        if b.resource is Resource.TOPIC and b.operation is Operation.WRITE:
            assert b.pattern is Pattern.LITERAL, b


def test_every_rule_stays_inside_its_prefix() -> None:
    for b in acl_bindings(PREFIX, ["update_inventory"]):
        assert b.name.startswith(PREFIX), b


def test_every_catalog_topic_named_in_the_table_exists() -> None:
    for principal, rights in PRINCIPALS.items():
        for topic in (*rights.reads, *rights.writes):
            assert topic == "*" or topic.startswith("tools.*.") or topic in TOPICS, (principal, topic)


def test_a_tool_reads_only_its_own_requests() -> None:
    bindings = acl_bindings(PREFIX, ["a", "b"])
    reads = {b.name for b in bindings if b.principal == "User:tool-a" and b.resource is Resource.TOPIC}
    assert reads == {"acme.tools.a.requests", "acme.tools.a.replies"}  # reads requests, writes replies


def test_the_documentation_shows_the_table_in_code() -> None:
    assert rights_table_markdown() in (REPO_ROOT / "docs" / "security" / "bus.md").read_text()


def test_a_tools_group_is_its_own_name_or_under_its_name_and_a_dot() -> None:
    bindings = acl_bindings(PREFIX, ["refund", "refund_bulk"])
    groups = {(b.name, b.pattern) for b in bindings if b.principal == "User:tool-refund" and b.resource is Resource.GROUP}
    assert groups == {("acme.tool-refund", Pattern.LITERAL), ("acme.tool-refund.", Pattern.PREFIXED)}


def test_only_ops_has_rights_under_the_sandbox_root_and_no_acl_right_anywhere() -> None:
    rules = {(b.resource, b.name, b.pattern, b.principal, b.operation) for b in sandbox_bindings()}
    topic = {
        (Resource.TOPIC, "sandbox.", Pattern.PREFIXED, "User:ops", op)
        for op in (Operation.CREATE, Operation.DELETE, Operation.READ, Operation.WRITE)
    }
    assert rules == topic | {(Resource.GROUP, "sandbox.", Pattern.PREFIXED, "User:ops", Operation.READ)}


def test_a_deployment_prefix_grants_no_one_to_create_or_delete_its_topics() -> None:
    ops = {b.operation for b in acl_bindings(PREFIX, ["update_inventory"])}
    assert ops == {Operation.READ, Operation.WRITE}


def test_the_sandbox_rules_reach_no_deployment_topic() -> None:
    for b in acl_bindings("tidegate.", ["update_inventory"]):
        assert not b.name.startswith(SANDBOX_ROOT), b


@pytest.mark.parametrize("prefix", ["sandbox.", "sandbox.live.", "sandbox", "sand", ""])
def test_a_deployment_prefix_that_overlaps_the_sandboxes_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match=r"overlaps 'sandbox\.'"):
        acl_bindings(prefix)


@pytest.mark.parametrize("prefix", ["tidegate.", "sandboxes.", "test-1."])
def test_a_prefix_beside_the_sandboxes_is_granted(prefix: str) -> None:
    assert all(b.name.startswith(prefix) for b in acl_bindings(prefix))
