"""AutoGen's offline tests run in `.venv-autogen` (autogen-core pins protobuf 5, Temporal's SDK a newer one): `make integrations-test`."""

from integrations.harness import bus, effects, governance, make_client
from integrations.tests.typed_policy import typed_governance

__all__ = ["bus", "effects", "governance", "make_client", "typed_governance"]
