"""`tidegate keys` and `tidegate clients`: what an operator does with keys, and what the verifier then accepts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import schemas as s
from servicekit import (
    SERVICES,
    KitSettings,
    SigningKey,
    client_key,
    deployment_authority,
    key_id_of,
    load_public,
    operator_key,
    service_key,
    sign_as_client,
    sign_as_operator,
    sign_event,
)
from tidegate.cli import app

runner = CliRunner()


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KitSettings:
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path))
    return KitSettings()


def task(requested_by: str) -> s.TaskSubmitted:
    data = s.TaskSubmittedData(task_id="t", tenant_id="acme", workflow="w", input={}, requested_by=requested_by)
    return s.TaskSubmitted.build(data, source="client")


def accepted(kit: KitSettings, event: s.Envelope) -> str | None:
    refusal = deployment_authority(kit).check(s.encode(event), event)
    return None if refusal is None else refusal.code


def test_a_client_added_then_revoked_is_refused_and_not_silently_made_again(kit: KitSettings) -> None:
    added = runner.invoke(app, ["clients", "add", "acme", "alice@acme.example"])
    assert added.exit_code == 0, added.output
    signed = sign_as_client(kit, task("alice@acme.example"))
    assert accepted(kit, signed) is None
    assert "alice@acme.example" in runner.invoke(app, ["clients", "list"]).output
    assert runner.invoke(app, ["clients", "revoke", "acme", "alice@acme.example"]).exit_code == 0
    assert accepted(kit, signed) == "unknown_key"
    with pytest.raises(PermissionError):
        sign_as_client(kit, task("alice@acme.example"))


def test_rotating_a_client_key_as_documented_keeps_what_each_key_signed_verifiable_in_the_audit(kit: KitSettings) -> None:
    """`clients revoke` then `clients add` (docs/security/signatures.md), twice: the audit's history reader still verifies each
    old key's rows. `add` deleted the revoked key, and `audit verify --signatures` went BROKEN for every row it had signed."""

    def history(event: s.Envelope, at: float) -> str | None:
        refusal = deployment_authority(kit, history=True).check(s.encode(event), event, appended_ms=int(at * 1000))
        return None if refusal is None else refusal.code

    signed: list[s.Envelope] = []
    for _ in range(3):  # the first key, then two rotations
        added = runner.invoke(app, ["clients", "add", "acme", "alice@acme.example"])
        assert added.exit_code == 0, added.output
        signed.append(sign_as_client(kit, task("alice@acme.example")))
        if len(signed) < 3:
            assert runner.invoke(app, ["clients", "revoke", "acme", "alice@acme.example"]).exit_code == 0
    assert len({e.keyid for e in signed}) == 3  # each rotation made a new key
    revoked = sorted((kit.client_keys_dir / "acme" / "revoked").glob("*.pub"))
    assert len(revoked) == 2  # both revoked keys kept, neither overwritten
    for event in signed[:2]:
        revoked_at = next(
            p.stat().st_ctime for p in revoked if load_public(p) and key_id_of("alice@acme.example", load_public(p)) == event.keyid
        )
        assert history(event, revoked_at - 60) is None  # signed before its key's revocation: verifies
        assert history(event, revoked_at + 1) == "signer_retired"  # after it: refused
        assert accepted(kit, event) == "unknown_key"  # a live service refuses a revoked key at once
    assert accepted(kit, signed[2]) is None  # the key registered now


def test_rotating_a_service_key_keeps_what_it_signed_verifiable(kit: KitSettings) -> None:
    event = s.EventRejected.build(
        s.EventRejectedData(topic="tidegate.actions.proposed", partition=0, offset=0, raw_value="", code="c", error="e", service="policy"),
        source="p",
    )
    before = sign_event(event, service_key(kit, "policy"))
    rotated = runner.invoke(app, ["keys", "rotate", "policy"])
    assert rotated.exit_code == 0, rotated.output
    after = sign_event(event, service_key(kit, "policy"))
    assert before.keyid != after.keyid
    assert accepted(kit, before) is None
    assert accepted(kit, after) is None
    listing = runner.invoke(app, ["keys", "list"]).output
    assert f"{before.keyid}  retired" in listing
    assert f"{after.keyid}  current" in listing


