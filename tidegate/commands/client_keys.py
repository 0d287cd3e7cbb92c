"""`tidegate clients`: register, revoke and list the client keys that may submit tasks and proposals for a tenant.

A task or an outside proposal is accepted only when signed by an active client key of its tenant,
and its `requested_by` must be that key's principal (four-eyes approval relies on it).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from servicekit import client_key, client_private_key, key_id_of, load_public
from servicekit.key_files import client_folder, retired_client_keys
from servicekit.settings import KitSettings
from servicekit.signing import BadKeyName, retire, retired_at
from tidegate.commands._common import console, fail, settings

app = typer.Typer(help="Security: client keys per tenant (who may submit tasks and proposals, as whom).")


def _folder(kit: KitSettings, tenant: str, principal: str) -> Path:
    """The tenant's folder of client keys; exit 2 in one line when either name is not one file name (`../operators`)."""
    try:
        return client_folder(kit, tenant, principal)
    except BadKeyName as exc:
        fail(str(exc), code=2)


@app.command("add")
def add(
    tenant: str = typer.Argument(..., help="Tenant the client acts for.", metavar="TENANT"),
    principal: str = typer.Argument(..., help="Who the client is; its tasks' `requested_by`.", metavar="PRINCIPAL"),
    public_key: Path = typer.Option(
        None, "--public-key", exists=True, dir_okay=False, help="The client's Ed25519 public key (PEM); default: make a key pair here."
    ),
) -> None:
    """Register a client key for TENANT and PRINCIPAL (made locally unless --public-key is given).

    A PRINCIPAL already registered keeps its key: to rotate it, `revoke` then `add` (docs/security/signatures.md).
    """
    kit = settings()
    folder = _folder(kit, tenant, principal)
    if public_key is not None:
        public = load_public(public_key)
        if public is None:
            fail(f"{public_key} is not an Ed25519 public key (PEM)")
        registered = load_public(folder / f"{principal}.pub")
        if registered is not None and registered != public:
            # Copied over it, the registered key was gone without a trace: refused at once, not in `revoked/` for the
            # audit's history reader, so every row it had signed read as signed by an unknown key.
            fail(
                f"client {principal} of {tenant} is registered with another key ({key_id_of(principal, registered)}): "
                f"`tidegate clients rotate {tenant} {principal} --public-key {public_key}` replaces it"
            )
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(public_key, folder / f"{principal}.pub")
        console.print(f"client {principal} of {tenant} registered: {key_id_of(principal, public)}")
        return
    # Registering again lifts a revocation; the revoked key stays in `revoked/`, so what it signed before still verifies
    # (`audit verify --signatures`). Removing it, as this did, turned every row it had signed into "unknown key": BROKEN.
    already = (folder / f"{principal}.pub").exists()
    key = client_key(kit, tenant, principal, registering=True)
    if already:  # adding again is no rotation: the same key stays registered
        console.print(f"client {principal} of {tenant} is already registered: {key.key_id} (the same key, unchanged)")
        console.print(
            f"to rotate it: `tidegate clients revoke {tenant} {principal}`, then `tidegate clients add {tenant} {principal}` "
            f"(the old key refused at once: a key that may have leaked), or `tidegate clients rotate {tenant} {principal}` "
            "(the old key still verifies for TIDEGATE_RETIRED_KEY_GRACE_S: nothing the client sends meanwhile is refused)"
        )
        return
    console.print(f"client {principal} of {tenant} registered: {key.key_id}")
    console.print(f"private key (give it to the client, keep it secret): {client_private_key(kit, tenant, principal)}")


