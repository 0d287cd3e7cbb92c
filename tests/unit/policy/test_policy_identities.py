"""Recipients, payees and paths as typed identities: every address field counts, address lists are parsed, paths are normalised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from servicekit import REPO_ROOT, ToolCatalog
from servicekit.identities import host_of, identities_of, normalise_path
from services.policy.engine import Controls, Verdict, decide
from services.policy.facts import Call, History
from services.policy.pack import PackSource, compile_pack
from services.policy.tenant_settings import TenantSettings

ADDRESS = {"type": "string"}
ADDRESSES = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
TOOLS: list[dict[str, Any]] = [
    {
        "name": "send_mail",
        "description": "Send an email.",
        "risk": "draft",
        "kind": "topic",
        "tenants": ["acme"],
        "facts": {"counterparties": {"to": "email", "cc": "email", "bcc": "email", "reply_to": "email"}},
        "args_schema": {
            "type": "object",
            "properties": {"to": ADDRESSES, "cc": ADDRESSES, "bcc": ADDRESSES, "reply_to": ADDRESS, "body": {"type": "string"}},
        },
    },
    {
        "name": "post_message",
        "description": "Post to a chat channel or user.",
        "risk": "write_low",
        "kind": "topic",
        "tenants": ["acme"],
        "facts": {"counterparties": {"channel": "chat_channel", "mentions": "chat_user", "links.url": "url"}},
        "args_schema": {"type": "object"},
    },
    {
        "name": "open_change",
        "description": "Open a reviewed change.",
        "risk": "code_change",
        "kind": "topic",
        "tenants": ["acme"],
        "facts": {"paths": "files", "reviewed": True},
        "args_schema": {"type": "object", "properties": {"files": {"type": "array", "items": {"type": "string"}}}},
    },
]
TENANT = TenantSettings(
    allow_autonomous=True,
    internal_domains=["acme.example"],
    chat_members=["alice", "bob"],
    chat_channels=["#general"],
    allowed_sites=["docs.acme.example"],
    accept_irreversible=["write_low"],  # post_message declares no undo: this file is about who a call reaches
)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> ToolCatalog:
    directory: Path = tmp_path_factory.mktemp("office")
    for tool in TOOLS:
        (directory / f"{tool['name']}.yaml").write_text(yaml.safe_dump(tool))
    return ToolCatalog.load(directory)


def _decide(catalog: ToolCatalog, tool: str, args: dict[str, Any]) -> Verdict:
    pack = compile_pack(PackSource.from_dir(REPO_ROOT / "policies" / "default"), catalog)
    call = Call(tenant_id="acme", task_id="t", tool=tool, args=args, proposer="agent", mode="autonomous")
    return decide(pack, call, History(), Controls(tenant=TENANT))


def test_an_internal_email_is_sent(catalog: ToolCatalog) -> None:
    verdict = _decide(catalog, "send_mail", {"to": ["ops@acme.example"], "cc": "Ann <ann@eu.acme.example>", "body": "hi"})
    assert (verdict.outcome, verdict.facts["external_recipients"], verdict.facts["recipient_count"]) == ("allow", 0, 2)


@pytest.mark.parametrize(
    "hidden", [{"bcc": ["attacker@evil.example"]}, {"reply_to": "attacker@evil.example"}, {"cc": "x@acme.example.evil.example"}]
)
def test_the_attacker_in_another_address_field_is_caught(catalog: ToolCatalog, hidden: dict[str, Any]) -> None:
    verdict = _decide(catalog, "send_mail", {"to": ["ops@acme.example"], "body": "the report"} | hidden)
    assert verdict.outcome == "escalate"
    assert "external_recipient" in verdict.codes
    assert verdict.facts["external_recipients"] == 1


def test_an_address_list_in_one_string_counts_each_address(catalog: ToolCatalog) -> None:
    verdict = _decide(catalog, "send_mail", {"to": "bob@evil.example, ops@acme.example", "body": "x"})
    assert (verdict.facts["recipient_count"], verdict.facts["external_recipients"]) == (2, 1)
    assert verdict.outcome == "escalate"


@pytest.mark.parametrize(
    "to",
    [
        "evil@evil.example bob@acme.example",  # the legacy parser reads `@acme.example`, the modern one `evil@evil.example`
        "evil@evil.example (c) bob@acme.example",
        "bob@acme.example <evil@evil.example>",  # the modern parser reads `bob@acme.example` alone
        "ops@acme.example;evil@evil.example",
        "a@b@acme.example",  # no plain address: the host after its last `@` is not its host
        "evil%evil.example@acme.example",  # the percent hack: an acme server that honours it relays the mail to evil.example
        "evil.example!evil@acme.example",  # a bang path, likewise
        ["ops@acme.example", "eve@evil.example ops@acme.example"],
    ],
)
def test_a_recipient_one_parser_reads_as_internal_and_another_as_outside_escalates(catalog: ToolCatalog, to: Any) -> None:
    """A prompt-injected agent sends mail out under a `to` the policy once read as internal: `draft_allowed`, sent, no human."""
    verdict = _decide(catalog, "send_mail", {"to": to, "body": "the customer list"})
    assert (verdict.outcome, verdict.codes) == ("escalate", ["external_recipient"])
    assert verdict.facts["external_recipients"] >= 1


def test_an_address_either_parser_reads_plainly_stays_internal(catalog: ToolCatalog) -> None:
    verdict = _decide(catalog, "send_mail", {"to": ['"Ops, Acme" <ops@acme.example>', "Ann.Lee+x@EU.acme.example"], "body": "hi"})
    assert (verdict.outcome, verdict.facts["external_recipients"], verdict.facts["recipient_count"]) == ("allow", 0, 2)


def test_chat_members_and_channels_are_internal_others_and_outside_links_are_not(catalog: ToolCatalog) -> None:
    assert _decide(catalog, "post_message", {"channel": "#General", "mentions": ["@alice"]}).outcome == "allow"
    assert _decide(catalog, "post_message", {"channel": "general", "links": [{"url": "https://docs.acme.example/x"}]}).outcome == "allow"
    outside = _decide(catalog, "post_message", {"channel": "general", "mentions": ["mallory"]})
    assert (outside.outcome, outside.facts["external_recipients"]) == ("escalate", 1)
    link = _decide(catalog, "post_message", {"channel": "general", "links": [{"url": "https://evil.example/p?q=docs.acme.example"}]})
    assert link.outcome == "escalate"


@pytest.mark.parametrize(
    "path", ["src/../.github/workflows/ci.yml", "./.github/workflows/ci.yml", "INFRA/main.tf", "/deploy/prod.yaml", "../other/x"]
)
def test_a_disguised_sensitive_path_is_caught(catalog: ToolCatalog, path: str) -> None:
    verdict = _decide(catalog, "open_change", {"files": ["src/app.py", path]})
    assert (verdict.outcome, verdict.codes) == ("escalate", ["sensitive_code_path"])


def test_an_ordinary_path_is_not_sensitive(catalog: ToolCatalog) -> None:
    assert _decide(catalog, "open_change", {"files": ["src/app.py", "docs/../README.md"]}).outcome == "allow"


def test_parsers() -> None:
    assert normalise_path("src/../.GitHub/x.yml") == ".github/x.yml"
    assert normalise_path("a/../../b") == "../b"
    assert host_of("HTTPS://user:pw@Evil.Example.:8080/x") == "evil.example"
    assert host_of("docs.acme.example/path") == "docs.acme.example"
    found = identities_of({"to": ["Bob <BOB@x.example>", "c@y.example, d@z.example"]}, {"to": "email"})
    assert [i.value for i in found] == ["bob@x.example", "c@y.example", "d@z.example"]


def test_the_demo_catalog_still_declares_its_recipients() -> None:
    spec = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")["send_email"]
    assert spec.facts.declared_counterparties() == {"to": "email"}
