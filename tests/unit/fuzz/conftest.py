"""Hypothesis profiles of the fuzz tests: a short run inside `make test`, a long one with `TIDEGATE_FUZZ_EXAMPLES=N` (`make test-fuzz`).

No example database is written (the tests must not leave files in the checkout); a failure prints its
example and the seed to reproduce it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "tidegate",
    max_examples=int(os.environ.get("TIDEGATE_FUZZ_EXAMPLES", "40")),
    deadline=None,  # a shared 2-core machine: time is not what these tests check
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    print_blob=True,
)
settings.load_profile("tidegate")
