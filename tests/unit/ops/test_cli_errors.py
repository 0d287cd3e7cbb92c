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
