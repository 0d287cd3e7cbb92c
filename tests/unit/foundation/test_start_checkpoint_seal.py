"""A start checkpoint is followed only when sealed by the service's own key (servicekit.start_checkpoint).

Whoever can write the folder must not drop a kill switch from it (a start would then skip it), nor make one up; a
checkpoint of another service's, or of another topic, is not followed either. Each such file is read as none: the
topic is read whole, as before checkpoints.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from servicekit import SigningKey
from servicekit.start_checkpoint import Checkpoint, Kept, checkpoint_path, read_checkpoint, write_checkpoint

TOPIC = "tidegate.control"


def sealed(tmp_path: Path) -> tuple[SigningKey, Checkpoint]:
    key = SigningKey.load_or_create(tmp_path / "keys", "policy")
    checkpoint = Checkpoint(TOPIC, 0, 100_002, "ab" * 32, [Kept(7, b'{"switch":1}', b"killswitch:acme:*", 1, 1)])
    write_checkpoint(tmp_path / "cp", "policy", key, checkpoint)
    return key, checkpoint


def test_a_sealed_checkpoint_reads_back_as_written(tmp_path: Path) -> None:
    key, checkpoint = sealed(tmp_path)
    assert read_checkpoint(tmp_path / "cp", "policy", key, TOPIC, 0) == checkpoint


def test_a_kill_switch_dropped_from_the_file_makes_it_no_checkpoint(tmp_path: Path) -> None:
    key, _ = sealed(tmp_path)
    path = checkpoint_path(tmp_path / "cp", "policy", TOPIC, 0)
    document = json.loads(path.read_text())
    document["checkpoint"]["kept"] = []
    path.write_text(json.dumps(document))
    assert read_checkpoint(tmp_path / "cp", "policy", key, TOPIC, 0) is None


def test_another_key_another_topic_or_a_broken_file_is_no_checkpoint(tmp_path: Path) -> None:
    key, _ = sealed(tmp_path)
    other = SigningKey.load_or_create(tmp_path / "other", "policy")
    assert read_checkpoint(tmp_path / "cp", "policy", other, TOPIC, 0) is None  # not this service's key (or a rotated one)
    assert read_checkpoint(tmp_path / "cp", "policy", key, "tidegate.directory", 0) is None
    checkpoint_path(tmp_path / "cp", "policy", TOPIC, 0).write_text("{not json")
    assert read_checkpoint(tmp_path / "cp", "policy", key, TOPIC, 0) is None


class _Silent:
    """A consumer of the checkpoint's topic whose fetch returns nothing in time (a broker slow to answer)."""

    def __init__(self, **options: object) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def assign(self, tps: object) -> None:
        pass

    def seek(self, tp: object, offset: int) -> None:
        pass

    async def beginning_offsets(self, tps: list[object]) -> dict[object, int]:
        return dict.fromkeys(tps, 0)

    async def end_offsets(self, tps: list[object]) -> dict[object, int]:
        return dict.fromkeys(tps, 200_000)

    async def getmany(self, *tps: object, timeout_ms: int, max_records: int) -> dict[object, list[object]]:
        return {}


async def test_a_broker_that_does_not_answer_in_time_is_not_reported_as_a_topic_recreated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator reading the log after a slow start: "recreated?" sent them looking for a topic nobody touched."""
    import servicekit.bus
    from tests.unit.foundation.test_bus import make_bus

    _, checkpoint = sealed(tmp_path)
    monkeypatch.setattr(servicekit.bus, "AIOKafkaConsumer", _Silent)
    bus, _ = make_bus()
    caplog.set_level(logging.WARNING)
    assert not await bus._continues(checkpoint)  # read whole, as before
    assert "did not return the record at tidegate.control@100001" in caplog.text
    assert "recreated" not in caplog.text


class _Shorter(_Silent):
    """The checkpoint's topic recreated since: it ends before the checkpoint's last record."""

    async def end_offsets(self, tps: list[object]) -> dict[object, int]:
        return dict.fromkeys(tps, 10)


async def test_a_topic_shorter_than_its_checkpoint_is_said_before_it_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator reading the log after a start that read `control` whole: why the checkpoint was not followed.

    Before, a topic ending before the checkpoint's last record (recreated, or its records deleted) was read whole without
    a word, while the two other reasons (a record changed, a broker slow to answer) were each said.
    """
    import servicekit.bus
    from tests.unit.foundation.test_bus import make_bus

    _, checkpoint = sealed(tmp_path)
    monkeypatch.setattr(servicekit.bus, "AIOKafkaConsumer", _Shorter)
    bus, _ = make_bus()
    caplog.set_level(logging.WARNING)
    assert not await bus._continues(checkpoint)  # read whole, as before
    assert "tidegate.control holds offsets 0 to 9, not every record its checkpoint read" in caplog.text
