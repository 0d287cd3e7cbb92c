"""A write's undo respects tool tenancy: its `before` read and its undo tool must be granted to the write's tenant.

As an outside review found (security4 F3): `tenants` was checked for the proposed tool alone. The executor calls a
write's `undo.before` read for the write's tenant under the write's authorization (no policy of its own), so a tenant
had another tenant's read run for it and got its answer in the undo plan; and a write whose undo tool the tenant may not
call counted as reversible (`low_risk_write_allowed`) though its undo is always denied. The policy now denies the write
`tool_not_granted` when its `before` read is not granted to the tenant, and treats an undo the tenant may not call as no
rollback path; `tidegate policy validate` and the policy service warn about such catalog entries.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from servicekit import REPO_ROOT, KitSettings, ToolCatalog
from servicekit.catalog_checks import undo_tenancy_warnings
from services.policy.engine import Controls, Verdict, decide
from services.policy.facts import Call, History
from services.policy.pack import CompiledPack, PackSource, compile_pack
from services.policy.tenant_settings import TenantSettings
from tidegate.cli import app

PACK_DIR = REPO_ROOT / "policies" / "default"
ARGS = {"type": "object", "additionalProperties": False, "required": ["customer"], "properties": {"customer": {"type": "string"}}}


def _tool(name: str, risk: str, tenants: list[str], **extra: Any) -> dict[str, Any]:
    read = {"untrusted_output": False} if risk == "read" else {}
    return {"name": name, "description": name, "risk": risk, "kind": "http", "url": f"http://127.0.0.1:9/{name}", "tenants": tenants,
            "args_schema": ARGS, **read, **extra}  # fmt: skip


UNDO = {"tool": "globex_unnote", "args": {"customer": "args.customer"}}
TOOLS = [
    _tool("crm_lookup", "read", ["acme"]),  # acme's CRM: no other tenant may read it
    _tool("globex_unnote", "write_low", ["globex"], undo={"irreversible": "a person restores the note"}),
    _tool("globex_lookup", "read", ["globex"]),
    # globex's write whose undo reads acme's CRM first: globex would have acme's read run for it
    _tool("globex_note", "write_low", ["globex"], undo=UNDO | {"before": {"tool": "crm_lookup", "args": {"customer": "args.customer"}}}),
    # the same write reading its own tenant's state: as before
    _tool("globex_tidy", "write_low", ["globex"], undo=UNDO | {"before": {"tool": "globex_lookup", "args": {"customer": "args.customer"}}}),
    # acme's write whose undo tool only globex may call: acme could never undo it
    _tool("acme_send", "write_low", ["acme"], undo=UNDO),
    # a write granted to both tenants whose undo only globex may call
    _tool("shared_note", "write_low", ["acme", "globex"], undo=UNDO),
]


def _catalog_dir(directory: Path) -> Path:
    for tool in TOOLS:
        (directory / f"{tool['name']}.yaml").write_text(yaml.safe_dump(tool))
    return directory


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> CompiledPack:
    return compile_pack(PackSource.from_dir(PACK_DIR), ToolCatalog.load(_catalog_dir(tmp_path_factory.mktemp("undo-tenancy"))))


def _decide(pack: CompiledPack, tenant: str, tool: str, *, granted: bool = False) -> Verdict:
    call = Call(tenant_id=tenant, task_id="t-1", tool=tool, args={"customer": "acme-vip-42"}, proposer="agent", mode="autonomous")
    settings = TenantSettings(allow_autonomous=True, internal_domains=[f"{tenant}.example"])
    return decide(pack, call, History(), Controls(tenant=settings), approval_granted=granted, approvers={"ann": ["support"]})


def test_a_write_whose_before_read_is_not_granted_to_its_tenant_is_denied_and_the_message_names_the_read(pack: CompiledPack) -> None:
    verdict = _decide(pack, "globex", "globex_note")
    assert (verdict.outcome, verdict.codes) == ("deny", ["tool_not_granted"])
    [reason] = verdict.reasons
    assert reason.policy_id == "builtin:tool-tenants:before"
    assert "'globex_note' reads the state its undo restores with 'crm_lookup'" in reason.message
    assert "not granted to tenant 'globex'" in reason.message
    assert "acme" not in reason.message  # the caller learns no other tenant's id


def test_a_human_grant_does_not_lift_it(pack: CompiledPack) -> None:
    assert _decide(pack, "globex", "globex_note", granted=True).codes == ["tool_not_granted"]


def test_a_write_whose_before_read_is_its_tenants_own_is_decided_as_before(pack: CompiledPack) -> None:
    verdict = _decide(pack, "globex", "globex_tidy")
    assert (verdict.outcome, verdict.codes) == ("allow", ["low_risk_write_allowed"])
    assert (verdict.facts["reversible"], verdict.facts["undo_not_granted"]) == (True, None)


def test_a_write_whose_undo_tool_its_tenant_may_not_call_has_no_rollback_path(pack: CompiledPack) -> None:
    verdict = _decide(pack, "acme", "acme_send")
    assert (verdict.outcome, verdict.codes) == ("escalate", ["no_rollback_path"])
    assert (verdict.facts["reversible"], verdict.facts["undo_not_granted"]) == (False, "globex_unnote")


def test_the_same_write_is_reversible_for_the_tenant_its_undo_is_granted_to(pack: CompiledPack) -> None:
    assert _decide(pack, "globex", "shared_note").codes == ["low_risk_write_allowed"]
    assert _decide(pack, "acme", "shared_note").codes == ["no_rollback_path"]


def test_the_catalog_checks_warn_about_each_undo_that_does_not_cover_its_writes_tenants(tmp_path: Path) -> None:
    warnings = undo_tenancy_warnings(ToolCatalog.load(_catalog_dir(tmp_path)).tools)
    assert len(warnings) == 3, warnings
    [before] = [w for w in warnings if w.startswith("tool globex_note:")]
    assert "undo.before read crm_lookup is not granted to globex" in before
    assert "denied tool_not_granted" in before
    [send] = [w for w in warnings if w.startswith("tool acme_send:")]
    assert "undo tool globex_unnote is not granted to acme" in send
    assert "no rollback path" in send
    [shared] = [w for w in warnings if w.startswith("tool shared_note:")]
    assert "not granted to acme:" in shared


def test_the_repos_catalog_has_no_such_undo() -> None:
    assert undo_tenancy_warnings(ToolCatalog.load(REPO_ROOT / "catalog" / "tools").tools) == []


def test_a_write_granted_to_every_tenant_is_warned_about_an_undo_that_is_not() -> None:
    from schemas import ToolSpec

    every = ToolSpec.model_validate(_tool("any_note", "write_low", ["*"], undo=UNDO))
    undo = ToolSpec.model_validate(_tool("globex_unnote", "write_low", ["globex"], undo={"irreversible": "by hand"}))
    [warning] = undo_tenancy_warnings({"any_note": every, "globex_unnote": undo})
    assert "not granted to the tenants its entry does not name (any_note is granted to every tenant)" in warning


def test_policy_validate_warns_and_the_pack_stays_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    tools = tmp_path / "tools"
    shutil.copytree(REPO_ROOT / "catalog" / "tools", tools)
    _catalog_dir(tools)
    # The shipped topic tool's reply key, which its service makes on its first run: not this machine's keys, whatever they hold.
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "keys"))
    (tmp_path / "keys" / "tools").mkdir(parents=True)
    (tmp_path / "keys" / "tools" / "update_inventory.pub").write_text("its public key")
    result = CliRunner().invoke(app, ["policy", "validate", "--tools", str(tools)])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if line.startswith("! tool ")]
    assert sorted(line.split(":")[0] for line in warned) == ["! tool acme_send", "! tool globex_note", "! tool shared_note"]


def test_the_policy_service_warns_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from services.policy import InMemoryPolicyRepository, PolicyDeps, build

    tools = tmp_path / "tools"
    shutil.copytree(REPO_ROOT / "catalog" / "tools", tools)
    _catalog_dir(tools)
    (tmp_path / "keys").mkdir()
    with caplog.at_level(logging.WARNING, logger="services.policy.app"):
        build(KitSettings(tools_dir=tools, keys_dir=tmp_path / "keys"), deps=PolicyDeps(repo=InMemoryPolicyRepository()))
    assert any("globex_note: its undo.before read crm_lookup" in r.getMessage() for r in caplog.records)


def test_the_policy_service_says_at_start_which_outside_tools_no_tenant_may_call(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # An upgrade past tool tenancy that skipped naming an outside tool's tenants: every call of it is denied while every
    # service reports healthy, so the policy says so at start, before the first call fails.
    from services.policy import InMemoryPolicyRepository, PolicyDeps, build

    tools = tmp_path / "tools"
    shutil.copytree(REPO_ROOT / "catalog" / "tools", tools)
    entry = tools / "update_inventory.yaml"
    entry.write_text("\n".join(line for line in entry.read_text().splitlines() if not line.startswith("tenants")) + "\n")
    (tmp_path / "keys").mkdir()
    with caplog.at_level(logging.WARNING, logger="services.policy.app"):
        build(KitSettings(tools_dir=tools, keys_dir=tmp_path / "keys"), deps=PolicyDeps(repo=InMemoryPolicyRepository()))
    said = [r.getMessage() for r in caplog.records if "names no `tenants`" in r.getMessage()]
    assert said == [
        "policy: tool update_inventory (kind topic, served outside the deployment) names no `tenants`: every call of it is denied "
        'tool_not_granted until its catalog entry names the tenants that may call it (`tenants: [<tenant>]`, or ["*"])'
    ]
