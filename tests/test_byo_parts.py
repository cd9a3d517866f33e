"""Pieces of the bring-your-own workflow: mixed-source batches, the <unk> check, tier order, a searched architecture."""

from __future__ import annotations

import json

import pytest
from tiny_nllb import make_tiny_nllb, sentence

from lslo import encode_sources
from lslo.cli import main
from lslo.config import LSLoConfig
from lslo.data.batching import _encode_texts
from lslo.errors import LsloError
from lslo.evaluate import parse_tiers, resolve_tiers
from lslo.tokenizer import check_coverage, load_tokenizer

LANGS = ["pol_Latn", "tur_Latn", "arb_Arab"]


@pytest.fixture(scope="module")
def nllb(tmp_path_factory):
    return make_tiny_nllb(tmp_path_factory.mktemp("nllb") / "base", sentences=[sentence(c, i) for c in LANGS for i in range(30)])


@pytest.mark.parametrize("kind", ["nllb", "m2m100"])
def test_encode_sources_gives_each_row_its_own_language_token(kind, nllb, world):
    tok = load_tokenizer(nllb if kind == "nllb" else world / "tok")
    codes = LANGS if kind == "nllb" else ["en", "fr", "sw"]
    texts = [sentence(c, i) for i, c in enumerate(codes)] if kind == "nllb" else ["enbo enci", "fra", "swku swlo swmi"]
    batch = encode_sources(tok, texts, codes)
    for row, (text, code) in enumerate(zip(texts, codes, strict=True)):
        tok.src_lang = code  # what the tokenizer itself does for one language: the reference
        alone = tok(text)["input_ids"]
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :n].tolist() == alone
        assert set(batch["input_ids"][row, n:].tolist()) <= {tok.pad_token_id}
    # The tokenizer's own batch call puts one language token on every row: wrong for mixed sources.
    tok.src_lang = codes[0]
    assert tok(texts)["input_ids"][1][0] != batch["input_ids"][1, 0]
    with pytest.raises(LsloError, match="one per sentence"):
        encode_sources(tok, texts, codes[:2])


def test_a_tokenizer_that_maps_text_to_unk_fails_early(nllb):
    from transformers import NllbTokenizer

    texts = {c: [sentence(c, i) for i in range(20)] for c in LANGS}
    good = load_tokenizer(nllb)
    shares = check_coverage({c: sum(_encode_texts(good, t), []) for c, t in texts.items()}, good, "good")
    assert max(shares.values()) < 0.05
    # transformers 5's plain constructor reads the SentencePiece file but maps every word to <unk>.
    broken = NllbTokenizer(vocab_file=str(nllb / "sentencepiece.bpe.model"))
    tokens = {c: sum(_encode_texts(broken, t), []) for c, t in texts.items()}
    with pytest.raises(LsloError, match=r"tokenizer broken: \d+% of the pieces of 'pol_Latn' are <unk>"):
        check_coverage(tokens, broken, "broken")


def test_tiers_come_from_the_command_line_then_the_run_then_built_in(tmp_path):
    run = {"pol_Latn": "low", "en": "low"}
    assert resolve_tiers(["en", "pl"], None, None, run) == {"en": "low", "pl": "low"}  # the run's, in any style
    assert resolve_tiers(["en", "sw"], None, None, run) == {"en": "low", "sw": "low"}  # sw: built-in
    assert resolve_tiers(["en", "pl"], {"en": "high", "pol": "medium"}, None, run) == {"en": "high", "pl": "medium"}
    assert resolve_tiers(["en", "pl"]) == {"en": None, "pl": None}  # pl has no tier: overall table only
    with pytest.raises(LsloError, match="'pl' has no resource tier"):
        resolve_tiers(["en", "pl"], {"en": "high"})
    with pytest.raises(LsloError, match=r"tiers: en='top'; use one of high, medium, low"):
        resolve_tiers(["en"], {"en": "top"})
    path = tmp_path / "tiers.yaml"
    path.write_text("pol_Latn: high\ntur_Latn: low\n")
    assert parse_tiers([str(path)]) == {"pol_Latn": "high", "tur_Latn": "low"}
    assert parse_tiers(["pol_Latn=high", "tur_Latn=low"]) == {"pol_Latn": "high", "tur_Latn": "low"}
    with pytest.raises(LsloError, match="--tiers .*cannot read"):
        parse_tiers([str(tmp_path / "missing.json")])


def test_train_with_a_searched_architecture(capsys, world, tmp_path):
    searched = tmp_path / "routing" / "lslo_config.json"
    searched.parent.mkdir()
    LSLoConfig(languages={"en": "high", "fr": "high", "sw": "low"}, ranks={"high": 3, "medium": 2, "low": 5},
               encoder_routing="tgt*1,src*1", decoder_routing="src*2").save(searched)  # fmt: skip
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {world / 'data'}\nbase_model: {world / 'model'}\nout_dir: {tmp_path / 'run'}\nmax_steps: 1\n"
        "max_tokens: 96\nmax_len: 24\nvalid_split: null\nlanguages: {en: high, fr: high, sw: low}\n"
        "lslo: {decoder_routing: tgt, alpha: 8}\n"
    )
    code = main(["train", str(config), "--lslo-config", str(searched), "--no-progress", "--set", "lslo.ranks.low=4"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "model" / "adapter_config.json").read_text())["config"]
    assert saved["encoder_routing"] == "tgt*1,src*1" and saved["decoder_routing"] == "src*2"  # the file's
    # The file's architecture replaces the YAML's lslo fields (alpha: the file's null); --set lslo.* wins over both.
    assert saved["ranks"] == {"high": 3, "medium": 2, "low": 4} and saved["alpha"] is None
    assert main(["train", str(config), "--lslo-config", str(tmp_path / "nope.json")]) == 2
    assert "--lslo-config" in capsys.readouterr().err