def test_keys_live_in_the_run_directory_a_deployment_names_never_in_the_source_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    from servicekit import REPO_ROOT

    default = KitSettings()
    assert default.keys_dir == default.run_dir / "keys"
    run_dir = default.run_dir.relative_to(REPO_ROOT)  # inside the checkout, but git-ignored: no key can be committed

    # Asked of a key file in it: `.tidegate/` ignores a folder that git sees only once it exists, and a fresh checkout
    # (CI's) has none before the first `tidegate infra up`; of the folder too once it is there.
    def ignored(path: Path) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO_ROOT, check=False).returncode == 0

    assert ignored(run_dir / "keys" / "policy.key")
    assert ignored(run_dir) or not (REPO_ROOT / run_dir).is_dir()
    monkeypatch.setenv("TIDEGATE_RUN_DIR", str(tmp_path / "second"))
    second = KitSettings()  # a second deployment names its own run directory, and gets keys of its own
    assert (second.keys_dir, second.operator_keys_dir, second.client_keys_dir) == (
        tmp_path / "second" / "keys",
        tmp_path / "second" / "keys" / "operators",
        tmp_path / "second" / "keys" / "clients",
    )
    assert (second.operator_private_keys_dir, second.client_private_keys_dir) == (
        tmp_path / "second" / "operator-keys",
        tmp_path / "second" / "client-keys",
    )
    (tmp_path / "first").mkdir()
    assert service_key(second, "policy").key_id != service_key(KitSettings(keys_dir=tmp_path / "first"), "policy").key_id


def test_keys_init_makes_each_services_pair_once_with_its_private_key_alone_in_its_folder(kit: KitSettings) -> None:
    made = runner.invoke(app, ["keys", "init", "--all"])
    assert made.exit_code == 0, made.output
    services = ("planner", "policy", "approval", "executor", "audit")
    private = sorted(p.relative_to(kit.keys_dir).as_posix() for p in kit.keys_dir.rglob("*.key"))
    assert private == sorted([f"{s}/{s}.key" for s in services] + ["executor/connector-credentials.key"])
    assert {p.name for p in kit.keys_dir.glob("*.pub")} == {f"{s}.pub" for s in services} | {"connector-credentials.pub"}
    assert kit.operator_keys_dir.is_dir()
    assert kit.client_keys_dir.is_dir()
    before = {p: p.stat().st_mtime_ns for p in kit.keys_dir.rglob("*")}
    again = runner.invoke(app, ["keys", "init", "--all"])
    assert again.exit_code == 0, again.output
    assert again.output.count("kept") == 6, again.output
    assert service_key(kit, "policy").key_id in made.output  # what a service loads at start is the key made here
    assert {p: p.stat().st_mtime_ns for p in kit.keys_dir.rglob("*")} == before  # nothing rewritten, nothing added


def test_keys_init_refuses_no_name_and_an_unknown_one(kit: KitSettings) -> None:
    assert "--all" in runner.invoke(app, ["keys", "init"]).output
    refused = runner.invoke(app, ["keys", "init", "policy", "mallory"])
    assert refused.exit_code != 0
    assert "unknown service mallory" in refused.output
    assert not kit.keys_dir.exists()


def test_the_public_key_tree_holds_no_operator_or_client_private_key(kit: KitSettings) -> None:
    """What a deployment hands every service (`keys_dir`) holds public keys, and each service's own private key only."""
    for service in SERVICES:
        service_key(kit, service)
    made = runner.invoke(app, ["keys", "rotate", "operator"])  # this machine's operator key, made and allowed
    assert made.exit_code == 0, made.output
    added = runner.invoke(app, ["clients", "add", "acme", "alice@acme.example"])
    assert added.exit_code == 0, added.output
    assert str(kit.client_private_keys_dir / "acme" / "alice@acme.example.key") in added.output.replace("\n", "")

    private = [p.relative_to(kit.keys_dir) for p in kit.keys_dir.rglob("*.key")]
    assert sorted(private) == sorted(Path(service) / f"{service}.key" for service in SERVICES)
    assert (kit.operator_private_keys_dir / f"{kit.operator}.key").exists()
    assert accepted(kit, sign_as_client(kit, task("alice@acme.example"))) is None
    assert accepted(kit, sign_as_operator(kit, killswitch())) is None