@app.command("rotate")
def rotate_client(
    tenant: str = typer.Argument(..., metavar="TENANT"),
    principal: str = typer.Argument(..., metavar="PRINCIPAL"),
    public_key: Path = typer.Option(
        None, "--public-key", exists=True, dir_okay=False, help="The client's new Ed25519 public key (PEM); default: make a key pair here."
    ),
) -> None:
    """Give a registered client a new key; the old one still verifies for TIDEGATE_RETIRED_KEY_GRACE_S, then signs nothing new.

    For a planned rotation under load: the client switches to the new key within the grace and nothing it sends is
    refused. A key that may have leaked is revoked instead (`tidegate clients revoke`: refused at once).
    """
    kit = settings()
    folder = _folder(kit, tenant, principal)
    pub = folder / f"{principal}.pub"
    old = load_public(pub)
    if old is None:
        fail(f"no client {principal} registered for {tenant}: `tidegate clients add {tenant} {principal}` registers one")
    new = None
    if public_key is not None:
        new = load_public(public_key)
        if new is None:
            fail(f"{public_key} is not an Ed25519 public key (PEM)")
        if new == old:
            fail(f"{public_key} is the key {principal} of {tenant} has now ({key_id_of(principal, old)}): give the client's new key")
    now = datetime.now(UTC)
    old_id = retire(folder, principal, now=now)  # `<principal>.<hash>.pub` + `.retired`: verifies what arrives within the grace
    client_private_key(kit, tenant, principal).unlink(missing_ok=True)  # the old private key, when it was made here
    if new is not None:
        tmp = folder / f".{principal}.pub.tmp"  # not `*.pub`: no reader globs it half written
        shutil.copyfile(public_key, tmp)
        tmp.replace(pub)
        new_id = key_id_of(principal, new)
    else:
        new_id = client_key(kit, tenant, principal, registering=True).key_id
    until = (now + timedelta(seconds=kit.retired_key_grace_s)).strftime("%Y-%m-%d %H:%M:%S UTC")
    console.print(f"client {principal} of {tenant}: {old_id} retired → {new_id}")
    console.print(
        f"{old_id} still verifies what arrives until {until} (TIDEGATE_RETIRED_KEY_GRACE_S, {kit.retired_key_grace_s:g} s): "
        "switch the client to the new key before then; after it, what the old key signs is refused `signer_retired`"
    )
    if new is None:
        console.print(f"private key (give it to the client, keep it secret): {client_private_key(kit, tenant, principal)}")


@app.command("revoke")
def revoke(tenant: str = typer.Argument(..., metavar="TENANT"), principal: str = typer.Argument(..., metavar="PRINCIPAL")) -> None:
    """Revoke a client key: its tasks and proposals are refused from now on (the public key moves to `revoked/`)."""
    kit = settings()
    folder = _folder(kit, tenant, principal)
    pub = folder / f"{principal}.pub"
    if not pub.exists():
        fail(f"no client {principal} registered for {tenant}")
    (folder / "revoked").mkdir(exist_ok=True)
    target = folder / "revoked" / pub.name
    if target.exists():  # revoked before, registered again, revoked again: the earlier revoked key keeps its place
        public = load_public(pub)
        suffix = key_id_of(principal, public).rsplit("-", 1)[-1] if public is not None else "unreadable"
        target = folder / "revoked" / f"{principal}.{suffix}.pub"
    pub.rename(target)  # the rename's time is the revocation's: what it signs after it is refused, before it verifies
    now = datetime.now(UTC).timestamp()
    for retired in retired_client_keys(folder, principal):  # a key `rotate` retired, still in its grace: refused from now on too
        since = retired_at(retired)
        if since is None or since + kit.retired_key_grace_s <= now or (folder / "revoked" / retired.name).exists():
            continue  # its grace is over: it signs nothing new already, and stays where it verifies what it signed in time
        retired.rename(folder / "revoked" / retired.name)  # the rename's time is its revocation too
        retired.with_suffix(".retired").unlink(missing_ok=True)
    client_private_key(kit, tenant, principal).unlink(missing_ok=True)
    former = folder / principal  # where an earlier layout kept the private key, inside the public tree
    if former.is_dir():
        shutil.rmtree(former)
    console.print(f"client {principal} of {tenant} revoked")


@app.command("list")
def list_clients(tenant: str = typer.Argument(None, help="Only this tenant.", metavar="TENANT")) -> None:
    """Registered (active) client keys, per tenant, and those `rotate` retired with the time their grace ends."""
    kit = settings()
    now = datetime.now(UTC).timestamp()
    for path in sorted(kit.client_keys_dir.glob(f"{tenant or '*'}/*.pub")):
        public = load_public(path)
        if public is None:
            continue
        if (retired := retired_at(path)) is None:
            principal = path.name.removesuffix(".pub")
            console.print(f"{path.parent.name:<12} {principal:<32} {key_id_of(principal, public)}")
            continue
        principal = path.name.removesuffix(".pub").rsplit(".", 1)[0]
        ends = retired + kit.retired_key_grace_s
        when = datetime.fromtimestamp(ends, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        state = f"retired, verifies until {when}" if ends > now else "retired, signs nothing new"
        console.print(f"{path.parent.name:<12} {principal:<32} {key_id_of(principal, public)}  {state}")
