"""Shared fixtures: tiny random M2M-100 models (no network, no weights on disk)."""

from __future__ import annotations

import pytest
import torch
from transformers import M2M100Config, M2M100ForConditionalGeneration

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
def make_model():
    return tiny_model
