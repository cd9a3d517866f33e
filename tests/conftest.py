"""Shared fixtures: tiny random M2M-100 models (no network, no weights on disk)."""

from __future__ import annotations

import os
import random
from pathlib import Path

# The suite checks CPU claims (exact resume within 1e-6, two processes = one, fp32 unless asked), and CI has
# no GPU. On a GPU machine `precision: auto` would pick bf16 and accelerate would move models to the GPU, so
# the GPU is hidden here unless LSLO_TEST_CUDA=1; the GPU paths are exercised by benchmarks/gpu_check.sh.
if os.environ.get("LSLO_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch
from transformers import M2M100Config, M2M100ForConditionalGeneration

from lslo.data.corpus import MultiwayCorpus, write_multiway

# Language token ids inside the tiny vocabulary (M2M-100 puts them at the end of the vocabulary).
LANG_IDS = {"en": 90, "fr": 91, "de": 92, "zh": 93, "sw": 94, "wo": 95}


def tiny_config(**overrides) -> M2M100Config:
    values = dict(
        vocab_size=96, d_model=16, encoder_layers=4, decoder_layers=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0,
        init_std=0.2,
    )  # fmt: skip
    values.update(overrides)
    return M2M100Config(**values)


def tiny_model(seed: int = 0, **overrides) -> M2M100ForConditionalGeneration:
    torch.manual_seed(seed)
    return M2M100ForConditionalGeneration(tiny_config(**overrides)).eval()


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not fight a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_model():
    return tiny_model


# -- a tiny end-to-end world: multi-way data, a tokenizer trained on it, a random tiny model --------

WORDS = ["a", "bo", "ci", "du", "ek", "fa", "gi", "ho", "ja", "ku", "lo", "mi"]


def _write_data(root: Path, langs=("en", "fr", "sw"), n: int = 90) -> None:
    rng = random.Random(0)
    for split, ids in (("train", range(n)), ("pretrain", range(n)), ("valid", range(n, n + 6))):
        sents: dict[str, list[str]] = {lang: [] for lang in langs}
        sids: dict[str, list[str]] = {lang: [] for lang in langs}
        for i in ids:
            words = [rng.randrange(len(WORDS)) for _ in range(rng.randint(2, 8))]
            for lang in langs:
                if split != "valid" and lang == "sw" and i % 3:
                    continue  # sw is low-resource: directions of different sizes
                sents[lang].append(" ".join(lang + WORDS[w] for w in words))
                sids[lang].append(f"s.{i}")
        write_multiway(MultiwayCorpus(sents, sids), root / split)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """A tiny data set, a tokenizer trained on it and a random tiny M2M-100 model (dropout on)."""
    from lslo.data.corpus import load_multiway
    from lslo.tokenizer import load_tokenizer, model_vocab_size, train_tokenizer

    root = tmp_path_factory.mktemp("world")
    _write_data(root / "data")
    corpus = load_multiway(root / "data", split="train")
    train_tokenizer(
        {lang: corpus.sentences(lang) for lang in corpus.languages}, root / "tok", 300, per_language=100
    )
    tok = load_tokenizer(root / "tok")
    config = M2M100Config(
        vocab_size=model_vocab_size(tok), d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_position_embeddings=64, dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).save_pretrained(root / "model")
    tok.save_pretrained(str(root / "model"))
    return root
