"""Steps 1 and 2 of `lslo.pretrain`: the base's shape (`MODEL_SIZES`), its trainer settings (`PRETRAIN_DEFAULTS`),
the tokenizer and the random-init model (`prepare`), or a later stage's copy of an earlier export (`continue_from`);
and the data fingerprint an export records."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lslo.errors import LsloError
from lslo.io import atomic_dir, sha256_file

# Model shapes (M2M100Config fields). "base" is the demo model; "tiny" is for tests.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64),
    "small": dict(d_model=192, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=768, decoder_ffn_dim=768),
    "base": dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024),
}  # fmt: skip

# Trainer settings for pretraining from scratch (TrainConfig fields); callers may override any.
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "method": "full",
    "train_split": "pretrain",
    "valid_split": "valid",
    "max_tokens": 4096,
    "max_len": 128,
    "temperature": 5.0,
    "lr": 1e-3,
    "warmup_steps": 1000,
    "label_smoothing": 0.1,
    "dropout": 0.1,
    "clip_norm": 1.0,
    "log_every": 20,
    "save_every": 100,
    "eval_every": 1000,
    "valid_max_per_direction": 10,
}

MANIFEST = "lslo_base.json"


def build_base_model(
    tokenizer: Any, size: str = "base", max_len: int = 256, seed: int = 1
) -> torch.nn.Module:
    """A random-init M2M-100 model of shape `MODEL_SIZES[size]` with the tokenizer's vocabulary."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    from lslo.tokenizer import model_vocab_size

    if size not in MODEL_SIZES:
        raise LsloError(f"model_size {size!r}: use one of {', '.join(MODEL_SIZES)}")
    config = M2M100Config(
        vocab_size=model_vocab_size(tokenizer),
        max_position_embeddings=max(max_len, 128),
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **MODEL_SIZES[size],
    )
    torch.manual_seed(seed)
    return M2M100ForConditionalGeneration(config)


def data_fingerprint(data_dir: str | os.PathLike) -> str:
    """sha256 of the data manifest (`manifest.json`), else of every split file."""
    root = Path(data_dir)
    manifest = root / "manifest.json"
    if manifest.is_file():
        return sha256_file(manifest)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(str(p.relative_to(root)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def prepare(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    languages: Sequence[str] | None = None,
    model_size: str = "base",
    vocab_size: int = 8000,
    seed: int = 1,
) -> tuple[Path, Path]:
    """Steps 1 and 2 (skipped when already done): the tokenizer and the random-init model directories."""
    from lslo.data.corpus import load_multiway
    from lslo.tokenizer import load_tokenizer, train_tokenizer

    out = Path(out_dir)
    tok_dir, init_dir = out / "tokenizer", out / "init"
    if not (tok_dir / "tokenizer_config.json").is_file():
        corpus = load_multiway(data_dir, languages=languages, split="pretrain")
        train_tokenizer(
            {lang: corpus.sentences(lang) for lang in corpus.languages}, tok_dir, vocab_size, seed=seed
        )
    tokenizer = load_tokenizer(tok_dir)
    if not (init_dir / "config.json").is_file():
        model = build_base_model(tokenizer, model_size, seed=seed)
        with atomic_dir(init_dir) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(str(tmp))
    return tok_dir, init_dir


def continue_from(init_from: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Steps 1 and 2 of a later stage: copy the earlier stage's export (model, tokenizer, manifest) into
    <out>/tokenizer and <out>/init. Returns the init directory; refuses an <out> started from other weights."""
    import shutil

    src, out = Path(init_from), Path(out_dir)
    if not (src / MANIFEST).is_file() or not (src / "model.safetensors").is_file():
        raise LsloError(f"--init-from {src}: not a `lslo pretrain` export (no {MANIFEST}); give an export directory")
    tok_dir, init_dir = out / "tokenizer", out / "init"
    digest = sha256_file(src / "model.safetensors")
    if (init_dir / MANIFEST).is_file():
        if json.loads((init_dir / MANIFEST).read_text(encoding="utf-8")).get("weights_sha256") != digest:
            raise LsloError(f"--init-from {src}: {out} was started from other weights; choose a new --out")
        return init_dir
    if init_dir.exists() or tok_dir.exists():
        raise LsloError(f"--init-from {src}: {out} holds a run started from scratch; choose a new --out")
    previous = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    for target in (tok_dir, init_dir):
        with atomic_dir(target) as tmp:
            for f in src.iterdir():
                if f.is_file() and f.name != MANIFEST and (target == init_dir or f.suffix != ".safetensors"):
                    shutil.copy2(f, tmp / f.name)
            if target == init_dir:  # the earlier stage, and where it was exported (its rebuild writes there)
                record = {**previous, "export_dir": str(src), "weights_sha256": digest}
                (tmp / MANIFEST).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return init_dir

