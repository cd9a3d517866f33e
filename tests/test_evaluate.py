"""Translation batching, spBLEU/chrF++ scoring and `evaluate` end to end on a tiny random M2M-100."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil

import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers import tokenizer_spm
from transformers import M2M100Config, M2M100ForConditionalGeneration

from lslo.data.corpus import MultiwayCorpus, load_multiway, write_multiway
from lslo.errors import LsloError
from lslo.evaluate import evaluate, translate, translate_items
from lslo.report import recompute
from lslo.scoring import piece_tokenizer, score_direction
from lslo.tokenizer import train_tokenizer

LANGS = {"en": "high", "fr": "high", "zh": "medium", "sw": "low"}
ALPHABET = {
    "en": "etaoinshrdlu",
    "fr": "eauistnrlocé",
    "zh": "的一是不了人我在有他这中大来",
    "sw": "akiumnwtlhez",
}
N_SENT = 6


def _sentence(rng: random.Random, lang: str) -> str:
    letters = ALPHABET[lang]
    if lang == "zh":
        return "".join(rng.choice(letters) for _ in range(rng.randint(3, 12))) + "。"
    return " ".join(
        "".join(rng.choice(letters) for _ in range(rng.randint(1, 7))) for _ in range(rng.randint(2, 8))
    )


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    rng = random.Random(0)
    return {lang: [_sentence(rng, lang) for _ in range(300)] for lang in LANGS}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, texts):
    from transformers import AutoTokenizer

    path = train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tok", vocab_size=400, per_language=300)
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = M2M100Config(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=0,
        decoder_start_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return M2M100ForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def corpus(texts, tmp_path_factory) -> MultiwayCorpus:
    """The test split as `lslo data` writes it, read back with the loader the CLI uses."""
    folder = tmp_path_factory.mktemp("data")
    write_multiway(MultiwayCorpus({lang: lines[:N_SENT] for lang, lines in texts.items()}), folder / "test")
    return load_multiway(folder, split="test")


# ----------------------------------------------------------------------------- scoring


HYPS = ["the cat sat on the mat", "a dog barks", "", "héllo wörld, again"]
REFS = ["the cat is on the mat", "the dog barked loudly", "nothing here", "hello world again"]


def test_score_direction_equals_direct_sacrebleu_calls(tokenizer):
    pieces = piece_tokenizer(tokenizer)
    got = score_direction(HYPS, REFS, pieces)
    sp = tokenizer.sp_model
    hp = [" ".join(sp.encode(h, out_type=str)) for h in HYPS]
    rp = [" ".join(sp.encode(r, out_type=str)) for r in REFS]
    assert got["spbleu"] == BLEU(tokenize="none").corpus_score(hp, [rp]).score
    assert got["chrf"] == CHRF(word_order=2).corpus_score(HYPS, [REFS]).score
    assert got["hyp_pieces"] == hp and got["ref_pieces"] == rp
    assert "tok:none" in got["spbleu_signature"] and "nw:2" in got["chrf_signature"]
    assert 0 < got["spbleu"] < 100 and 0 < got["chrf"] < 100
    assert score_direction(REFS, REFS, pieces)["spbleu"] == pytest.approx(100.0)


def test_spbleu_with_spm_file_equals_sacrebleus_flores200_tokenizer(tokenizer, tmp_path, monkeypatch):
    # sacrebleu's own `tokenize="flores200"` reads <SACREBLEU_DIR>/models/flores200sacrebleuspm; point it
    # at our SentencePiece file: the score must be the same as ours on the piece files.
    spm_file = tmp_path / "flores200_sacrebleu_tokenizer_spm.model"
    shutil.copy(tokenizer.spm_file, spm_file)
    (tmp_path / "sacrebleu" / "models").mkdir(parents=True)
    shutil.copy(spm_file, tmp_path / "sacrebleu" / "models" / "flores200sacrebleuspm")
    monkeypatch.setattr(tokenizer_spm, "SACREBLEU_DIR", str(tmp_path / "sacrebleu"))
    pieces = piece_tokenizer(spm=spm_file)
    sha = hashlib.sha256(spm_file.read_bytes()).hexdigest()
    assert pieces.metric == f"spBLEU(flores200 spm, sha256:{sha[:16]})"
    assert pieces.info == {
        "kind": "flores",
        "name": "flores200",
        "path": str(spm_file.resolve()),
        "sha256": sha,
    }
    ours = score_direction(HYPS, REFS, pieces)["spbleu"]
    assert ours == BLEU(tokenize="flores200").corpus_score(HYPS, [REFS]).score


def test_own_tokenizer_pieces_are_not_called_flores(tokenizer):
    pieces = piece_tokenizer(tokenizer)
    assert pieces.metric.startswith("spBLEU[tok=") and pieces.metric.endswith(" spm]")
    assert "flores" not in pieces.metric.lower() and pieces.info["kind"] == "tokenizer"
    assert pieces.info["sha256"] == hashlib.sha256(open(tokenizer.spm_file, "rb").read()).hexdigest()


def test_spm_path_errors_name_the_flag(tmp_path):
    with pytest.raises(LsloError, match=r"^--spm: no such file .*missing\.model"):
        piece_tokenizer(spm=tmp_path / "missing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(LsloError, match=r"^--spm: .*junk\.model is not a SentencePiece model"):
        piece_tokenizer(spm=junk)


# ----------------------------------------------------------------------------- translation


def test_mixed_batches_give_the_same_translations_in_input_order(model, tokenizer, corpus):
    items = [
        (s, t, text) for s, t in [("en", "fr"), ("zh", "sw"), ("sw", "en")] for text in corpus.sentences(s)
    ]
    kw = dict(num_beams=1, max_new_tokens=6, progress=False)
    batched = translate_items(model, tokenizer, items, max_tokens=10_000, **kw)
    one_by_one = translate_items(model, tokenizer, items, max_tokens=1, **kw)
    assert batched == one_by_one and len(batched) == len(items)
    single = translate(model, tokenizer, corpus.sentences("zh"), "zh", "sw", **kw)
    assert single == batched[N_SENT : 2 * N_SENT]
    assert translate_items(model, tokenizer, [], progress=False) == []


def test_lslo_translates_the_same_merged_per_direction_as_in_mixed_batches(model, tokenizer, corpus):
    import copy

    from lslo.config import LSLoConfig
    from lslo.model import add_lslo
    from lslo.search import add_routing_search

    config = LSLoConfig(languages=LANGS, ranks={"high": 2, "medium": 2, "low": 4}, decoder_routing="tgt")
    lslo = add_lslo(copy.deepcopy(model), config, tokenizer).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in lslo.lslo_layers().values():
            layer.lora_B.normal_(0, 0.5)  # a delta large enough to change the translations
    items = [(s, t, text) for s, t in [("en", "fr"), ("zh", "sw"), ("sw", "en"), ("en", "zh")] for text in corpus.sentences(s)]
    kw = dict(num_beams=2, max_new_tokens=6, progress=False)
    mixed = translate_items(lslo, tokenizer, items, merge=False, **kw)
    merged = translate_items(lslo, tokenizer, items, merge=True, **kw)
    assert merged == mixed and len(merged) == len(items)
    assert mixed != translate_items(model, tokenizer, items, **kw)  # the LoRAs do act
    assert all(layer.merged_weight is None for layer in lslo.lslo_layers().values())
    assert translate_items(lslo, tokenizer, items, **kw) == mixed  # mixed batches are the default
    # Models that cannot merge: an error when asked, mixed batches otherwise.
    with pytest.raises(ValueError, match="merge=True"):
        translate_items(model, tokenizer, items, merge=True, **kw)
    search, _ = add_routing_search(copy.deepcopy(model), config)
    assert not search.mergeable


def test_an_interrupted_translation_resumes_from_its_cache_and_a_changed_model_starts_over(
    model, tokenizer, corpus, tmp_path, monkeypatch
):
    items = [(s, t, text) for s, t in [("en", "fr"), ("sw", "en")] for text in corpus.sentences(s)]
    kw = dict(num_beams=2, max_new_tokens=6, max_tokens=40, progress=False)
    want = translate_items(model, tokenizer, items, **kw)
    cache = tmp_path / "partial.jsonl"
    calls, real = [], model.generate

    class Killed(Exception):
        pass

    armed = [True]

    def dies_on_the_fourth_batch(**kwargs):
        calls.append(1)
        if armed[0] and len(calls) == 4:
            armed[0] = False
            raise Killed
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", dies_on_the_fourth_batch)
    with pytest.raises(Killed):
        translate_items(model, tokenizer, items, cache=cache, **kw)
    with open(cache, "a", encoding="utf-8") as f:
        f.write('{"batch": 3, "hy')  # a line torn by the kill
    calls.clear()
    assert translate_items(model, tokenizer, items, cache=cache, **kw) == want
    n_batches = 3 + len(calls)  # three came from the cache, the rest were translated now
    assert n_batches > 4
    weight = next(model.parameters())
    with torch.no_grad():
        weight.add_(1.0)  # other weights: nothing in the cache is reused
    try:
        calls.clear()
        translate_items(model, tokenizer, items, cache=cache, **kw)
        assert len(calls) == n_batches
    finally:
        with torch.no_grad():
            weight.sub_(1.0)


def test_precision_autocasts_generation_and_keys_the_cache(model, tokenizer, corpus, tmp_path, monkeypatch):
    items = [(s, t, text) for s, t in [("en", "fr"), ("sw", "en")] for text in corpus.sentences(s)]
    kw = dict(num_beams=2, max_new_tokens=6, max_tokens=40, progress=False)
    seen, real = [], model.generate

    def recording(**kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", recording)
    cache = tmp_path / "partial.jsonl"
    fp32 = translate_items(model, tokenizer, items, cache=cache, **kw)
    assert seen and not any(seen)  # fp32 (the default): no autocast
    seen.clear()
    bf16 = translate_items(model, tokenizer, items, cache=cache, precision="bf16", **kw)
    assert seen and all(dtype == torch.bfloat16 for dtype in seen)  # every batch ran, none from fp32's cache
    assert len(bf16) == len(fp32) == len(items)
    n_batches = len(seen)
    seen.clear()
    assert translate_items(model, tokenizer, items, cache=cache, **kw) == fp32  # bf16's batches are not reused
    assert len(seen) == n_batches and not any(seen)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LsloError, match="fp16: needs a GPU"):
        translate_items(model, tokenizer, items, precision="fp16", **kw)


# ----------------------------------------------------------------------------- evaluate end to end


def test_evaluate_writes_recomputable_results(model, tokenizer, corpus, tmp_path):
    out = tmp_path / "eval"
    res = evaluate(model, tokenizer, corpus, out, num_beams=2, max_new_tokens=5, tiers=LANGS, progress=False)
    n_dir = len(LANGS) * (len(LANGS) - 1)
    assert len(res["directions"]) == n_dir
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == res
    assert res["languages"] == ["en", "fr", "zh", "sw"]
    row = res["directions"]["zh-sw"]
    assert (row["src_tier"], row["tgt_tier"], row["n"]) == ("medium", "low", N_SENT)
    for rel in row["files"].values():
        assert len((out / rel).read_text(encoding="utf-8").split("\n")) == N_SENT + 1
    assert (out / row["files"]["ref"]).read_text(encoding="utf-8").splitlines() == corpus.sentences("sw")
    with open(out / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["src"], r["tgt"]) for r in rows) == sorted(corpus.directions())
    assert all(r["spbleu_signature"].startswith("nrefs:1") for r in rows)
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| as target |" in (out / "tiers.md").read_text(encoding="utf-8")
    assert res["groups"]["spbleu"]["M->L"]["n_directions"] == 1
    assert res["groups"]["chrf"]["M->L"]["mean"] == row["chrf"]
    assert recompute(out, check_pieces=True) < 1e-9
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not (out / ".translations.partial.jsonl").exists()  # the resume cache goes once results are written


def test_evaluate_subset_and_tiers_from_lslo_config(tokenizer, corpus, tmp_path, model):
    from lslo import LSLoConfig, add_lslo

    base = M2M100ForConditionalGeneration(model.config)
    cfg = LSLoConfig(languages={"en": "low", "fr": "high", "zh": "medium", "sw": "low"})
    lslo = add_lslo(base, cfg, tokenizer)
    res = evaluate(lslo, tokenizer, corpus, tmp_path, directions=["eng_Latn-fra", ("sw", "zh"), "en-fr"], max_sentences=2,
                   num_beams=1, max_new_tokens=4, progress=False, meta={"adapter": "run/x"})  # fmt: skip
    assert list(res["directions"]) == ["en-fr", "sw-zh"] and res["meta"] == {"adapter": "run/x"}
    assert res["directions"]["en-fr"]["src_tier"] == "low" and res["directions"]["en-fr"]["n"] == 2
    assert res["languages"] == ["fr", "zh", "en", "sw"]
    assert recompute(tmp_path) < 1e-9


def test_evaluate_errors(model, tokenizer, corpus, tmp_path):
    with pytest.raises(LsloError, match=r"--directions: language 'xx' .*not in the test set"):
        evaluate(model, tokenizer, corpus, tmp_path, directions=["en-xx"], tiers=LANGS, progress=False)
    with pytest.raises(LsloError, match="--directions: 'en' is not a direction"):
        evaluate(model, tokenizer, corpus, tmp_path, directions=["en"], tiers=LANGS, progress=False)
    with pytest.raises(LsloError, match="--directions: en-en"):
        evaluate(model, tokenizer, corpus, tmp_path, directions=["en-en"], tiers=LANGS, progress=False)
    with pytest.raises(LsloError, match="^--spm: no such file"):
        evaluate(model, tokenizer, corpus, tmp_path, spm=tmp_path / "nope.model", tiers=LANGS, progress=False)
    with pytest.raises(LsloError, match="'sw' has no resource tier"):
        evaluate(
            model,
            tokenizer,
            corpus,
            tmp_path,
            tiers={"en": "high", "fr": "high", "zh": "low"},
            progress=False,
        )
    assert not (tmp_path / "results.json").exists()
