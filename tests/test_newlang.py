"""Adding a language the base has never seen (lslo.extend): old directions exact, the new one trains.

Two tiny bases: an M2M-100 one (M2M100Tokenizer on a SentencePiece model trained here) and an NLLB one
(`NllbTokenizer`, tokenizers BPE). New languages: `tyv_Cyrl`, a code no registry knows (a new token), and one
the tokenizer has a token for that the model was never trained on (M2M-100 `es`, NLLB `spa_Latn`).
"""

from __future__ import annotations

import copy
import random
import sys
from pathlib import Path

import pytest
import torch
from transformers import M2M100Config, M2M100ForConditionalGeneration

from lslo import LSLoConfig, add_lslo, encode_sources
from lslo.encoding import decoder_inputs, language_row, pad
from lslo.errors import LsloError
from lslo.extend.model import add_languages
from lslo.extend.tokenizer import EXTENSION_FILE, extend_tokenizer, segment
from lslo.languages import lang_token_ids
from lslo.loss import label_smoothed_nll
from lslo.optim import LanguageAdamW
from lslo.tokenizer import load_tokenizer, model_vocab_size, save_tokenizer, train_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from tiny_nllb import make_tiny_nllb, sentence  # noqa: E402

WORDS = ["a", "bo", "ci", "du", "ek", "fa", "gi", "ho", "ja", "ku", "lo", "mi"]
TUVAN = ["тыва", "дыл", "чурт", "кижи", "хем", "даг", "аът", "ном"]
KINDS = {  # kind -> (old languages, the existing-but-untrained code)
    "m2m100": (("en", "fr", "sw"), "es"),
    "nllb": (("eng_Latn", "fra_Latn", "swh_Latn"), "spa_Latn"),
}


def sents(prefix: str, n: int, words=WORDS, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(prefix + words[rng.randrange(len(words))] for _ in range(rng.randint(2, 8))) for _ in range(n)]


def tiny_base(vocab: int, pad_id: int, eos: int, bos: int) -> M2M100ForConditionalGeneration:
    cfg = M2M100Config(
        vocab_size=vocab, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, pad_token_id=pad_id, bos_token_id=bos, eos_token_id=eos,
        decoder_start_token_id=eos, init_std=0.2, scale_embedding=True,
    )  # fmt: skip
    torch.manual_seed(0)
    return M2M100ForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module", params=list(KINDS))
def world(request, tmp_path_factory):
    """(kind, tokenizer, base LSLo model with trained-looking LoRAs, old texts, new texts)."""
    kind = request.param
    old_langs, untrained = KINDS[kind]
    root = tmp_path_factory.mktemp(kind)
    if kind == "m2m100":
        old = {c: sents(c, 60) for c in old_langs}
        train_tokenizer(old, root / "tok", 300, per_language=100)
        tok = load_tokenizer(root / "tok")
    else:
        old = {c: [sentence(c, i) for i in range(40)] for c in old_langs}
        make_tiny_nllb(root / "tok")
        tok = load_tokenizer(root / "tok")
    base = tiny_base(model_vocab_size(tok), tok.pad_token_id, tok.eos_token_id, tok.bos_token_id)
    config = LSLoConfig(languages=dict(zip(old_langs, ("high", "high", "low"), strict=True)), encoder_routing="src*1,tgt*1")
    model = add_lslo(base, config, tokenizer=tok)
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in model.lslo_layers().values():
            layer.lora_B.normal_(0, 0.3)  # as if trained: old directions differ from the base
    new = {"tyv_Cyrl": sents("", 80, TUVAN), untrained: sents("es", 80, seed=2)}
    return kind, tok, model.eval(), old, new


