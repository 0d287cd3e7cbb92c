"""`tidegate keys`: the deployment's signing keys: make them, list them, rotate one (a service's, an operator's, a tool's), allow operators.

See docs/security/signatures.md for what each key proves and what an operator must protect.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from servicekit import SERVICES, KitSettings, SigningKey, ToolCatalog, key_id_of, load_public, rotate
from servicekit.signing import RECHECK_S, BadKeyName, checked_key_name, end_grace, retire, retired_at, retired_without_grace
from tidegate.commands._common import console, fail, settings
from tidegate.commands.connectors import executor_vault

app = typer.Typer(help="Security: the signing keys of services, operators, tools and clients (list, rotate, allow operators).")


def _ids(folder: Path, name: str) -> list[tuple[str, str]]:
    """(key id, `current` or `retired`) of `name`'s public keys in `folder`."""
    found = []
    for path in sorted([folder / f"{name}.pub", *folder.glob(f"{name}.*.pub")]):
        public = load_public(path) if path.exists() else None
        if public is not None:
            state = "current" if path.name == f"{name}.pub" else "denied" if retired_without_grace(path) else "retired"
            found.append((key_id_of(name, public), state))
    return found


@app.command("init")
def init_keys(
    names: list[str] = typer.Argument(None, help=f"Services whose key pair to make ({', '.join(SERVICES)})."),
    all_: bool = typer.Option(False, "--all", help="Every service's key pair, the executor's connector-credentials pair and the folders."),
) -> None:
    """Make the key pairs a deployment needs before any service starts; keys that exist are kept.

    Each private key goes alone into its service's folder `<keys_dir>/<service>/`, the one folder to mount into it.

    Public keys go to the top of `<keys_dir>`. `--all` adds the executor's connector-credentials pair and `operators/`, `clients/`.
    """
    kit = settings()
    chosen = list(SERVICES) if all_ else list(names or [])
    if not chosen:
        fail("name the services whose keys to make, or --all")
    unknown = sorted(set(chosen) - set(SERVICES))
    if unknown:
        fail(f"unknown service {', '.join(unknown)}: one of {', '.join(SERVICES)}")
    for name in chosen:
        existed = (kit.keys_dir / name / f"{name}.key").exists()
        key = SigningKey.load_or_create(kit.keys_dir, name)
        console.print(f"service   {name:<10} {key.key_id}  {'kept' if existed else 'made'}")
    if all_:
        vault = executor_vault(kit)
        existed = vault.private_path.exists()
        console.print(f"sealing   {'executor':<10} {vault.ensure()}  {'kept' if existed else 'made'}")
        kit.operator_keys_dir.mkdir(parents=True, exist_ok=True)
        kit.client_keys_dir.mkdir(parents=True, exist_ok=True)


@app.command("list")
def list_keys() -> None:
    """Every trusted public key: services', operators' (the allow-list) and clients' (per tenant)."""
    kit = settings()
    for service in SERVICES:
        for key_id, state in _ids(kit.keys_dir, service):
            console.print(f"service   {service:<10} {key_id}  {state}")
    for name in sorted({path.name.split(".")[0] for path in kit.operator_keys_dir.glob("*.pub")}):
        for key_id, state in _ids(kit.operator_keys_dir, name):
            console.print(f"operator  {name:<10} {key_id}  {state}")
    if kit.tools_dir.is_dir():
        for spec in ToolCatalog.load(*kit.tool_dirs).values():
            if spec.kind == "topic" and spec.reply_key_file:
                path = kit.keys_dir / spec.reply_key_file
                for key_id, state in _ids(path.parent, path.name.removesuffix(".pub")):
                    console.print(f"tool      {spec.name:<10} {key_id}  {state}")
    for path in sorted(kit.client_keys_dir.glob("*/*.pub")):
        public = load_public(path)
        if public is not None:
            retired = retired_at(path) is not None  # `tidegate clients rotate` retired it
            principal = path.name.removesuffix(".pub").rsplit(".", 1)[0] if retired else path.name.removesuffix(".pub")
            console.print(f"client    {path.parent.name:<10} {key_id_of(principal, public)}" + ("  retired" if retired else ""))


