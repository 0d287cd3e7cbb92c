"""Intake benchmark: what the bounds check costs per record, beside decoding it (the cost of "nothing lost").

Prints figures only; no infrastructure needed. A few seconds.

    .venv/bin/python bench/intake_bench.py [--records 20000]
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from collections.abc import Callable

import schemas as s
from schemas.examples import sample_events
from servicekit.intake import Bounds, Refused, check_bounds, describe_raw


def per_call_us(fn: Callable[[], object], number: int) -> float:
    best = min(timeit.repeat(fn, number=number, repeat=5))
    return best / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    n = parser.parse_args().records
    bounds = Bounds()
    proposal = next(e for t, e in sample_events() if t == "actions.proposed")
    typical = s.encode(proposal)
    doc = proposal.model_dump(mode="json")
    doc["data"]["args"]["items"] = [{"sku": f"S-{i}", "qty": i, "tags": ["a", "b"]} for i in range(40)]  # > 64 brackets: exact scan
    bracketed = json.dumps(doc).encode()
    poison = b"[" * 100_000 + b"]" * 100_000

    def refuse(value: bytes) -> Callable[[], object]:
        def run() -> object:
            try:
                check_bounds(value, bounds)
            except Refused as exc:
                return exc
            return None

        return run

    started = time.perf_counter()
    rows = [
        (f"check_bounds, typical proposal ({len(typical)} B)", per_call_us(lambda: check_bounds(typical, bounds), n)),
        (f"decode, typical proposal ({len(typical)} B)", per_call_us(lambda: s.decode("actions.proposed", typical), n // 4)),
        (f"check_bounds, 120+ brackets ({len(bracketed)} B, exact scan)", per_call_us(lambda: check_bounds(bracketed, bounds), n // 4)),
        (f"decode, same ({len(bracketed)} B)", per_call_us(lambda: s.decode("actions.proposed", bracketed), n // 10)),
        (f"check_bounds refuses the 100,000-deep array ({len(poison)} B)", per_call_us(refuse(poison), 200)),
        ("describe_raw of that array (truncate + SHA-256)", per_call_us(lambda: describe_raw(poison), 200)),
    ]
    for label, us in rows:
        print(f"{label:<62} {us:9.2f} µs")
    print(f"(best of 5 runs each; {time.perf_counter() - started:.1f}s in all; figures grow with the machine's load)")


if __name__ == "__main__":
    main()