def probe(model, tok, old_langs, texts) -> dict[str, torch.Tensor]:
    """Greedy and beam outputs and logits of old directions, mixed-direction batches and a one-direction one."""
    src = [texts[old_langs[0]][i] for i in range(3)] + [texts[old_langs[1]][i] for i in range(3)]
    sl = [old_langs[0]] * 3 + [old_langs[1]] * 3
    tl = [old_langs[1], old_langs[2], old_langs[0]] * 2
    batch = encode_sources(tok, src, sl)
    out = {
        "greedy": model.generate(**batch, src_lang=sl, tgt_lang=tl, max_new_tokens=10, num_beams=1, do_sample=False),
        "beam": model.generate(**batch, src_lang=sl, tgt_lang=tl, max_new_tokens=10, num_beams=3, do_sample=False),
    }
    ids = lang_token_ids(tok, tl)
    dec = torch.tensor([[tok.eos_token_id, ids[x]] + [5] * 5 for x in tl])
    with torch.no_grad():
        out["logits_mixed"] = model(**batch, decoder_input_ids=dec, src_lang=sl, tgt_lang=tl).logits
        one = {k: v[:3] for k, v in batch.items()}
        out["logits_one"] = model(**one, decoder_input_ids=dec[:3], src_lang=old_langs[0], tgt_lang=old_langs[1]).logits
    return out


def assert_same(before: dict, after: dict) -> None:
    for key in before:
        assert before[key].shape == after[key].shape, key
        assert torch.equal(before[key], after[key]), key


def labelled(tok, src, src_lang, tgt, tgt_lang):
    batch = encode_sources(tok, src, src_lang)
    lang = lang_token_ids(tok, [tgt_lang])[tgt_lang]
    labels = [language_row(lang, x, tok.eos_token_id) for x in segment(tok, tgt)]
    dec, _ = pad(decoder_inputs(labels, tok.eos_token_id), tok.pad_token_id)
    lab, _ = pad(labels, -100)
    return batch, dec, lab


def train(model, tok, new_code, old_code, src_new, src_old, steps=25):
    """A few LanguageAdamW steps (weight decay on) on new<->old directions; returns the first and last NLL."""
    opt = LanguageAdamW([p for p in model.parameters() if p.requires_grad], model, lr=1e-2, weight_decay=0.1)
    model.train()
    nlls = []
    for _ in range(steps):
        total = 0.0
        for s, sl, t, tl in ((src_new, new_code, src_old, old_code), (src_old, old_code, src_new, new_code)):
            batch, dec, lab = labelled(tok, s, sl, t, tl)
            loss, nll, n = label_smoothed_nll(model(**batch, decoder_input_ids=dec, src_lang=sl, tgt_lang=tl).logits, lab, 0.1)
            (loss / n).backward()
            total += float(nll.detach() / n)
        opt.step()
        opt.zero_grad()
        nlls.append(total)
    model.eval()
    return nlls[0], nlls[-1]


