"""What a call's result teaches the policy: how its reservation ends, and what its task read (untrusted values, records).

Pure: a result and its tool's catalog entry in, an `Ending` out (`PolicyService.on_results` stores them in one unit of work).
"""

from __future__ import annotations

import logging

from schemas import ActionFailed, ActionResult, ActionResultData, ActionSucceeded, ToolSpec
from servicekit.provenance import Provenance, texts_of, without_paths
from services.policy.facts import SystemRecord, arg_at
from services.policy.repository import Ending

__all__ = ["ending_of"]

log = logging.getLogger(__name__)


def ending_of(event: ActionResult, spec: ToolSpec | None) -> Ending:
    """How the call of `event` ended, with what its result taught and its reservation's fate (`spec`: its tool's catalog entry)."""
    data = event.data
    succeeded = isinstance(event, ActionSucceeded)
    failed = isinstance(event, ActionFailed)
    learned, texts = _output(data, spec) if succeeded else ({}, {})
    return Ending(
        data.tenant_id,
        data.task_id,
        data.action_id,
        data.status,
        data.attempts,
        budget="settle" if succeeded else "release" if failed else "hold",
        cost_usd=data.cost.usd if not failed and data.cost.usd > 0 else None,  # an unknown one's is kept for a human's finding
        learned=learned,
        texts=texts,
        record=_record(data, spec) if succeeded else None,
        read_error=_read_error(data, spec),
    )


def _output(data: ActionResultData, spec: ToolSpec | None) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """A result of a tool whose output is untrusted: every value in it is untrusted for the rest of its task; and its text.

    Save the fields the catalog says the system sets itself (`system_fields`: the id of the ticket read, which the
    agent named before it read anything), so that writing to the entry it read is not tainted by the read's answer.
    The text (`texts_of`: where → field → text) is kept to quote beside a later call that carries one of its values.
    """
    if spec is None or not spec.untrusted_output or data.result is None:
        return {}, {}
    content = without_paths(data.result, spec.system_fields)
    source = f"the result of {data.tool} (action {data.action_id})"
    return Provenance().learn(content, source), {source: texts_of(content)}


def _record(data: ActionResultData, spec: ToolSpec | None) -> tuple[str, SystemRecord] | None:
    """A trusted read of the system of record: the figures its catalog entry's `records` point at."""
    if spec is None or spec.records is None or data.result is None:
        return None
    read = {"result": data.result}
    key, amount, currency = (arg_at(read, p) for p in (spec.records.key, spec.records.amount_usd, spec.records.currency))
    if key in (None, "") or not isinstance(amount, int | float) or isinstance(amount, bool) or not isinstance(currency, str):
        log.warning("policy: %s (action %s) returned no usable record figures; nothing learned", data.tool, data.action_id)
        return None
    return str(key), SystemRecord(float(amount), currency, f"the result of {data.tool} (action {data.action_id})")


def _read_error(data: ActionResultData, spec: ToolSpec | None) -> str | None:
    """Why a trusted read of the system of record failed, when one was tried (attempts made, not refused before calling)."""
    if spec is None or spec.records is None or data.status != "failed" or not data.attempts:
        return None
    why = f"{data.error.type}: {data.error.message}" if data.error is not None else "no error given"
    return f"{why[:300]} after {data.attempts} attempt{'s' if data.attempts != 1 else ''}"
