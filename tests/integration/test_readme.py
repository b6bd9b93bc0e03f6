"""The README's "Running scenarios" section, pasted into a shell as it is: the stack, the sim, the
agent and the worker come up, a scenario runs to its verdict, the kill switch and its release answer,
and the teardown leaves nothing running."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_the_running_scenarios_section_works_pasted_as_is(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running scenarios", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the section has its commands"
    script = block.group(1)
    assert "devstack down" in script and "sim down" in script, "it tears down what it started"
    shutil.rmtree("/tmp/sim", ignore_errors=True)
    stack = tmp_path / "devstack"
    done = subprocess.run(["bash", "-c", "set -e -o pipefail; set -m\n" + script], cwd=ROOT, capture_output=True,
                          text=True, timeout=540, env={**_clean_env(), "COORDINATOR_DEVSTACK_DIR": str(stack)})
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert re.search(r"^PASSED: ", done.stdout, re.M), out[-4000:]
    assert "halted" in out.lower() and "stack in" in out and "stopped" in out, out[-3000:]
    left = subprocess.run(["pgrep", "-af", f"{stack}|/tmp/sim"], capture_output=True, text=True).stdout
    assert left == "", f"left running: {left}"


def _clean_env() -> dict[str, str]:
    """The caller's environment without the test run's own stack settings: a user's shell."""
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("COORDINATOR_", "SIM_", "PYTEST"))}