def test_add_language_keeps_old_directions_exact(world, one_thread):
    kind, tok, model, old, new = world
    old_langs, untrained = KINDS[kind]
    model = copy.deepcopy(model)  # add_languages works in place
    before = probe(model, tok, old_langs, old)
    lslo_before = {k: v.clone() for k, v in model.lora_state_dict().items()}
    base_before = {k: v.clone() for k, v in model.base_model.state_dict().items() if "lora_" not in k}
    ext, report = extend_tokenizer(tok, {"tyv_Cyrl": new["tyv_Cyrl"]}, old, base_rows=model.config.vocab_size,
                                   existing=old_langs)  # fmt: skip
    assert report["old_lines_changed"] == 0 and report["pieces_added"] > 0
    for lang, lines in old.items():  # old-language tokenization identical
        assert segment(ext, lines) == segment(tok, lines), lang
    info = report["languages"]["tyv_Cyrl"]
    assert info["new_token"] and info["token_id"] >= model.config.vocab_size
    assert info["tokens_per_word_after"] < info["tokens_per_word_before"]
    grown = add_languages(model, ext, {"tyv_Cyrl": "low"})
    assert_same(before, probe(grown, ext, old_langs, old))
    # the new language trains; old LoRAs, base weights and old directions stay exactly as they were
    first, last = train(grown, ext, "tyv_Cyrl", old_langs[0], new["tyv_Cyrl"][:12], old[old_langs[0]][:12])
    assert last < 0.8 * first
    assert_same(before, probe(grown, ext, old_langs, old))
    state = grown.lora_state_dict()
    assert all(torch.equal(state[k], v) for k, v in lslo_before.items())
    assert all(torch.equal(base_before[k], v) for k, v in grown.base_model.state_dict().items() if k in base_before)
    # new-language outputs use the new rows: an en->tyv generation may emit new ids
    batch = encode_sources(ext, old[old_langs[0]][:2], old_langs[0])
    hyp = grown.generate(**batch, src_lang=old_langs[0], tgt_lang="tyv_Cyrl", max_new_tokens=6)
    assert int(hyp[:, 1].unique()) == info["token_id"]
    # a second language (the existing-but-untrained token) leaves the first one's directions identical
    tyv = {"tyv_Cyrl": new["tyv_Cyrl"][:6], **old}
    first_probe = probe(grown, ext, ["tyv_Cyrl", old_langs[0], old_langs[1]], tyv)
    ext2, report2 = extend_tokenizer(ext, {untrained: new[untrained]}, {**old, "tyv_Cyrl": new["tyv_Cyrl"]},
                                     base_rows=model.config.vocab_size, existing=[*old_langs, "tyv_Cyrl"],
                                     related={untrained: old_langs[1]})  # fmt: skip
    assert report2["old_lines_changed"] == 0
    assert not report2["languages"][untrained]["new_token"]  # its existing token, id below the base rows
    assert report2["languages"][untrained]["token_id"] < model.config.vocab_size
    assert segment(ext2, new["tyv_Cyrl"]) == segment(ext, new["tyv_Cyrl"])
    grown2 = add_languages(grown, ext2, {untrained: "medium"}, related={untrained: old_langs[1]}, previous_tokenizer=ext)
    assert_same(first_probe, probe(grown2, ext2, ["tyv_Cyrl", old_langs[0], old_langs[1]], tyv))
    assert_same(before, probe(grown2, ext2, old_langs, old))
    first2, last2 = train(grown2, ext2, untrained, old_langs[1], new[untrained][:12], old[old_langs[1]][:12], steps=15)
    assert last2 < first2
    assert_same(first_probe, probe(grown2, ext2, ["tyv_Cyrl", old_langs[0], old_langs[1]], tyv))


def test_mixed_old_and_new_targets_within_tolerance(world, one_thread):
    """A batch mixing old and new targets: old rows' new columns are -inf, the rest agrees with the old model to
    float rounding (another batch shape and the mixed-language LoRA path: the stated tolerance, 1e-5)."""
    kind, tok, model, old, new = world
    old_langs, _ = KINDS[kind]
    model = copy.deepcopy(model)
    ext, _ = extend_tokenizer(tok, {"tyv_Cyrl": new["tyv_Cyrl"]}, old, base_rows=model.config.vocab_size, existing=old_langs)
    ref_batch = encode_sources(tok, old[old_langs[0]][:2], old_langs[0])
    ids = lang_token_ids(tok, [old_langs[1]])
    dec = torch.tensor([[tok.eos_token_id, ids[old_langs[1]], 5, 6]] * 2)
    with torch.no_grad():
        ref = model(**ref_batch, decoder_input_ids=dec, src_lang=old_langs[0], tgt_lang=old_langs[1]).logits
    grown = add_languages(model, ext, {"tyv_Cyrl": "low"})
    new_id = lang_token_ids(ext, ["tyv_Cyrl"])["tyv_Cyrl"]
    dec2 = torch.cat([dec, torch.tensor([[tok.eos_token_id, new_id, 5, 6]])])
    batch = encode_sources(ext, old[old_langs[0]][:3], old_langs[0])
    with torch.no_grad():
        mixed = grown(**batch, decoder_input_ids=dec2, src_lang=old_langs[0], tgt_lang=[old_langs[1]] * 2 + ["tyv_Cyrl"]).logits
    width = ref.shape[-1]
    torch.testing.assert_close(mixed[:2, :, :width], ref, rtol=0, atol=1e-5)
    assert torch.isneginf(mixed[:2, :, width:]).all() and torch.isfinite(mixed[2]).all()
    lp, lp_ref = torch.log_softmax(mixed[:2], -1)[..., :width], torch.log_softmax(ref, -1)
    torch.testing.assert_close(lp, lp_ref, rtol=0, atol=1e-5)
    loss, _, _ = label_smoothed_nll(mixed, torch.tensor([[5, 6, 2, 2]] * 3), 0.1)
    assert torch.isfinite(loss)


