"""The `control` and `directory` topics as the CLI and the operator tools read them: only what the services would obey.

These readers sit outside the kit's consume path, so they run its checks themselves: a record that is not
signed by a key allowed to produce it, or that replays an older one, is skipped (and reported), never
shown as current, merged into a record the CLI signs, or carried into a replay's sandbox.
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from schemas import Envelope, decode
from servicekit import OPS, Authority, ControlState, KitSettings, Reject, appended_ms, deployment_authority, kafka_options
from servicekit.partitions import partitions_of

__all__ = ["apply_trusted", "read_trusted_control"]


async def apply_trusted(
    state: ControlState,
    authority: Authority,
    name: str,
    raw: bytes,
    accepted: list[Envelope] | None = None,
    appended: int | None = None,
) -> str | None:
    """Apply one raw `control`/`directory` record to `state` as the services would; why it was skipped, or None.

    The CLI reads these topics outside the kit's consume path, so it runs the same checks: a record whose
    signature does not verify against the operator allow-list (or the approval key, for `directory`), or a
    replayed one, never becomes current, and so is never merged into a record the CLI signs.
    """
    try:
        event = decode(name, raw)
    except ValueError as exc:
        return f"invalid: {str(exc).splitlines()[0]}"
    refusal = authority.check(raw, event, appended_ms=appended)
    if refusal is not None:
        return f"{refusal.code}: {refusal.message}"
    try:
        await state.apply(event)
    except Reject as exc:
        return f"{exc.code}: {exc}"
    if accepted is not None:
        accepted.append(event)
    return None


async def read_trusted_control(
    kit: KitSettings,
    name: str = "control",
    state: ControlState | None = None,
    *,
    accepted: list[Envelope] | None = None,
    on_skip: Callable[[int, str], None] | None = None,
) -> ControlState:
    """Read `control` (or `directory`, into `state`) from the beginning to its current end and return the state it describes.

    Args:
        kit: The deployment's settings (bootstrap, prefix, key directories); reads as the `ops` principal.
        name: `control` or `directory`.
        state: A state to apply the records to (default: a new one).
        accepted: Filled with the records applied, in topic order.
        on_skip: Called with (offset, why) for each record the services would refuse (unsigned, forged,
            signed by a key not allowed, replayed); such a record changes nothing.
    """
    state = state if state is not None else ControlState()
    authority = deployment_authority(kit)
    topic = f"{kit.topic_prefix}{name}"
    consumer = AIOKafkaConsumer(bootstrap_servers=kit.kafka_bootstrap, enable_auto_commit=False, **kafka_options(kit, OPS))
    try:
        await consumer.start()  # inside: a broker not reached still closes the client
        tps = await partitions_of(consumer, [topic])
        if not tps:
            return state
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        while await behind():
            batch = await consumer.getmany(*tps, timeout_ms=1000, max_records=500)
            for records in batch.values():
                for record in records:
                    skipped = await apply_trusted(state, authority, name, record.value or b"", accepted, appended_ms(record))
                    if skipped is not None and on_skip is not None:
                        on_skip(record.offset, skipped)
    finally:
        await consumer.stop()
    return state
