"""`tidegate tenant add|set|show`: onboard a tenant and change its settings with `control.tenant` records, no policy edit."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import ValidationError

from schemas import ControlTenant, ControlTenantData
from servicekit import CatalogError, ControlState, KitSettings, ToolCatalog
from servicekit.domains import domain_problems
from services.policy import TenantSettings
from tidegate.commands._common import BY_HELP, console, fail, publish_control, run, settings, signer_settings
from tidegate.commands._known import onboarded_tenants, pack_settings
from tidegate.commands.killswitch import read_control

__all__ = ["UNSET", "app", "parse_trigger", "publish_tenant", "tenant_record"]

app = typer.Typer(
    help="Tenants on the `control` topic: mode, thresholds, directory of what is internal, triggers, budget.", no_args_is_help=True
)

_LISTS = {
    "internal_domain": "internal_domains",
    "known_contact": "known_contacts",
    "chat_member": "chat_members",
    "chat_channel": "chat_channels",
    "payee": "known_payees",
    "site": "allowed_sites",
    "organisation": "organisations",
}


def parse_trigger(text: str) -> tuple[str, dict[str, Any]]:
    """`new_payee=escalate:2` → ("new_payee", {"action": "escalate", "approvers": 2}); `permission_change=deny` (triggers and classes)."""
    name, _, choice = text.partition("=")
    action, _, approvers = choice.partition(":")
    if not name or action not in ("deny", "escalate"):
        raise ValueError(f"a trigger is <name>=deny or <name>=escalate[:N], not {text!r}")
    return name.strip(), {"action": action} | ({"approvers": int(approvers)} if approvers else {})


UNSET = object()
"""A change that removes its setting from the record (`--setting KEY=null`): the pack's `default` entry gives it again."""


def tenant_record(current: dict[str, Any], changes: dict[str, Any], triggers: list[str], classes: Sequence[str] = ()) -> dict[str, Any]:
    """The new record: `current` with `changes`, triggers and class choices applied; checked as TenantSettings.

    A list replaces the whole list; a change of None leaves its setting as it is, UNSET removes it.
    """
    record = dict(current) | {k: v for k, v in changes.items() if v is not None and v is not UNSET}
    for key in [k for k, v in changes.items() if v is UNSET]:
        record.pop(key, None)
    for field_name, texts in (("triggers", triggers), ("classes", classes)):
        merged = dict(record.get(field_name) or {})
        for text in texts:
            name, choice = parse_trigger(text)
            merged[name] = choice
        if merged:
            record[field_name] = merged
    TenantSettings.model_validate(record)  # raises ValidationError naming the bad field
    return record


async def publish_tenant(kit: KitSettings, *, tenant: str, record: dict[str, Any], set_by: str) -> ControlTenant:
    """Publish a `control.tenant` record (key `tenant:<tenant>`, its scope: the newest sequence wins)."""
    event = ControlTenant.build(ControlTenantData(tenant_id=tenant, settings=record, set_by=set_by), source="tidegate/cli")
    await publish_control(kit, event)
    return event


def _daily_payout(text: str | None) -> float | str | None:
    """`--daily-payout`: a number of USD, or `off`; None when not given."""
    if text is None:
        return None
    if text.strip().lower() == "off":
        return "off"
    try:
        return float(text)
    except ValueError:
        fail(f"--daily-payout is a number of USD or off, not {text!r}", code=2)


def _changes(
    autonomous: bool | None,
    refund_threshold: float | None,
    budget: float | None,
    lists: dict[str, list[str]],
    learn_after: int | None = None,
    daily_payout: str | None = None,
) -> dict[str, Any]:
    changes: dict[str, Any] = {"allow_autonomous": autonomous, "refund_threshold_usd": refund_threshold, "budget_usd": budget}
    changes["tenant_daily_payout_usd"] = _daily_payout(daily_payout)
    changes["learn_after_approvals"] = learn_after
    for option, field_name in _LISTS.items():
        values = lists.get(option)
        if values:
            changes[field_name] = [v.strip().lower() if option != "payee" else v.strip() for v in values]
    return changes


