"""`TIDEGATE_*` variables no setting reads but that look like one: a typo ignored in silence (the platform probe).

Read from docs/settings.md, which is written from the settings' models (`make settings-doc`; a unit test fails when it is
not what they say), not by importing the models: that is every service's package, ~24 MiB more in each service process
that `tidegate service run` starts. A checkout without the page names nothing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from servicekit import REPO_ROOT

__all__ = ["misspelt_settings"]

# `TIDEGATE_*` variables read outside the settings' models: infra/infra.sh's, the CLI's own, the tests' and benchmarks'.
_READ_ELSEWHERE = frozenset(
    {
        "TIDEGATE_KAFKA_PORT", "TIDEGATE_KAFKA_CONTROLLER_PORT", "TIDEGATE_KAFKA_BROKERS", "TIDEGATE_KAFKA_HEAP_OPTS",
        "TIDEGATE_KAFKA_LIBS", "TIDEGATE_KAFKA_READY_TIMEOUT", "TIDEGATE_KAFKA_SESSION_MAX_S", "TIDEGATE_PG_READY_TIMEOUT",
        "TIDEGATE_PORT_FREE_TIMEOUT",
        "TIDEGATE_INFRA_DIR", "TIDEGATE_READY_DIR", "TIDEGATE_APPROVER_TOKEN", "TIDEGATE_APPROVAL_URL", "TIDEGATE_CLI",
        "TIDEGATE_TEST_INFRA", "TIDEGATE_FUZZ_EXAMPLES", "TIDEGATE_RECOVERY_LONG", "TIDEGATE_BENCH_HOP_SEED",
    }
)  # fmt: skip
_ROW = re.compile(r"^\| `(TIDEGATE_[A-Z0-9_]+)` \|", re.MULTILINE)


def misspelt_settings(environ: Mapping[str, str]) -> list[str]:
    """Each `TIDEGATE_*` variable no setting reads that looks like one, with the name it looks like.

    Only names close to a known one are named: any other `TIDEGATE_` variable may be a deployment's own.
    """
    try:
        known = set(_ROW.findall((REPO_ROOT / "docs" / "settings.md").read_text())) | _READ_ELSEWHERE
    except OSError:
        return []
    said = []
    for name in sorted(n for n in environ if n.startswith("TIDEGATE_") and n not in known):
        if close := difflib.get_close_matches(name, known, n=1, cutoff=0.88):
            said.append(f"{name} is no setting (ignored): did you mean {close[0]}?")
    return said
