"""Security tests act as the attacker against the real services (plain HTTP and Kafka clients, the real database).

The approval service's harness (tests/integration/approval) starts the service and plays the policy service.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "integration" / "approval"))

from approval_harness import http, start_approval

__all__ = ["http", "start_approval"]
