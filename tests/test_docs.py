"""The README's and the guides' commands run as written: every `lslo` line parses with the real CLI, every
file, config, make target and script they name exists, and the README's Python example runs against the
shipped base."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def shell_lines(block: str) -> list[str]:
    """The block's commands: continuations joined, comments and prompts dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def all_commands() -> list[tuple[str, str]]:
    return [(page.name, line) for page in PAGES for block in code_blocks(page.read_text(encoding="utf-8"), "bash")
            for line in shell_lines(block)]  # fmt: skip


def lslo_argv(line: str) -> list[str] | None:
    """The arguments after `lslo` (or `-m lslo.cli`) in a command line, without shell redirections."""
    words = shlex.split(line.split("<")[0].split("|")[0])
    for i, word in enumerate(words):
        if word == "lslo" or (word == "lslo.cli" and i and words[i - 1] == "-m"):
            return words[i + 1:]
    return None


def test_pages_have_commands():
    commands = all_commands()
    assert len(PAGES) >= 5 and len(commands) > 30
    assert ("README.md", "make demo") in commands and ("README.md", "make test") in commands


@pytest.mark.parametrize("page,line", all_commands())
def test_every_command_parses_and_names_what_exists(page, line):
    from lslo.cli import build_parser

    argv = lslo_argv(line)
    if argv is not None:
        args = build_parser().parse_args(argv)  # an unknown flag or choice raises LsloError
        for name in ("config", "data"):
            value = getattr(args, name, None)
            if isinstance(value, str) and value.startswith(("configs/", "base/")):
                assert (ROOT / value).exists(), f"{page}: {line}: {value} does not exist"
    words = shlex.split(line.split("<")[0])
    if words[:1] == ["make"]:
        targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
        assert all(w in targets for w in words[1:] if "=" not in w), f"{page}: {line}: no such make target"
    for word in words:
        if re.match(r"^(benchmarks|tests|configs|base)/[\w./-]+$", word):
            assert (ROOT / word).exists(), f"{page}: {line}: {word} does not exist"


def test_the_readme_python_example_runs_against_the_shipped_base(tmp_path):
    example = code_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "python")[0]
    assert 'from_pretrained("base/bible12-small")' in example
    (tmp_path / "base").symlink_to(ROOT / "base")
    done = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "lslo-adapter" / "adapter_model.safetensors").is_file()