@app.command("rotate")
def rotate_key(
    name: str = typer.Argument(..., help=f"A service ({', '.join(SERVICES)}) or `operator` (this CLI's operator key)."),
    leaked: bool = typer.Option(
        False,
        "--leaked",
        help="The old key may have leaked: retire it without grace, so nothing it signs from now on is accepted "
        "(what the broker appended before stays valid).",
    ),
) -> None:
    """Make a new key for NAME; the old private key is deleted, its public key kept (what it signed still verifies).

    No restart is needed: a running service reads its key file again at most every second and signs with the new key
    from then on, well within the old key's grace (`TIDEGATE_RETIRED_KEY_GRACE_S`). With --leaked there is no grace:
    what the old key signs from now on is refused (`signer_retired`), so a copy of it signs nothing.
    """
    kit = settings()
    # A leaked key is cut off once the running service has had time to read its new key (it looks every RECHECK_S),
    # so nothing it signs in between is refused: the old key is retired, without grace, that much later.
    cutoff = datetime.now(UTC) + timedelta(seconds=2 * RECHECK_S) if leaked else None
    if name == "operator":
        old, new = rotate(kit.operator_keys_dir, kit.operator, now=cutoff, private_dir=kit.operator_private_keys_dir, grace=not leaked)
    elif name in SERVICES:
        old, new = rotate(kit.keys_dir, name, now=cutoff, grace=not leaked)
    else:
        fail(f"unknown key {name!r}: a service ({', '.join(SERVICES)}) or `operator`")
    console.print(f"{name}: {old or '(none)'} retired{' without grace' if leaked else ''} → {new}")
    if cutoff is not None:
        if name in SERVICES:
            console.print(f"the running {name} signs with {new} within {RECHECK_S:.0f}s, no restart needed")
        time.sleep(max(0.0, (cutoff - datetime.now(UTC)).total_seconds()))
        console.print(
            f"done: from {cutoff.strftime('%H:%M:%S')} UTC on, what {old or 'an earlier key'} signs is refused (signer_retired) "
            "by every service; what the broker appended before stays valid"
        )
    elif name in SERVICES:
        grace = f"; {old} still verifies what arrives in the next {kit.retired_key_grace_s:.0f}s" if old else ""
        console.print(f"the running {name} signs with {new} within {RECHECK_S:.0f}s, no restart needed{grace}")


def _tool_key(kit: KitSettings, tool: str) -> Path:
    """Where the catalog says `tool`'s reply key is (`reply_key_file`, relative to the keys directory)."""
    spec = ToolCatalog.load(*kit.tool_dirs).get(tool)
    if spec is None or spec.kind != "topic" or not spec.reply_key_file:
        fail(f"{tool!r} is not a `topic` tool with a `reply_key_file` in the catalog at {', '.join(map(str, kit.tool_dirs))}")
    return kit.keys_dir / spec.reply_key_file  # an absolute reply_key_file stays as it is


@app.command("add-tool")
def add_tool(
    tool: str = typer.Argument(
        ..., help="A `topic` tool of the catalog served by a governed function (`@governed`, an adapter's `serve=`)."
    ),
) -> None:
    """Make the reply key of TOOL, a governed function served from this machine; a key that exists is kept.

    The public half goes where the catalog's `reply_key_file` says (the executor verifies replies with it), the private
    half into `<that folder>/<tool>/<tool>.key`: set TIDEGATE_CLIENT_TOOL_KEYS_DIR to that folder in the serving process.
    """
    kit = settings()
    path = _tool_key(kit, tool)
    folder, name = path.parent, path.name.removesuffix(".pub")
    if name != tool:
        fail(f"the catalog's reply_key_file of {tool} is {path.name}: a governed function signs with `{tool}.key`, name it `{tool}.pub`")
    existed = (folder / tool / f"{tool}.key").exists()
    if path.exists() and not existed:
        fail(f"{path} is there but not its private key: {tool} is served elsewhere (its service keeps its key; see `keys rotate-tool`)")
    key = SigningKey.load_or_create(folder, tool)
    console.print(f"tool      {tool:<10} {key.key_id}  {'kept' if existed else 'made'}")
    console.print(f"serve it with TIDEGATE_CLIENT_TOOL_KEYS_DIR={folder}")


