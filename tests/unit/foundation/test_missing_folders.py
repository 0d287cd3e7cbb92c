"""A mistyped keys folder or tool catalog is refused at start, never a new identity or an empty catalog (platform2 finding 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from servicekit import EX_CONFIG, REPO_ROOT, CatalogError, KitSettings, ToolCatalog, service_key, settings_problems


def test_a_keys_folder_that_is_not_there_is_refused_as_a_setting_and_nothing_is_made(tmp_path: Path) -> None:
    typo = tmp_path / "typo-keys"
    with pytest.raises(ValidationError) as caught:
        service_key(KitSettings(keys_dir=typo), "policy")
    assert settings_problems(caught.value) == [
        f"TIDEGATE_KEYS_DIR: no such folder (make it and its keys with `tidegate keys init --all`) (got '{typo}')"
    ]
    assert not typo.exists()


def test_a_keys_folder_that_is_there_gets_the_services_key_on_first_start(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    key = service_key(KitSettings(keys_dir=tmp_path / "keys"), "policy")
    assert (tmp_path / "keys" / "policy" / "policy.key").is_file()
    assert (tmp_path / "keys" / "policy.pub").is_file()
    assert key.key_id.startswith("policy-")


def test_the_default_keys_folder_is_made_on_a_first_start(tmp_path: Path) -> None:
    kit = KitSettings(run_dir=tmp_path / "run")  # a fresh checkout's first `tidegate up`: `<run_dir>/keys`
    service_key(kit, "planner")
    assert (tmp_path / "run" / "keys" / "planner" / "planner.key").is_file()


def test_a_service_with_a_mistyped_keys_dir_exits_ex_config_before_it_connects(tmp_path: Path) -> None:
    typo = tmp_path / "typo-keys"
    env = os.environ | {"TIDEGATE_KEYS_DIR": str(typo), "TIDEGATE_KAFKA_BOOTSTRAP": "127.0.0.1:9"}  # nowhere
    command = [sys.executable, "-m", "tidegate.cli", "service", "run", "planner"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1].startswith("  TIDEGATE_KEYS_DIR: no such folder"), done.stderr[-2000:]
    assert not typo.exists()


def test_a_tool_catalog_folder_that_is_not_there_or_holds_no_tool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        ToolCatalog.load(tmp_path / "nonexistent")
    (tmp_path / "README.md").write_text("tools go here\n")
    with pytest.raises(CatalogError, match=f"{tmp_path} holds no tool"):
        ToolCatalog.load(tmp_path)


def test_a_service_with_an_empty_tools_dir_exits_ex_config_in_one_line(tmp_path: Path) -> None:
    env = os.environ | {"TIDEGATE_TOOLS_DIR": str(tmp_path), "TIDEGATE_KAFKA_BOOTSTRAP": "127.0.0.1:9"}  # nowhere
    command = [sys.executable, "-m", "tidegate.cli", "service", "run", "planner"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == f"  TIDEGATE_TOOLS_DIR: tool catalog directory {tmp_path} holds no tool (no *.yaml file)"


def test_the_policy_service_with_a_mistyped_policy_dir_exits_ex_config_in_one_line(tmp_path: Path) -> None:
    """It gave a 60-line traceback and exit 1, which `tidegate up` restarts for ever (the platform probe)."""
    typo = tmp_path / "policies" / "defualt"
    env = os.environ | {"TIDEGATE_POLICY_DIR": str(typo), "TIDEGATE_KAFKA_BOOTSTRAP": "127.0.0.1:9"}  # nowhere
    command = [sys.executable, "-m", "tidegate.cli", "service", "run", "policy"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == f"  TIDEGATE_POLICY_DIR: policy directory {typo} does not exist (got '{typo}')"


def test_a_misspelt_setting_is_named_with_the_one_it_looks_like_and_others_are_left_alone(tmp_path: Path) -> None:
    """`TIDEGATE_EXECUTOR_CONCURENCY=8` ran with the default concurrency and said nothing (the platform probe)."""
    env = os.environ | {
        "TIDEGATE_EXECUTOR_CONCURENCY": "8",  # a typo of TIDEGATE_EXECUTOR_CONCURRENCY
        "TIDEGATE_KAFKA_PORT": "29092",  # infra/infra.sh's, no model's: known
        "TIDEGATE_ACME_BILLING_CODE": "x",  # a deployment's own: nothing like a setting, left alone
        "TIDEGATE_POLICY_DIR": str(tmp_path / "nowhere"),  # stops the service at once, before it connects
    }
    command = [sys.executable, "-m", "tidegate.cli", "service", "run", "policy"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    warnings = [line for line in done.stderr.splitlines() if "is no setting" in line]
    assert warnings == [
        "policy: warning: TIDEGATE_EXECUTOR_CONCURENCY is no setting (ignored): did you mean TIDEGATE_EXECUTOR_CONCURRENCY?"
    ]
