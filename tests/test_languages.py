"""The language registry: code round trips, model language tokens, tiers."""

from __future__ import annotations

import io
import json
import re

import pytest
import sentencepiece as spm
from transformers import M2M100Tokenizer, NllbTokenizer
from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES as M2M_CODES
from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES as NLLB_CODES

from lslo.errors import LsloError
from lslo.languages import (
    BIBLE12_TIERS,
    LANG12_TIERS,
    LANGUAGES,
    canonical,
    detect_style,
    lang_token,
    lang_token_ids,
    lookup,
    same_language,
    tier_of,
)


def test_code_sets_match_the_models():
    assert sorted(lang.m2m for lang in LANGUAGES if lang.m2m) == sorted(M2M_CODES["m2m100"])
    flores200 = [lang.flores200 for lang in LANGUAGES if lang.flores200]
    assert len(flores200) == len(set(flores200)) == 204  # every FLORES-200 file name
    assert set(flores200) == set(NLLB_CODES) | {"arb_Latn", "min_Arab"}  # NLLB-200 has tokens for all but two
    flores101 = [lang.flores101 for lang in LANGUAGES if lang.flores101]
    assert len(flores101) == len(set(flores101)) == 102  # 101 languages, Chinese in two scripts


@pytest.mark.parametrize("lang", LANGUAGES, ids=lambda lang: lang.name)
def test_every_code_style_round_trips(lang):
    codes = [c for c in (lang.m2m, lang.flores101, lang.flores200) if c]
    for code in codes:
        assert lookup(code) is lang
        assert lookup(code.upper()) is lang
        assert lookup(f" {code} ") is lang
        assert canonical(code) == (lang.m2m or lang.flores200)
        assert all(same_language(code, other) for other in codes)
    if lang.m2m:
        assert lookup(f"__{lang.m2m}__") is lang
        assert lookup(lang_token(codes[-1], "m2m100")) is lang
    if lang.flores200:
        assert lang_token(codes[0], "nllb") == lang.flores200
        assert lookup(lang.flores200.replace("_", "-")) is lang


@pytest.mark.parametrize("code", ["kab_Latn", "yue_Hant", "ace_Arab", "taq_Tfng", "KAS-deva"])
def test_nllb_codes_beyond_m2m100_and_flores101(code):
    lang = lookup(code)
    assert lang is not None and lang.m2m is None and lang.flores101 is None
    assert canonical(code) == lang.flores200 == lang_token(code, "nllb")
    assert lookup(lang.flores200) is lang and not same_language(code, "en")


def test_well_known_codes():
    assert canonical("eng") == canonical("eng_Latn") == canonical("__en__") == "en"
    assert canonical("fas") == canonical("pes_Arab") == "fa"
    assert canonical("swh") == "sw" and lang_token("sw", "nllb") == "swh_Latn"
    assert canonical("zho_simpl") == "zh" and lang_token("zh", "nllb") == "zho_Hans"
    assert canonical("zho_trad") == "zho_Hant"  # M2M-100 has no Traditional Chinese code
    assert lookup("zho_trad") is not lookup("zh")
    assert lang_token("tgl_Latn", "m2m100") == "__tl__"
    assert not same_language("en", "fr")


@pytest.mark.parametrize("code", ["xx", "", "english", "eng_Cyrl", "__xx__", "zho"])
def test_unknown_codes(code):
    assert lookup(code) is None
    with pytest.raises(LsloError, match=re.escape(repr(code))):
        canonical(code)


def test_token_errors_name_the_language():
    with pytest.raises(LsloError, match="'tel'.*no M2M-100 token"):
        lang_token("tel", "m2m100")
    with pytest.raises(LsloError, match="'br'.*no NLLB token"):
        lang_token("br", "nllb")
    with pytest.raises(ValueError, match="style"):
        lang_token("en", "mbart")


def test_tiers():
    assert sorted(LANG12_TIERS.values()).count("high") == 4 and len(LANG12_TIERS) == 12
    assert sorted(BIBLE12_TIERS.values()).count("low") == 4 and len(BIBLE12_TIERS) == 12
    assert tier_of("eng_Latn") == "high" and tier_of("wol") == "low" and tier_of("zho_Hans") == "medium"
    assert tier_of("pes_Arab", BIBLE12_TIERS) == "low" and tier_of("ru", BIBLE12_TIERS) == "medium"
    with pytest.raises(LsloError, match="'ru'"):
        tier_of("ru", LANG12_TIERS)


# -- real tokenizers built from a tiny SentencePiece model ----------------------------------------
@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["hello world", "bonjour le monde", "hallo welt"] * 20),
        model_writer=buf, vocab_size=30, model_type="unigram", hard_vocab_limit=False,
        bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("spm")
    (folder / "spm.model").write_bytes(buf.getvalue())
    proc = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(proc.get_piece_size()):
        vocab.setdefault(proc.id_to_piece(i), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    return folder


def test_m2m100_tokenizer_ids(spm_dir):
    tok = M2M100Tokenizer(vocab_file=str(spm_dir / "vocab.json"), spm_file=str(spm_dir / "spm.model"))
    assert detect_style(tok) == "m2m100"
    ids = lang_token_ids(tok, ["en", "fra", "zho_Hans"])
    assert ids == {
        "en": tok.get_lang_id("en"),
        "fra": tok.get_lang_id("fr"),
        "zho_Hans": tok.get_lang_id("zh"),
    }
    assert len(set(ids.values())) == 3
    with pytest.raises(LsloError, match="'asm'"):
        lang_token_ids(tok, ["en", "asm"])  # Assamese: no M2M-100 token


def test_nllb_tokenizer_ids(spm_dir):
    tok = NllbTokenizer(vocab_file=str(spm_dir / "spm.model"))
    assert detect_style(tok) == "nllb"
    ids = lang_token_ids(tok, ["en", "sw", "fas"])
    assert ids == {
        code: tok.convert_tokens_to_ids(t)
        for code, t in [("en", "eng_Latn"), ("sw", "swh_Latn"), ("fas", "pes_Arab")]
    }
    assert tok.convert_ids_to_tokens(ids["sw"]) == "swh_Latn"
    with pytest.raises(LsloError, match="'br'"):
        lang_token_ids(tok, ["br"])  # Breton: no NLLB token


def test_tokenizer_without_language_tokens():
    class Plain:
        unk_token, unk_token_id = "<unk>", 3

        def convert_tokens_to_ids(self, token):
            return 3

    with pytest.raises(LsloError, match="no language tokens"):
        detect_style(Plain())
