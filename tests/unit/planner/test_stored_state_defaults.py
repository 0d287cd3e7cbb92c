"""A stored task state leaves out every field at its default (services/planner/repository.py): reading fills it back in.

So a default is part of every state already stored: changed, it would change what those states say (a step's
`status`, a plan entry's `required`) on the next read, silently. These are the defaults the stored states were written
against; a new field with a default is fine, a changed one needs a migration that writes the old value into the
states that left it out.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from schemas import ActionCounts, ProposalCost
from services.planner.task_state import PlannedStep, StepRecord, TaskState

WRITTEN_AGAINST: dict[type[BaseModel], dict[str, Any]] = {
    TaskState: {
        "budget_usd": None,
        "status": "running",
        "plan": [],
        "steps": [],
        "counts": ActionCounts(),
        "model_usd": 0.0,
        "retrieval_usd": 0.0,
        "tools_usd": 0.0,
        "retries_usd": 0.0,
        "events": 0,
        "human_touches": 0,
        "dropped": [],
        "ended_at": None,
        "summary": None,
        "reason": None,
        "submission": None,
    },
    StepRecord: {
        "rationale": "",
        "tainted_args": [],
        "status": "proposed",
        "decision": None,
        "reasons": [],
        "reason_messages": [],
        "approval_id": None,
        "read_only": False,
        "attempts": 0,
        "cost_usd": 0.0,
        "result": None,
        "error": None,
        "waiting_since": None,
        "approved_args": None,
        "repeats": None,
        "proposals": 1,
    },
    PlannedStep: {
        "rationale": "",
        "tainted_args": [],
        "on_deny": [],
        "required": True,
        "continue_on_failure": False,
        "cost": ProposalCost(),
        "confidence": 1.0,
    },
    ActionCounts: dict.fromkeys(
        ("proposed", "allowed", "denied", "escalated", "approved", "rejected", "expired", "succeeded", "failed", "unknown", "refused"), 0
    ),
    ProposalCost: {"model": None, "tokens_in": 0, "tokens_out": 0, "usd": 0.0},
}


def test_no_default_a_stored_state_left_out_has_changed() -> None:
    for model, written in WRITTEN_AGAINST.items():
        now = {name: f.get_default(call_default_factory=True) for name, f in model.model_fields.items() if not f.is_required()}
        changed = {name: (value, now[name]) for name, value in written.items() if name in now and now[name] != value}
        assert not changed, f"{model.__name__}: defaults changed (stored, now) {changed}"
        assert set(written) <= set(now), f"{model.__name__}: fields stored states may leave out are gone or required now"
