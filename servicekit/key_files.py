"""Where each signer's key lives on this machine: a service's, the operator's, a tenant's clients' (kept, retired, revoked).

What loads or creates a key for signing, and what names the public key files `Authority` reads; it judges no event.
"""

from __future__ import annotations

import re
from glob import escape as glob_escape
from pathlib import Path

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from servicekit.settings import KitSettings
from servicekit.signing import SigningKey, checked_key_name, retired_at

__all__ = [
    "client_folder",
    "client_key",
    "client_private_key",
    "holder_of",
    "operator_key",
    "retired_client_keys",
    "revoked_client_keys",
    "service_key",
]


def holder_of(path: Path) -> str:
    """The name a public key file belongs to: `<name>.pub`, or `<name>.<hash>.pub` once rotated."""
    return re.sub(r"\.[0-9a-f]{12}$", "", path.name.removesuffix(".pub"))


def service_key(kit: KitSettings, service: str) -> SigningKey:
    """`service`'s own signing key, as the service loads it at start: made on its first start, in a keys folder that is there.

    A keys folder that does not exist is refused as a setting not valid (`run_service` exits `EX_CONFIG`), unless it is
    the default `<run_dir>/keys` (a first `tidegate up`): a mistyped `TIDEGATE_KEYS_DIR` would otherwise give the service
    a new key that no one trusts and no operator's key to obey, while it takes its share of the live group's partitions.
    """
    if not kit.keys_dir.is_dir() and kit.keys_dir != kit.run_dir / "keys":
        raise _not_valid("keys_dir", str(kit.keys_dir), "no such folder (make it and its keys with `tidegate keys init --all`)")
    return SigningKey.load_or_create(kit.keys_dir, service)


def _not_valid(setting: str, value: str, why: str) -> ValidationError:
    """A `KitSettings` value that is well formed but cannot be used, raised as pydantic raises a value not valid."""
    error = InitErrorDetails(type=PydanticCustomError("not_usable", why), loc=(setting,), input=value)
    return ValidationError.from_exception_data(KitSettings.__name__, [error])


def operator_key(kit: KitSettings) -> SigningKey:
    """The operator key the CLI signs `control` with (private in `operator_private_keys_dir`); put on the allow-list when first made."""
    return SigningKey.load_or_create(kit.operator_keys_dir, kit.operator, kit.operator_private_keys_dir)


def client_key(kit: KitSettings, tenant: str, principal: str, *, registering: bool = False) -> SigningKey:
    """A tenant's client key, created (and so registered) on first use on this machine, unless it was revoked.

    A principal is revoked while `revoked/` holds a key of it and no key of it is registered: only `registering` (what
    `tidegate clients add` does) makes it a new one then. The revoked keys stay where they are: what they signed before
    their revocation still verifies in the audit log (the history reader reads `revoked/`).
    """
    folder = client_folder(kit, tenant, principal)
    if not registering and not (folder / f"{principal}.pub").exists() and revoked_client_keys(folder, principal):
        raise PermissionError(f"client key of {principal} for {tenant} was revoked (`tidegate clients add` registers a new one)")
    return SigningKey.load_or_create(folder, principal, client_private_key(kit, tenant, principal).parent)


def revoked_client_keys(tenant_folder: Path, principal: str) -> list[Path]:
    """The revoked public keys of `principal` in a tenant's folder.

    `revoked/<principal>.pub`, and `<principal>.<hash>.pub` for each other one (a key revoked, registered again, then
    revoked again keeps both).
    """
    folder = tenant_folder / "revoked"
    found = [folder / f"{principal}.pub", *folder.glob(f"{glob_escape(principal)}.*.pub")]
    return [path for path in found if path.exists() and holder_of(path) == principal]


def retired_client_keys(tenant_folder: Path, principal: str) -> list[Path]:
    """The public keys of `principal` that `tidegate clients rotate` retired: `<principal>.<hash>.pub` in the tenant's folder.

    Each still verifies what the broker appends within `TIDEGATE_RETIRED_KEY_GRACE_S` after its retirement (its `.retired`).
    """
    found = tenant_folder.glob(f"{glob_escape(principal)}.*.pub")
    return sorted(path for path in found if holder_of(path) == principal and retired_at(path) is not None)


def client_folder(kit: KitSettings, tenant: str, principal: str) -> Path:
    """The folder of `tenant`'s client public keys, once both names are known to be one file name each (else BadKeyName)."""
    checked_key_name("client principal", principal)
    return kit.client_keys_dir / checked_key_name("tenant", tenant)


def client_private_key(kit: KitSettings, tenant: str, principal: str) -> Path:
    """Where this machine keeps the private key of `tenant`'s client `principal`: outside the public-key tree."""
    return kit.client_private_keys_dir / checked_key_name("tenant", tenant) / f"{checked_key_name('client principal', principal)}.key"