def test_a_private_key_in_the_former_place_moves_out_of_the_public_tree_on_first_use(
    kit: KitSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    former = SigningKey.load_or_create(kit.operator_keys_dir, kit.operator)  # `operators/operator/operator.key`, as before
    assert operator_key(kit).key_id == former.key_id
    assert not list(kit.keys_dir.rglob("*.key"))
    assert (kit.operator_private_keys_dir / f"{kit.operator}.key").exists()
    assert "moved the private key" in capsys.readouterr().err
    client = SigningKey.load_or_create(kit.client_keys_dir / "acme", "alice@acme.example")
    assert client_key(kit, "acme", "alice@acme.example").key_id == client.key_id
    assert not list(kit.keys_dir.rglob("*.key"))


def killswitch() -> s.ControlKillswitch:
    data = s.ControlKillswitchData(tenant_id="acme", tool="issue_refund", active=True, reason="incident", set_by="operator")
    return s.ControlKillswitch.build(data, source="tidegate/cli")


def test_rotating_a_tool_key_keeps_replies_in_flight_and_retires_the_old_key_after_the_grace(kit: KitSettings, tmp_path: Path) -> None:
    import time

    from servicekit import SigningKey, ToolCatalog

    catalog = ToolCatalog.load(kit.tools_dir)
    authority = deployment_authority(kit, catalog)  # one verifier, running across the rotations (as the executor's)

    def reply() -> s.ToolReply:
        data = s.ToolReplyData(action_id="a", task_id="t", tenant_id="acme", tool="update_inventory", ok=True)
        return s.ToolReply.build(data, source="warehouse")

    def verdict(event: s.Envelope) -> str | None:
        refusal = authority.check(s.encode(event), event)
        return None if refusal is None else refusal.code

    in_flight = sign_event(reply(), SigningKey.load_or_create(kit.keys_dir / "tools", "update_inventory"))
    assert verdict(in_flight) is None
    rotated = runner.invoke(app, ["keys", "rotate-tool", "update_inventory"])  # its private key is on this machine
    assert rotated.exit_code == 0, rotated.output
    local = sign_event(reply(), SigningKey.load_or_create(kit.keys_dir / "tools", "update_inventory"))
    assert local.keyid != in_flight.keyid
    assert (verdict(in_flight), verdict(local)) == (None, None)  # the old key's reply in flight still counts
    # The service's team made its next key elsewhere and hands over the public half only.
    outside = SigningKey.load_or_create(tmp_path / "warehouse", "update_inventory")
    handed = runner.invoke(
        app, ["keys", "rotate-tool", "update_inventory", "--public-key", str(tmp_path / "warehouse" / "update_inventory.pub")]
    )
    assert handed.exit_code == 0, handed.output
    assert verdict(sign_event(reply(), outside)) is None
    listing = runner.invoke(app, ["keys", "list"]).output
    assert f"{in_flight.keyid}  retired" in listing
    assert f"{outside.key_id}  current" in listing
    # Past the grace, a retired key signs nothing new; the current one still does.
    authority.clock = lambda: time.time() + kit.retired_key_grace_s + 1
    assert (verdict(sign_event(reply(), outside)), verdict(in_flight), verdict(local)) == (None, "signer_retired", "signer_retired")
    # A tool that is not served over Kafka, or a key that is not new, is refused with the reason.
    assert "not a `topic` tool" in runner.invoke(app, ["keys", "rotate-tool", "issue_refund"]).output
    again = runner.invoke(
        app, ["keys", "rotate-tool", "update_inventory", "--public-key", str(tmp_path / "warehouse" / "update_inventory.pub")]
    )
    assert again.exit_code != 0
    assert "current key already" in again.output


def test_a_leaked_tool_key_signs_no_reply_the_executor_accepts_from_the_rotation_on(kit: KitSettings, tmp_path: Path) -> None:
    """As the holder of a copied reply key: with --leaked, a reply forged with it after the rotation is refused at once.

    Without --leaked the stolen key forges accepted replies (a tool's result, what the audit and the agent take for what
    happened) for the whole grace; an outside tool's team hands over its new public key with --leaked as well.
    """
    from servicekit import SigningKey, ToolCatalog

    authority = deployment_authority(kit, ToolCatalog.load(kit.tools_dir))
    authority.recheck_s = 0.0  # the executor looks at its key folders again every second: here at every check

    def forged(key: SigningKey) -> str | None:
        data = s.ToolReplyData(action_id="a", task_id="t", tenant_id="acme", tool="update_inventory", ok=True)
        event = sign_event(s.ToolReply.build(data, source="warehouse"), key)
        refusal = authority.check(s.encode(event), event)
        return None if refusal is None else refusal.code

    served = SigningKey.load_or_create(kit.keys_dir / "tools", "update_inventory")
    shutil.copytree(kit.keys_dir / "tools" / "update_inventory", tmp_path / "attacker" / "update_inventory")
    stolen = SigningKey.load_or_create(tmp_path / "attacker", "update_inventory")  # the copied private key, as its holder loads it
    assert stolen.key_id == served.key_id
    assert forged(stolen) is None
    rotated = runner.invoke(app, ["keys", "rotate-tool", "update_inventory", "--leaked"], terminal_width=400)
    assert rotated.exit_code == 0, rotated.output
    assert "retired without grace" in rotated.output
    assert forged(stolen) == "signer_retired"
    assert forged(SigningKey.load_or_create(kit.keys_dir / "tools", "update_inventory")) is None  # the new key's replies count
    # An outside service's new public key, handed over after a leak: the key it replaces signs nothing new either.
    before = SigningKey.load_or_create(kit.keys_dir / "tools", "update_inventory")
    outside = SigningKey.load_or_create(tmp_path / "warehouse", "update_inventory")
    handed = runner.invoke(
        app, ["keys", "rotate-tool", "update_inventory", "--leaked", "--public-key", str(tmp_path / "warehouse" / "update_inventory.pub")]
    )
    assert handed.exit_code == 0, handed.output
    assert (forged(before), forged(outside)) == ("signer_retired", None)


@pytest.mark.parametrize(("command", "usage"), [("add", "{TENANT} {PRINCIPAL}"), ("revoke", "{TENANT} {PRINCIPAL}"), ("list", "[TENANT]")])
def test_clients_help_names_its_arguments_alike(command: str, usage: str) -> None:
    shown = runner.invoke(app, ["clients", command, "--help"], terminal_width=200).output
    assert usage in shown, shown


def test_a_control_record_every_service_would_refuse_is_not_published_and_the_cli_says_so(
    kit: KitSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI still holding an operator key rotated away (a colleague's laptop) past its grace sets a kill switch: it printed
    "kill switch set" and exited 0 while every service refused the record (platform5 finding 5)."""
    monkeypatch.setenv("TIDEGATE_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # nothing is reached before the check
    monkeypatch.setenv("TIDEGATE_RETIRED_KEY_GRACE_S", "0")
    assert runner.invoke(app, ["keys", "rotate", "operator"]).exit_code == 0
    laptop = tmp_path / "laptop-keys"
    shutil.copytree(kit.operator_private_keys_dir, laptop)
    assert runner.invoke(app, ["keys", "rotate", "operator"]).exit_code == 0  # the laptop's key is retired now
    current = runner.invoke(app, ["killswitch", "set", "--tool", "issue_refund", "--reason", "incident"])
    assert "not published" not in current.output  # the current key gets as far as the broker (absent here)
    monkeypatch.setenv("TIDEGATE_OPERATOR_PRIVATE_KEYS_DIR", str(laptop))
    stale = runner.invoke(app, ["killswitch", "set", "--tool", "issue_refund", "--reason", "incident"])
    said = " ".join(stale.output.split())
    assert stale.exit_code == 1, said
    assert "not published: every service would refuse this record (signer_retired" in said
    assert "kill switch set" not in said
