"""An agent writes forged lines into the logs operators read: every log record stays one line.

The reviewer's F1: mallory, an agent of acme with its own client key and the `agent` login, signed a proposal whose
`tenantid` was `globex` plus a newline and a whole log line, and proposed one action id (ending the same way) twice
with other args. The services log the refusal (`rejected ...: signer_not_allowed: ... for tenant <tenantid>`), the
approval service the request (`... requested for acme/<action id>`), and the policy a traceback ending in the
`Reject`'s message: `.tidegate/logs/policy.log` held `2026-12-06T10:05:00.000Z INFO policy: killswitch cleared acme/*`,
a line no service wrote, indistinguishable from one. Ids, tenants and sources may hold any character but U+0000.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import schemas as s
from servicekit import REPO_ROOT, KitSettings, client_key, deployment_authority, sign_event

FORGED = "2026-12-06T10:05:00.000Z INFO policy: killswitch cleared acme/*"

# What a service does with it: the kit's dead-letter warning, a handler's log line naming the action id, and a
# batch's failure logged with the traceback of the `Reject` the handler raised.
SERVICE = """
import json, logging, sys
from servicekit.runner import configure_logging
configure_logging("INFO", sys.argv[1])
refusal, action_id = json.loads(sys.argv[2])
logging.getLogger("servicekit.bus").warning("rejected %s[%d]@%d: %s: %s", "tidegate.actions.proposed", 2, 0, "signer_not_allowed", refusal)
logging.getLogger("services.approval.service").info("approval %s requested for %s/%s", "ap-1", "acme", action_id)
try:
    try:
        raise KeyError(action_id)
    except KeyError:
        raise RuntimeError(f"action id {action_id} was already proposed for another call")
except RuntimeError:
    logging.getLogger("servicekit.consume").exception("policy: batch of 2 from actions.proposed failed")
"""


def refusal_of_mallorys_proposal(tmp_path: Path) -> str:
    """The message `Authority.check` gives for mallory's proposal naming another tenant, as every service logs it."""
    (tmp_path / "keys").mkdir()
    kit = KitSettings(keys_dir=tmp_path / "keys")
    authority = deployment_authority(kit)
    mallory = client_key(kit, "acme", "mallory@acme.example")
    data = s.ActionProposedData(
        action_id="act-1", task_id="t-1", tenant_id="globex\n" + FORGED, step=0, tool="tag_ticket", args={},
        proposer="mallory", requested_by="mallory@acme.example",
    )  # fmt: skip
    raw = s.encode(sign_event(s.ActionProposed.build(data, source="urn:agent:mallory"), mallory))
    refusal = authority.check(raw, s.decode_any(raw))
    assert refusal is not None
    assert refusal.code == "signer_not_allowed"
    assert FORGED in refusal.message  # the message names the tenant as signed: the log line must not obey it
    return refusal.message


def logged(log_format: str, refusal: str, action_id: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SERVICE, log_format, json.dumps([refusal, action_id])],
        cwd=REPO_ROOT, env=os.environ, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_agents_ids_and_tenant_never_start_a_log_line_of_their_own(tmp_path: Path, log_format: str) -> None:
    refusal = refusal_of_mallorys_proposal(tmp_path)
    action_id = "act-2\n" + FORGED + "\x1b[2K\u202e"
    lines = logged(log_format, refusal, action_id)

    assert not [line for line in lines if line.startswith(FORGED)], lines
    if log_format == "text":
        records = [line for line in lines if line[:4].isdigit()]
        assert len(records) == 3, lines  # one line each: the warning, the info, the error (its traceback below it)
        assert records[0].endswith("for tenant globex\\n" + FORGED)  # still said, escaped
        assert records[1].endswith("requested for acme/act-2\\n" + FORGED + "\\x1b[2K\\u202e")
        assert lines[-1] == "RuntimeError: action id act-2\\n" + FORGED + "\\x1b[2K\\u202e was already proposed for another call"
        assert not any("\x1b" in line or "\u202e" in line for line in lines)
