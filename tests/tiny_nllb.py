"""A tiny NLLB-style world for tests: a FLORES-200-layout folder and a random NLLB-shaped model + tokenizer.

`make_tiny_nllb(folder, codes)` writes what an NLLB checkpoint folder holds (`config.json`, weights,
`sentencepiece.bpe.model`, `tokenizer.json`, `tokenizer_config.json`): a SentencePiece model trained here on
a few hundred sentences, an `NllbTokenizer` built from it with `from_pretrained` (on transformers 5 the plain
constructor maps every word to `<unk>`), the NLLB language codes as additional special tokens, and a random
tiny `M2M100ForConditionalGeneration` whose vocabulary matches. `write_flores200(folder, codes)` writes a
multi-way `dev/<code>.dev` + `devtest/<code>.devtest` folder, as FLORES-200 names its files. Both take
seconds; nothing is downloaded (the tokenizer needs `protobuf`).
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer
from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

NLLB_CODES: tuple[str, ...] = tuple(FAIRSEQ_LANGUAGE_CODES)  # the 202 FLORES-200 codes NLLB-200 has tokens for
WORDS = ("a", "bo", "ci", "du", "ek", "fa", "gi", "ho", "ja", "ku", "lo", "mi", "nu", "ot", "pe", "ra")


def sentence(code: str, i: int) -> str:
    """Sentence `i` of the multi-way set in language `code`: the same word choice, spelt per language."""
    rng = random.Random(i)
    words = [rng.randrange(len(WORDS)) for _ in range(rng.randint(2, 7))]
    shift = sum(map(ord, code)) % len(WORDS)  # each language names the words differently
    return " ".join(WORDS[(w + shift) % len(WORDS)] for w in words)


def write_flores200(folder: str | Path, codes: Sequence[str], dev: int = 8, devtest: int = 6) -> Path:
    """A FLORES-200-layout folder: `dev/<code>.dev` (`dev` lines) and `devtest/<code>.devtest`, multi-way."""
    folder = Path(folder)
    for split, ids in (("dev", range(dev)), ("devtest", range(dev, dev + devtest))):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for code in codes:
            text = "".join(sentence(code, i) + "\n" for i in ids)
            (folder / split / f"{code}.{split}").write_text(text, encoding="utf-8")
    return folder


def make_tiny_nllb(
    folder: str | Path,
    codes: Sequence[str] = NLLB_CODES,
    sentences: Sequence[str] | None = None,
    seed: int = 0,
    d_model: int = 16,
    layers: int = 2,
) -> Path:
    """Save a random tiny NLLB-style model and its tokenizer together in `folder` (as NLLB ships); returns it.

    `codes` become the tokenizer's language tokens (NLLB-200 has all 202); `sentences` train the SentencePiece
    model (default: `sentence(code, i)` over a few codes).
    """
    import sentencepiece as spm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if sentences is None:
        sentences = [sentence(code, i) for code in codes[:8] for i in range(40)]
    proto = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=proto, vocab_size=64, model_type="unigram",
        bos_id=0, pad_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False, num_threads=1, minloglevel=2,
    )  # fmt: skip
    (folder / "sentencepiece.bpe.model").write_bytes(proto.getvalue())
    tok = NllbTokenizer.from_pretrained(
        str(folder), additional_special_tokens=list(codes), src_lang=codes[0], tgt_lang=codes[-1], local_files_only=True
    )
    vocab = max(len(tok), max(tok.get_vocab().values()) + 1)
    config = M2M100Config(
        vocab_size=-(-vocab // 8) * 8, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
        max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
        decoder_layerdrop=0.0, scale_embedding=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.eos_token_id, init_std=0.2,
    )  # fmt: skip
    torch.manual_seed(seed)
    M2M100ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(str(folder))
    return folder


def write_world(folder: str | Path, n: int = 200, steps: int = 3) -> dict[str, Path]:
    """A tiny NLLB-style model, a FLORES-200-layout folder in its first `n` codes and an `lslo train` config
    (tiers high/medium/low in turn, one direction out of every language) under `folder`."""
    folder = Path(folder)
    codes = NLLB_CODES[:n]
    model = make_tiny_nllb(folder / "model")
    data = write_flores200(folder / "flores200", codes)
    config = {
        "data": str(data), "base_model": str(model), "out_dir": str(folder / "run"), "method": "lslo",
        "train_split": "dev", "valid_split": None, "languages": {c: ("high", "medium", "low")[i % 3] for i, c in enumerate(codes)},
        "pairs": [f"{c}-{codes[(i + 1) % n]}" for i, c in enumerate(codes)], "max_steps": steps, "max_tokens": 256,
        "max_len": 24, "warmup_steps": 1, "lr": 3e-3, "save_every": steps, "progress": False,
        "lslo": {"encoder_routing": "src*1,tgt*1"},
    }  # fmt: skip
    (folder / "train.yaml").write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"model": model, "data": data, "config": folder / "train.yaml", "run": folder / "run"}


if __name__ == "__main__":  # python tests/tiny_nllb.py OUT [N]: the world that README's 200-language commands use
    import sys

    for name, path in write_world(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200).items():
        print(f"{name}: {path}")
