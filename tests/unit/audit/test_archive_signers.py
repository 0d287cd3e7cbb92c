"""An auditor with only an export and the audit key's fingerprint checks every row's own signature (auditor F6).

The rows of a task are signed by the client that submitted it, the planner, the policy, the approval service and the
executor. Before, `tidegate audit explain T --archive FILE --offline` on a machine without the deployment's keys folders
read every one of them as "does not verify … unknown_key": the export carried the audit keys and nothing else. Its
header now carries every key the rows' signatures need, retired and revoked ones with when, and the audit key attests
it. They are used only when that attestation verifies with an audit key the auditor trusts: whoever holds the file and
not the audit key (the forger here) cannot add his own key to make a forged grant verify, by adding it beside the
attestation, by removing the attestation, or by attesting the header again with an audit key of his own.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from test_archive_attested import _standalone
from typer.testing import CliRunner

import schemas as s
from schemas import canonical_json
from schemas.examples import sample_events
from servicekit import Keyring, KitSettings, SigningKey, client_key, deployment_authority, service_key, sign_event
from servicekit.authority import LOG_APPEND_TIME
from servicekit.signing import key_id_of, rotate
from services.audit.archive import ArchiveSigner, attest, audit_keys_of, read_archive, row_to_json, signers_of
from services.audit.handlers import Checkpointer
from services.audit.records import observe
from services.audit.repository import InMemoryAuditLog
from services.audit.retention import archive_log
from services.audit.rows import LogRow, Observed
from tidegate.cli import app

PREFIX = "tidegate."
T0 = datetime.now(UTC) - timedelta(hours=1)
SIGNER = {
    "tidegate.task.submitted": "client",
    "tidegate.action.proposed": "planner",
    "tidegate.action.decided": "policy",
    "tidegate.approval.requested": "approval",
    "tidegate.approval.granted": "approval",
    "tidegate.action.authorized": "policy",
    "tidegate.action.succeeded": "executor",
}


def _observed(kit: KitSettings, topic: str, event: Any, key: SigningKey, at: datetime, offset: int) -> Observed:
    signed = sign_event(event, key)
    return observe(
        topic=PREFIX + topic, partition=0, offset=offset, timestamp_ms=int(at.timestamp() * 1000), timestamp_type=LOG_APPEND_TIME,
        key=signed.key, value=s.encode(signed), headers=[], prefix=PREFIX, check=deployment_authority(kit, history=True).check,
    )  # fmt: skip


async def _deployment(
    tmp_path: Path, edit: Callable[[Any], Any] = lambda event: event, planted: Callable[[int], Observed] | None = None
) -> tuple[Path, str, SigningKey]:
    """A deployment's export of task t-1, every row signed by its own signer, the policy key rotated as leaked midway.

    Returns the export, the audit key's fingerprint `export` printed, and the retired policy key (its private half, as
    whoever leaked it holds it). `edit`: each event before it is signed. `planted`: a record (given its offset) written
    into the log after the approvals chain, before the checkpoint: a row the audit service did not record.
    """
    keys = tmp_path / "deployment" / "keys"
    keys.mkdir(parents=True)
    kit = KitSettings(keys_dir=keys)
    alice = client_key(kit, "acme", "alice@acme.example", registering=True)
    old_policy = service_key(kit, "policy")
    log, offsets = InMemoryAuditLog(), {}
    at = T0
    for topic, event in sample_events():
        signer = SIGNER.get(event.type)
        if signer is None or (event.type.startswith("tidegate.approval.") and topic != "approvals"):
            continue
        if event.type == "tidegate.action.authorized":  # the policy key leaked: rotated at once, no grace
            rotate(keys, "policy", now=at, grace=False)
            at += timedelta(seconds=1)
        key = alice if signer == "client" else service_key(kit, signer)
        offsets[topic] = offsets.get(topic, -1) + 1
        record = _observed(kit, topic, edit(event), key, at, offsets[topic])
        assert record.valid, (event.type, record.invalid_reason)
        await log.append([record])
        at += timedelta(seconds=1)

    if planted is not None:
        await log.append([planted(offsets["approvals"] + 1)])

    async def publish(event: Any) -> None:
        return None

    audit = SigningKey.load_or_create(keys, "audit")
    assert await Checkpointer(log, audit, publish, PREFIX + "audit.checkpoints", 1.0, prefix=PREFIX).tick() is not None
    path = tmp_path / "export.jsonl.gz"
    done = await archive_log(
        log, Keyring.load(keys, "audit"), path, prefix=PREFIX, through=1, keys=audit_keys_of(keys), attest_with=audit,
        signers=signers_of(deployment_authority(kit, history=True)),
    )  # fmt: skip
    assert done.signers >= 6  # client, planner, policy (current and retired), approval, executor, audit
    return path, done.keys[-1].sha256, old_policy


def _explain(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *trust: str) -> tuple[dict[str, Any], str]:
    """`tidegate audit explain t-1 --archive FILE --offline --format json` on the auditor's laptop: an empty keys folder."""
    laptop = tmp_path / "laptop-keys"
    laptop.mkdir(exist_ok=True)
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(laptop))
    args = ["audit", "explain", "t-1", "--archive", str(path), "--offline", "--format", "json"]
    result = CliRunner().invoke(app, args + [a for t in trust for a in ("--trust-key", t)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    return json.loads(out[out.index("{") :]), result.stderr


def explained_signers(path: Path) -> int:
    """How many signing keys the file's header carries."""
    return len(read_archive(path)[0].signers)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def _write(path: Path, lines: list[dict[str, Any]], name: str) -> Path:
    out = path.with_name(name)
    out.write_bytes(gzip.compress(b"\n".join(json.dumps(line, separators=(",", ":")).encode() for line in lines) + b"\n"))
    return out


def _grant_by(mallory: SigningKey, offset: int, at: datetime) -> Observed:
    """mallory's grant of t-1, signed by her key named `approval`, observed as valid as whoever writes it into the log does."""
    event = dict(sample_events())["approvals"]
    data = s.ApprovalData.model_validate(event.data.model_dump() | {"approver": "mallory@acme.example"})
    signed = sign_event(s.ApprovalGranted.build(data, source="tidegate/approval"), mallory)
    return observe(
        topic=PREFIX + "approvals", partition=0, offset=offset, timestamp_ms=int(at.timestamp() * 1000), timestamp_type=LOG_APPEND_TIME,
        key=signed.key, value=s.encode(signed), headers=[], prefix=PREFIX, check=lambda *a, **k: None,
    )  # fmt: skip


def _forged_grant(path: Path, mallory: SigningKey, *, at: datetime) -> dict[str, Any]:
    """mallory's grant, chained after the approvals chain's last row of the file."""
    last = [r for r in _lines(path)[1:] if r["topic"] == PREFIX + "approvals"][-1]
    record = _grant_by(mallory, last["kafka_offset"] + 1, at)
    row = LogRow.link(record, seq=last["seq"] + 1, prev_hash=bytes.fromhex(last["hash"]), duplicate=False, recorded_at=at)
    return row_to_json(row)


def _mallory_signer(mallory: SigningKey) -> dict[str, Any]:
    public = mallory.private.public_key()
    raw = public.public_bytes_raw()
    key_id = key_id_of("approval", public)
    signer = ArchiveSigner(
        id=f"service:/approval/{key_id}", kind="service", name="approval", key_id=key_id, public_key=base64.b64encode(raw).decode()
    )
    return signer.model_dump(mode="json")


def test_every_row_of_a_task_checks_offline_with_the_audit_keys_fingerprint_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, fingerprint, _ = asyncio.run(_deployment(tmp_path))
    explained, err = _explain(path, tmp_path, monkeypatch, fingerprint)
    assert explained["unverified"] == [], explained["unverified"]
    assert "not used" not in err
    # The rows' records were all there to check: the client's submission, the planner's, the policy's before and after its
    # rotation, the approval's, the executor's.
    assert explained["records"] >= 7

    # `verify --archive` says what the attestation covers, the signing keys among it.
    said = CliRunner().invoke(app, ["audit", "verify", "--archive", str(path), "--trust-key", fingerprint, "--json"])
    assert said.exit_code == 0, said.output
    [summary] = json.loads(said.stdout)["archives"]
    assert (summary["header"], summary["signers"]) == ("attested", explained_signers(path))

    # The auditor's own verifier reads the new header members as attested parts too.
    checked = _standalone(path, [fingerprint], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "header attested" in checked.stdout + checked.stderr

    # Without the fingerprint nothing the file carries is used: every signed row is said unchecked, and stderr says why.
    untrusted, err = _explain(path, tmp_path, monkeypatch)
    assert len(untrusted["unverified"]) == explained["records"]
    assert all("keyring does not hold" in u for u in untrusted["unverified"])
    assert "not trusted here" in err
    assert "--trust-key" in err


def test_a_retired_keys_retirement_travels_with_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever holds the leaked policy key signs a decision after its retirement: offline, it is refused as the deployment would."""
    path, fingerprint, old_policy = asyncio.run(_deployment(tmp_path))
    event = next(e for _, e in sample_events() if e.type == "tidegate.action.decided")
    lines = _lines(path)
    last = [r for r in lines[1:] if r["topic"] == PREFIX + "actions.decided"][-1]
    signed = sign_event(event, old_policy)
    record = observe(
        topic=PREFIX + "actions.decided", partition=0, offset=last["kafka_offset"] + 1,
        timestamp_ms=int((T0 + timedelta(minutes=30)).timestamp() * 1000), timestamp_type=LOG_APPEND_TIME, key=signed.key,
        value=s.encode(signed), headers=[], prefix=PREFIX, check=lambda *a, **k: None,
    )  # fmt: skip
    row = LogRow.link(record, seq=last["seq"] + 1, prev_hash=bytes.fromhex(last["hash"]), duplicate=False, recorded_at=T0)
    lines.append(row_to_json(row))
    explained, _ = _explain(_write(path, lines, "leaked.jsonl.gz"), tmp_path, monkeypatch, fingerprint)
    [said] = explained["unverified"]
    assert "signer_retired" in said


@pytest.mark.parametrize("how", ["beside the attestation", "attestation removed", "attested again by the forger"])
def test_a_key_the_forger_adds_to_the_header_does_not_make_his_grant_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    path, fingerprint, _ = asyncio.run(_deployment(tmp_path))
    mallory = SigningKey.load_or_create(tmp_path / "mallory", "approval")
    lines = _lines(path)
    grant = _forged_grant(path, mallory, at=T0 + timedelta(minutes=5))
    lines.append(grant)
    header = lines[0]
    header["rows"] += 1
    header["signers"].append(_mallory_signer(mallory))
    if how == "attestation removed":
        header["attestation"] = None
    elif how == "attested again by the forger":  # his own audit key, carried in the file beside the deployment's
        forger_audit = SigningKey.load_or_create(tmp_path / "mallory", "audit")
        own = audit_keys_of(tmp_path / "mallory")
        header["keys"] += [k.model_dump(mode="json") for k in own]
        parsed = read_archive(_write(path, lines, "half.jsonl.gz"))[0].model_copy(update={"attestation": None})
        header["attestation"] = attest(parsed, forger_audit).attestation.model_dump(mode="json")  # type: ignore[union-attr]
    forged = _write(path, lines, "forged.jsonl.gz")

    explained, err = _explain(forged, tmp_path, monkeypatch, fingerprint)
    assert "mallory@acme.example" in json.dumps(explained)  # the forged grant is read, and told
    named = f"{PREFIX}approvals[0] seq {grant['seq']} "
    assert [u for u in explained["unverified"] if u.startswith(named) and "keyring does not hold" in u], explained["unverified"]
    assert "are not used" in err
    if how == "beside the attestation":  # the auditor's own verifier names the key added, too
        checked = _standalone(forged, [fingerprint], tmp_path)
        assert checked.returncode == 1
        assert "signers is not as attested" in checked.stdout + checked.stderr


def test_verify_archive_signatures_names_a_row_written_into_the_log_before_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant mallory wrote into the log (the audit's login may INSERT) before the checkpoint: chained, signed over, exported.

    Its chain and checkpoint hold, so `verify --archive` alone passes; with `--signatures`, the auditor's laptop holds
    every row of the file to its own signature with the keys the header carries, and names it.
    """
    mallory = SigningKey.load_or_create(tmp_path / "mallory", "approval")
    path, fingerprint, _ = asyncio.run(_deployment(tmp_path, planted=lambda offset: _grant_by(mallory, offset, T0 + timedelta(minutes=9))))
    (tmp_path / "laptop-keys").mkdir()
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "laptop-keys"))
    args = ["audit", "verify", "--archive", str(path), "--trust-key", fingerprint]
    assert CliRunner().invoke(app, args).exit_code == 0  # the chains and checkpoints: intact
    result = CliRunner().invoke(app, [*args, "--signatures"])
    assert result.exit_code == 1, result.output
    assert f"{PREFIX}approvals:0 seq 3: stored as a valid event, but signed by a key" in result.stderr
    assert result.stderr.count("line ") == 1  # that row alone: every genuine row verifies with the carried keys


def test_search_reads_an_export_alone_and_flags_the_row_that_does_not_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every grant in the file, found without a database: the genuine one checks, the one written into the log is said so."""
    mallory = SigningKey.load_or_create(tmp_path / "mallory", "approval")
    path, fingerprint, _ = asyncio.run(_deployment(tmp_path, planted=lambda offset: _grant_by(mallory, offset, T0 + timedelta(minutes=9))))
    (tmp_path / "laptop-keys").mkdir()
    monkeypatch.setenv("TIDEGATE_KEYS_DIR", str(tmp_path / "laptop-keys"))
    args = ["audit", "search", "--archive", str(path), "--offline", "--trust-key", fingerprint, "--type", "approval.granted", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(f["seq"], f["unverified"] is None) for f in found] == [(2, True), (3, False)]  # bob's, then the planted one
    assert "signed by a key" in found[1]["unverified"]


def test_a_release_21_verifier_reads_the_header_carrying_signers_as_attested(tmp_path: Path) -> None:
    """An auditor still on release 21's verifier (its own or the standalone one it shipped) gets a newer export.

    Release 21 attests `keys` and `policies` item by item and every other member of the header whole; were `signers`
    split item by item, its recomputed parts would differ from the attestation's and a genuine file would read to it
    as rewritten ("signers was added", "signers/… was removed"). Its rule is written out here as it shipped.
    """
    path, _, _ = asyncio.run(_deployment(tmp_path))
    header = _lines(path)[0]
    attestation = header["attestation"]
    shipped_items = {"keys": "key_id", "policies": "version"}  # release 21's services/audit/archive.py `_ITEMS`
    parts: dict[str, str] = {}
    for name, value in header.items():
        if name == "attestation":
            continue
        split = name in shipped_items and isinstance(value, list) and all(isinstance(item, dict) for item in value)
        for part, item in [(f"{name}/{item.get(shipped_items[name])}", item) for item in value] if split else [(name, value)]:
            parts[part] = hashlib.sha256(canonical_json(item)).hexdigest()
    assert header["signers"], "the export carries the rows' signing keys"
    assert parts == attestation["parts"]
    message = b"tidegate.audit.archive.header.v1\n" + canonical_json({"key_id": attestation["key_id"], "parts": parts})
    public = next(k for k in header["keys"] if k["key_id"] == attestation["key_id"])
    pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(public["public_key"]))
    pub.verify(base64.urlsafe_b64decode(attestation["signature"] + "=" * (-len(attestation["signature"]) % 4)), message)
