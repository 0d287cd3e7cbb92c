"""Handlers of the policy service: thin, they hand each parsed event to the service's use case."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.policy.service import PolicyService

__all__ = ["PolicyHandlers"]


@dataclass(frozen=True)
class PolicyHandlers:
    """One handler per subscription; the bus has already validated the event against its topic."""

    service: PolicyService

    async def proposed(self, event: Any) -> None:
        """`actions.proposed`: decide, record, publish."""
        await self.service.on_proposed(event)

    async def proposed_batch(self, events: list[Any]) -> None:
        """`actions.proposed`, a polled batch at a time: decide all in one unit of work, publish."""
        await self.service.on_proposed_batch(events)

    async def approval(self, event: Any) -> None:
        """`approvals`: re-decide after a verified grant; dead-letter what does not verify."""
        await self.service.on_approval(event)

    async def result(self, event: Any) -> None:
        """`actions.results`: release or settle budget reservations, learn payees."""
        await self.service.on_result(event)

    async def task(self, event: Any) -> None:
        """`tasks`: learn what the request vouches for and what its untrusted fields carry (provenance)."""
        await self.service.on_task(event)

    async def control(self, event: Any) -> None:
        """`control`: kill switches, budgets, policy versions (hot reload)."""
        await self.service.on_control(event)
