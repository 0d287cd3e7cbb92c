"""The tenants' credentials for tools, read from the executor's environment, never from events."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

__all__ = ["CredentialStore", "env_var_name", "missing_secret"]

ENV_PREFIX = "TIDEGATE_CREDENTIAL_"


def env_var_name(tenant_id: str, scope: str) -> str:
    """The environment variable that may hold the secret of `scope` for `tenant_id`.

    Example: tenant `acme`, scope `shipping:labels` → `TIDEGATE_CREDENTIAL_ACME__SHIPPING_LABELS`.
    """

    def norm(text: str) -> str:
        return re.sub(r"[^A-Z0-9]", "_", text.upper())

    return f"{ENV_PREFIX}{norm(tenant_id)}__{norm(scope)}"


def missing_secret(tenant_id: str, scope: str) -> str:
    """Why a call of `scope` for `tenant_id` was not sent, and how to give the executor the secret (the variable's exact name).

    A developer who exported the variable and ran `tidegate restart executor` was told only "no secret for credential
    scope": the supervisor starts each service with the environment `tidegate up` had (connectors probe F12).
    """
    return (
        f"no secret for credential scope {scope!r} of tenant {tenant_id}, nothing was sent: set {env_var_name(tenant_id, scope)} "
        f"in the executor's environment, or {tenant_id}: {{{scope}: …}} in the YAML file TIDEGATE_EXECUTOR_CREDENTIALS_FILE "
        "names; the executor reads both when it starts, so start it again with it set (under `tidegate up`: `tidegate down`, "
        "then `tidegate up` from a shell that has it; `tidegate restart executor` keeps the environment `up` had)"
    )


class CredentialStore:
    """Secrets by (tenant, credential scope): a YAML file `{tenant: {scope: secret}}`, then env vars."""

    def __init__(self, secrets: Mapping[tuple[str, str], str], environ: Mapping[str, str]) -> None:
        self._secrets = dict(secrets)
        self._environ = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}

    @classmethod
    def load(cls, path: Path | None, environ: Mapping[str, str]) -> CredentialStore:
        """Read the credentials file (if any) and keep the `TIDEGATE_CREDENTIAL_*` variables of `environ`."""
        secrets: dict[tuple[str, str], str] = {}
        if path is not None:
            doc = yaml.safe_load(path.read_text()) or {}
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: expected a mapping tenant -> scope -> secret")
            for tenant, scopes in doc.items():
                if not isinstance(scopes, dict):
                    raise ValueError(f"{path}: tenant {tenant!r} must map scopes to secrets")
                for scope, secret in scopes.items():
                    secrets[(str(tenant), str(scope))] = str(secret)
        return cls(secrets, environ)

    def secret(self, tenant_id: str, scope: str) -> str | None:
        """The secret of `scope` for `tenant_id`; the environment wins over the file."""
        return self._environ.get(env_var_name(tenant_id, scope)) or self._secrets.get((tenant_id, scope))
