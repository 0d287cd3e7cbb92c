"""A tenant's settings record read as a change: the fields that differ from the tenant's record before it, old → new.

Each `control.tenant` record holds the tenant's whole settings, so the record alone cannot say what a person changed;
`audit search` pairs each with the one before it (`previous_settings`) and `summarize` prints the difference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import schemas as s
from services.audit._log_base import AuditLog, SearchFilters
from services.audit.rows import LogRow

__all__ = ["HISTORY_MAX", "RowId", "previous_settings", "row_id", "settings_change"]

HISTORY_MAX = 10_000  # records of one tenant read to find each one's predecessor; a tenant changed more often reads "(before unknown)"
TENANT_TYPE = "tidegate.control.tenant"

RowId = tuple[str, int, int]  # topic, partition, offset: a record's place on the bus


def row_id(row: LogRow) -> RowId:
    """Where `row` sits on the bus."""
    return (row.topic, row.partition, row.kafka_offset)


def _shown(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _field_change(name: str, old: Any, new: Any) -> str:
    """One field's change: `name old → new`, or for two lists what was added and removed (a payee list is long)."""
    if isinstance(old, list) and isinstance(new, list):
        added = [v for v in new if v not in old]
        removed = [v for v in old if v not in new]
        parts = [f"+{_shown(v)}" for v in added] + [f"-{_shown(v)}" for v in removed]
        return f"{name} {' '.join(parts) or 'reordered'}"
    before = "(unset)" if old is None else _shown(old)
    after = "(unset)" if new is None else _shown(new)
    return f"{name} {before} → {after}"


def settings_change(tenant_id: str, settings: Mapping[str, Any], previous: Mapping[str, Any] | None, set_by: str) -> str:
    """The record as a change: `acme: refund_threshold_usd 500 → 700 by alice`, or `acme: onboarded with … by alice`."""
    if previous is None:
        fields = ", ".join(f"{k} {_shown(v)}" for k, v in sorted(settings.items())) or "no settings of its own"
        return f"{tenant_id}: onboarded with {fields} by {set_by}"
    differ = [k for k in sorted({*settings, *previous}) if previous.get(k) != settings.get(k)]
    changed = [_field_change(k, previous.get(k), settings.get(k)) for k in differ]
    return f"{tenant_id}: {', '.join(changed) or 'no field changed (the same settings published again)'} by {set_by}"


def _settings_of(row: LogRow) -> dict[str, Any] | None:
    """The settings a valid `control.tenant` row holds (None: not one, or not valid: it never applied)."""
    if not row.valid or row.value is None or row.event_type != TENANT_TYPE:
        return None
    try:
        event = s.ControlTenant.model_validate_json(row.value)
    except ValueError:
        return None
    return dict(event.data.settings)


async def previous_settings(log: AuditLog, rows: Sequence[LogRow], topic_prefix: str = "") -> dict[RowId, dict[str, Any] | None]:
    """For each `control.tenant` row of `rows`: the settings of its tenant's record before it (None: it onboarded the tenant).

    A row whose predecessor the log cannot tell (more than `HISTORY_MAX` records of its tenant before it) is left out.
    """
    latest: dict[str, Any] = {}
    for row in rows:
        if row.tenant_id and _settings_of(row) is not None:
            latest[row.tenant_id] = max(latest.get(row.tenant_id, row.kafka_ts), row.kafka_ts)
    out: dict[RowId, dict[str, Any] | None] = {}
    for tenant, until in latest.items():
        filters = SearchFilters(tenant=tenant, event_type=TENANT_TYPE, until=until + timedelta(milliseconds=1), topic_prefix=topic_prefix)
        page = await log.search(filters, limit=HISTORY_MAX, newest=True)
        before: dict[str, Any] | None = None
        known = len(page) < HISTORY_MAX  # the first of a full page has a predecessor the page does not hold
        for row in page:
            settings = _settings_of(row)
            if settings is None:
                continue
            if known:
                out[row_id(row)] = before
            before, known = settings, True
    return out
