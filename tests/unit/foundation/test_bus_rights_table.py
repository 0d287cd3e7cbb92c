"""The one rights table: the ACLs it makes for a prefix, and the documentation that shows it."""

from __future__ import annotations

from schemas import TOPICS
from servicekit import REPO_ROOT
from servicekit.bus_rights import PRINCIPALS, AclBinding, Operation, Pattern, Resource, acl_bindings, rights_table_markdown

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
