"""The one place bench/ builds Kafka client options: when the broker needs credentials, change `kafka_options` only."""

from __future__ import annotations

import json
from typing import Any

from servicekit import ADMIN, KitSettings
from servicekit import kafka_options as kit_kafka_options

__all__ = ["emit_figures", "kafka_options"]

FIGURES_PREFIX = "BENCH_JSON "


def kafka_options(kit: KitSettings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client in bench/ is built with (producer, consumer, admin): it logs in as `admin`."""
    return {"bootstrap_servers": kit.kafka_bootstrap, **kit_kafka_options(kit, ADMIN)}


def emit_figures(bench: str, figures: dict[str, Any]) -> None:
    """Print a benchmark's figures as one machine-readable line, the last it prints, for `bench.report`."""
    print(FIGURES_PREFIX + json.dumps({"bench": bench, **figures}), flush=True)
