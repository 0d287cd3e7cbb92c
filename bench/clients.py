"""The one place bench/ builds Kafka client options: when the broker needs credentials, change `kafka_options` only."""

from __future__ import annotations

import json
import sys
from typing import Any

from servicekit import ADMIN, KitSettings, drop_prefix
from servicekit import kafka_options as kit_kafka_options

__all__ = ["drop_bench_prefix", "emit_figures", "kafka_options"]

FIGURES_PREFIX = "BENCH_JSON "


def kafka_options(kit: KitSettings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client in bench/ is built with (producer, consumer, admin): it logs in as `admin`."""
    return {"bootstrap_servers": kit.kafka_bootstrap, **kit_kafka_options(kit, ADMIN)}


async def drop_bench_prefix(kit: KitSettings, prefix: str | None = None) -> None:
    """Drop a run's topics and the rights granted on them (`prefix`, else the kit's); a failure is printed, not raised.

    A benchmark's figures are kept whatever its cleanup does; what a failed cleanup leaves,
    `tidegate topics prune --yes` revokes.
    """
    prefix = kit.topic_prefix if prefix is None else prefix
    try:
        await drop_prefix(kit.kafka_bootstrap, prefix, client_options=kit_kafka_options(kit, ADMIN))
    except Exception as e:  # the run's figures matter more than its cleanup
        print(f"could not drop {prefix}: {e!r}; `tidegate topics prune --yes` revokes the rights left", file=sys.stderr)


def emit_figures(bench: str, figures: dict[str, Any]) -> None:
    """Print a benchmark's figures as one machine-readable line, the last it prints, for `bench.report`."""
    print(FIGURES_PREFIX + json.dumps({"bench": bench, **figures}), flush=True)
