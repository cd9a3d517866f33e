"""Train a small multilingual SentencePiece tokenizer and save it as a Hugging Face `M2M100Tokenizer`.

The saved directory (`sentencepiece.bpe.model`, `vocab.json`, `tokenizer_config.json`, special tokens)
loads with `transformers.AutoTokenizer.from_pretrained(dir)`, exactly like `facebook/m2m100_418M`:
ids 0-3 are `<s> <pad> </s> <unk>`, then the SentencePiece pieces, then one `__xx__` token for each of
M2M-100's 100 languages. `tokenizer(text)` with `src_lang="xx"` gives `[__xx__] + pieces + [</s>]`.
Byte fallback keeps every character encodable (rare CJK characters become UTF-8 byte pieces).
"""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lslo.errors import LsloError
from lslo.io import atomic_dir

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq dictionary order: ids 0, 1, 2, 3


def balanced_sample(
    texts_by_lang: Mapping[str, Sequence[str]], per_language: int, temperature: float = 5.0, seed: int = 0
) -> list[str]:
    """A sample of `per_language * L` sentences in which language l has the share p_l ~ n_l^(1/T).

    T=1 keeps the data's proportions, a large T gives every language the same share (a small language's
    sentences are then repeated, which weights its pieces as if it had as much text). T=5 matches the
    training sampler's default.
    """
    rng = random.Random(seed)
    langs = sorted(texts_by_lang)
    texts = {lang: [t.strip() for t in texts_by_lang[lang] if t.strip()] for lang in langs}
    for lang in langs:
        if not texts[lang]:
            raise LsloError(f"tokenizer training: language {lang!r} has no text; drop it or add its data")
    weights = [len(texts[lang]) ** (1.0 / temperature) for lang in langs]
    total = per_language * len(langs)
    out: list[str] = []
    for lang, w in zip(langs, weights, strict=True):
        want = max(1, round(total * w / sum(weights)))
        pool = texts[lang]
        reps, rest = divmod(want, len(pool))
        out += pool * reps + rng.sample(pool, rest)
    rng.shuffle(out)
    return out


def train_tokenizer(
    texts_by_lang: Mapping[str, Sequence[str]],
    out_dir: str | os.PathLike,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    per_language: int = 20000,
    temperature: float = 5.0,
    character_coverage: float = 0.9995,
    seed: int = 0,
    num_threads: int | None = None,
) -> Path:
    """Train SentencePiece on a language-balanced sample and write an M2M-100 tokenizer directory.

    The sample holds about `per_language` sentences per language, shared out by `temperature` (see
    `balanced_sample`). `vocab_size` counts the SentencePiece pieces (the final model vocabulary adds 4 specials and 100
    language tokens). Returns `out_dir`, written atomically.
    """
    import sentencepiece as spm

    if model_type not in ("unigram", "bpe"):
        raise LsloError(f"tokenizer model_type {model_type!r}: use 'unigram' or 'bpe'")
    sample = balanced_sample(texts_by_lang, per_language, temperature, seed)
    proto = io.BytesIO()
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            normalization_rule_name="identity",  # keep the text as written (no NFKC: CJK punctuation)
            byte_fallback=True,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            hard_vocab_limit=False,
            seed_sentencepiece_size=max(1000000, 10 * vocab_size),
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as err:  # e.g. vocab_size larger than the text allows
        detail = str(err).strip().splitlines()[-1].split("] ")[-1]
        raise LsloError(f"tokenizer vocab_size={vocab_size}: training failed ({detail})") from None
    return write_m2m100_tokenizer(proto.getvalue(), out_dir)


def write_m2m100_tokenizer(spm_proto: bytes, out_dir: str | os.PathLike) -> Path:
    """Save a serialized SentencePiece model as an M2M-100 tokenizer directory (atomically)."""
    import sentencepiece as spm
    from transformers import M2M100Tokenizer
    from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

    sp = spm.SentencePieceProcessor(model_proto=spm_proto)
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIALS)}
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_unknown(i) or sp.is_control(i) or piece in vocab:
            continue
        vocab[piece] = len(vocab)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as scratch, atomic_dir(out_dir) as tmp:
        spm_file = Path(scratch) / "sentencepiece.bpe.model"
        spm_file.write_bytes(spm_proto)
        vocab_file = Path(scratch) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
        # Name the language tokens explicitly: transformers 5 does not register them by itself, and
        # then `__xx__` would neither count in `len(tokenizer)` nor be skipped when decoding.
        lang_tokens = [f"__{code}__" for code in FAIRSEQ_LANGUAGE_CODES["m2m100"]]
        tok = M2M100Tokenizer(
            vocab_file=str(vocab_file),
            spm_file=str(spm_file),
            additional_special_tokens=lang_tokens,
            model_max_length=1024,
        )
        tok.save_pretrained(str(tmp))
    return out_dir


