"""Create the catalog's topics on the broker, with their partitions, retention and ACLs, idempotently; drop a prefix's again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

from schemas import TOPICS, TopicSpec, topic_spec
from servicekit.bus_admin import (
    APPROVAL_PRODUCE_BYTES_PER_S,
    OPS_PRODUCE_BYTES_PER_S,
    OUTSIDE_PRODUCE_BYTES_PER_S,
    grant_rights,
    granted_prefixes,
    quotas_unlike,
    revoke_rights,
    tools_of,
)
from servicekit.bus_auth import kafka_options
from servicekit.bus_rights import ADMIN
from servicekit.partitions import partitions_of
from servicekit.settings import KitSettings

__all__ = [
    "CROWDED_RECORDS",
    "READ_AT_START",
    "Dropped",
    "Ensured",
    "TopicCheck",
    "catalog_topic_names",
    "check_quotas",
    "check_topics",
    "drop_prefix",
    "ensure_topics",
    "quota_line",
    "replication_factor",
    "stale_rights",
]

log = logging.getLogger(__name__)

_ALREADY_EXISTS = TopicAlreadyExistsError.errno  # another process created it in between: fine
_GONE = UnknownTopicOrPartitionError.errno  # another process deleted it in between: fine


class Ensured(list[str]):
    """What `ensure_topics` did: the topics it created (the list itself, as before), and each topic it aligned.

    `aligned`: each existing topic whose configs it changed to the catalog's, with each key it changed as (was, now).
    Both empty: the broker was as asked.
    """

    def __init__(
        self,
        created: Iterable[str] = (),
        aligned: Mapping[str, Mapping[str, tuple[str | None, str]]] | None = None,
        quotas: Mapping[str, tuple[float | None, float | None]] | None = None,
    ) -> None:
        super().__init__(created)
        self.aligned: dict[str, dict[str, tuple[str | None, str]]] = {t: dict(keys) for t, keys in (aligned or {}).items()}
        self.quotas: dict[str, tuple[float | None, float | None]] = dict(quotas or {})  # principal: (was, now) B/s, None: none

    def changes(self) -> list[str]:
        """One line for each topic aligned (`aligned <topic>: <key> <was> → <now>; …`) and each produce quota changed."""
        lines = [f"aligned {topic}: {_changes(keys)} (its own other settings kept)" for topic, keys in sorted(self.aligned.items())]
        return lines + [quota_line(p, was, now) for p, (was, now) in sorted(self.quotas.items())]


def quota_line(principal: str, was: float | None, now: float | None) -> str:
    """`produce quota of <principal>: <was> → <now>`, as `ensure` says a change and `check` one it would make."""
    return f"produce quota of {principal}: {_rate(was)} → {_rate(now)}"


def _rate(bytes_per_s: float | None) -> str:
    return "none" if bytes_per_s is None else f"{int(bytes_per_s)} B/s"


def catalog_topic_names(tools_on_topics: Iterable[str] = ()) -> list[str]:
    """Every catalog topic, plus request/reply topics of tools served over Kafka."""
    names = list(TOPICS)
    for tool in tools_on_topics:
        names += [f"tools.{tool}.requests", f"tools.{tool}.replies"]
    return names


def replication_factor(brokers: int) -> int:
    """Replicas of each topic: 3 on a cluster of three or more brokers (with its `min.insync.replicas` 2), else one per broker."""
    return max(1, min(3, brokers))


def _admin(bootstrap: str, client_options: Mapping[str, Any] | None, timeout_s: float) -> AIOKafkaAdminClient:
    """An admin client logged in with `client_options` (default: the `admin` principal's local credentials)."""
    options = dict(client_options) if client_options is not None else kafka_options(KitSettings(), ADMIN)
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(options | {"request_timeout_ms": int(timeout_s * 1000)}))


