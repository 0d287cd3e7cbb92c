"""Run one stand-in by hand, to try a connector (or your own code with the vendor's SDK) against it.

    python -m standins zendesk|github|salesforce|bigquery|stripe [--port N] [--token T] [--empty]

Each starts on 127.0.0.1 with a little sample data (`--empty`: none) and prints its base URL, the credential it
accepts, what the sample holds and the `tidegate connectors` lines that point a tenant at it; it serves until
Ctrl-C (or SIGTERM). State lives in memory: a restart starts over. `stripe` runs Stripe's own stripe-mock (built with
`go install` into .tidegate/bin on first use), which accepts any `sk_test_` key and keeps no state.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STANDINS", "Running", "main"]

_STATE = Path(".tidegate") / "standins"
_ORDERS = "SELECT order_id, amount FROM `acme-analytics.support.orders` WHERE customer_id = @customer"


@dataclass
class Running:
    """What a developer needs of a stand-in once it listens: where, with what credential, holding what."""

    name: str
    url: str
    credential: str
    settings: dict[str, str] = field(default_factory=dict)  # the account settings `tidegate connectors enable` takes
    sample: list[str] = field(default_factory=list)  # what the sample data holds, one line each
    tools: list[str] = field(default_factory=list)  # write tools worth enabling to try it

    def lines(self, tenant: str = "acme") -> list[str]:
        """What is printed once it listens (the URL first, so a script can read it)."""
        sets = "".join(f" --set {shlex.quote(f'{k}={v}')}" for k, v in self.settings.items())  # a path with a space stays one word
        tools = "".join(f" --tool {t}" for t in self.tools)
        return [
            f"{self.name} stand-in listening at {self.url}",
            f"credential: {self.credential}",
            *(f"sample: {line}" for line in self.sample),
            "connect a tenant to it (the executor calls it for that tenant from then on):",
            f"  tidegate connectors enable {self.name} --tenant {tenant}{tools}{sets}",
            f"  printf '%s' {shlex.quote(self.credential)} | tidegate connectors set-credential {self.name} --tenant {tenant}",
            "state lives in memory; Ctrl-C stops it",
        ]


Serve = Callable[[argparse.Namespace], Any]  # an async context manager yielding `Running`


class _Served:
    """Serve an ASGI stand-in with uvicorn (HTTPS when `tls`), yielding what `describe` makes of its URL."""

    def __init__(self, app: Any, describe: Callable[[str], Running], tls: tuple[Path, Path] | None = None, port: int = 0) -> None:
        self.app, self.describe, self.tls, self.port = app, describe, tls, port
        self._cm: Any = None

    async def __aenter__(self) -> Running:
        from standins._serve import serve_app

        self._cm = serve_app(self.app, port=self.port, tls=self.tls)
        url = await self._cm.__aenter__()
        return self.describe(url)

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)


def _zendesk(args: argparse.Namespace) -> _Served:
    from standins.zendesk import ZendeskStandIn

    standin = ZendeskStandIn(email=args.email, token=args.token or "zd-token")
    sample = []
    if not args.empty:
        standin.add_ticket(1, "Refund for order O-1001", "I was charged twice for order O-1001, please refund one.")
        sample = ["ticket 1 (open, from the customer, one comment)", 'try zendesk_get_ticket {"ticket_id": 1}']

    def describe(url: str) -> Running:
        standin.url = url
        return Running(
            "zendesk",
            url,
            standin.token,
            {"base_url": url, "email": standin.email},
            sample,
            ["zendesk_tag_ticket", "zendesk_add_internal_note"],
        )

    return _Served(standin.app, describe, port=args.port)


def _github(args: argparse.Namespace) -> _Served:
    from standins.github import GitHubStandIn

    standin = GitHubStandIn(token=args.token or "ghp_standin")
    sample = []
    if not args.empty:
        standin.add_repo("acme/web", {"README.md": "# web\n", "src/app.py": "print('hi')\n"})
        standin.add_branch("acme/web", "fix/typo", {"README.md": "# Web\n"})
        standin.add_issue("acme/web", 7, "Typo in README", "The title says web, not Web.", ("+1",))
        sample = [
            "repository acme/web (branch main; topic branch fix/typo changing README.md); issue 7 with one comment",
            'try github_get_issue {"repo": "acme/web", "number": 7}',
        ]

    def describe(url: str) -> Running:
        standin.url = url
        return Running("github", url, standin.token, {"base_url": url}, sample, ["github_comment"])

    return _Served(standin.app, describe, port=args.port)


def _salesforce(args: argparse.Namespace) -> _Served:
    from standins._tls import self_signed
    from standins.salesforce import SalesforceStandIn

    standin = SalesforceStandIn(token=args.token or "00Dstandin!session")
    sample = []
    if not args.empty:
        account = standin.add("Account", Name="Acme Corp", Description="A sample account")
        deal = standin.add("Opportunity", Name="Acme renewal", StageName="Qualification", Amount=12000.0, AccountId=account)
        sample = [
            f"Account {account} (Acme Corp); Opportunity {deal} (12000 USD, Qualification)",
            f'try salesforce_get_record {{"object": "Account", "record_id": "{account}"}}',
        ]
    crt, key = self_signed(args.state_dir / "salesforce")  # simple-salesforce builds https:// URLs: a certificate of our own

    def describe(url: str) -> Running:
        standin.url = url
        settings = {"instance_url": url, "ca_bundle": str(crt.resolve())}
        return Running("salesforce", url, standin.token, settings, sample, ["salesforce_add_task"])

    return _Served(standin.app, describe, tls=(crt, key), port=args.port)


def _bigquery(args: argparse.Namespace) -> _Served:
    from standins.bigquery import BigQueryStandIn, Table

    standin = BigQueryStandIn(token=args.token or "ya29.standin")
    sample = []
    if not args.empty:
        rows = [{"order_id": f"O-{n}", "customer_id": f"cus_{1000 + n % 3}", "amount": 10.5 * n} for n in range(1, 7)]
        standin.tables["support.orders"] = Table({"order_id": "STRING", "customer_id": "STRING", "amount": "FLOAT"}, rows, 200 * 1024**2)
        sample = [
            f"table {standin.project}.support.orders (order_id, customer_id, amount; 6 rows)",
            f'try bigquery_query {{"sql": "{_ORDERS}", "params": {{"customer": "cus_1001"}}}}',
        ]

    def describe(url: str) -> Running:
        standin.url = url
        return Running("bigquery", url, standin.token, {"project": standin.project, "base_url": url, "datasets": "support"}, sample)

    return _Served(standin.app, describe, port=args.port)


class _Stripe:
    """Stripe's own stripe-mock as a child process (stateless: it answers every charge alike and keeps no idempotency key)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mock: Any = None

    async def __aenter__(self) -> Running:
        from servicekit import REPO_ROOT
        from standins.stripe_mock import StripeMock, ensure_stripe_mock

        try:
            binary = await asyncio.to_thread(ensure_stripe_mock, REPO_ROOT / ".tidegate" / "bin")
        except Exception as exc:  # no Go, no network for `go install`: one line, what to do
            raise SystemExit(
                f"error: stripe-mock could not be built ({exc}); install Go (https://go.dev/dl/) or put a stripe-mock "
                "binary on PATH, then run this again"
            ) from None
        self.mock = StripeMock(binary)
        if self.args.port:
            self.mock.port, self.mock.url = self.args.port, f"http://127.0.0.1:{self.args.port}"
        await asyncio.to_thread(self.mock.start)
        url = self.mock.url
        sample = [
            "every charge is 1.00 USD, whatever its id (stripe-mock answers from Stripe's OpenAPI spec, and keeps nothing)",
            'try stripe_get_charge {"charge_id": "ch_standin"}',
        ]
        return Running("stripe", url, self.args.token or "sk_test_standin", {"base_url": url}, sample, ["stripe_refund"])

    async def __aexit__(self, *exc: object) -> None:
        if self.mock is not None:
            await asyncio.to_thread(self.mock.stop)


