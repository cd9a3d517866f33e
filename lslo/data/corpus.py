"""`MultiwayCorpus`: sentences per language keyed by sentence id, and the on-disk multi-way folder.

Two languages form a parallel direction on the ids they share, so one object holds a fully aligned
multi-way test set, a pretraining set where each language holds a different subset of ids, or bilingual
pairs that are not multi-way at all. Languages are named as they were given (`en`, `pol_Latn`: a FLORES-200
folder's languages keep their FLORES-200 codes); every method accepts any code style (`eng`, `eng_Latn`).

On disk (written by `write_multiway`, read by `load_multiway`)::

    <dir>/<split>/<lang>.txt   one sentence per line
    <dir>/<split>/<lang>.ids   the matching sentence ids, one per line (optional; without them
                               all files must have the same line count and line i has id "i")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lslo.errors import LsloError
from lslo.io import write_text
from lslo.languages import canonical, lookup, resolve


def display_code(code: str) -> str:
    """A user's code as lslo echoes it: as written, less a token's underscores (`__en__` -> `en`)."""
    code = code.strip()
    return code[2:-2] if len(code) > 4 and code.startswith("__") and code.endswith("__") else code


class MultiwayCorpus:
    """Sentences per language, each under an id; `pairs(a, b)` joins two languages on shared ids."""

    def __init__(
        self,
        sentences: Mapping[str, Sequence[str]],
        ids: Mapping[str, Sequence[str]] | None = None,
        source: str = "corpus",
    ) -> None:
        """`sentences[lang][i]` has id `ids[lang][i]` (default: "1", "2", ... for every language)."""
        self.source = source
        self._data: dict[str, dict[str, str]] = {}  # canonical code -> id -> sentence
        self._names: dict[str, str] = {}  # canonical code -> the code as given
        for code, sents in sentences.items():
            lang = canonical(code)
            self._names[lang] = display_code(code)
            if lang in self._data:
                raise LsloError(f"{source}: language {code!r} is given twice; keep one")
            lang_ids = [str(i) for i in range(1, len(sents) + 1)] if ids is None else ids[code]
            if len(lang_ids) != len(sents):
                raise LsloError(
                    f"{source}: language {code!r} has {len(sents)} sentences but {len(lang_ids)} ids; "
                    "give one id per sentence"
                )
            table: dict[str, str] = {}
            for sid, sent in zip(lang_ids, sents, strict=True):
                sid = str(sid)
                if sid in table:
                    raise LsloError(f"{source}: language {code!r} has id {sid!r} twice; ids must be unique")
                table[sid] = sent
            self._data[lang] = table

    @classmethod
    def from_pairs(
        cls, rows: Iterable[tuple[str, str, str, str, str]], source: str = "corpus"
    ) -> MultiwayCorpus:
        """Build from `(id, src_lang, tgt_lang, src, tgt)` rows (bilingual or many-direction data).

        An id seen again for the same language must carry the same sentence.
        """
        sents: dict[str, list[str]] = {}
        ids: dict[str, list[str]] = {}
        seen: dict[tuple[str, str], str] = {}
        names: dict[str, str] = {}  # canonical -> the code as first written
        for sid, src_lang, tgt_lang, src, tgt in rows:
            for code, text in ((src_lang, src), (tgt_lang, tgt)):
                lang = names.setdefault(canonical(code), display_code(code))
                old = seen.get((lang, sid))
                if old is None:
                    seen[lang, sid] = text
                    sents.setdefault(lang, []).append(text)
                    ids.setdefault(lang, []).append(sid)
                elif old != text:
                    raise LsloError(
                        f"{source}: id {sid!r} has two different {lang!r} sentences; give each sentence its own id"
                    )
        return cls(sents, ids, source=source)

    # -- queries -------------------------------------------------------------------------------
    @property
    def languages(self) -> list[str]:
        """The languages held, named as given, in insertion order."""
        return [self._names[lang] for lang in self._data]

    def _table(self, code: str) -> dict[str, str]:
        lang = resolve(code, self.source)
        key = lang.m2m or lang.flores200 or lang.flores101
        if key not in self._data:
            raise LsloError(
                f"{self.source}: no {code!r} sentences (languages held: {', '.join(self.languages) or 'none'})"
            )
        return self._data[key]  # type: ignore[index]

    def __contains__(self, code: object) -> bool:
        lang = lookup(code) if isinstance(code, str) else None
        return lang is not None and (lang.m2m or lang.flores200 or lang.flores101) in self._data

    def ids(self, lang: str) -> list[str]:
        return list(self._table(lang))

    def sentences(self, lang: str) -> list[str]:
        return list(self._table(lang).values())

    def sentence(self, lang: str, sid: str) -> str:
        return self._table(lang)[sid]

    def __len__(self) -> int:
        """Number of distinct sentence ids over all languages."""
        return len(set().union(*(t.keys() for t in self._data.values()))) if self._data else 0

    def pairs(self, src: str, tgt: str) -> list[tuple[str, str]]:
        """(source, target) sentences on the ids both languages hold, in the source's order."""
        a, b = self._table(src), self._table(tgt)
        return [(text, b[sid]) for sid, text in a.items() if sid in b]

    def shared_ids(self, src: str, tgt: str) -> list[str]:
        b = self._table(tgt)
        return [sid for sid in self._table(src) if sid in b]

    def directions(self) -> list[tuple[str, str]]:
        """All ordered pairs of different languages sharing at least one id."""
        keys = {lang: set(t) for lang, t in self._data.items()}
        name = self._names
        return [(name[a], name[b]) for a in self._data for b in self._data if a != b and not keys[a].isdisjoint(keys[b])]

    def aligned_ids(self) -> list[str]:
        """Ids held by every language, in the first language's order."""
        if not self._data:
            return []
        tables = list(self._data.values())
        return [sid for sid in tables[0] if all(sid in t for t in tables[1:])]

    def is_aligned(self) -> bool:
        """True when every language holds the same ids in the same order."""
        orders = [list(t) for t in self._data.values()]
        return all(o == orders[0] for o in orders[1:])

    def subset(self, languages: Iterable[str]) -> MultiwayCorpus:
        """A corpus with only `languages` (any code style; each must be held)."""
        sents = {code: self.sentences(code) for code in languages}
        return MultiwayCorpus(sents, {code: self.ids(code) for code in sents}, source=self.source)

    def counts(self) -> dict[str, int]:
        return {self._names[lang]: len(t) for lang, t in self._data.items()}

    def __repr__(self) -> str:
        return f"MultiwayCorpus({self.source!r}, {self.counts()})"


