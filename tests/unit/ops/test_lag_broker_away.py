"""The on-call runs `tidegate lag` during the broker outage (oncall3's night): one line that says the broker does not answer.

Before: aiokafka's `Unable connect to …` once per try on stderr (14 lines), then the 7 groups each `not asked` with
`KafkaConnectionError: KafkaConnectionError: Unable to bootstrap …`, the error's type said twice, and the question that
matters (is the broker up?) left to the reader.
"""

from __future__ import annotations

from typer.testing import CliRunner

from tests.ports import free_port
from tidegate.cli import app as cli


def test_lag_with_the_broker_away_says_so_in_one_line() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there: the broker is down
    env = {"TIDEGATE_KAFKA_BOOTSTRAP": bootstrap, "COLUMNS": "200"}
    result = CliRunner().invoke(cli, ["lag", "--timeout", "1"], env=env)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: Kafka at {bootstrap}: no group could be asked (not read as Kafka login ")
    assert "KafkaConnectionError: KafkaConnectionError" not in lines[0]
    assert "is the broker up? (`tidegate infra status`)" in lines[0]
