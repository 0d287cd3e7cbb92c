"""What the CLI prints when the broker, the database URL, a file or a time it was given is wrong: one line, a non-zero exit."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import typer
from aiokafka.errors import KafkaConnectionError

from tidegate.commands._common import run
from tidegate.ops.recorded import BadTime, parse_time


def failing(exc: BaseException) -> Any:
    async def go() -> None:
        raise exc

    return go()


@pytest.mark.parametrize(
    ("exc", "code", "says"),
    [
        (KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]"), 1, "Kafka at "),
        (asyncpg.ClientConfigurationError("invalid DSN: scheme is expected"), 2, "TIDEGATE_DATABASE_URL: invalid DSN"),
        (FileNotFoundError(2, "No such file or directory", "/nowhere/x.yaml"), 1, "No such file or directory: /nowhere/x.yaml"),
        (ConnectionRefusedError(111, "Connect call failed"), 1, "Connect call failed"),
    ],
)
def test_a_failure_on_the_way_is_one_line_and_a_non_zero_exit(
    exc: BaseException, code: int, says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(typer.Exit) as exited:
        run(failing(exc))
    assert exited.value.exit_code == code
    err = capsys.readouterr().err
    assert says in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_a_time_that_is_none_of_the_forms_says_which_are() -> None:
    with pytest.raises(BadTime, match="give `now`, a duration ago"):
        parse_time("bogus")
    assert parse_time("2026-12-04T10:00:00Z").hour == 10


def test_a_bug_is_not_dressed_up_as_a_user_error() -> None:
    with pytest.raises(KeyError):
        run(failing(KeyError("a bug")))


def test_operator_commands_refuse_an_empty_window_and_a_bad_candidate_before_reading_anything(tmp_path: Any) -> None:
    """Said at once, in one line, before the broker is asked for anything (it is not even reachable here)."""
    from typer.testing import CliRunner

    from tidegate.cli import app

    env = {"TIDEGATE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "COLUMNS": "300"}
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("tenants: [")
    for args, says in [
        (["replay", "--from", "now", "--to", "1h"], "is not before --to"),
        (["whatif", "--policy", "policies/default", "--from", "now", "--to", "1h"], "is not before --to"),
        (["costs", "--from", "1h", "--to", "2h", "--no-chart"], "is not before --to"),
        (["replay", "--policy", str(tmp_path / "nowhere")], "does not compile"),
        (["whatif", "--tenant-settings", str(tmp_path / "nowhere.yaml")], "cannot read"),
        (["whatif", "--tenant-settings", str(bad_yaml)], "is not YAML"),
    ]:
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 1, (args, result.output)
        assert says in result.output, (args, result.output)
        assert "Traceback" not in result.output