async def ensure_topics(
    bootstrap: str,
    prefix: str,
    names: Iterable[str],
    *,
    timeout_s: float = 30.0,
    client_options: Mapping[str, Any] | None = None,
    grant: bool = True,
    partitions: int | None = None,
    produce_bytes_per_s: int = OUTSIDE_PRODUCE_BYTES_PER_S,
    ops_produce_bytes_per_s: int = OPS_PRODUCE_BYTES_PER_S,
    approval_produce_bytes_per_s: int = APPROVAL_PRODUCE_BYTES_PER_S,
    services_produce_bytes_per_s: int | None = None,
) -> Ensured:
    """Create the missing topics among `names` (catalog names) under `prefix`, and the prefix's ACLs; return the topics created.

    With `grant`, an existing topic whose cleanup policy or timestamp type is not the catalog's is given the catalog's
    (its own other settings kept): each one changed is logged and listed in the result's `aligned`. Run again, nothing
    is created nor changed.

    A topic that spreads load is created with `partitions` (the deployment's `KitSettings.topic_partitions`; None: the
    catalog's), an ordered one with one. An existing topic keeps its count: one with another than asked is logged, since
    a count raised later moves keys to other partitions (docs/operations.md), which only an operator may decide.

    Logs in with `client_options` (default: the `admin` principal's local credentials). With `grant`, every
    principal's ACLs on the prefix (and on the tools among `names`) are created too, and the outside principals', `ops`'s
    and `approval`'s produce quotas set, and the other services' when `services_produce_bytes_per_s` is given
    (`servicekit.bus_admin.grant_rights`), so the caller needs
    the admin's rights; a service checking its own topics, or `ops` making a sandbox on its standing rights,
    passes `grant=False` and its own options.
    """
    names = list(names)
    admin = _admin(bootstrap, client_options, timeout_s)
    await admin.start()
    try:
        quotas = {}
        if grant:
            quotas = await grant_rights(
                admin,
                prefix,
                tools_of(names),
                produce_bytes_per_s=produce_bytes_per_s,
                ops_produce_bytes_per_s=ops_produce_bytes_per_s,
                approval_produce_bytes_per_s=approval_produce_bytes_per_s,
                services_produce_bytes_per_s=services_produce_bytes_per_s,
            )
        existing = set(await admin.list_topics())
        wanted = {prefix + n: topic_spec(n) for n in names}
        replicas = replication_factor(len((await admin.describe_cluster())["brokers"]))
        new = [
            NewTopic(
                name=full, num_partitions=spec.partitions_given(partitions), replication_factor=replicas, topic_configs=spec.kafka_config()
            )
            for full, spec in wanted.items()
            if full not in existing
        ]
        if partitions is not None:
            await _report_other_counts(
                admin, {full: spec.partitions_given(partitions) for full, spec in wanted.items() if full in existing}
            )
        if new:
            response: Any = await admin.create_topics(new)
            refused = [(name, code, message) for name, code, message in response.topic_errors if code not in (0, _ALREADY_EXISTS)]
            if refused:  # e.g. a service's own principal, which may not create topics
                raise for_code(refused[0][1])(
                    f"could not create {[r[0] for r in refused]} ({refused[0][2]}); `tidegate topics` creates them as admin"
                )
        aligned = await _align_cleanup(admin, {full: spec for full, spec in wanted.items() if full in existing}) if grant else {}
        for full, keys in sorted(aligned.items()):
            log.info("%s given the catalog's %s (its own other settings kept)", full, _changes(keys))
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not set(wanted) <= set(await admin.list_topics()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics not visible after {timeout_s}s: {sorted(set(wanted) - set(await admin.list_topics()))}")
            await asyncio.sleep(0.1)
        return Ensured([t.name for t in new], aligned, quotas)
    finally:
        await admin.close()


def _changes(keys: Mapping[str, tuple[str | None, str]]) -> str:
    """`key was → now; …`, as `topics ensure` and `topics check` say a change."""
    return "; ".join(f"{key} {was} → {now}" for key, (was, now) in keys.items())


def _aligned_config(spec: TopicSpec, overrides: Mapping[str, str]) -> dict[str, Any]:
    """The spec's config, the topic's own overrides over it, and the aligned keys (what trust rests on) as the spec has them."""
    config = spec.kafka_config()
    return {**config, **overrides, **{key: config.get(key, _DEFAULTS[key]) for key in _ALIGNED}}


_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs v1+: a value set on the topic itself (not the broker's default nor a static one)


async def _overrides(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """Every config each topic holds as its own (set on it, not inherited), by topic."""
    described: Any = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, full) for full in names])
    found: dict[str, dict[str, str]] = {}
    for response in described:
        with_source = response.API_VERSION >= 1  # v0 says `is_default` where later versions say the source
        for _code, _message, _type, name, entries in response.resources:
            found[name] = {
                key: value
                for key, value, read_only, source, *_ in entries
                if value is not None and not read_only and (source == _DYNAMIC_TOPIC_CONFIG if with_source else not source)
            }
    return found


