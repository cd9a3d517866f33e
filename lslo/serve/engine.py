"""The engine: the model behind the server, one routed `generate` for rows of any directions.

`Engine.translate(rows)` gives each row exactly what `lslo translate` gives that row alone with the same
settings (`lslo.evaluate.translate_items` on a one-line input): the same source row `[src lang] pieces [eos]`
(cut to `max_source_tokens`), the same decoder prompt `[start, tgt lang]`, beam size, early stopping and the
same output cap, `min(max_new_tokens, 2 x source length + 10)`. That cap is per row here (a stopping
criterion that ends each row at its own cap), where `translate_items` caps a batch by its longest source, so
a short row batched with long ones stops where it would alone. The model routes each row to its own
languages' LoRAs (`TranslationModel.generate` with per-row `src_lang`/`tgt_lang`).

The tokenizer is touched under one lock (encode in the request path, decode in the batch thread): Hugging Face
fast tokenizers fail with "Already borrowed" when two threads use one at the same time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lslo.encoding import decode_hypotheses, source_ids
from lslo.encoding import pad as pad_rows
from lslo.errors import LsloError
from lslo.languages import canonical, lookup, same_language
from lslo.precision import autocast, effective_precision


@dataclass(frozen=True)
class Row:
    """One text to translate: its languages (the model's own codes), its source ids and how many alternatives."""

    src: str
    tgt: str
    ids: tuple[int, ...]
    alternatives: int = 0
    text: str = ""  # the source text (for models with their own decoder)

    @property
    def tokens(self) -> int:
        return len(self.ids)


class _RowCaps:
    """A stopping criterion that ends row b once it has generated `caps[b]` tokens (beams follow their row)."""

    def __init__(self, caps: Sequence[int], prompt_len: int) -> None:
        self.limits = torch.tensor([prompt_len + c for c in caps], dtype=torch.long)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        per_row = input_ids.shape[0] // len(self.limits)  # beams (or beams_to_keep) of a row are contiguous
        limits = self.limits.repeat_interleave(per_row).to(input_ids.device)
        return input_ids.shape[-1] >= limits


class Engine:
    """Translates `Row`s of any mix of directions in one routed generate call."""

    def __init__(self, model: Any, tokenizer: Any, num_beams: int = 5, max_new_tokens: int = 256,
                 max_source_tokens: int = 256, precision: str = "fp32", info: dict | None = None,
                 merge: bool = False, languages: Sequence[str] | None = None) -> None:  # fmt: skip
        if num_beams < 1 or max_new_tokens < 1 or max_source_tokens < 3:
            raise ValueError("num_beams and max_new_tokens must be >= 1, max_source_tokens >= 3")
        self.model, self.tokenizer = model, tokenizer
        self.num_beams, self.max_new_tokens, self.max_source_tokens = num_beams, max_new_tokens, max_source_tokens
        self.cast = effective_precision(precision)
        self.info = dict(info or {})
        self._lock = threading.Lock()
        self.languages = self._languages()
        if languages:  # serve only these (a base's tokenizer holds language tokens it was never trained on)
            self.languages = [self._only(asked) for asked in languages]
        self.plain_decoder = hasattr(model, "translate_items")  # e.g. a CTranslate2 export: its own decoder
        # merge: every call holds one direction, run with its LoRAs folded into the weights (an LSLo model's
        # `merged`): one-direction-at-a-time serving, what the benchmark compares mixed batches against.
        self.merge = merge and bool(getattr(model, "mergeable", False))

    def _languages(self) -> list[str]:
        """The model's languages (its own codes) that the tokenizer has a token for."""
        from lslo.languages import lang_token_ids

        held = list(getattr(self.model, "languages", None) or [])
        if not held and getattr(self.model, "src", None):  # a one-direction CTranslate2 export
            held = [self.model.src, self.model.tgt]
        out = []
        for code in held:
            try:
                lang_token_ids(self.tokenizer, [code])
            except Exception:  # noqa: BLE001 - a language without a token cannot be served
                continue
            out.append(code)
        return out

    def _only(self, asked: str) -> str:
        code = next((c for c in self.languages if same_language(c, asked)), None)
        if code is None:
            raise LsloError(f"--languages {asked}: the model has no such language; it holds {' '.join(self.languages)}")
        return code

    # -- languages -----------------------------------------------------------------------------------
    def pairs(self) -> dict[str, list[str]]:
        """Source code -> target codes it translates into (every ordered pair, or the one of a merged export)."""
        if getattr(self.model, "src", None) and getattr(self.model, "tgt", None):
            return {self.model.src: [self.model.tgt]}
        return {s: [t for t in self.languages if t != s] for s in self.languages}

    def code(self, asked: str) -> str | None:
        """The model's own code for `asked` (any style: `en`, `eng`, `eng_Latn`), or None when it has none."""
        if not isinstance(asked, str) or lookup(asked) is None:
            return None
        return next((c for c in self.languages if same_language(c, asked)), None)

    @staticmethod
    def public_code(code: str) -> str:
        """The code a LibreTranslate client expects: ISO 639-1 style (`en`) where there is one."""
        return canonical(code)

    # -- encode / translate ---------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], srcs: Sequence[str], tgts: Sequence[str], alternatives: int = 0) -> list[Row]:
        """`Row`s of texts (model codes); their ids are what `translate_items` builds for them."""
        with self._lock:
            ids = source_ids(self.tokenizer, list(texts), list(srcs), self.max_source_tokens)
        return [Row(s, t, tuple(i), alternatives, x) for s, t, i, x in zip(srcs, tgts, ids, texts, strict=True)]

    def cap(self, row: Row) -> int:
        """The most tokens row `row` may generate: `lslo translate`'s cap for it alone."""
        return min(self.max_new_tokens, 2 * row.tokens + 10)

    @torch.inference_mode()
    def translate(self, rows: Sequence[Row]) -> list[list[str]]:
        """Each row's translation and then its alternatives (`1 + row.alternatives` strings), in row order.

        All rows of one call must ask for the same number of alternatives (the scheduler groups them so)."""
        if not rows:
            return []
        extra = {r.alternatives for r in rows}
        if len(extra) != 1:
            raise ValueError("translate: rows of one batch must ask for the same number of alternatives")
        returns = 1 + extra.pop()
        if self.plain_decoder:
            return self._translate_plain(rows)
        beams = max(self.num_beams, returns)
        device = next(self.model.parameters()).device
        input_ids, mask = pad_rows([r.ids for r in rows], self.tokenizer.pad_token_id)
        caps = [self.cap(r) for r in rows]
        from transformers import StoppingCriteriaList

        kwargs: dict[str, Any] = dict(
            input_ids=input_ids.to(device), attention_mask=mask.to(device), num_beams=beams,
            max_new_tokens=max(caps), early_stopping=True if beams > 1 else False,
            num_return_sequences=returns, stopping_criteria=StoppingCriteriaList([_RowCaps(caps, 2)]),
            src_lang=[r.src for r in rows], tgt_lang=[r.tgt for r in rows],  # the model starts each decoder
        )  # fmt: skip
        directions = {(r.src, r.tgt) for r in rows}
        if self.merge and len(directions) != 1:
            raise ValueError("translate: a merged engine takes one direction per call")
        with contextlib.ExitStack() as stack:
            if self.merge:
                stack.enter_context(self.model.merged(*directions.pop()))
            stack.enter_context(autocast(self.cast, device))
            seqs = self.model.generate(**kwargs)
        with self._lock:
            texts = decode_hypotheses(self.tokenizer, seqs)
        from lslo.scoring import _clean

        texts = [_clean(t) for t in texts]
        return [texts[i * returns : (i + 1) * returns] for i in range(len(rows))]

    def _translate_plain(self, rows: Sequence[Row]) -> list[list[str]]:
        """A model with its own decoder (CTranslate2): its `translate_items`, no alternatives."""
        with self._lock:
            out = self.model.translate_items(self.tokenizer, [(r.src, r.tgt, r.text) for r in rows], self.num_beams,
                                             1 << 30, self.max_new_tokens, self.max_source_tokens)  # fmt: skip
        return [[t] for t in out]


def load_engine(model: str, base: str | None = None, tokenizer: str | None = None, compute_type: str = "default",
                **settings: Any) -> Engine:  # fmt: skip
    """An `Engine` over anything `lslo.loading.load_model` loads (run, adapter, shared LoRA, full, base, hub id)."""
    from lslo.loading import load_model

    m, tok, info = load_model(model, base=base, tokenizer=tokenizer, compute_type=compute_type)
    if hasattr(m, "eval"):
        m.eval()
    return Engine(m, tok, info={"model": model, **info}, **settings)
