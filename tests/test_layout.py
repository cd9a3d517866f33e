"""The code's shape: every function in lslo/ fits on one screen (issue 17)."""

from __future__ import annotations

import ast
from pathlib import Path

LSLO = Path(__file__).resolve().parents[1] / "lslo"
SCREEN = 60  # lines, from `def` to the function's last line (docstring included)
LONGER: dict[str, str] = {}  # "path:function" -> why it should stay longer than a screen


def test_every_function_fits_on_one_screen():
    long, checked = [], 0
    for path in sorted(LSLO.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                checked += 1
                where = f"{path.relative_to(LSLO.parent)}:{node.name}"
                if node.end_lineno - node.lineno + 1 > SCREEN and where not in LONGER:
                    long.append(f"{where} ({node.end_lineno - node.lineno + 1} lines)")
    assert checked > 100  # the package was found
    assert not long, f"split these into named steps (or say why not in LONGER): {long}"
