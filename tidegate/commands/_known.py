"""What the deployment knows by name, so a command that stops or caps something refuses a name nothing would match (a typo).

Its tools are those of the catalog the services load (connector and MCP tools are catalogued there too); its tenants are
those onboarded by a `control.tenant` record, by their admins' directory, or by the policy pack's own settings.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection

from servicekit import CatalogError, ControlState, KitSettings, ToolCatalog
from services.policy import PackError, PackSettings, PackSource
from tidegate.commands._common import fail

__all__ = ["catalog_tools", "onboarded_tenants", "pack_settings", "refuse_unknown"]


def catalog_tools(kit: KitSettings) -> frozenset[str]:
    """The tool names of the catalog the services load (`TIDEGATE_TOOLS_DIR`); one line and exit 2 when it cannot be read."""
    try:
        return frozenset(ToolCatalog.load(*kit.tool_dirs))
    except CatalogError as exc:
        fail(f"cannot check the tool name against the catalog: {exc} (--force skips the check)", code=2)


def pack_settings(kit: KitSettings, state: ControlState) -> PackSettings:
    """The settings of the pack the policy service runs: the published one in `control`, else `TIDEGATE_POLICY_DIR`'s."""
    try:
        source = PackSource.from_control(state.policy) if state.policy is not None else PackSource.from_dir(kit.policy_dir)
        return PackSettings.model_validate(source.settings)
    except (PackError, ValueError):
        return PackSettings()


def onboarded_tenants(kit: KitSettings, state: ControlState, pack: PackSettings | None = None) -> set[str]:
    """Every onboarded tenant, as `tidegate tenant show` lists them (`state` read from `control` and `directory`).

    `pack` is `pack_settings`' answer when the caller has it already (the pack is then not read twice).
    """
    settings = pack or pack_settings(kit, state)
    return set(state.tenants) | set(state.directories) | {t for t in settings.tenants if settings.onboarded(t)}


def refuse_unknown(what: str, name: str, known: Collection[str], where: str) -> None:
    """Exit 2 with one line when `name` is not one of `known` (and not `*`), suggesting the nearest names."""
    if name == "*" or name in known:
        return
    near = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"did you mean {', '.join(near)}? " if near else "check the name; "
    fail(f"{what} {name!r} is not {where}: {hint}--force sets it anyway (for one added later)", code=2)