def _refuse_bad_domains(changes: dict[str, Any]) -> None:
    """A domain entry that is not one, or a public suffix (`com`: every address would be internal), is refused up front."""
    if problems := domain_problems(changes):
        fail("; ".join(problems), code=2)


AUTONOMOUS = typer.Option(None, "--autonomous/--draft", help="Whether the tenant's tasks may run autonomously (else every write waits).")
THRESHOLD = typer.Option(None, "--refund-threshold", help="Financial calls at or over this (USD) escalate.")
BUDGET = typer.Option(None, "--budget", help="Tenant spend cap, USD (a `budget set` record overrides it).")
DAILY_PAYOUT = typer.Option(
    None,
    "--daily-payout",
    help="What the tenant's financial calls may pay out over 24 hours without a human, all payees and tasks together (USD), "
    "or off: a call that would go over it escalates (daily_payout_bound). Unset: twice the refund threshold.",
)
TRIGGER = typer.Option([], "--trigger", help="new_payee|external_recipient|permission_change = deny | escalate[:N approvers].")
CLASS = typer.Option(
    [], "--class", help="<risk class> = deny | escalate[:N approvers]: what an escalation of that class becomes. Repeatable."
)
DOMAIN = typer.Option([], "--internal-domain", help="An email domain of the tenant (a subdomain counts). Repeatable.")
CONTACT = typer.Option([], "--known-contact", help="An outside email address the tenant writes to routinely (not external). Repeatable.")
LEARN = typer.Option(
    None,
    "--learn-after",
    min=0,
    help="Propose for the directory a counterparty humans approved unchanged this many times (0: never, the default); "
    "tenant admins see the proposals on the approval service (GET /api/v1/tenants/<tenant>).",
)
MEMBER = typer.Option([], "--chat-member", help="A chat user of the tenant's workspace. Repeatable.")
CHANNEL = typer.Option([], "--chat-channel", help="A chat channel of the tenant's workspace. Repeatable.")
PAYEE = typer.Option(
    [], "--payee", help="A payee the tenant already pays (account id, IBAN). Repeatable. With `set`, the whole list: give every payee."
)
SITE = typer.Option([], "--site", help="A web domain the tenant trusts. Repeatable.")
ORG = typer.Option([], "--organisation", help="An organisation that is the tenant itself. Repeatable.")
BY = typer.Option(None, "--by", help=BY_HELP)
SETTING = typer.Option(
    [],
    "--setting",
    help="Any tenant setting as KEY=VALUE (YAML value): min_confidence=0.5, tool_error_limit=3, retry_limit=5, "
    "accept_irreversible=[write_low], review_reasons={duplicate: handled already}. KEY=null removes the setting from the "
    "tenant's record, so the pack's `default` gives it again. Repeatable.",
)
CANDIDATE = typer.Option(
    None, "--candidate", help="Apply this tenant's entry of a candidate file written by `tidegate autonomy report` (after `whatif`)."
)


def _settings(pairs: list[str], candidate: Path | None, tenant: str) -> dict[str, Any]:
    """`--setting KEY=VALUE` pairs and the tenant's entry of a `--candidate` file, as changes."""
    changes: dict[str, Any] = {}
    if candidate is not None:
        loaded = yaml.safe_load(candidate.read_text()) or {}
        entry = (loaded.get("tenants", loaded) if isinstance(loaded, dict) else {}).get(tenant)
        if not isinstance(entry, dict):
            fail(f"{candidate} has no candidate settings for {tenant}")
        changes |= entry
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--setting is KEY=VALUE, not {pair!r}")
        loaded = yaml.safe_load(value)
        changes[key.strip()] = UNSET if loaded is None else loaded  # `KEY=null` (or `KEY=`): back to the pack's default
    return changes


