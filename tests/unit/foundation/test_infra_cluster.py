"""`infra up --brokers 3`: the script's node layout and its refusals, and the topics' replication (no broker started)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from servicekit import REPO_ROOT
from servicekit.topics_admin import replication_factor

SCRIPT = REPO_ROOT / "infra" / "infra.sh"


def infra(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"TIDEGATE_INFRA_DIR": str(tmp_path), "TIDEGATE_KAFKA_PORT": "40100", "TIDEGATE_PG_PORT": "40190"}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def formatted_for(tmp_path: Path, nodes: int) -> None:
    (tmp_path / "kafka").mkdir(parents=True)
    (tmp_path / "kafka" / "nodes").write_text(f"{nodes}\n")


def test_topics_get_three_replicas_on_a_cluster_and_one_per_broker_below() -> None:
    assert [replication_factor(n) for n in (1, 2, 3, 5)] == [1, 2, 3, 3]


def test_status_of_a_three_node_storage_names_each_node_and_its_port(tmp_path: Path) -> None:
    formatted_for(tmp_path, 3)
    done = infra(tmp_path, "status")
    assert done.returncode == 3  # nothing runs
    for port in ("40100", "40102", "40104"):
        assert f"127.0.0.1:{port}" in done.stdout
    assert str(tmp_path / "kafka" / "node-3" / "logs") in done.stdout


def test_up_refuses_another_node_count_than_the_storage_was_formatted_for(tmp_path: Path) -> None:
    formatted_for(tmp_path, 3)
    done = infra(tmp_path, "up", "--brokers", "1")
    assert done.returncode != 0
    assert "formatted for 3 node(s), not 1" in done.stderr
    assert "infra reset --yes" in done.stderr


def test_up_refuses_a_broker_count_that_is_not_a_number(tmp_path: Path) -> None:
    done = infra(tmp_path, "up", "--brokers", "three")
    assert done.returncode != 0
    assert "--brokers must be a number" in done.stderr


def test_the_files_the_script_writes_run_no_command_of_their_text() -> None:
    """An unquoted here-document expands `…` and $(…): a comment naming a command in the broker's settings ran it.

    `tidegate infra rotate-login` written in backquotes in server.properties' comment ran at every `infra up`
    (`tidegate: command not found` where it is not on PATH; the command itself where it is).
    """
    script = SCRIPT.read_text().splitlines()
    expanding = False
    for number, line in enumerate(script, 1):
        if expanding and line.strip() in {"EOF", "SQL", "PROPS"}:
            expanding = False
        elif expanding and line.lstrip().startswith("#"):
            text = line.replace("\\`", "").replace("\\$(", "")  # escaped: written as they stand
            assert not any(s in text for s in ("`", "$(")), f"infra.sh:{number} runs a command inside a file it writes: {line}"
        if "<<" in line and "<<'" not in line and '<<"' not in line and "<<<" not in line:
            expanding = True
