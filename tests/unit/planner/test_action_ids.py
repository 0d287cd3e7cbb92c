"""The planner's action ids: the same for the same step on every run of the planner, unguessable for anyone else."""

from __future__ import annotations

import re
from pathlib import Path

from servicekit import SigningKey
from services.planner.action_ids import ActionIds


def test_the_same_step_gets_the_same_id_after_a_restart_and_on_another_copy(tmp_path: Path) -> None:
    first = ActionIds.of_key(SigningKey.load_or_create(tmp_path, "planner"))
    restarted = ActionIds.of_key(SigningKey.load_or_create(tmp_path, "planner"))  # the key file, read again
    assert first.of("acme", "t-1", 2) == restarted.of("acme", "t-1", 2)
    assert re.fullmatch(r"t-1:2\.[0-9a-f]{20}", first.of("acme", "t-1", 2))  # 80 bits of tag


def test_ids_differ_by_tenant_task_step_and_key(tmp_path: Path) -> None:
    ids = ActionIds.of_key(SigningKey.load_or_create(tmp_path / "a", "planner"))
    another_planner = ActionIds.of_key(SigningKey.load_or_create(tmp_path / "b", "planner"))
    seen = {
        ids.of("acme", "t-1", 1),
        ids.of("acme", "t-1", 2),
        ids.of("globex", "t-1", 1),
        ids.of("acme", "t-2", 1),
        ids.of("acme", "t-1:1", 1),  # a task id that looks like an id does not collide
        another_planner.of("acme", "t-1", 1),
    }
    assert len(seen) == 6


def test_the_secret_is_not_the_signing_key_and_is_separate_per_purpose(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path, "planner")
    secret = key.derived_secret("action-ids/v1")
    assert len(secret) == 32
    assert secret != key.private.private_bytes_raw()
    assert secret != key.derived_secret("something-else")


def test_a_run_inside_one_process_gets_ids_no_one_else_can_compute() -> None:
    assert ActionIds.throwaway().of("acme", "t-1", 1) != ActionIds.throwaway().of("acme", "t-1", 1)


def test_an_upgraded_planner_names_the_steps_of_running_tasks_as_before() -> None:
    # Ids derived by earlier releases (the tag over `json.dumps([tenant, task, step])`): a task started before an
    # upgrade keeps its outbox and idempotency keys, whatever characters its ids hold.
    ids = ActionIds(b"pinned-action-id-secret".ljust(32, b"."))
    assert ids.of("acme", "t-1", 2) == "t-1:2.61b288b697299386be69"
    assert ids.of('ténant "q"', "task\\\n\u2028😀", 25) == "task\\\n\u2028😀:25.201910c9cc399b0f3819"