@dataclass(frozen=True)
class Dropped:
    """What `drop_prefix` removed from the broker."""

    topics: tuple[str, ...]
    rights: int  # ACL bindings of the prefix deleted


async def drop_prefix(
    bootstrap: str, prefix: str, *, client_options: Mapping[str, Any] | None = None, revoke: bool = True, timeout_s: float = 60.0
) -> Dropped:
    """Delete every topic under `prefix` and, with `revoke`, every ACL `ensure_topics` granted on it.

    What a test, a benchmark or a retired deployment must do when its prefix goes away: topics left behind
    keep their partitions open on the broker, and rights left behind keep granting every principal access
    to any topic created under that prefix later. The prefix's tools are found both from its topics and
    from its rules, so rights outlive no topic deleted earlier. Logs in as `admin` unless `client_options`
    says otherwise; a sandbox's prefix is dropped as `ops` with `revoke=False` (its standing rules belong to
    no prefix, and `ops` may not delete ACLs).
    """
    if not prefix:
        raise ValueError("an empty prefix would name every topic on the broker")
    admin = _admin(bootstrap, client_options, timeout_s)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        if names:
            response: Any = await admin.delete_topics(names)
            refused = [(name, code) for name, code, *_ in response.topic_error_codes if code not in (0, _GONE)]
            if refused:
                raise for_code(refused[0][1])(f"could not delete {[name for name, _ in refused]} under {prefix!r}")
        rights = 0
        if revoke:
            tools = {*tools_of(n.removeprefix(prefix) for n in names), *(await granted_prefixes(admin)).get(prefix, [])}
            rights = await revoke_rights(admin, prefix, tools)
        return Dropped(tuple(names), rights)
    finally:
        await admin.close()


async def stale_rights(
    bootstrap: str, *, revoke: bool = False, client_options: Mapping[str, Any] | None = None, timeout_s: float = 60.0
) -> dict[str, list[str]]:
    """The prefixes whose rights remain on the broker but under which no topic is left, with their tools; with `revoke`, revoked.

    What a test or a benchmark stopped before it cleaned up, or a deployment retired by deleting its topics,
    leaves behind (`tidegate topics prune`). A prefix another live prefix lies under (`tidegate.` beside a
    live `tidegate.eu.`) counts as live: only a prefix with no topic at all is stale.
    """
    admin = _admin(bootstrap, client_options, timeout_s)
    await admin.start()
    try:
        topics = await admin.list_topics()
        stale = {p: tools for p, tools in (await granted_prefixes(admin)).items() if not any(t.startswith(p) for t in topics)}
        if revoke:
            for prefix, tools in stale.items():
                await revoke_rights(admin, prefix, tools)
        return stale
    finally:
        await admin.close()