def _starting_point(kit: KitSettings, state: ControlState, tenant: str) -> tuple[dict[str, Any] | None, str]:
    """The settings a change of `tenant` starts from, and what onboarded it (None, "" when nothing did).

    Its `control.tenant` record, else the policy pack's own entry for it: a record replaces that entry (`PackSettings.from_records`),
    so a record that started empty would put every setting the pack gives the tenant back to the pack's `default`.
    """
    if (record := state.tenants.get(tenant)) is not None:
        return dict(record.settings), "a control.tenant record"
    pack = pack_settings(kit, state)
    if pack.onboarded(tenant):
        return dict(pack.tenants[tenant]), "the policy pack's settings.yaml"
    return None, ""


def _write(tenant: str, *, must_exist: bool, changes: dict[str, Any], triggers: list[str], classes: list[str], by: str | None) -> None:
    if tenant in ("", "*", "default"):
        fail("name one tenant")
    kit = signer_settings(by)
    state = run(read_control(kit))
    run(read_control(kit, "directory", state))  # a tenant onboarded over the approval API has its directory there
    current, onboarded_by = _starting_point(kit, state, tenant)
    if must_exist and current is None and tenant in state.directories:
        fail(
            f"tenant {tenant!r} has no settings of its own yet (onboarded over the approval API): "
            f"`tidegate tenant add {tenant} …` gives it its first"
        )
    if must_exist and current is None:
        fail(f"tenant {tenant!r} is not onboarded: `tidegate tenant add {tenant} …` first")
    if not must_exist and current is not None:
        fail(f"tenant {tenant!r} is already onboarded (by {onboarded_by}): change it with `tidegate tenant set {tenant} …`")
    try:
        record = tenant_record(current or {}, changes, triggers, classes)
    except (ValueError, ValidationError) as exc:
        fail(f"invalid tenant settings: {exc}")
    run(publish_tenant(kit, tenant=tenant, record=record, set_by=kit.operator))
    console.print(f"tenant {tenant}: {json.dumps(record, sort_keys=True)}")
    admins = state.directories.get(tenant)
    with contextlib.suppress(ValueError):  # checked above against TenantSettings; a pack default that breaks it says so elsewhere
        _say_if_it_pays_no_one(tenant, pack_settings(kit, state).with_record(record, admins.directory if admins else None))


def _say_if_it_pays_no_one(tenant: str, effective: TenantSettings) -> None:
    """Say so when `tenant` lists no payee and blocks new ones: its money tools are denied for every payee it has not paid.

    A payee becomes known by a payment that succeeds, which the block prevents: the tenant's first payment never comes.
    """
    if effective.known_payees or effective.triggers.new_payee.action != "deny":
        return
    console.print(
        f"tenant {tenant} lists no known payee and blocks new payees (triggers.new_payee deny): its money tools are denied "
        "new_payee_blocked for every payee it has not paid before, and a payee becomes known only by a payment that succeeds; "
        "give the payees it pays (--payee …) or send new payees to a human (--trigger new_payee=escalate)",
        soft_wrap=True,
    )


def _edit(tenant: str, *, must_exist: bool, options: dict[str, Any], candidate: Path | None = None) -> None:
    """What `add` and `set` do with their options (`options`: the command's parameters by name): check, merge, publish."""
    lists = {option: options[option] for option in _LISTS}
    changes = _changes(
        options["autonomous"], options["refund_threshold"], options["budget"], lists, options["learn_after"], options["daily_payout"]
    )
    changes |= _settings(options["setting"], candidate, tenant)
    _refuse_bad_domains(changes)
    _write(tenant, must_exist=must_exist, changes=changes, triggers=options["trigger"], classes=options["class_"], by=options["by"])


