"""An eval run signs only with keys of its own: nothing it published verifies on the deployment, whose keys it leaves alone.

Signatures do not cover the topic prefix, so an event signed in a sandbox and copied by an insider onto the live
`tidegate.` topics would be believed if the sandbox had signed it with the deployment's keys (an operator's
`control.tenant`, the executor's `action.succeeded`, a client's task).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas import ReasonCode, decode, encode
from servicekit import REPO_ROOT, SERVICES, KitSettings, deployment_authority, operator_key, service_key
from tidegate.ops import workspaces
from tidegate.ops.workspaces import BusDriver, load_suite, run_suite_through_service


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


async def test_an_eval_run_leaves_the_live_keys_alone_and_its_events_verify_nowhere_live(
    kit: KitSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in SERVICES:  # a deployment with its keys made
        service_key(kit, service)
    operator_key(kit)
    before = files(kit.keys_dir)

    # What the insider could copy: every event the run published (the driver's) or read (the services').
    seen: list[tuple[str, bytes]] = []
    send = BusDriver._send

    async def send_and_keep(self: BusDriver, topic: str, event: Any) -> None:
        seen.append((topic.removeprefix(self.kit.topic_prefix), encode(event)))
        await send(self, topic, event)

    def decode_and_keep(topic: str, raw: bytes) -> Any:
        seen.append((topic, raw))
        return decode(topic, raw)

    monkeypatch.setattr(BusDriver, "_send", send_and_keep)
    monkeypatch.setattr(workspaces, "decode", decode_and_keep)
    banking = load_suite(REPO_ROOT / "evals" / "workspaces" / "banking.yaml")
    suite = banking.model_copy(update={"tasks": banking.tasks[:1], "injections": []})
    report = await run_suite_through_service(suite, kit, REPO_ROOT / "policies" / "default")

    assert report.ran > 0, report.misses  # the run did sign and execute things
    assert files(kit.keys_dir) == before
    live = deployment_authority(kit)
    types: set[str] = set()
    for topic, raw in seen:
        event = decode(topic, raw)
        refusal = live.check(raw, event)
        assert refusal is not None, event.type
        assert refusal.code == ReasonCode.UNKNOWN_KEY, (event.type, refusal)
        types.add(event.type)
    assert {"tidegate.control.tenant", "tidegate.task.submitted", "tidegate.action.proposed"} <= types
    assert {"tidegate.action.decided", "tidegate.action.succeeded", "tidegate.tool.invocation", "tidegate.tool.reply"} <= types
