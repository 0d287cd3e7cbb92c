"""Settings of the policy service (`TIDEGATE_POLICY_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_MAX_DECISION_BYTES", "PolicySettings"]

DEFAULT_MAX_DECISION_BYTES = 768 * 1024


class PolicySettings(BaseSettings):
    """What only the policy service reads."""

    model_config = SettingsConfigDict(env_prefix="TIDEGATE_POLICY_", extra="ignore", frozen=True)

    authorization_ttl_s: float = Field(
        default=300.0, gt=0, le=86_400, description="Lifetime of a signed `action.authorized`; the executor refuses it after."
    )
    reservation_expiry_margin_s: float = Field(
        default=600.0,
        ge=0,
        description="A budget reservation with no result seen is released this long after its authorization expired"
        " (covers a call that started just before the expiry).",
    )
    reservation_check_s: float = Field(default=60.0, gt=0, description="How often expired reservations are looked for.")
    signing_key_name: str = Field(
        default="policy", description="Name of the Ed25519 key that signs authorizations (`<keys_dir>/<name>.key`)."
    )
    approval_key_name: str = Field(default="approval", description="Name of the approval service's public keys trusted for grants.")
    provenance_wait_s: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="How long a proposal waits for the results of its task's earlier untrusted-output calls, and a "
        "proposal the planner signed for its task's request; after that its counterparties count as tainted (fail closed).",
    )
    task_state_kept_s: float = Field(
        default=7 * 86_400.0,
        ge=3_600,
        description="How long a task's working state (what it read, how its calls ended) is kept: the longest a task may run. "
        "Older state is forgotten and the task with it; a later proposal or grant for it is denied `task_expired`. "
        "Keep it above the longest approval wait (`TIDEGATE_APPROVAL_EXPIRY_S`) and step timeout.",
    )
    task_state_check_s: float = Field(default=600.0, gt=0, description="How often the state kept longer than that is forgotten.")
    repeat_answer_interval_s: float = Field(
        default=60.0,
        ge=0,
        le=3_600,
        description="A proposal of a call already decided (its action id, tenant, call and requester) gets the recorded "
        "decision, and an allowed call's authorization, published again: its first repeat at once, later ones at most once "
        "in this many seconds per action id; a repeat in between is acknowledged, not answered again (its answer is on "
        "`actions.decided`), and counted in "
        "`tidegate_policy_repeats_unanswered_total`. Kept in memory, so a redelivery after a restart is answered. "
        "0: every repeat is answered.",
    )
    max_decision_bytes: int = Field(
        default=DEFAULT_MAX_DECISION_BYTES,
        ge=64 * 1024,
        le=768 * 1024,
        description="Largest decision event (signed, in bytes: `action.decided`, and `action.authorized` for an allow); a call "
        "whose decision would be larger is denied `too_large` by a decision that carries its digest, not its args. At most "
        "768 KiB: headroom below the 1 MiB that the broker and consumers take (`TIDEGATE_MAX_VALUE_BYTES`).",
    )
