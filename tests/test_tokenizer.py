"""The SentencePiece -> M2M-100 tokenizer: loading, special tokens, round trips, balanced sampling."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lslo.data.batching import _encode_texts
from lslo.errors import LsloError
from lslo.languages import lang_token_ids
from lslo.tokenizer import balanced_sample, load_tokenizer, model_vocab_size, train_tokenizer

TEXTS = {
    "en": [f"In the beginning {w} created the heaven and the earth number {i}." for i, w in
           enumerate(["God", "man", "light", "water"] * 40)],
    "fr": [f"Au commencement, {w} créa les cieux et la terre numéro {i}." for i, w in
           enumerate(["Dieu", "l'homme", "la lumière", "l'eau"] * 40)],
    "zh": [f"起初，神创造天地。地是空虚混沌，渊面黑暗。第{i}节" for i in range(160)],
}  # fmt: skip


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_tokenizer(TEXTS, tmp_path_factory.mktemp("tok") / "tok", vocab_size=400, per_language=200)


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


def test_loads_as_m2m100_tokenizer_with_standard_files(tok_dir, tok):
    from transformers import AutoTokenizer

    assert type(AutoTokenizer.from_pretrained(str(tok_dir))).__name__ == "M2M100Tokenizer"
    assert type(tok).__name__ == "M2M100Tokenizer"
    assert {"sentencepiece.bpe.model", "vocab.json", "tokenizer_config.json"} <= {
        p.name for p in tok_dir.iterdir()
    }
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)


def test_language_tokens_follow_the_vocabulary_and_count(tok_dir, tok):
    n_pieces = len(json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8")))
    ids = lang_token_ids(tok, ["af", "en", "fr", "zh", "zu"])
    # M2M-100 layout: language tokens come right after the pieces, in the fairseq language order.
    assert ids["af"] == n_pieces and ids["zu"] == n_pieces + 99
    assert len(set(ids.values())) == 5 and all(tok.get_lang_id(c) == i for c, i in ids.items())
    assert len(tok) == n_pieces + 100
    size = model_vocab_size(tok)
    assert size % 8 == 0 and size >= n_pieces + 100


@pytest.mark.parametrize(
    "lang,text",
    [
        ("en", "In the beginning God created the heaven."),
        ("fr", "Au commencement, Dieu créa la lumière."),
        ("zh", "起初，神创造天地。"),
        ("zh", "鬱鬱蔥蔥 Ωmega 🙂"),  # characters never seen in training: byte fallback
    ],
)
def test_round_trip_with_language_token_and_eos(tok, lang, text):
    tok.src_lang = lang
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.get_lang_id(lang) and ids[-1] == tok.eos_token_id
    body = ids[1:-1]
    assert tok.unk_token_id not in body
    assert body == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text
    tok.tgt_lang = lang
    assert tok(text_target=text)["input_ids"] == ids  # target side: same layout with the target token


def test_fast_encoding_path_matches_the_tokenizer(tok):
    texts = [t for lang in TEXTS for t in TEXTS[lang][:5]] + ["鬱鬱 Ωmega 🙂", "  spaced   out  "]
    assert _encode_texts(tok, texts) == tok(texts, add_special_tokens=False)["input_ids"]


def test_balanced_sample_follows_temperature():
    data = {"big": [f"b{i}" for i in range(1000)], "small": [f"s{i}" for i in range(10)]}
    for temperature, share in ((1.0, 1000 / 1010), (2.0, 1000**0.5 / (1000**0.5 + 10**0.5)), (1e9, 0.5)):
        sample = balanced_sample(data, per_language=500, temperature=temperature)
        counts = Counter(s[0] for s in sample)
        assert abs(len(sample) - 1000) <= 1
        assert counts["b"] == round(1000 * share)
    uniform = balanced_sample(data, per_language=500, temperature=1e9)
    assert set(uniform) >= set(data["small"])  # the small language is repeated, all of it
    assert balanced_sample(data, 50, 5.0, seed=3) == balanced_sample(data, 50, 5.0, seed=3)


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(LsloError, match="vocab_size=5"):
        train_tokenizer(TEXTS, tmp_path / "t", vocab_size=5, per_language=50)
    with pytest.raises(LsloError, match="'xx' has no text"):
        train_tokenizer({"en": ["a b"], "xx": [" "]}, tmp_path / "t", vocab_size=50)
    with pytest.raises(LsloError, match="no such directory"):
        load_tokenizer(tmp_path / "missing")
    assert not (tmp_path / "t").exists()
