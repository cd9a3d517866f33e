"""The code's shape: every function in lslo/ fits on one screen (issue 17), every file holds one job (at most
`FILE_LINES` lines unless it says why), and no module imports one that imports it back."""

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


FILE_LINES = 500  # a file longer than this does several jobs: split it, or say why not
WHY_LONG = "Why this file is long:"  # a line of the module docstring that starts so gives the reason


def long_files(limit: int = FILE_LINES) -> list[str]:
    """The files of lslo/ over `limit` lines whose module docstring has no line starting with `WHY_LONG`."""
    long = []
    for path in sorted(LSLO.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > limit and not any(line.strip().startswith(WHY_LONG) for line in doc.splitlines()):
            long.append(f"{path.relative_to(LSLO.parent)} ({lines} lines)")
    return long


def test_every_file_holds_one_job():
    assert long_files(limit=10), "the check finds a long file"  # lslo/ has files over 10 lines
    long = long_files()
    assert not long, f"split these by job (or start a docstring line with {WHY_LONG!r} and say why): {long}"


ROOT = LSLO.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(name: str, path: Path, module: str | None, level: int) -> str:
    """The absolute name of `from <level dots><module> import ...` in module `name` (at `path`)."""
    if level == 0:
        return module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def import_graph(packages: tuple[str, ...] = ("lslo", "benchmarks")) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its file (function-level and relative imports included;
    those under `if TYPE_CHECKING:` are for annotations only and do not count)."""
    files = {_module_name(p): p for pkg in packages for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                       for n in ast.walk(block)}  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: not imported at run time
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(name, path, node.module, node.level)
                targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_the_projects_modules():
    graph = import_graph()
    assert "lslo.cli" in graph and "benchmarks.lslo_speed" in graph
    assert "benchmarks.bible12.runner" in graph["benchmarks.bible12.regime"]  # a relative import (`from . import`)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the finder finds one
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_import_cycle_among_the_benchmarks_modules():
    """The benchmarks alone (their relative imports, `from . import ...`, included), apart from the package's."""
    graph = import_graph(("benchmarks",))
    assert {"benchmarks.bible12.analysis", "benchmarks.bible12.runner"} <= graph["benchmarks.bible12.regime"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
