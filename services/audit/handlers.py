"""Handlers of the audit service: thin, they parse, call the domain, publish."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["log_event"]

log = logging.getLogger(__name__)


async def log_event(event: Any) -> None:
    """Record that an event arrived (the service's logic lands here)."""
    log.info("audit: %s %s", event.type, event.id)
