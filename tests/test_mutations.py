"""benchmarks/mutations.py: its mutants still apply to the code, and a run tells a caught mutant from a survivor."""

import subprocess
from pathlib import Path

import pytest

from benchmarks import mutations
from benchmarks.mutations import MUTANTS, Mutant, MutantError, clone, mutate, run_mutant

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("m", MUTANTS, ids=lambda m: m.key)
def test_every_mutant_still_applies_to_the_source(m):
    text = (ROOT / m.file).read_text(encoding="utf-8")
    assert mutate(text, m) != text
    assert all((ROOT / t).is_file() for t in m.tests if t.startswith("tests/"))


def test_a_mutant_whose_text_moved_is_an_error_naming_it():
    m = Mutant("gone", "c", "lslo/layer.py", "no such line", "x", ("tests",))
    with pytest.raises(MutantError, match="mutant gone: its text occurs 0 times in lslo/layer.py"):
        mutate("some code", m)
    with pytest.raises(MutantError, match="occurs 2 times"):
        mutate("a\na\n", Mutant("twice", "c", "f.py", "a", "b", ("tests",)))
    assert mutate("a\na\n", Mutant("every", "c", "f.py", "a", "b", ("tests",), every=True)) == "b\nb\n"


def test_a_run_tells_caught_from_survived_and_restores_the_file(tmp_path):
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "mod.py").write_text("def double(x):\n    return 2 * x\n\n\ndef name():\n    return 'lslo'\n")
    (repo / "tests" / "test_mod.py").write_text(
        "from mod import double, name\n\n\ndef test_double():\n    assert double(3) == 6\n\n\n"
        "def test_name():\n    assert isinstance(name(), str)\n"
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    (repo / "mod.py").write_text((repo / "mod.py").read_text() + "\n\ndef extra():\n    return 1\n")  # uncommitted

    tree = tmp_path / "tree"
    assert clone(tree, worktree=True, root=repo).endswith("+worktree")
    assert "def extra" in (tree / "mod.py").read_text()
    before = (tree / "mod.py").read_text()
    caught = run_mutant(tree, Mutant("dbl", "doubles", "mod.py", "2 * x", "3 * x", ("tests/test_mod.py",)))
    survived = run_mutant(tree, Mutant("nm", "names", "mod.py", "'lslo'", "'other'", ("tests/test_mod.py",)))
    broken = run_mutant(tree, Mutant("syntax", "parses", "mod.py", "def double(x):", "def double(x)", ("tests/test_mod.py",)))
    assert caught["caught"] and caught["failed_test"] == "tests/test_mod.py::test_double"
    assert not survived["caught"] and survived["exit"] == 0 and survived["failed_test"] is None
    assert not broken["caught"] and broken["exit"] == 2  # collection error: not counted as caught
    assert (tree / "mod.py").read_text() == before  # every mutant reverted
    md = mutations.render({"command": "c", "machine": {"cpu": "x", "cpu_cores": 2, "torch": "t", "date": "d"},
                           "commit": "abc", "mutants": [caught, survived]})  # fmt: skip
    assert "**1 of 2 caught.**" in md and "| `nm` | names | `tests/test_mod.py` | **no** (exit 0) |" in md


def test_an_unknown_only_key_is_a_one_line_error(capsys):
    assert mutations.main(["--only", "nope", "--no-write"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--only nope: no such mutant; known: merge-scale" in err
