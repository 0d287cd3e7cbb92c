"""`make test`'s recipe, run by bash against stand-ins of what it calls (never `make test` itself: it takes the default ports).

The CI owner's check: the adapters' venvs and offline tests (~2.2 min on CI) ran only after the unit suite (~9 min on one
core of two), one after the other, though neither needs the other nor the broker. They now run beside it; a failure of
either still fails the run, and the adapters' output is printed whole once both are done.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
UNIT_S = 1.0  # how long the stand-in unit suite takes


def _recipe() -> str:
    """The `test:` target's recipe as the shell gets it: make's variables given stand-ins, `$$` made `$`."""
    text = (ROOT / "Makefile").read_text()
    found = re.search(r"^test:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert found is not None, "the Makefile has no test target"
    lines = [line[1:].removeprefix("@") for line in found.group(1).splitlines()]
    script = "\n".join(lines).replace("\\\n", "\n")
    for var, value in {"BIN": "$STUBS", "MAKE": "$STUBS/make", "TEST_WORKERS": "0", "LIVE_TESTS": "live"}.items():
        script = script.replace(f"$({var})", value)
    return script.replace("$$", "$")


def _stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def _stage(tmp_path: Path, *, unit_rc: int = 0, adapters_rc: int = 0, adapters_s: float = 0.2) -> dict[str, str]:
    """Stand-ins in a scratch folder (each logs `<event> <ns>` to `events`); the recipe's environment."""
    stubs, log = tmp_path / "stubs", tmp_path / "events"
    stamp = f'echo "$1 $(date +%s%N)" >> {log}'
    _stub(stubs / "tidegate", "exit 0\n")
    _stub(stubs / "pytest", f'if [ "$1" = tests/unit ]; then echo "unit-start $(date +%s%N)" >> {log}; sleep {UNIT_S}; '
          f'echo "unit-end $(date +%s%N)" >> {log}; exit {unit_rc}; fi\nexit 0\n')  # fmt: skip
    _stub(stubs / "make", f'{stamp.replace("$1", "adapters-start")}\necho adapters said this\nsleep {adapters_s}\n'
          f'{stamp.replace("$1", "adapters-end")}\nexit {adapters_rc}\n')  # fmt: skip
    _stub(tmp_path / "tests/e2e/approval/browser_deps.sh", "exit 0\n")
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "test_x.py").write_text("")
    return {"PATH": "/usr/bin:/bin", "STUBS": str(stubs)}


def _events(tmp_path: Path) -> list[str]:
    log = tmp_path / "events"
    return log.read_text().splitlines() if log.exists() else []


def _run(tmp_path: Path, *, unit_rc: int = 0, adapters_rc: int = 0) -> tuple[int, str, list[str]]:
    """The recipe in a scratch folder; its exit code, its output, and what each stand-in logged."""
    env = _stage(tmp_path, unit_rc=unit_rc, adapters_rc=adapters_rc)
    done = subprocess.run(["bash", "-c", _recipe()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr, _events(tmp_path)


def test_the_adapters_tests_run_beside_the_unit_suite_not_after_it(tmp_path: Path) -> None:
    rc, output, events = _run(tmp_path)
    assert rc == 0, output
    at = {line.split()[0]: int(line.split()[1]) for line in events}
    assert {"unit-start", "unit-end", "adapters-start", "adapters-end"} <= at.keys(), events
    assert at["adapters-start"] < at["unit-end"], f"the adapters waited for the unit suite: {events}"
    assert "adapters said this" in output  # their output is shown, not lost in a file


@pytest.mark.parametrize(("unit_rc", "adapters_rc"), [(1, 0), (0, 2)])
def test_a_failure_of_either_fails_the_run(tmp_path: Path, unit_rc: int, adapters_rc: int) -> None:
    rc, output, _ = _run(tmp_path, unit_rc=unit_rc, adapters_rc=adapters_rc)
    assert rc == (unit_rc or adapters_rc), output


def test_ctrl_c_during_the_unit_suite_stops_the_adapters_too(tmp_path: Path) -> None:
    """A developer's Ctrl-C: a command run in the background by a script ignores it, so the recipe stops the adapters itself."""
    env = _stage(tmp_path, adapters_s=3 * UNIT_S)
    recipe = subprocess.Popen(["bash", "-c", _recipe()], cwd=tmp_path, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not {"unit-start", "adapters-start"} <= {e.split()[0] for e in _events(tmp_path)}:
            assert time.monotonic() < deadline, f"the unit suite and the adapters never both started: {_events(tmp_path)}"
            time.sleep(0.02)
        os.killpg(recipe.pid, signal.SIGINT)  # the terminal sends it to the whole foreground group
        recipe.wait(timeout=30)
        time.sleep(4 * UNIT_S)  # past the adapters' own end
    finally:
        recipe.kill()
    events = [e.split()[0] for e in _events(tmp_path)]
    assert "adapters-start" in events
    assert "adapters-end" not in events, f"the adapters ran on after Ctrl-C: {events}"
