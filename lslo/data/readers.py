"""Readers that turn common parallel-data formats into a `MultiwayCorpus`.

- FLORES-101 / FLORES-200 folders: `<dir>/<split>/<code>.<split>` (`dev/eng.dev`, `devtest/eng_Latn.devtest`);
  line i of every file has id "i".
- multi-way folders: `<dir>[/<split>]/<lang>.<ext>` or `<prefix>.<lang>` (`en.txt`, `train.en`), with
  optional `<lang>.ids` files (the layout `lslo data bible` writes).
- bilingual TSV: `src<TAB>tgt` per line, languages given (or named by a header line such as `en<TAB>fr`).
- JSONL: one object per line with `src`, `tgt` and either `src_lang`/`tgt_lang` or languages given;
  an optional `id` ties lines of several directions into one multi-way sentence.

`read_corpus` picks the reader. Every error names the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from lslo.data.corpus import (
    MultiwayCorpus,
    _split_folder,
    check_not_split_root,
    language_files,
    load_multiway,
    read_language_folder,
    read_lines,
    split_names,
)
from lslo.errors import LsloError
from lslo.languages import lookup, resolve

FORMATS = ("auto", "multiway", "flores", "folder", "tsv", "jsonl")


def read_flores(
    path: str | os.PathLike, split: str = "devtest", languages: Sequence[str] | None = None
) -> MultiwayCorpus:
    """A FLORES-101 or FLORES-200 split (`dev` or `devtest`); `path` is the dataset root or the split folder.

    Without `languages`, every file whose code the registry knows is read.
    """
    root = Path(path)
    folder = root if root.name == split and root.is_dir() else _split_folder(root, split)
    files = language_files(folder, suffixes=(split,))
    return read_language_folder(folder, files, languages, source=str(folder))


def read_folder(
    path: str | os.PathLike, languages: Sequence[str] | None = None, split: str | None = None
) -> MultiwayCorpus:
    """A folder of one-sentence-per-line files named `<lang>.<ext>` or `<prefix>.<lang>`.

    With `split`, reads `<path>/<split>/` when it exists, else only files named `<split>.<lang>` or
    `<lang>.<split>` in `path`.
    """
    root = Path(path)
    if split is not None and (root / split).is_dir():
        folder, files = root / split, language_files(root / split)
    else:
        folder = _split_folder(root, None)
        files = language_files(folder, split=split)
        if not files and split is not None:
            have = split_names(folder)
            there = f" (splits here: {', '.join(have)})" if have else ""
            raise LsloError(
                f"{folder}: no {split}.<lang> or <lang>.{split} files and no {split}/ folder{there}; check the split"
            )
        if not files and languages is None:
            check_not_split_root(folder)
    return read_language_folder(folder, files, languages, source=str(folder))


def _pair_languages(path: Path, languages: Sequence[str] | None) -> tuple[str, str] | None:
    if languages is None:
        return None
    if len(languages) != 2:
        raise LsloError(
            f"{path}: bilingual data needs exactly two languages (source, target), got {list(languages)}"
        )
    src, tgt = (resolve(code, f"{path}: languages") for code in languages)
    if src is tgt:
        raise LsloError(f"{path}: source and target language are both {languages[0]!r}; give two languages")
    return languages[0], languages[1]


def read_tsv(path: str | os.PathLike, languages: Sequence[str] | None = None) -> MultiwayCorpus:
    """Bilingual `src<TAB>tgt` lines; line i has id "i".

    A first line naming the two languages (`en<TAB>fr`) is a header; it is required without `languages`.
    """
    path = Path(path)
    langs = _pair_languages(path, languages)
    lines = read_lines(path)
    start = 0
    head = lines[0].split("\t") if lines else []
    header = [lookup(h.strip()) for h in head] if len(head) == 2 else [None, None]
    if langs is None:
        if None in header:
            raise LsloError(
                f"{path}: TSV has no language header (e.g. en<TAB>fr); add one or give the languages"
            )
        langs, start = (head[0].strip(), head[1].strip()), 1
        if header[0] is header[1]:
            raise LsloError(
                f"{path}:1: header names {langs[0]!r} twice; name the source and target languages"
            )
    elif header == [lookup(langs[0]), lookup(langs[1])]:
        start = 1
    rows = []
    for i, line in enumerate(lines[start:], start + 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise LsloError(
                f"{path}:{i}: expected 2 tab-separated fields (source, target), found {len(fields)}"
            )
        if not fields[0].strip() or not fields[1].strip():
            raise LsloError(f"{path}:{i}: empty source or target; remove the line or fill it in")
        rows.append((str(i), langs[0], langs[1], fields[0], fields[1]))
    if not rows:
        raise LsloError(f"{path}: no sentence pairs; the file is empty")
    return MultiwayCorpus.from_pairs(rows, source=str(path))


def read_jsonl(path: str | os.PathLike, languages: Sequence[str] | None = None) -> MultiwayCorpus:
    """JSON lines `{"src", "tgt"[, "src_lang", "tgt_lang"][, "id"]}`; blank lines are skipped.

    Lines without `src_lang`/`tgt_lang` use `languages` = (source, target). With `languages`, the corpus
    keeps only those languages.
    """
    path = Path(path)
    default = _pair_languages(path, languages) if languages is not None and len(languages) == 2 else None
    rows = []
    for i, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise LsloError(f"{path}:{i}: not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise LsloError(f"{path}:{i}: expected a JSON object with src and tgt")
        for key in ("src", "tgt"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise LsloError(f"{path}:{i}: {key!r} is missing or empty; give it as a non-empty string")
        if "src_lang" in obj or "tgt_lang" in obj:
            src_lang, tgt_lang = obj.get("src_lang"), obj.get("tgt_lang")
            for key, code in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
                if not isinstance(code, str) or lookup(code) is None:
                    raise LsloError(f"{path}:{i}: {key} {code!r} is missing or not a known language code")
        elif default is not None:
            src_lang, tgt_lang = default
        else:
            raise LsloError(
                f"{path}:{i}: no src_lang/tgt_lang; add them or give the languages (source, target)"
            )
        if lookup(src_lang) is lookup(tgt_lang):
            raise LsloError(f"{path}:{i}: source and target are both {src_lang!r}; give two languages")
        sid = str(obj["id"]) if "id" in obj else str(i)
        rows.append((sid, src_lang, tgt_lang, obj["src"], obj["tgt"]))
    if not rows:
        raise LsloError(f"{path}: no sentence pairs; the file is empty")
    corpus = MultiwayCorpus.from_pairs(rows, source=str(path))
    return corpus.subset(languages) if languages is not None else corpus


def detect_format(path: str | os.PathLike, split: str | None = None) -> str:
    """Guess the format of `path`: tsv / jsonl by extension, flores / multiway / folder by file names."""
    p = Path(path)
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix in (".tsv", ".tab"):
            return "tsv"
        if suffix in (".jsonl", ".json", ".ndjson"):
            return "jsonl"
        raise LsloError(
            f"{p}: cannot tell the format from the extension; name it .tsv or .jsonl, or give fmt"
        )
    if not p.is_dir():
        raise LsloError(f"{p}: no such file or directory; check the data path")
    folder = p / split if split is not None and (p / split).is_dir() else p
    if split is not None and any(
        lookup(f.name.rsplit(".", 1)[0]) is not None for f in folder.glob(f"*.{split}") if f.is_file()
    ):
        return "flores"
    if any(lookup(f.stem) is not None for f in folder.glob("*.txt")):
        return "multiway"
    return "folder"


def read_corpus(
    path: str | os.PathLike,
    fmt: str = "auto",
    languages: Sequence[str] | None = None,
    split: str | None = None,
) -> MultiwayCorpus:
    """Read parallel data in any supported format (see module docstring) into a `MultiwayCorpus`.

    `split` selects a sub-folder (or FLORES split); it is ignored for single-file formats (tsv, jsonl).
    """
    if fmt not in FORMATS:
        raise LsloError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path, split)
    if fmt == "tsv":
        return read_tsv(path, languages)
    if fmt == "jsonl":
        return read_jsonl(path, languages)
    if fmt == "flores":
        return read_flores(path, split or "devtest", languages)
    if fmt == "multiway":
        return load_multiway(path, languages, split)
    return read_folder(path, languages, split)
