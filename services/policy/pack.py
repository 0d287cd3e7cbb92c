"""A policy pack: Cedar files plus per-tenant settings, versioned by hash, checked and compiled once per version.

A pack is a directory (`policies/default/`): `*.cedar` files, `settings.yaml`, and `tests/*.yaml`
(table-driven cases, not part of the version). The same pack travels on `control` as a
`control.policy` record (file name → text, settings as data), so a published pack and the directory
it came from have the same version.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import cedarpy
import yaml
from pydantic import ValidationError

from schemas import ControlPolicyData, ReasonCode, digest
from servicekit import ToolCatalog
from services.policy.cedar_schema import action_entities, cedar_schema
from services.policy.messages import message_problem
from services.policy.tenant_settings import PackSettings, TenantSettings

__all__ = [
    "REMEMBERED",
    "SPEND_FACTS",
    "CompiledPack",
    "PackError",
    "PackSource",
    "Rule",
    "compile_pack",
    "validate_pack",
]

Outcome = Literal["allow", "escalate", "deny"]
T = TypeVar("T")

REMEMBERED = 4096  # answers a compiled pack keeps (`CompiledPack.remembered`): Cedar's, a few hundred bytes each
CALL_SLICES = 1024  # policy sets a compiled pack parses for (tenant, tool) pairs (`CompiledPack.policy_set_for_call`)


class PackError(ValueError):
    """A pack that cannot be used, with every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PackSource:
    """A pack as text: what a directory holds and what `control.policy` carries."""

    files: dict[str, str]
    settings: dict[str, Any]

    @property
    def version(self) -> str:
        """`sha256:` + hash over the Cedar files and the settings; tests are not part of it."""
        return "sha256:" + digest({"files": self.files, "settings": self.settings})

    @classmethod
    def from_dir(cls, directory: Path) -> PackSource:
        """Read `*.cedar` and `settings.yaml` from `directory`."""
        if not directory.is_dir():
            raise PackError([f"policy directory {directory} does not exist"])
        files = {p.name: p.read_text() for p in sorted(directory.glob("*.cedar"))}
        settings_path = directory / "settings.yaml"
        try:
            settings = yaml.safe_load(settings_path.read_text()) if settings_path.exists() else {}
        except yaml.YAMLError as exc:
            raise PackError([f"{settings_path}: {exc}"]) from exc
        return cls(files=files, settings=settings or {})

    @classmethod
    def from_control(cls, data: ControlPolicyData) -> PackSource:
        """The pack carried by a `control.policy` record."""
        return cls(files=dict(data.files), settings=dict(data.settings))


@dataclass(frozen=True)
class Rule:
    """One Cedar policy's meaning for Tidegate: what it decides when it fires, and why."""

    policy_id: str
    outcome: Outcome
    reason: ReasonCode
    effect: str
    position: int = 0  # order in the pack (files by name, policies as written): reasons are listed in this order
    shadow: bool = False  # `@mode("shadow")`: evaluated and recorded, never changes an outcome
    message: str = ""  # `@message("…")`: the reason's sentence, with the request's values (`messages.render_message`)


