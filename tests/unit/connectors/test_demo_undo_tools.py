"""The stand-in demo enables every tool that undoes a write it enables, so `tidegate undo` on a demo action can run."""

from __future__ import annotations

from schemas import RiskClass, UndoSpec
from servicekit import REPO_ROOT, ToolCatalog
from tidegate.demo.standin_systems import ZENDESK_TOOLS

CATALOG = ToolCatalog.load(REPO_ROOT / "catalog" / "tools")
UNDOS: list[UndoSpec] = [u for name in ZENDESK_TOOLS if (u := CATALOG[name].undo) is not None]


def test_every_reversible_demo_write_has_its_undo_tool_enabled() -> None:
    undo_tools = {u.tool for u in UNDOS if u.tool is not None}
    assert undo_tools == {"zendesk_untag_ticket", "zendesk_tag_ticket", "zendesk_set_status"}
    assert undo_tools <= set(ZENDESK_TOOLS)


def test_the_state_the_demo_undos_restore_is_read_by_tools_the_connector_enables_by_itself() -> None:
    befores = {u.before.tool for u in UNDOS if u.before is not None}
    assert befores == {"zendesk_get_ticket"}
    assert all(CATALOG[t].risk is RiskClass.READ for t in befores)  # a connector's reads come with it
