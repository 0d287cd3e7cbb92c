"""`tidegate clients`: register, revoke and list the client keys that may submit tasks and proposals for a tenant.

A task or an outside proposal is accepted only when signed by an active client key of its tenant,
and its `requested_by` must be that key's principal (four-eyes approval relies on it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from servicekit import client_key, client_private_key, key_id_of, load_public
from tidegate.commands._common import console, fail, settings

app = typer.Typer(help="Security: client keys per tenant (who may submit tasks and proposals, as whom).")


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
    folder = kit.client_keys_dir / tenant
    if public_key is not None:
        public = load_public(public_key)
        if public is None:
            fail(f"{public_key} is not an Ed25519 public key (PEM)")
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
        console.print(f"to rotate it: `tidegate clients revoke {tenant} {principal}`, then `tidegate clients add {tenant} {principal}`")
        return
    console.print(f"client {principal} of {tenant} registered: {key.key_id}")
    console.print(f"private key (give it to the client, keep it secret): {client_private_key(kit, tenant, principal)}")


@app.command("revoke")
def revoke(tenant: str = typer.Argument(..., metavar="TENANT"), principal: str = typer.Argument(..., metavar="PRINCIPAL")) -> None:
    """Revoke a client key: its tasks and proposals are refused from now on (the public key moves to `revoked/`)."""
    kit = settings()
    folder = kit.client_keys_dir / tenant
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
    client_private_key(kit, tenant, principal).unlink(missing_ok=True)
    former = folder / principal  # where an earlier layout kept the private key, inside the public tree
    if former.is_dir():
        shutil.rmtree(former)
    console.print(f"client {principal} of {tenant} revoked")


@app.command("list")
def list_clients(tenant: str = typer.Argument(None, help="Only this tenant.", metavar="TENANT")) -> None:
    """Registered (active) client keys, per tenant."""
    kit = settings()
    for path in sorted(kit.client_keys_dir.glob(f"{tenant or '*'}/*.pub")):
        public = load_public(path)
        if public is not None:
            principal = path.name.removesuffix(".pub")
            console.print(f"{path.parent.name:<12} {principal:<32} {key_id_of(principal, public)}")