def test_extended_tokenizer_saves_and_loads(world, tmp_path):
    kind, tok, model, old, new = world
    old_langs, untrained = KINDS[kind]
    ext, _ = extend_tokenizer(tok, new, old, base_rows=model.config.vocab_size, existing=old_langs)
    save_tokenizer(ext, tmp_path / "tok")
    assert (tmp_path / "tok" / EXTENSION_FILE).is_file()
    back = load_tokenizer(tmp_path / "tok")
    for lines in (*new.values(), *old.values()):
        assert segment(back, lines) == segment(ext, lines)
    assert lang_token_ids(back, ["tyv_Cyrl", untrained]) == lang_token_ids(ext, ["tyv_Cyrl", untrained])
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))  # the base's own files, unchanged
    assert segment(plain, old[old_langs[0]]) == segment(tok, old[old_langs[0]])


def test_errors(world, tmp_path):
    kind, tok, model, old, new = world
    old_langs, untrained = KINDS[kind]
    rows = model.config.vocab_size
    with pytest.raises(LsloError, match="collides with the model's language"):
        extend_tokenizer(tok, {old_langs[1]: new["tyv_Cyrl"]}, old, base_rows=rows, existing=old_langs)
    with pytest.raises(LsloError, match="no training text"):
        extend_tokenizer(tok, {"tyv_Cyrl": ["", " "]}, old, base_rows=rows, existing=old_langs)
    # Tuvan text that an old language's text also holds: no Cyrillic piece may be added, the text stays <unk>
    clash = {**old, old_langs[2]: old[old_langs[2]] + new["tyv_Cyrl"][:40]}
    if kind == "nllb":  # the NLLB tokenizer has no Cyrillic: <unk> until pieces are added
        with pytest.raises(LsloError, match="<unk> even after extension"):
            extend_tokenizer(tok, {"tyv_Cyrl": new["tyv_Cyrl"]}, clash, base_rows=rows, existing=old_langs)
    with pytest.raises(LsloError, match="cannot be extended"):
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")))
        extend_tokenizer(plain, {"tyv_Cyrl": new["tyv_Cyrl"]}, old, base_rows=rows)
    ext, _ = extend_tokenizer(tok, {"tyv_Cyrl": new["tyv_Cyrl"]}, old, base_rows=rows, existing=old_langs)
    with pytest.raises(LsloError, match="is already added|collides"):
        extend_tokenizer(ext, {"tyv_Cyrl": new["tyv_Cyrl"]}, old, base_rows=rows, existing=old_langs)
    with pytest.raises(LsloError, match="unknown language 'xyz_Latn'"):  # never a silent <unk>
        lang_token_ids(ext, ["xyz_Latn"])
    with pytest.raises(LsloError, match="unknown language 'xyz_Latn'"):
        encode_sources(ext, ["a"], "xyz_Latn")
    assert not any(tmp_path.iterdir())  # nothing written
