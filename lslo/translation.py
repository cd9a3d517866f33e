"""`TranslationModel`: what every trainable method (LSLo, shared LoRA, full fine-tuning) has in common.

It wraps a transformers `M2M100ForConditionalGeneration` (M2M-100 and NLLB) and adds languages to the
call: `forward(..., src_lang=, tgt_lang=)` and `generate(..., src_lang=, tgt_lang=)`, each one code for the
whole batch or one per sample. Codes may be written in M2M-100 (`en`), FLORES-101 (`eng`) or
FLORES-200/NLLB (`eng_Latn`) style. `generate` starts every sample's decoder with its own target-language
token, so one batch may translate into several languages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lslo.encoding import decoder_prompt
from lslo.errors import LsloError
from lslo.routing import Langs, alias_table, language_index


def require_m2m100(model: nn.Module, who: str) -> None:
    """Fail with one line unless `model` has the M2M-100 encoder-decoder layout."""
    inner = getattr(model, "model", None)
    if not (hasattr(inner, "encoder") and hasattr(inner, "decoder") and hasattr(inner.encoder, "layers")):
        raise LsloError(
            f"{who}: expected an M2M100ForConditionalGeneration (M2M-100 or NLLB checkpoint), got {type(model).__name__}"
        )


class TranslationModel(nn.Module):
    """A seq2seq translation model whose calls carry source and target languages."""

    def __init__(self, base_model: nn.Module, languages: Sequence[str], lang_token_ids: dict[str, int] | None) -> None:
        super().__init__()
        self.base_model = base_model
        self.languages = list(languages)
        self.lang_token_ids = dict(lang_token_ids or {})
        self._aliases = alias_table(self.languages)

    # -- languages ----------------------------------------------------------------------------------
    def language_index(self, codes: Langs, arg: str = "language") -> list[int]:
        """Indices of `codes` (a code or a list of codes) in `self.languages`; unknown codes raise LsloError."""
        return language_index(codes, self._aliases, self.languages, arg)

    def lang_token_id(self, index: int) -> int:
        code = self.languages[index]
        if code not in self.lang_token_ids:
            raise LsloError(
                f"generate: no language token id for {code!r}; pass the tokenizer when building the model "
                "(add_lslo(model, config, tokenizer)) or set lang_token_ids"
            )
        return self.lang_token_ids[code]

    @staticmethod
    def batch_lists(src_lang: Langs, tgt_lang: Langs, batch: int) -> tuple[list[str], list[str]]:
        """Broadcast one code to the batch; check per-sample lists have one code per sample."""
        out = []
        for name, codes in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
            if codes is None:
                raise LsloError(f"{name}: missing; give one language code or one per sample")
            items = [codes] * batch if isinstance(codes, str) else list(codes)
            if len(items) != batch:
                raise LsloError(f"{name}: {len(items)} codes for a batch of {batch} samples; give one per sample")
            out.append(items)
        return out[0], out[1]

    # -- calls ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def routed(self, src_lang: Langs, tgt_lang: Langs, batch: int) -> Iterator[None]:
        """Context in which the base model runs for this batch's languages (methods that route override)."""
        yield

    def forward(self, *args, src_lang: Langs = None, tgt_lang: Langs = None, **kwargs):
        batch = _batch_size(args, kwargs)
        with self.routed(src_lang, tgt_lang, batch):
            return self.base_model(*args, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        src_lang: Langs = None,
        tgt_lang: Langs = None,
        **kwargs,
    ) -> torch.Tensor:
        """Generate with every sample's decoder forced to start with its own target-language token.

        Returned sequences start with `[decoder_start_token_id, <target language token>]`.
        """
        batch = input_ids.shape[0]
        src, tgt = self.batch_lists(src_lang, tgt_lang, batch)
        if "decoder_input_ids" not in kwargs:
            targets = [self.lang_token_id(i) for i in self.language_index(tgt, "tgt_lang")]
            kwargs["decoder_input_ids"] = decoder_prompt(self.config.decoder_start_token_id, targets, input_ids.device)
        kwargs.setdefault("forced_bos_token_id", None)
        with self.routed(src, tgt, batch):
            return self.base_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @property
    def config(self):
        return self.base_model.config

    @property
    def device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}


def _batch_size(args: tuple, kwargs: dict) -> int:
    for key in ("input_ids", "inputs_embeds", "decoder_input_ids", "labels"):
        value = kwargs.get(key)
        if value is not None:
            return value.shape[0]
    if args and torch.is_tensor(args[0]):
        return args[0].shape[0]
    enc = kwargs.get("encoder_outputs")
    if enc is not None:
        return enc[0].shape[0]
    raise LsloError("forward: pass input_ids (or inputs_embeds / encoder_outputs) so the batch size is known")