@app.command("add")
def add(
    tenant: str = typer.Argument(..., help="Tenant id."),
    autonomous: bool | None = AUTONOMOUS,
    refund_threshold: float | None = THRESHOLD,
    daily_payout: str | None = DAILY_PAYOUT,
    budget: float | None = BUDGET,
    trigger: list[str] = TRIGGER,
    class_: list[str] = CLASS,
    internal_domain: list[str] = DOMAIN,
    known_contact: list[str] = CONTACT,
    chat_member: list[str] = MEMBER,
    chat_channel: list[str] = CHANNEL,
    payee: list[str] = PAYEE,
    site: list[str] = SITE,
    organisation: list[str] = ORG,
    learn_after: int | None = LEARN,
    setting: list[str] = SETTING,
    by: str | None = BY,
) -> None:
    """Onboard a tenant: until then every proposal of it is denied `tenant_not_onboarded`. Unset fields come from the pack's `default`."""
    _edit(tenant, must_exist=False, options=locals())
    _outside_tools_not_granted(tenant)


def _outside_tools_not_granted(tenant: str) -> None:
    """Say which tools served outside the deployment the new tenant may not call: their catalog entries do not name it (`tenants`)."""
    try:
        catalog = ToolCatalog.load(*settings().tool_dirs)
    except CatalogError:  # the services refuse such a catalog and say why; onboarding does not depend on it
        return
    denied = sorted(name for name, spec in catalog.items() if spec.served_outside and not spec.granted_to(tenant))
    if denied:
        console.print(
            f"tenant {tenant} may not call {len(denied)} tool(s) served outside the deployment until their catalog entries name it "
            f"in `tenants`: {', '.join(denied)}",
            soft_wrap=True,
        )


@app.command("set")
def set_(
    tenant: str = typer.Argument(..., help="Tenant id."),
    autonomous: bool | None = AUTONOMOUS,
    refund_threshold: float | None = THRESHOLD,
    daily_payout: str | None = DAILY_PAYOUT,
    budget: float | None = BUDGET,
    trigger: list[str] = TRIGGER,
    class_: list[str] = CLASS,
    internal_domain: list[str] = DOMAIN,
    known_contact: list[str] = CONTACT,
    chat_member: list[str] = MEMBER,
    chat_channel: list[str] = CHANNEL,
    payee: list[str] = PAYEE,
    site: list[str] = SITE,
    organisation: list[str] = ORG,
    learn_after: int | None = LEARN,
    setting: list[str] = SETTING,
    candidate: Path | None = CANDIDATE,
    by: str | None = BY,
) -> None:
    """Change an onboarded tenant: the options given replace those fields (a list option replaces the whole list)."""
    _edit(tenant, must_exist=True, options=locals(), candidate=candidate)


@app.command("show")
def show(tenant: str = typer.Argument(None, help="Tenant id; all onboarded tenants when omitted.")) -> None:
    """A tenant's effective settings (its record and its admins' directory over the pack's `default`) and where they come from."""
    kit = settings()
    state = run(read_control(kit))
    run(read_control(kit, "directory", state))
    pack = pack_settings(kit, state)
    names = [tenant] if tenant else sorted(onboarded_tenants(kit, state, pack))
    for name in names:
        record, admins = state.tenants.get(name), state.directories.get(name)
        effective = pack.of_control(state, name)
        if effective is not None:
            where = (
                f"control.tenant (set by {record.set_by})"
                if record
                else "the policy pack's settings.yaml"
                if pack.onboarded(name)
                else "the pack's default (onboarded over the approval API)"
            )
            if admins is not None:
                where += f" and the directory its admins keep (last set by {admins.set_by})"
        elif pack.onboarded(name):
            effective, where = pack.tenant(name), "the policy pack's settings.yaml"
        else:
            console.print(f"{name}: not onboarded (`tidegate tenant add {name} …`)")
            continue
        console.print(f"{name}: from {where}")
        console.print_json(effective.model_dump_json())