STANDINS: dict[str, tuple[Serve, str]] = {
    "zendesk": (_zendesk, "Zendesk Support REST API v2 (ours): tickets, comments, tags; email/token basic auth or bearer"),
    "github": (_github, "GitHub REST API (ours): contents, issues and comments, compare, pulls; a bearer token"),
    "salesforce": (_salesforce, "Salesforce REST sObjects (ours), over HTTPS with a self-signed certificate; a session id"),
    "bigquery": (_bigquery, "BigQuery jobs and query results (ours), dry runs and bytes billed; an OAuth access token"),
    "stripe": (lambda args: _Stripe(args), "Stripe's own stripe-mock (built with `go install` on first use); any sk_test_ key"),
}


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line: `python -m standins NAME …`, or `python -m standins.<module> …` for one (`only`)."""
    top = argparse.ArgumentParser(
        prog=f"python -m standins.{only}" if only else "python -m standins",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="It prints its base URL, the credential it accepts and the `tidegate connectors` lines to use.",
    )
    if only is None:
        sub = top.add_subparsers(dest="name", required=True, metavar="NAME", help=", ".join(STANDINS))
        for name, (_, what) in STANDINS.items():
            _options(sub.add_parser(name, help=what, description=what), name)
    else:
        top.set_defaults(name=only)
        _options(top, only)
    return top


def _options(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (default: a free one, printed).")
    p.add_argument("--token", default=None, help="The credential it accepts (default: printed).")
    p.add_argument("--tenant", default="acme", help="Tenant named in the printed `tidegate connectors` lines.")
    if name == "zendesk":
        p.add_argument("--email", default="agent@example.com", help="The agent's email of the API token (basic auth).")
    if name == "salesforce":
        p.add_argument("--state-dir", type=Path, default=_STATE, help="Where its self-signed certificate is written.")
    if name != "stripe":
        p.add_argument("--empty", action="store_true", help="Start with no sample data.")


async def _run(args: argparse.Namespace, ready: Callable[[Running], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serve, _ = STANDINS[args.name]
    async with serve(args) as running:
        ready(running)
        await stop.wait()


def main(argv: Sequence[str] | None = None, *, only: str | None = None) -> None:
    """Parse the command line, start the stand-in, print how to use it, serve until stopped."""
    args = parser(only).parse_args(argv)
    args.empty = getattr(args, "empty", False)

    def ready(running: Running) -> None:
        print("\n".join(running.lines(args.tenant)), flush=True)

    if args.port:  # uvicorn would exit from inside its task with a traceback: say it first, in one line
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", args.port))
            except OSError as exc:
                sys.exit(f"error: the {args.name} stand-in cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); give another --port")
    asyncio.run(_run(args, ready))


if __name__ == "__main__":
    main()
