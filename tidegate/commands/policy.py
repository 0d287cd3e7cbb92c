"""`tidegate policy validate|test|publish`: check a Cedar policy pack, run its table tests, put it live."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from schemas import ControlPolicy, ControlPolicyData
from servicekit import CatalogError, KitSettings, ToolCatalog
from servicekit.catalog_checks import (
    missing_reply_keys,
    undo_tenancy_warnings,
    ungranted_outside_tools,
    unloadable_entrypoints,
    unread_amount_warnings,
)
from services.policy import PackError, PackSource, cedar_schema_json, compile_pack, load_cases, run_cases, validate_pack
from tidegate.commands._common import BY_HELP, console, fail, publish_control, run, settings, signer_settings

__all__ = ["app", "publish_pack"]

app = typer.Typer(help="Policy packs: validate against the tool catalog, run table tests, publish a new version.", no_args_is_help=True)

DIR = typer.Argument(None, help="Pack directory (default: the configured policy_dir, policies/default).")
TOOLS = typer.Option(
    None, "--tools", help="Tool catalog directory, in place of the configured catalog (default: tools_dir, then extra_tools_dirs)."
)


def _catalog(tools: Path | None) -> ToolCatalog:
    try:
        return ToolCatalog.load(tools) if tools else ToolCatalog.load(*settings().tool_dirs)
    except CatalogError as exc:
        fail(str(exc))


def _source(directory: Path | None) -> PackSource:
    try:
        return PackSource.from_dir(directory or settings().policy_dir)
    except PackError as exc:
        fail(str(exc))


@app.command()
def validate(
    directory: Path | None = DIR,
    tools: Path | None = TOOLS,
    print_schema: bool = typer.Option(False, "--print-schema", help="Print the Cedar schema generated from the tool catalog."),
) -> None:
    """Check every policy: Cedar syntax, @id/@outcome/@reason annotations, types against the catalog's schema, settings."""
    catalog = _catalog(tools)
    if print_schema:
        console.print_json(cedar_schema_json(catalog))
    source = _source(directory)
    problems = validate_pack(source, catalog)
    if problems:
        for p in problems:
            console.print(f"[red]✗[/] {p}")
        fail(f"{len(problems)} problem(s) in {directory or settings().policy_dir}")
    console.print(f"[green]✓[/] {len(source.files)} file(s) valid against {len(catalog)} tools; version {source.version}")
    for warning in ungranted_outside_tools(catalog.tools):
        console.print(f"[yellow]![/] {warning}", soft_wrap=True)
    for warning in [*undo_tenancy_warnings(catalog.tools), *unread_amount_warnings(catalog.tools)]:
        console.print(f"[yellow]![/] {warning}", soft_wrap=True)
    if os.getcwd() not in sys.path:  # the services of `tidegate up` run `python -m` here, which imports from this directory
        sys.path.insert(0, os.getcwd())
    for warning in [*missing_reply_keys(catalog.tools, settings().keys_dir), *unloadable_entrypoints(catalog.tools)]:
        console.print(f"[yellow]![/] {warning}", soft_wrap=True)


@app.command("test")
def run_tests(
    directory: Path | None = DIR,
    tools: Path | None = TOOLS,
    verbose: bool = typer.Option(False, "-v", "--verbose", help="List every case."),
) -> None:
    """Run the pack's table-driven tests (`tests/*.yaml`: call + state → expected outcome and reason)."""
    catalog = _catalog(tools)
    path = directory or settings().policy_dir
    try:
        pack = compile_pack(_source(path), catalog)
        cases = load_cases(path)
    except (PackError, ValueError) as exc:
        fail(str(exc))
    if not cases:
        fail(f"no test cases under {path / 'tests'}")
    results = run_cases(pack, cases)
    failed = [r for r in results if not r.passed]
    if verbose:
        table = Table("", "case", "expected", "got")
        for r in results:
            exp = r.case.expect
            table.add_row(
                "[green]ok[/]" if r.passed else "[red]FAIL[/]",
                f"{r.case.source} {r.case.name}",
                f"{exp.outcome} {exp.reason or ''}",
                f"{r.verdict.outcome} {', '.join(r.verdict.codes)}",
            )
        console.print(table)
    for r in failed:
        console.print(f"[red]FAIL[/] {r.describe()}")
    if failed:
        fail(f"{len(failed)} of {len(results)} policy tests failed")
    console.print(f"[green]PASS[/] {len(results)} policy tests ({pack.version})")


async def publish_pack(kit: KitSettings, source: PackSource, published_by: str) -> ControlPolicy:
    """Put `source` on `control` as a `control.policy` record; running policy services switch to it."""
    event = ControlPolicy.build(
        ControlPolicyData(version=source.version, files=source.files, settings=source.settings, published_by=published_by),
        source="tidegate/cli",
    )
    await publish_control(kit, event)
    return event


@app.command()
def publish(
    directory: Path | None = DIR,
    tools: Path | None = TOOLS,
    by: str = typer.Option(None, "--by", help=BY_HELP),
    skip_tests: bool = typer.Option(False, "--skip-tests", help="Publish even without running the pack's tests."),
) -> None:
    """Validate, test, then publish the pack on `control`; policy services switch to it without a restart."""
    catalog = _catalog(tools)
    path = directory or settings().policy_dir
    source = _source(path)
    try:
        pack = compile_pack(source, catalog)
    except PackError as exc:
        fail(f"not published: {exc}")
    if not skip_tests:
        try:
            failed = [r for r in run_cases(pack, load_cases(path)) if not r.passed]
        except ValueError as exc:
            fail(f"not published: {exc}")
        if failed:
            for r in failed:
                console.print(f"[red]FAIL[/] {r.describe()}")
            fail(f"not published: {len(failed)} policy test(s) fail")
    kit = signer_settings(by)
    event = run(publish_pack(kit, source, kit.operator))
    console.print(f"published {event.data.version} ({len(source.files)} files) on {settings().topic_prefix}control")