@dataclass(frozen=True)
class CompiledPack:
    """A pack ready to evaluate: the parsed PolicySet, its rules by `@id`, settings and the catalog's entities."""

    version: str
    source: PackSource
    policy_set: Any
    rules: dict[str, Rule]
    settings: PackSettings
    entities: Any
    catalog: ToolCatalog
    reads_spend: bool = True  # whether any policy mentions the spend facts (then spend figures can change a decision)
    # Policies (Cedar's JSON form, by generated id) and the one tenant each can apply to, if it is bound to one.
    policies: dict[str, Any] = field(default_factory=dict)
    tenant_bound: dict[str, str] = field(default_factory=dict)
    # The whole pack, shadow policies included, when it has any: what it would decide if they were enforced.
    shadow_set: Any = None
    _slices: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Each tool's action and the action groups it is in (`action_entities`): what an action scope can match for its calls.
    actions: dict[str, frozenset[str]] = field(default_factory=dict)
    # What of the request context any policy of the pack reads (`context_reads`); None: all of it.
    context_read: ContextRead | None = None
    # Not init fields: a copy made with `dataclasses.replace` (other policies) starts with none.
    _call_slices: dict[tuple[str | None, str], Any] = field(default_factory=dict, init=False, compare=False, repr=False)
    _kept_sets: dict[frozenset[str], Any] = field(default_factory=dict, init=False, compare=False, repr=False)
    # What the policies of each set sliced from the pack read of the context (`context_reads`), by the set's id (`context_read_for`).
    _set_reads: dict[int, ContextRead | None] = field(default_factory=dict, init=False, compare=False, repr=False)
    _tenants: dict[str | None, TenantSettings] = field(default_factory=dict, compare=False, repr=False)
    # Not an init field: a copy made with `dataclasses.replace` (other policies or entities) starts with no answers.
    _answers: dict[Hashable, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def remembered(self, key: Hashable, compute: Callable[[], T]) -> T:
        """`compute()`, a pure function of this pack and `key`, computed once per key while the pack is in use.

        At most `REMEMBERED` answers are kept, the oldest forgotten first; a new pack starts with none.
        """
        if key in self._answers:
            return cast(T, self._answers[key])
        answer = self._answers[key] = compute()
        if len(self._answers) > REMEMBERED:
            del self._answers[next(iter(self._answers))]
        return answer

    def tenant(self, tenant_id: str) -> TenantSettings:
        """`settings.tenant(tenant_id)`, validated once per tenant the pack names and once for all the others (their `default`)."""
        key = tenant_id if tenant_id in self.settings.tenants else None
        found = self._tenants.get(key)
        if found is None:
            found = self._tenants[key] = self.settings.tenant(tenant_id)
        return found

    def arg_errors(self, tool: str, args: dict[str, Any]) -> list[str]:
        """`ToolCatalog.arg_errors` (the catalog compiles each tool's validator once)."""
        return self.catalog.arg_errors(tool, args)

    def policy_set_for(self, tenant: str) -> Any:
        """The policies that can apply to `tenant`'s requests, parsed once per tenant ("policy slicing").

        A policy bound to another tenant (see `tenant_of`) is false before any part of it that could
        fail is evaluated, so leaving it out changes no decision and no error; it only saves its
        evaluation (about 1.6 µs a policy). A pack with per-tenant rules then costs each request what
        its own tenant's rules cost, whatever the number of tenants.
        """
        if not self.tenant_bound:
            return self.policy_set
        sliced = self._slices.get(tenant)
        if sliced is None:
            keep = {pid: p for pid, p in self.policies.items() if self.tenant_bound.get(pid, tenant) == tenant}
            sliced = self._slices[tenant] = self._sliced(keep)
        return sliced

    def policy_set_for_call(self, tenant: str, tool: str) -> Any:
        """`policy_set_for(tenant)` without the policies whose action scope a call of `tool` is outside, parsed once per set.

        Cedar evaluates a policy's scope before its conditions and stops at the first false: a policy scoped to
        `action in Action::"financial"` is false for a call of `tag_ticket` before any condition (which might raise an
        error) is reached, so leaving it out changes no decision and no error, as slicing by tenant does; it only saves
        its evaluation. The action groups are the catalog's (`action_entities`), fixed for the pack's life. Slices with
        the same policies are one set (so the answers `remembered` per set stay valid); past `CALL_SLICES` sets, a new
        pair gets its tenant's set, as before, so a pack of many tenants' rules does not grow without bound.
        """
        key = (tenant if self.tenant_bound else None, tool)
        found = self._call_slices.get(key)
        if found is not None:
            return found
        within = self.actions.get(tool, frozenset({tool}))
        keep = frozenset(
            pid for pid, p in self.policies.items() if self.tenant_bound.get(pid, tenant) == tenant and _may_match(p.get("action"), within)
        )
        found = self._kept_sets.get(keep)
        if found is None:
            if len(self._kept_sets) >= CALL_SLICES:
                return self.policy_set_for(tenant)
            found = self._kept_sets[keep] = self._sliced({pid: self.policies[pid] for pid in self.policies if pid in keep})
        self._call_slices[key] = found
        return found

    def _sliced(self, policies: dict[str, Any]) -> Any:
        """`policies` parsed as a set (`_policy_set`), with what they read of the context (`context_read_for`)."""
        parsed = _policy_set(policies)
        self._set_reads[id(parsed)] = context_reads(list(policies.values()))
        return parsed

    def context_read_for(self, policy_set: Any) -> ContextRead | None:
        """What the policies of `policy_set`, one of this pack's sets, read of the context; None: all of it.

        A set sliced for a tenant or a call (`policy_set_for`, `policy_set_for_call`) reads what its own policies read:
        a refund's set leaves out the policies of code changes and low-risk writes, and so the facts only they read
        (`reviewed`, `confidence_pct`…). Any other set (the whole pack's, the shadow set) reads `context_read`. The sets
        live as long as the pack, so their ids stay theirs (as `remembered`'s keys rely on too).
        """
        return self._set_reads.get(id(policy_set), self.context_read)


ContextRead = dict[str, "ContextRead | None"]
"""The attributes of a record policies read: each with what they read of it, or None when they read it whole."""


def context_reads(policies: Any) -> ContextRead | None:
    """What policies (Cedar's JSON form) read of `context`: None when one uses the context itself as a value.

    Every use of `context` is a chain of attribute reads (`context.facts.amount_cents`, `context.facts has x`) or the
    context itself; a chain's value counts as read whole, whatever is done with it (compared, a set searched, a record
    compared as a record). Literals (`Value`) hold no expression and are not walked.
    """
    read: ContextRead = {}
    whole = False

    def chain(node: Any) -> tuple[str, ...] | None:
        if node == {"Var": "context"}:
            return ()
        if isinstance(node, dict) and len(node) == 1 and "." in node and isinstance(node["."], dict):
            inner = chain(node["."].get("left"))
            attr = node["."].get("attr")
            return None if inner is None or not isinstance(attr, str) else (*inner, attr)
        return None

    def mark(path: tuple[str, ...]) -> None:
        level: ContextRead = read
        for i, attr in enumerate(path):
            if attr in level and level[attr] is None:
                return  # read whole already
            if i == len(path) - 1:
                level[attr] = None
                return
            nxt = level.get(attr)
            if nxt is None:
                nxt = level[attr] = {}
            level = nxt

    def walk(node: Any) -> None:
        nonlocal whole
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if node == {"Var": "context"}:
            whole = True
            return
        if len(node) == 1:
            ((op, arg),) = node.items()
            if op == "Value":
                return
            if op in (".", "has") and isinstance(arg, dict) and isinstance(arg.get("attr"), str):
                path = chain(arg.get("left"))
                if path is not None:
                    mark((*path, arg["attr"]))
                    return
        for value in node.values():
            walk(value)

    walk(policies)
    return None if whole else read


def read_of(value: dict[str, Any], read: ContextRead) -> dict[str, Any]:
    """`value` (a record) with only what `read` says is read of it: Cedar answers the same, and parses less."""
    out: dict[str, Any] = {}
    for attr, inner in read.items():
        if attr in value:
            item = value[attr]
            out[attr] = read_of(item, inner) if inner is not None and isinstance(item, dict) else item
    return out


def _policy_set(policies: dict[str, Any]) -> Any:
    """The policies (Cedar's JSON form, by generated id) parsed as a set that keeps their ids.

    An evaluation error names the policy by that id (`policy_error`'s message): the id the whole pack gave it, whichever
    slice it was evaluated in (parsed back from text, a slice numbered its policies again from `policy0`).
    """
    return cedarpy.PolicySet.from_json_str(json.dumps({"staticPolicies": policies, "templates": {}, "templateLinks": []}))


def _may_match(scope: Any, within: frozenset[str]) -> bool:
    """Whether an action scope (Cedar's JSON form) can hold for an action that is, or is in, exactly the actions `within`.

    False only when the scope names actions and none of them is in `within`; any form not known here is kept.
    """
    if not isinstance(scope, dict):
        return True
    op = scope.get("op")
    if op in ("==", "in") and isinstance(scope.get("entity"), dict):  # `==` holds for the tool alone: a superset here
        entity = scope["entity"]
        return entity.get("type") != "Action" or entity.get("id") in within
    if op == "in" and isinstance(scope.get("entities"), list):
        return any(not isinstance(e, dict) or e.get("type") != "Action" or e.get("id") in within for e in scope["entities"])
    return True


def _actions(catalog: ToolCatalog) -> dict[str, frozenset[str]]:
    """Each action of `action_entities(catalog)` with every action group it is in, itself included."""
    parents = {e["uid"]["id"]: [p["id"] for p in e.get("parents", [])] for e in action_entities(catalog)}
    out: dict[str, frozenset[str]] = {}
    for action in parents:
        seen, todo = {action}, [action]
        while todo:
            for parent in parents.get(todo.pop(), []):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        out[action] = frozenset(seen)
    return out


def _tenant_literal(expr: Any) -> str | None:
    """X when `expr` is `context.tenant == "X"` (either way round), else None."""
    if not isinstance(expr, dict) or set(expr) != {"=="}:
        return None
    sides = [expr["=="].get("left"), expr["=="].get("right")]
    attr = {".": {"left": {"Var": "context"}, "attr": "tenant"}}
    for mine, other in (sides, sides[::-1]):
        if mine == attr and isinstance(other, dict) and set(other) == {"Value"} and isinstance(other["Value"], str):
            return other["Value"]
    return None


def tenant_of(policy: dict[str, Any]) -> str | None:
    """The one tenant a policy (Cedar's JSON form) can fire or fail for, or None when it is not bound to one.

    Bound means its resource scope is `resource == Tenant::"X"`, or the leftmost conjunct of its first
    condition is a `when` testing `context.tenant == "X"`. Cedar evaluates scope, then conditions, left
    to right, stopping at the first false: for another tenant such a policy is false before any later
    part (which might raise an error) is reached. A tenant test anywhere else does not bind.
    """
    resource = policy.get("resource") or {}
    if resource.get("op") == "==" and (resource.get("entity") or {}).get("type") == "Tenant":
        tenant = resource["entity"].get("id")
        return tenant if isinstance(tenant, str) else None
    conditions = policy.get("conditions") or []
    if not conditions or conditions[0].get("kind") != "when":
        return None
    body = conditions[0].get("body")
    while isinstance(body, dict) and set(body) == {"&&"}:
        body = body["&&"].get("left")
    return _tenant_literal(body)


def _policy_text(source: PackSource) -> str:
    return "\n".join(source.files[name] for name in sorted(source.files))


def _rules(text: str, problems: list[str]) -> dict[str, Rule]:
    try:
        doc = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        problems.append(f"Cedar does not parse: {exc}")
        return {}
    rules: dict[str, Rule] = {}
    codes = {c.value for c in ReasonCode}
    for generated, policy in doc.get("staticPolicies", {}).items():
        notes = policy.get("annotations") or {}
        pid, outcome, reason = notes.get("id"), notes.get("outcome"), notes.get("reason")
        where = f"policy {pid!r}" if pid else f"policy #{generated.removeprefix('policy')}"
        if not pid:
            problems.append(f'{where}: needs @id("...")')
            continue
        if pid in rules:
            problems.append(f"{where}: @id is used twice")
        if outcome not in ("allow", "escalate", "deny"):
            problems.append(f'{where}: @outcome must be "allow", "escalate" or "deny", not {outcome!r}')
            continue
        if reason not in codes:
            problems.append(f"{where}: @reason {reason!r} is not a reason code (schemas.ReasonCode)")
            continue
        mode = notes.get("mode", "enforce")
        if mode not in ("enforce", "shadow"):
            problems.append(f'{where}: @mode must be "enforce" or "shadow", not {mode!r}')
            continue
        effect = policy.get("effect", "permit")
        if effect == "forbid" and outcome != "deny":
            problems.append(f'{where}: a forbid policy can only have @outcome("deny")')
        message = notes.get("message", "")
        if problem := message_problem(message):
            problems.append(f"{where}: @message: {problem}")
        rules[pid] = Rule(
            policy_id=pid,
            outcome=outcome,
            reason=ReasonCode(reason),
            effect=effect,
            position=len(rules),
            shadow=mode == "shadow",
            message=message,
        )
    if doc.get("templates"):
        problems.append("templates are not supported in a policy pack")
    return rules


def validate_pack(source: PackSource, catalog: ToolCatalog) -> list[str]:
    """Every problem of the pack: parse errors, annotations, Cedar validation against the catalog's schema, settings."""
    problems: list[str] = []
    if not source.files:
        problems.append("the pack has no *.cedar file")
    text = _policy_text(source)
    _rules(text, problems)
    if not problems:
        result = cedarpy.validate_policies(text, json.dumps(cedar_schema(catalog)))
        for err in result.errors:
            name = result.id_annotations_by_policy_id.get(err.policy_id, err.policy_id)
            problems.append(f"policy {name!r}: {err.error}" if name else err.error)
    try:
        settings = PackSettings.model_validate(source.settings)
        for tenant in settings.tenants:
            settings.tenant(tenant)
    except ValidationError as exc:
        problems.append(f"settings.yaml: {exc}")
    return problems


SPEND_FACTS = ("spend_task_cents", "spend_tenant_cents")
"""Context facts that carry spend so far; a pack that mentions neither decides the same whatever was spent."""


def compile_pack(source: PackSource, catalog: ToolCatalog) -> CompiledPack:
    """Check and parse a pack once; raises PackError listing every problem."""
    problems = validate_pack(source, catalog)
    if problems:
        raise PackError(problems)
    text = _policy_text(source)
    rules = _rules(text, problems)
    every = json.loads(cedarpy.policies_to_json_str(text)).get("staticPolicies", {})
    shadow = {pid for pid, p in every.items() if (p.get("annotations") or {}).get("mode") == "shadow"}
    policies = {pid: p for pid, p in every.items() if pid not in shadow}
    live_text = text
    if shadow:  # shadow policies are left out of the live set: a shadow forbid must not hide a live permit
        live_text = cedarpy.policies_from_json_str(json.dumps({"staticPolicies": policies, "templates": {}, "templateLinks": []}))
    bound = {pid: tenant for pid, policy in policies.items() if (tenant := tenant_of(policy)) is not None}
    return CompiledPack(
        version=source.version,
        source=source,
        policy_set=cedarpy.PolicySet.from_str(live_text),
        shadow_set=cedarpy.PolicySet.from_str(text) if shadow else None,
        rules=rules,
        settings=PackSettings.model_validate(source.settings),
        entities=cedarpy.Entities.from_json_str(json.dumps(action_entities(catalog))),
        catalog=catalog,
        reads_spend=any(name in text or name.replace("_cents", "_usd") in text for name in SPEND_FACTS),  # a @message's too
        policies=policies,
        tenant_bound=bound,
        actions=_actions(catalog),
        context_read=context_reads(list(every.values())),  # shadow policies too: the shadow set reads its context
    )