def looks_like_path(name: str) -> bool:
    """True when `name` is meant as a local path (not a hub id like `facebook/nllb-200-distilled-600M`)."""
    path = Path(name)
    first = path.parts[0] if path.parts else ""
    return (
        path.exists() or name.startswith((".", "/", "~")) or (first != name and Path(first).is_dir())
        or name.count("/") > 1 or "\\" in name
    )


def has_tokenizer(folder: str | os.PathLike) -> bool:
    """True when a local folder holds tokenizer files (a saved tokenizer, not only a model)."""
    folder = Path(folder)
    return folder.is_dir() and any((folder / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json"))


def load_tokenizer(name_or_path: str | os.PathLike) -> Any:
    """The tokenizer of a local folder or a hub id (from the local Hugging Face cache when offline).

    The one loader every command uses; a one-line error names the location when nothing loads.
    """
    from transformers import AutoTokenizer

    name = str(name_or_path)
    local = Path(name).is_dir()
    if not local and looks_like_path(name):
        raise LsloError(f"tokenizer {name}: no such directory; give a model or tokenizer directory or a hub id")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
    except (OSError, ValueError, TypeError, KeyError) as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        fix = "give a folder with the tokenizer files (tokenizer_config.json, sentencepiece model) or a hub id"
        raise LsloError(f"tokenizer {name}: cannot load ({lines[0]}); {fix}") from None
    if local:  # a model with added languages: its base tokenizer's files + the extension (lslo.extend.tokenizer)
        from lslo.extend.tokenizer import load_extension

        tokenizer = load_extension(tokenizer, name)
    return tokenizer


def model_vocab_size(tokenizer: Any, multiple: int = 8) -> int:
    """Embedding rows a model needs for `tokenizer` (every id incl. language tokens), rounded up."""
    n = max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)
    return -(-n // multiple) * multiple


def check_coverage(tokens: Mapping[str, Any], tokenizer: Any, where: str, max_share: float = 0.5) -> dict[str, float]:
    """Share of `<unk>` pieces per language in `tokens` (language -> encoded ids); a one-line error above `max_share`.

    A tokenizer that does not cover a language's script, or one built wrongly (e.g. transformers 5's plain
    `NllbTokenizer(vocab_file=...)`, which maps every word to `<unk>`), would otherwise train on noise.
    """
    import numpy as np

    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return {}
    shares = {lang: float(np.mean(np.asarray(ids) == unk)) if len(ids) else 0.0 for lang, ids in tokens.items()}
    worst = max(shares, key=shares.get, default=None)
    if worst is not None and shares[worst] > max_share:
        raise LsloError(
            f"tokenizer {where}: {shares[worst]:.0%} of the pieces of {worst!r} are <unk>; the tokenizer does not "
            "cover this text (load it with from_pretrained from the model's folder, or use the model's own tokenizer)"
        )
    return shares


def save_tokenizer(tokenizer: Any, folder: str | os.PathLike) -> None:
    """`tokenizer.save_pretrained(folder)`, plus its SentencePiece model when the save left it out.

    A fast tokenizer saves `tokenizer.json` only; the `.model` file is what spBLEU's default pieces come from
    (`lslo.scoring.piece_tokenizer`), so an export scores exactly as the model it came from.
    """
    import shutil

    from lslo.extend.tokenizer import base_of, save_extension

    folder = Path(folder)
    extended, tokenizer = tokenizer, base_of(tokenizer)  # an extended tokenizer saves its base + the extension
    tokenizer.save_pretrained(str(folder))
    save_extension(extended, folder)
    sp_file = getattr(tokenizer, "spm_file", None) or getattr(tokenizer, "vocab_file", None)
    if sp_file and str(sp_file).endswith(".model") and Path(sp_file).is_file():
        target = folder / Path(sp_file).name
        if not target.exists():
            shutil.copyfile(sp_file, target)
