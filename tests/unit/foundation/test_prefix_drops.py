"""The CI owner's check of tests/prefix_drops.py: a test's teardown hands its prefix over and goes on; nothing is left behind.

Dropping a prefix (its topics deleted, its rights revoked) is waiting on the broker's controller; the `topics` fixture
waited for it in every live test's teardown. These tests drive `PrefixDrops` with a drop that waits until told to.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from prefix_drops import PrefixDrops


class HeldDrop:
    """A drop that starts, then waits until `release` is set; notes the prefixes it dropped and the options it was given."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.dropped: list[tuple[str, Any]] = []

    async def __call__(self, bootstrap: str, prefix: str, *, client_options: Any = None) -> None:
        self.started.set()
        await asyncio.to_thread(self.release.wait, 30)
        self.dropped.append((prefix, client_options))


def test_the_teardown_returns_while_its_prefix_is_still_being_dropped_and_the_session_end_waits_for_it() -> None:
    drop = HeldDrop()
    drops = PrefixDrops(drop)
    drops.submit("127.0.0.1:1", "test-a.", {"sasl_plain_username": "admin"})
    assert drop.started.wait(10), "the drop never started"
    assert drop.dropped == []  # `submit` returned while the broker (here: the held drop) was still at it
    closing = threading.Thread(target=drops.close)
    closing.start()
    closing.join(0.3)
    assert closing.is_alive(), "the session ended before its last prefix was dropped"
    drop.release.set()
    closing.join(10)
    assert not closing.is_alive()
    assert drop.dropped == [("test-a.", {"sasl_plain_username": "admin"})]  # with the options resolved on the test's thread


def test_a_broker_slower_than_the_tests_makes_the_teardown_wait_so_prefixes_never_pile_up() -> None:
    drop = HeldDrop()
    drops = PrefixDrops(drop, max_pending=2)
    drops.submit("b", "test-1.")
    drops.submit("b", "test-2.")
    third = threading.Thread(target=drops.submit, args=("b", "test-3."))
    third.start()
    third.join(0.3)
    assert third.is_alive(), "a third prefix was handed over while two still waited to be dropped"
    drop.release.set()
    third.join(10)
    drops.close()
    assert [prefix for prefix, _ in drop.dropped] == ["test-1.", "test-2.", "test-3."]


def test_a_drop_the_broker_refuses_is_logged_and_fails_no_test(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import servicekit

    async def refused(bootstrap: str, prefix: str, **_: Any) -> None:
        raise ConnectionError(f"no broker at {bootstrap}")

    monkeypatch.setattr(servicekit, "drop_prefix", refused)
    drops = PrefixDrops()  # the drop the `topics` fixture hands prefixes to
    with caplog.at_level(logging.WARNING, logger="prefix_drops"):
        drops.submit("127.0.0.1:9", "test-gone.")
        drops.close()
    assert "could not drop test prefix test-gone." in caplog.text


class HeldMake:
    """A make (of a prefix's topics) that starts, then waits until `release` is set; raises `refusal` if one is given."""

    def __init__(self, refusal: Exception | None = None) -> None:
        self.release = threading.Event()
        self.made: list[tuple[str, list[str]]] = []
        self.refusal = refusal

    async def __call__(self, bootstrap: str, prefix: str, names: list[str], *, client_options: Any = None) -> None:
        await asyncio.to_thread(self.release.wait, 30)
        if self.refusal is not None:
            raise self.refusal
        self.made.append((prefix, names))


def test_the_next_tests_prefix_is_made_while_the_test_before_runs_and_it_waits_until_it_is_made() -> None:
    make = HeldMake()
    drops = PrefixDrops(HeldDrop(), make)
    drops.prepare("b", ["control", "tasks"], {})
    prefix = drops.take()  # the next test's `prefix` fixture, before its topics are there
    assert prefix is not None
    assert prefix.startswith("test-")
    assert drops.take() is None  # made for one test only
    waiting = threading.Thread(target=drops.made, args=(prefix,))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive(), "the test went on before its topics were made"
    make.release.set()
    waiting.join(10)
    assert make.made == [(prefix, ["control", "tasks"])]
    drops.close()


def test_a_prefix_the_broker_refused_to_make_ahead_is_made_by_the_test_itself(caplog: pytest.LogCaptureFixture) -> None:
    make = HeldMake(refusal=ConnectionError("broker restarting"))
    make.release.set()
    drops = PrefixDrops(HeldDrop(), make)
    drops.prepare("b", ["control"], {})
    prefix = drops.take()
    assert prefix is not None
    with caplog.at_level(logging.WARNING, logger="prefix_drops"):
        assert drops.made(prefix) is False  # the `topics` fixture then runs ensure_topics itself
    assert f"test prefix {prefix} was not made ahead" in caplog.text
    assert drops.made("test-never-taken.") is False
    drops.close()


def test_a_prefix_made_ahead_that_no_test_took_is_dropped_at_the_sessions_end() -> None:
    make, drop = HeldMake(), HeldDrop()
    make.release.set()
    drop.release.set()
    drops = PrefixDrops(drop, make)
    drops.prepare("b", ["control"], {"sasl_plain_username": "admin"})
    drops.close()
    assert [prefix for prefix, _ in make.made] == [prefix for prefix, _ in drop.dropped]
    assert drop.dropped[0][1] == {"sasl_plain_username": "admin"}
