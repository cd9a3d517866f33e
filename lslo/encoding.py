"""Encoding for M2M-100 and NLLB: source rows, target rows and decoder prompts, and padding them into batches.

Every path that feeds the model builds its ids here: training batches (`lslo.data.batching.collate`), evaluation
and translation (`lslo.evaluate.translate_items`, `lslo.deploy`), generation (`TranslationModel.generate`) and
the public helper for mixed-source batches (`encode_sources`):

    source:         [src language token] pieces [eos]
    target:         labels = [tgt language token] pieces [eos]; decoder input = [eos] + labels[:-1]
    decoder prompt: [decoder_start, tgt language token]   (generation continues after it)

Each row carries its own language token, so a batch may mix languages (`tokenizer(texts, src_lang=...)` would
put one language token on every row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lslo.errors import LsloError
from lslo.languages import lang_token_ids


def language_row(lang_id: int, pieces: Sequence[int], eos_id: int, max_len: int | None = None) -> list[int]:
    """`[lang_id] pieces [eos]`, the pieces cut so that the row has at most `max_len` ids (a source or a label row)."""
    keep = None if max_len is None else max(max_len - 2, 0)
    return [lang_id, *list(pieces)[:keep], eos_id]


def pad(rows: Sequence[Sequence[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `(ids, attention mask)` tensors of `rows`."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def decoder_inputs(labels: Sequence[Sequence[int]], eos_id: int) -> list[list[int]]:
    """Teacher forcing: each label row shifted right behind `eos` (M2M-100's decoder start)."""
    return [[eos_id, *row[:-1]] for row in labels]


def decoder_prompt(start_id: int, tgt_lang_ids: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """`[[decoder_start, target language token], ...]`: where generation starts, one row per sample."""
    return torch.tensor([[start_id, lang] for lang in tgt_lang_ids], dtype=torch.long, device=device)


def source_ids(
    tokenizer: Any, texts: Sequence[str], src_lang: str | Sequence[str], max_length: int | None = None
) -> list[list[int]]:
    """Token ids of each source sentence, `[its language token] pieces [eos]`, for M2M-100 and NLLB tokenizers.

    `src_lang` is one code for all texts or one per text (any code style). Unlike `tokenizer(texts, src_lang=...)`,
    which prefixes every row with one language token, a batch of mixed source languages gets each row its own.
    `max_length` truncates the pieces so that a row has at most that many ids.
    """
    codes = [src_lang] * len(texts) if isinstance(src_lang, str) else list(src_lang)
    if len(codes) != len(texts):
        raise LsloError(f"src_lang: {len(codes)} codes for {len(texts)} sentences; give one per sentence or one for all")
    ids = lang_token_ids(tokenizer, sorted(set(codes)))
    body = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [language_row(ids[code], pieces, tokenizer.eos_token_id, max_length) for code, pieces in zip(codes, body, strict=True)]


def encode_sources(
    tokenizer: Any, texts: Sequence[str], src_lang: str | Sequence[str], max_length: int | None = None
) -> dict[str, Any]:
    """`source_ids` as a right-padded batch: {"input_ids", "attention_mask"} (torch tensors) for a model or `generate`.

        batch = encode_sources(tok, ["Hello", "Bonjour"], ["en", "fr"])
        ids = model.generate(**batch, src_lang=["en", "fr"], tgt_lang=["wo", "zh"])
    """
    input_ids, mask = pad(source_ids(tokenizer, texts, src_lang, max_length), tokenizer.pad_token_id)
    return {"input_ids": input_ids, "attention_mask": mask}


def decode_hypotheses(tokenizer: Any, rows: Any) -> list[str]:
    """The texts of generated id rows, special tokens left out, and so the language tokens of languages added to the
    base (`lslo.extend`), which an M2M-100 tokenizer does not count as special (NLLB's are special already)."""
    ext = getattr(tokenizer, "lslo_extension", None)
    drop = {x["id"] for x in ext.languages if x["new"]} if ext is not None else set()
    if drop:
        rows = [[i for i in (r.tolist() if hasattr(r, "tolist") else r) if i not in drop] for r in rows]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)