# -- reading and writing text files ----------------------------------------------------------------
def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file split on "\\n" only (a sentence may hold U+2028 and the like)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LsloError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise LsloError(f"{path}: cannot read ({e.strerror}); check the path") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LsloError(f"{path}:{line}: not valid UTF-8; convert the file to UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def check_nonempty(path: Path, lines: Sequence[str]) -> None:
    if not lines:
        raise LsloError(f"{path}: the file has no sentences; fill it or leave the language out")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise LsloError(f"{path}:{i}: empty line; remove it (and its id) or fill in the sentence")


def language_files(
    folder: Path, suffixes: Sequence[str] | None = None, split: str | None = None
) -> dict[str, Path]:
    """Map language (the code as the file names it) -> file for the files `<lang>.<ext>` or `<prefix>.<lang>` in `folder`.

    `suffixes` restricts `<lang>.<ext>` files to those extensions; `split` keeps only `<lang>.<split>`
    and `<split>.<lang>` files; `.ids` files are never returned.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or "." not in path.name:
            continue
        stem, ext = path.name.rsplit(".", 1)
        if ext == "ids":
            continue
        if lookup(stem) is not None and (suffixes is None or ext in suffixes) and split in (None, ext):
            lang = stem
        elif suffixes is None and lookup(ext) is not None and split in (None, stem):
            lang = ext
        else:
            continue
        same = next((code for code in found if canonical(code) == canonical(lang)), None)
        if same is not None:
            raise LsloError(f"{folder}: {found[same].name} and {path.name} hold the same language; keep one")
        found[lang] = path
    return found


def _split_folder(path: Path, split: str | None) -> Path:
    if not path.exists():
        raise LsloError(f"{path}: no such directory; check the data path")
    if not path.is_dir():
        raise LsloError(f"{path}: not a directory; give the folder that holds <lang>.txt files")
    if split is None:
        return path
    folder = path / split
    if not folder.is_dir():
        have = split_names(path)
        raise LsloError(f"{folder}: no split {split!r} here (splits: {', '.join(have) or 'none'}); pick one")
    return folder


def split_names(folder: Path) -> list[str]:
    """The sub-folders of `folder` (its splits, in a data set root), sorted, hidden ones left out."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_not_split_root(folder: Path) -> None:
    """Raise a helpful error when `folder` holds split sub-folders instead of language files."""
    subdirs = split_names(folder)
    if subdirs:
        raise LsloError(f"{folder}: holds splits ({', '.join(subdirs)}), not language files; pick a split")


def read_language_folder(
    folder: Path, files: Mapping[str, Path], languages: Sequence[str] | None, source: str
) -> MultiwayCorpus:
    """Read the chosen language files of `folder` (with their `.ids` files when present) into a corpus."""
    chosen = _choose_files(folder, files, languages)
    id_files = {lang: p.with_suffix(".ids") for lang, p in chosen.items()}
    with_ids = [lang for lang, p in id_files.items() if p.is_file()]
    if with_ids and len(with_ids) != len(chosen):
        lacking = next(lang for lang in chosen if lang not in with_ids)
        raise LsloError(f"{id_files[lacking]}: missing, while other languages have .ids files; add it")
    sents: dict[str, list[str]] = {}
    ids: dict[str, list[str]] = {}
    for lang, path in chosen.items():
        sents[lang] = read_lines(path)
        check_nonempty(path, sents[lang])
        if with_ids:
            ids[lang] = _read_ids(id_files[lang], len(sents[lang]), path)
    if not with_ids:
        _check_line_counts(chosen, sents)
    return MultiwayCorpus(sents, ids or None, source=source)


def _choose_files(folder: Path, files: Mapping[str, Path], languages: Sequence[str] | None) -> dict[str, Path]:
    """Language (as the user wrote it) -> file: those of `languages`, or every file of `folder` when None."""
    if languages is not None:
        chosen: dict[str, Path] = {}
        unknown = [code for code in languages if lookup(code) is None]
        if unknown:
            raise LsloError(
                f"unknown language code(s) {', '.join(map(repr, unknown))}; use M2M-100 (en), "
                "FLORES-101 (eng) or FLORES-200 (eng_Latn) codes"
            )
        by_language = {canonical(code): path for code, path in files.items()}
        for code in languages:
            lang = canonical(code)
            if lang not in by_language:
                raise LsloError(
                    f"{folder}: no file for language {code!r} (languages here: {', '.join(files) or 'none'}); "
                    "add the file or drop the language"
                )
            chosen[display_code(code)] = by_language[lang]
    else:
        chosen = dict(files)
    if not chosen:
        raise LsloError(f"{folder}: no language files found (expected <lang>.txt, e.g. en.txt)")
    return chosen


def _read_ids(id_file: Path, count: int, text_file: Path) -> list[str]:
    """The sentence ids of `id_file`: one per line of `text_file` (`count` lines), unique."""
    id_lines = read_lines(id_file)
    if len(id_lines) != count:
        raise LsloError(
            f"{id_file}: {len(id_lines)} ids for {count} lines of {text_file.name}; "
            "give one id per line"
        )
    check_nonempty(id_file, id_lines)
    seen: dict[str, int] = {}
    for i, sid in enumerate(id_lines, 1):
        if sid in seen:
            raise LsloError(
                f"{id_file}:{i}: id {sid!r} repeats line {seen[sid]}; ids must be unique"
            )
        seen[sid] = i
    return id_lines


def _check_line_counts(files: Mapping[str, Path], sents: Mapping[str, list[str]]) -> None:
    """Without .ids files, line i of every language is the same sentence: every file needs the same count."""
    counts = {lang: len(s) for lang, s in sents.items()}
    if len(set(counts.values())) > 1:
        first = next(iter(counts))
        odd = next(lang for lang, n in counts.items() if n != counts[first])
        raise LsloError(
            f"{files[odd]}: {counts[odd]} lines but {files[first].name} has {counts[first]}; "
            "without .ids files every language needs the same line count"
        )


def load_multiway(
    path: str | os.PathLike, languages: Sequence[str] | None = None, split: str | None = None
) -> MultiwayCorpus:
    """Read `<path>[/<split>]/<lang>.txt` (+ optional `.ids`) for `languages` (default: every file)."""
    folder = _split_folder(Path(path), split)
    files = language_files(folder, suffixes=("txt",))
    if not files and languages is None:
        check_not_split_root(folder)
    for p in folder.glob("*.txt"):
        if lookup(p.stem) is None and languages is None:
            raise LsloError(f"{p}: {p.stem!r} is not a known language code; rename the file (e.g. en.txt)")
    return read_language_folder(folder, files, languages, source=str(folder))


def write_multiway(corpus: MultiwayCorpus, folder: str | os.PathLike) -> dict[str, Path]:
    """Write `<folder>/<lang>.txt` and `<lang>.ids` for every language; returns the paths written."""
    folder = Path(folder)
    written: dict[str, Path] = {}
    for lang in corpus.languages:
        sents, ids = corpus.sentences(lang), corpus.ids(lang)
        for text in sents:
            if "\n" in text or "\r" in text or not text.strip():
                raise ValueError(f"{lang}: sentence {text!r} is empty or spans lines")
        for name, lines in ((f"{lang}.txt", sents), (f"{lang}.ids", ids)):
            write_text(folder / name, "".join(line + "\n" for line in lines))
            written[name] = folder / name
    return written