async def _report_other_counts(admin: AIOKafkaAdminClient, asked: Mapping[str, int]) -> None:
    """Log each existing topic whose partition count is not the one asked for (it is left as it is)."""
    if not asked:
        return
    described: Any = await admin.describe_topics(sorted(asked))
    other = {t["topic"]: len(t["partitions"]) for t in described if t["topic"] in asked and len(t["partitions"]) != asked[t["topic"]]}
    for full, count in sorted(other.items()):
        log.warning(
            "%s exists with %d partitions, not the %d asked for: kept as it is (docs/operations.md, 'Partitions')", full, count, asked[full]
        )


_ALIGNED = ("cleanup.policy", "message.timestamp.type")  # what the catalog's trust rests on (servicekit.control, .authority)
_DEFAULTS = {"cleanup.policy": "delete", "message.timestamp.type": "CreateTime"}


async def _align_cleanup(admin: AIOKafkaAdminClient, existing: Mapping[str, TopicSpec]) -> dict[str, dict[str, tuple[str | None, str]]]:
    """Give each existing topic whose cleanup policy or timestamp type differs from its spec the spec's values; return those.

    Each topic changed comes with each key changed, as (was, now).

    AlterConfigs (aiokafka has no incremental one) replaces a topic's configs with those given, so what is sent is the
    spec's config, then every override the topic holds now (a team's longer retention stays theirs), then the aligned
    keys as the spec has them: an upgrade that restamps every topic must not drop what operators set on them.
    """
    if not existing:
        return {}
    described: Any = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, full, dict.fromkeys(_ALIGNED)) for full in existing]
    )
    current = {
        name: {entry[0]: entry[1] for entry in entries}
        for response in described
        for _code, _message, _type, name, entries in response.resources
    }
    changes = {
        full: {
            key: (current.get(full, {}).get(key), asked)
            for key in _ALIGNED
            if current.get(full, {}).get(key) != (asked := spec.kafka_config().get(key, _DEFAULTS[key]))
        }
        for full, spec in existing.items()
    }
    stale = [full for full, keys in changes.items() if keys]
    if stale:
        kept = await _overrides(admin, stale)
        altered: Any = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, full, _aligned_config(existing[full], kept.get(full, {}))) for full in stale]
        )
        for response in altered:
            for code, message, _type, name, *_ in response.resources:
                if code:
                    raise for_code(code)(f"could not give {name} the catalog's configs: {message}")
    return {full: changes[full] for full in stale}


READ_AT_START = ("control", "directory")
"""Kept forever and read whole by every service before it serves: what they hold is what every start pays for."""

CROWDED_RECORDS = 10_000
"""More records than operators sign on `control` (or tenants' admins on `directory`) in years: junk the `ops` (or
`approval`) login appended, which every start reads and dead-letters again (docs/security/bus.md). `topics check` warns."""

_SHOWN = (*_ALIGNED, "retention.ms")  # what `check_topics` reads of each topic: the aligned keys, and the retention a team may set


@dataclass(frozen=True)
class TopicCheck:
    """One catalog topic as the broker holds it, beside what the catalog asks (`check_topics`).

    `partitions` None: the topic is not on the broker. `config`: its values of the aligned keys and its retention.
    """

    topic: str
    partitions: int | None
    asked_partitions: int
    config: Mapping[str, str]
    asked: Mapping[str, str]
    records: int | None = None  # of a topic every service reads whole at start (`READ_AT_START`): how many it holds

    @property
    def crowded(self) -> bool:
        """A topic read whole at every start that holds more than `CROWDED_RECORDS` records: a warning, not a fault."""
        return self.records is not None and self.records > CROWDED_RECORDS

    @property
    def missing(self) -> bool:
        """Not on the broker: `tidegate topics ensure` creates it."""
        return self.partitions is None

    @property
    def misaligned(self) -> dict[str, tuple[str | None, str]]:
        """The keys trust rests on whose value is not the catalog's, as (now, asked): `ensure` aligns them."""
        if self.missing:
            return {}
        return {key: (self.config.get(key), self.asked[key]) for key in _ALIGNED if self.config.get(key) != self.asked[key]}

    @property
    def own(self) -> dict[str, tuple[str | None, str]]:
        """Settings the topic holds other than the catalog's that `ensure` keeps (a team's retention, its partition count)."""
        if self.missing:
            return {}
        own = {
            key: (self.config.get(key), self.asked[key])
            for key in _SHOWN
            if key not in _ALIGNED and self.config.get(key) != self.asked[key]
        }
        if self.partitions != self.asked_partitions:
            own["partitions"] = (str(self.partitions), str(self.asked_partitions))
        return own

    @property
    def ok(self) -> bool:
        """On the broker, with the catalog's values of what trust rests on (its own retention or partition count aside)."""
        return not self.missing and not self.misaligned