@app.command("rotate-tool")
def rotate_tool(
    tool: str = typer.Argument(..., help="A `topic` tool of the catalog (its `reply_key_file` names the key)."),
    public_key: Path | None = typer.Option(
        None, "--public-key", exists=True, dir_okay=False, help="The new Ed25519 public key (PEM) its service made; else one is made here."
    ),
    leaked: bool = typer.Option(
        False,
        "--leaked",
        help="The old key may have leaked: retire it without grace, so no reply it signs from now on is accepted "
        "(what the broker appended before stays valid).",
    ),
) -> None:
    """Replace TOOL's reply key; the old one is retired, not deleted, so replies already in flight still verify.

    The old key verifies replies for `TIDEGATE_RETIRED_KEY_GRACE_S` more (as a service's), then
    nothing new (`signer_retired`); with --leaked, nothing new from now on, and keys of TOOL retired earlier lose
    what is left of their grace. An outside service keeps its private key: it makes a new key
    pair and hands over the public half (`--public-key`). Without it, the private key must be on
    this machine (`<keys dir>/tools/<tool>/<tool>.key`, as a local development service makes it) and
    a new one is made beside it; restart that service.
    """
    kit = settings()
    path = _tool_key(kit, tool)
    folder, name = path.parent, path.name.removesuffix(".pub")
    if public_key is None:
        if not (folder / name / f"{name}.key").exists():
            fail(f"the private key of {tool} is not on this machine: pass --public-key with the new public key its service made")
        old, new = rotate(folder, name, grace=not leaked)
    else:
        public = load_public(public_key)
        if public is None:
            fail(f"{public_key} is not an Ed25519 public key (PEM)")
        new = key_id_of(name, public)
        if path.exists() and (current := load_public(path)) is not None and key_id_of(name, current) == new:
            fail(f"{public_key} is {tool}'s current key already")
        old = retire(folder, name, grace=not leaked)
        if leaked:
            end_grace(folder, name)
        shutil.copyfile(public_key, path)
    if leaked:
        console.print(
            f"{tool}: {old or '(none)'} retired without grace → {new}: a reply it signs from now on is refused (signer_retired) "
            "by the executor; what the broker appended before stays valid. Until the serving process signs with the new key "
            "(restart it), its replies are refused too and its calls end `unknown`"
        )
    else:
        grace = f"; {old} still verifies replies for {kit.retired_key_grace_s:.0f}s" if old else ""
        console.print(f"{tool}: {old or '(none)'} retired → {new}{grace}")


@app.command("allow-operator")
def allow_operator(
    name: str = typer.Argument(..., help="The operator's name (lower case, as in their `TIDEGATE_OPERATOR`)."),
    public_key: Path = typer.Argument(..., exists=True, dir_okay=False, help="Their Ed25519 public key (PEM)."),
) -> None:
    """Put an operator's public key on the allow-list: their signed `control` records are obeyed."""
    kit: KitSettings = settings()
    try:
        checked_key_name("operator", name)
    except BadKeyName as exc:
        fail(str(exc), code=2)
    public = load_public(public_key)
    if public is None:
        fail(f"{public_key} is not an Ed25519 public key (PEM)")
    kit.operator_keys_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(public_key, kit.operator_keys_dir / f"{name}.pub")
    console.print(f"operator {name} allowed: {key_id_of(name, public)}")


@app.command("deny-operator")
def deny_operator(name: str = typer.Argument(..., help="The operator's name.")) -> None:
    """Take an operator off the allow-list: their key is retired without grace, so records it signed before stay obeyed.

    What the key signs from now on is refused (`signer_retired`, judged by the broker's append time on `control`),
    while the kill switches, packs and tenant settings it set before the denial hold, after any restart too.
    """
    kit = settings()
    folder = kit.operator_keys_dir
    key_id = retire(folder, name, grace=False)
    earlier = [p for p in folder.glob(f"{name}.*.retired") if p.name.split(".")[0] == name]
    if key_id is None and not earlier:
        fail(f"no operator {name} on the allow-list")
    end_grace(folder, name)  # keys rotated earlier, still within their grace window, sign nothing new either
    console.print(f"operator {name} removed from the allow-list ({key_id or 'no current key'} retired now, without grace)")
