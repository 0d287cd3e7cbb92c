"""Offline adapter tests: the real frameworks, a scripted model, scripted governance on a memory bus (`.venv-integrations`)."""

from integrations.harness import bus, effects, governance, make_client
from integrations.tests.typed_policy import typed_governance

__all__ = ["bus", "effects", "governance", "make_client", "typed_governance"]