async def check_topics(
    bootstrap: str,
    prefix: str,
    names: Iterable[str],
    *,
    partitions: int | None = None,
    client_options: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> list[TopicCheck]:
    """Each of `names` (catalog names) under `prefix` as the broker holds it, beside the catalog; nothing is changed.

    What an operator reads before and after an upgrade (docs/operations.md, 'Upgrading'): a topic missing, or
    whose timestamp type or cleanup policy is not the catalog's (a topic an older release made `CreateTime`,
    or one set by hand), is what `tidegate topics ensure` mends; a retention or partition count of the topic's
    own is shown and kept. Logs in as `admin` unless `client_options` says otherwise (it needs DescribeConfigs).
    """
    wanted = {prefix + n: topic_spec(n) for n in names}
    admin = _admin(bootstrap, client_options, timeout_s)
    await admin.start()
    try:
        present = set(await admin.list_topics()) & set(wanted)
        counts: dict[str, int] = {}
        configs: dict[str, dict[str, str]] = {}
        if present:
            described: Any = await admin.describe_topics(sorted(present))
            counts = {t["topic"]: len(t["partitions"]) for t in described if t["topic"] in present}
            answered: Any = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, full, dict.fromkeys(_SHOWN)) for full in sorted(present)]
            )
            configs = {
                name: {entry[0]: entry[1] for entry in entries if entry[1] is not None}
                for response in answered
                for _code, _message, _type, name, entries in response.resources
            }
    finally:
        await admin.close()
    records = await _records(bootstrap, [prefix + n for n in READ_AT_START if prefix + n in present], client_options, timeout_s)
    checks = []
    for full, spec in wanted.items():
        asked = {key: spec.kafka_config().get(key, _DEFAULTS.get(key, "")) for key in _SHOWN}
        checks.append(
            TopicCheck(full, counts.get(full), spec.partitions_given(partitions), configs.get(full, {}), asked, records.get(full))
        )
    return checks


async def check_quotas(
    bootstrap: str,
    rates: Mapping[str, float | None],
    *,
    client_options: Mapping[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> dict[str, tuple[float | None, float | None]]:
    """Each principal whose produce quota on the broker is not `rates`': what `tidegate topics ensure` would change.

    `rates`: `bus_admin.produce_rates` of the settings. Returns (on the broker, asked), None for no quota; nothing is
    changed. Logs in as `admin` unless `client_options` says otherwise.
    """
    admin = _admin(bootstrap, client_options, timeout_s)
    await admin.start()
    try:
        return await quotas_unlike(admin, rates)
    finally:
        await admin.close()


async def _records(bootstrap: str, names: list[str], client_options: Mapping[str, Any] | None, timeout_s: float) -> dict[str, int]:
    """How many records each of `names` holds (end offsets less start offsets, all partitions), read as `check_topics` logs in."""
    if not names:
        return {}
    options = dict(client_options) if client_options is not None else kafka_options(KitSettings(), ADMIN)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **(options | {"request_timeout_ms": int(timeout_s * 1000)})
    )
    await consumer.start()
    try:
        tps = await partitions_of(consumer, names)
        starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    held: dict[str, int] = dict.fromkeys(names, 0)
    for tp in tps:
        held[tp.topic] += ends[tp] - starts[tp]
    return held
