"""The tiny NLLB-style world of `tests/tiny_nllb.py`: a working tokenizer, a matching model, FLORES-200 files."""

from __future__ import annotations

from tiny_nllb import NLLB_CODES, make_tiny_nllb, sentence, write_flores200

from lslo.data.readers import read_corpus
from lslo.languages import detect_style, lang_token_ids
from lslo.loading import load_base
from lslo.tokenizer import load_tokenizer


def test_tiny_nllb_tokenizer_and_model(tmp_path):
    folder = make_tiny_nllb(tmp_path / "nllb")
    tok = load_tokenizer(folder)
    assert type(tok).__name__ == "NllbTokenizer" and detect_style(tok) == "nllb"
    ids = tok(sentence("eng_Latn", 0), add_special_tokens=False)["input_ids"]
    assert ids and tok.unk_token_id not in ids  # words are pieces, not <unk>
    assert tok.decode(ids) == sentence("eng_Latn", 0)
    codes = lang_token_ids(tok, NLLB_CODES)
    assert len(set(codes.values())) == len(NLLB_CODES) == 202
    model = load_base(str(folder))
    assert model.config.vocab_size > max(codes.values())
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "sentencepiece.bpe.model", "tokenizer.json"}


def test_flores200_folder_reads_every_code(tmp_path):
    write_flores200(tmp_path / "flores", NLLB_CODES[:20], dev=5, devtest=3)
    assert sorted((tmp_path / "flores" / "dev").iterdir())[0].name == "ace_Arab.dev"
    corpus = read_corpus(tmp_path / "flores", fmt="flores", split="dev")
    assert len(corpus.languages) == 20 and len(corpus.ids(corpus.languages[0])) == 5
