"""`tidegate audit verify --signatures`: each row stored as a valid event, observed again with the deployment's keys.

The hashes prove the rows were not changed since they were written, not that the audit service wrote them: its
database login may INSERT. A row that claims a signature its value does not carry is named.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from servicekit.intake import Bounds
from services.audit.records import EPOCH, LogRow, SignatureCheck, observe

__all__ = ["Recheck", "signature_recheck"]


Recheck = Callable[[LogRow], str | None]
"""The problem with a row's stored verdict, reached again from its value (None: it holds)."""


def signature_recheck(check: SignatureCheck, prefix: str, bounds: Bounds) -> Recheck:
    """A `Recheck` that observes a row's value again as the audit service did (`check`: the history authority).

    Only a row stored as a valid event is asked about: one the authority refuses now claims a signature it
    does not carry (or a key that was taken out of the keyring: keep retired public keys). A row stored as
    refused is not: a key registered since may verify it now, and a refused event grants nothing.
    """

    def recheck(row: LogRow) -> str | None:
        if not row.valid:
            return None
        stamp_ms = (row.kafka_ts - EPOCH) // timedelta(milliseconds=1)
        again = observe(
            topic=row.topic, partition=row.partition, offset=row.kafka_offset, timestamp_ms=stamp_ms, timestamp_type=row.ts_type,
            key=row.key, value=row.value, headers=None, prefix=prefix, bounds=bounds, check=check,
        )  # fmt: skip
        if again.valid:
            return None
        return f"stored as a valid event, but its value does not verify: {again.invalid_reason} (a row the audit service did not write?)"

    return recheck
