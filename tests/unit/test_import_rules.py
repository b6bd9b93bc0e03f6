"""The import rules ``./dev lint`` checks (scripts/check_imports.py): a circle is found however it is
hidden (an import inside a function, one under TYPE_CHECKING), an import of a higher layer is named
with its file and line, and the project's own package keeps both rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts.check_imports import LAYERS, check

ROOT = Path(__file__).resolve().parents[2]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "toy"


def test_a_circle_hidden_in_a_function_and_under_type_checking_is_found_with_its_lines(tmp_path: Path) -> None:
    package = write(tmp_path, {
        "toy/__init__.py": "",
        "toy/models.py": "X = 1\n\n\ndef later():\n    from toy.parameters import check\n    return check\n",
        "toy/parameters.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from toy import models\n",
        "toy/apart.py": "from toy.models import X\n",
    })
    problems = check(package)
    assert len(problems) == 1, problems
    assert problems[0].startswith("import circle: toy.models -> toy.parameters -> toy.models"), problems
    assert "models.py:5 imports toy.parameters" in problems[0] and "parameters.py:4 imports toy.models" in problems[0]


def test_a_relative_import_of_a_higher_layer_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    package = write(tmp_path, {
        "toy/__init__.py": "",
        "toy/service.py": "from toy.engine import core\n",
        "toy/engine/__init__.py": "",
        "toy/engine/core.py": "import os\n\n\ndef serve():\n    from .. import service\n    return service, os\n",
        "toy/store.py": "",
    })
    layers = (("toy.service",), ("toy.engine",))
    problems = [p for p in check(package, layers) if not p.startswith("import circle")]
    assert len(problems) == 1, problems
    assert "core.py:5: toy.engine.core imports toy.service, a higher layer" in problems[0]
    assert "(layer 1 may not import layer 0" in problems[0]
    assert check(package, ()) == [check(package, layers)[0]], "without layers only the circle is left"


def test_the_project_keeps_the_rules_and_the_lint_command_says_so() -> None:
    assert check(ROOT / "agent", LAYERS) == []
    done = subprocess.run([sys.executable, "scripts/check_imports.py"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "no circle, no upward import" in done.stdout
