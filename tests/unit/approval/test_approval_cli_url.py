"""`tidegate approvals` calls the approval service where this deployment's settings say it listens, not a fixed 127.0.0.1:8081."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tidegate.commands import approvals
from tidegate.demo import run as demo


def _called(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, list[str], str]:
    """Runs `tidegate approvals …` with the HTTP call recorded; the exit code, the URLs it called, and what it printed."""
    urls: list[str] = []

    def request(method: str, url: str, **kw: Any) -> httpx.Response:
        urls.append(url)
        return httpx.Response(200, json=[], request=httpx.Request(method, url))

    monkeypatch.setattr(httpx, "request", request)
    monkeypatch.setenv("TIDEGATE_APPROVER_TOKEN", "tok")
    result = CliRunner().invoke(approvals.app, list(args))
    return result.exit_code, urls, result.output


@pytest.fixture(autouse=True)
def _no_approval_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "PUBLIC_URL", "HTTP_HOST", "HTTP_PORT"):
        monkeypatch.delenv(f"TIDEGATE_APPROVAL_{name}", raising=False)


def test_the_default_url_is_the_port_the_service_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_APPROVAL_HTTP_PORT", "18181")
    assert _called(monkeypatch, "list")[:2] == (0, ["http://127.0.0.1:18181/api/v1/approvals"])


def test_a_service_on_every_address_is_called_on_loopback_and_a_public_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_APPROVAL_HTTP_HOST", "0.0.0.0")
    assert _called(monkeypatch, "list")[1] == ["http://127.0.0.1:8081/api/v1/approvals"]
    monkeypatch.setenv("TIDEGATE_APPROVAL_HTTP_HOST", "::")
    assert _called(monkeypatch, "list")[1] == ["http://[::1]:8081/api/v1/approvals"]
    monkeypatch.setenv("TIDEGATE_APPROVAL_PUBLIC_URL", "https://approve.acme.example")
    assert _called(monkeypatch, "list")[1] == ["https://approve.acme.example/api/v1/approvals"]


def test_url_and_its_variable_still_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_APPROVAL_HTTP_PORT", "18181")
    assert _called(monkeypatch, "list", "--url", "http://elsewhere:9")[1] == ["http://elsewhere:9/api/v1/approvals"]
    monkeypatch.setenv("TIDEGATE_APPROVAL_URL", "http://other:7")
    assert _called(monkeypatch, "list")[1] == ["http://other:7/api/v1/approvals"]


def test_any_free_port_cannot_be_guessed_so_it_is_said_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_APPROVAL_HTTP_PORT", "0")
    monkeypatch.setenv("COLUMNS", "400")
    code, urls, output = _called(monkeypatch, "list")
    assert (code, urls) == (2, [])
    assert "TIDEGATE_APPROVAL_HTTP_PORT is 0" in output
    assert "--url" in output


def test_the_demo_prints_an_approve_command_for_this_deployments_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_APPROVAL_HTTP_PORT", "18181")
    line = demo._approve_hint().format(approval_id="ap-1")
    assert line == "tidegate approvals approve ap-1 --url http://127.0.0.1:18181"
