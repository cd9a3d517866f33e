"""bible22: bible12 plus the ten languages of the same database that the shipped base has never seen.

`build_unseen(out, bible12)` copies bible12's `train/`, `valid/` and `test/` files byte for byte (their hashes are
checked against bible12's manifest first) and writes, for each unseen language, its verses on exactly those
verse ids: a verse is left out of a language's file when that translation lacks it, the cleaning rules drop it
(`lslo.data.bible.clean_verse`) or its length is an outlier against the 12 languages (the bible12 rule). So
bible12's split selection does not move because more languages exist, and bible12 itself is not touched.
No `pretrain/` split: these languages are unseen by the base.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lslo.data.bible import (
    BIBLE_TRANSLATIONS,
    _clean_translation,
    _connect,
    _existing_manifest,
    _length_outliers,
    default_db_path,
    read_translation,
)
from lslo.data.corpus import MultiwayCorpus, load_multiway, write_multiway
from lslo.errors import LsloError
from lslo.io import atomic_dir, sha256_file, write_json

# The unseen languages (M2M-100 code -> bbName): relatives of seen languages (es, pt, ro, uk), other scripts (ar,
# hi, bn), unrelated ones (pl, tr, id).
UNSEEN: dict[str, str] = {
    "es": "v", "pt": "a", "ro": "u", "pl": "z", "uk": "8", "tr": "t", "id": "6", "ar": "y", "hi": "i", "bn": "b",
}  # fmt: skip
SPLITS = ("train", "valid", "test")


def check_bible12(folder: Path) -> dict[str, Any]:
    """bible12's manifest, after checking that every file of its aligned splits has the hash it records."""
    manifest = _existing_manifest(folder)
    if manifest is None or manifest.get("kind") != "lslo-bible":
        raise LsloError(f"--bible12 {folder}: no bible build there (manifest.json); build it with `lslo data bible`")
    for name, digest in manifest["files"].items():
        if name.split("/")[0] in SPLITS and sha256_file(folder / name) != digest:
            raise LsloError(f"--bible12 {folder}: {name} differs from its manifest; rebuild bible12 with `lslo data bible`")
    return manifest


def build_unseen(
    out_dir: str | os.PathLike,
    bible12_dir: str | os.PathLike,
    languages: Sequence[str] | Mapping[str, str] = tuple(UNSEEN),
    db_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write bible12's aligned splits plus `languages` (codes of `UNSEEN`, or code -> bbName) to `out_dir`."""
    bible12, out = Path(bible12_dir), Path(out_dir)
    spec = {c: UNSEEN.get(c, "") for c in languages} if not isinstance(languages, Mapping) else dict(languages)
    unknown = [c for c, bb in spec.items() if BIBLE_TRANSLATIONS.get(bb) != c]
    if unknown:
        raise LsloError(f"--languages {unknown[0]!r}: not one of the unseen bible languages ({', '.join(UNSEEN)})")
    manifest12 = check_bible12(bible12)
    clash = [c for c in spec if c in manifest12["languages"]]
    if clash:
        raise LsloError(f"--languages {clash[0]!r}: already in bible12; give languages it lacks")
    if out.resolve() == bible12.resolve():
        raise LsloError(f"--out {out}: is the bible12 folder; write the larger set to a new folder")
    db = Path(db_path) if db_path is not None else default_db_path()
    con = _connect(db)
    try:
        hits = {c: Counter() for c in spec}
        clean = {c: _clean_translation(read_translation(con, bb), hits[c]) for c, bb in spec.items()}
    finally:
        con.close()
    counts: dict[str, dict[str, int]] = {}
    dropped: dict[str, dict[str, int]] = {}
    files: dict[str, str] = {}
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            old = load_multiway(bible12, split=split)
            ids = old.aligned_ids()
            texts = {lang: dict(zip(old.ids(lang), old.sentences(lang), strict=True)) for lang in old.languages}
            sents, sids = {}, {}
            for code in spec:
                present = [i for i in ids if i in clean[code]]
                outliers = _length_outliers({**texts, code: clean[code]}, present)[code]
                keep = [i for i in present if i not in outliers]
                sents[code], sids[code] = [clean[code][i] for i in keep], keep
                dropped.setdefault(code, {})[split] = len(ids) - len(keep)
            (tmp / split).mkdir(parents=True)
            for path in sorted((bible12 / split).iterdir()):
                shutil.copyfile(path, tmp / split / path.name)  # bible12's files, byte for byte
            for name, path in write_multiway(MultiwayCorpus(sents, sids, source=f"bible22/{split}"), tmp / split).items():
                files[f"{split}/{name}"] = sha256_file(path)
            counts[split] = {**old.counts(), **{c: len(sids[c]) for c in spec}}
        manifest = {
            "kind": "lslo-bible-unseen", "bible12": str(bible12), "bible12_files": {k: v for k, v in manifest12["files"].items()
                                                                                    if k.split("/")[0] in SPLITS},
            "languages": list(manifest12["languages"]) + list(spec), "unseen": dict(spec), "counts": counts,
            "dropped": dropped, "rule_counts": {c: dict(sorted(h.items())) for c, h in hits.items()}, "files": files,
        }  # fmt: skip
        write_json(tmp / "manifest.json", manifest)
    return manifest
