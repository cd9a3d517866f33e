"""Model surgery for added languages: new embedding rows, the masked output head and each new language's LoRA.

`add_languages(model, tokenizer, {code: tier}, related=...)` takes an `LSLoModel` (or a plain M2M-100/NLLB
base, which gets LSLo first) and a tokenizer extended by `lslo.extend.tokenizer.extend_tokenizer`, and returns
an `LSLoModel` in which:

- the input embeddings read the new ids' rows (`lslo.extend.embeddings`); the rows start as
  * a new piece: the mean of the base rows of the pieces the previous tokenizer splits it into,
  * a new language token: the row of the `related` language's token when one is named, else the mean of the
    rows of the model's language tokens,
  * an existing but untrained language token (M2M-100's `__es__`): a trainable input copy of its own row (or
    of the related language's), so its base row stays as it is;
- the output layer gives the new columns only to samples whose target is a language added at that stage or later;
- every new language has its LoRA (rank by its tier) in every LSLo layer; the old languages' LoRAs are frozen
  (`frozen_languages`: their gradients are zero and `LanguageAdamW` leaves them alone), as are the rows of
  earlier stages. The base weights stay frozen and bit-identical.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lslo.config import LSLoConfig
from lslo.errors import LsloError
from lslo.extend.embeddings import AddedRows, ExtendedEmbedding
from lslo.extend.stages import (  # noqa: F401 - re-exported
    ADDED_CONFIG,
    ADDED_WEIGHTS,
    _embeddings,
    _finish,
    _freeze_slices,
    _install,
    has_added,
    load_added,
    plain_direction,
    save_added,
)
from lslo.extend.tokenizer import extension_of, upto_stage
from lslo.layer import LSLoLinear
from lslo.model import LSLoModel, add_lslo, lslo_layers
from lslo.translation import require_m2m100


def grow_layer(layer: LSLoLinear, ranks: list[int], scales: list[float]) -> LSLoLinear:
    """A copy of `layer` with languages of `ranks`/`scales` appended (old slices copied, new as a fresh layer's)."""
    new = LSLoLinear(layer.base_layer, layer.ranks + ranks, layer.scales + scales, layer.route, layer.routing,
                     layer.dropout.p if isinstance(layer.dropout, nn.Dropout) else 0.0)  # fmt: skip
    n = layer.offsets[-1]
    with torch.no_grad():
        new.lora_A[:n].copy_(layer.lora_A)
        new.lora_B[:, :n].copy_(layer.lora_B)
    for kind in ("A", "B"):
        mask = getattr(layer, f"lora_{kind}_mask")
        if mask is not None:
            full = torch.ones_like(getattr(new, f"lora_{kind}"), dtype=torch.bool)
            (full[:n] if kind == "A" else full[:, :n]).copy_(mask)
            setattr(new, f"lora_{kind}_mask", full)
    new.path = layer.path
    return new


def _init_rows(model: nn.Module, tokenizer: Any, previous: Any, stage: int, related: Mapping[str, str],
               added: AddedRows | None) -> tuple[torch.Tensor, list[int], torch.Tensor]:  # fmt: skip
    """(rows of the stage's new ids, existing token ids to override, their rows), by the module docstring's rule."""
    from lslo.languages import lang_token_ids

    ext = extension_of(tokenizer)
    embed = _embeddings(model)[0]
    base = embed.base if isinstance(embed, ExtendedEmbedding) else embed
    table = base.weight.float()
    if added is not None and len(added.row_stage):
        table = torch.cat([table, added.all_rows().float()], 0)

    def row(i: int) -> torch.Tensor:
        return table[i]

    lang_rows = [row(i) for i in sorted(set(_all_lang_ids(previous))) if i < table.shape[0]]
    mean_lang = torch.stack(lang_rows).mean(0) if lang_rows else table.mean(0)
    rows: list[torch.Tensor] = []
    for new_id, s in ext.new_ids():
        if s != stage:
            continue
        piece = next((p for p in ext.pieces if p["id"] == new_id), None)
        if piece is not None:
            text = piece["piece"].replace("\u2581", " ")
            old = [i for i in previous(text, add_special_tokens=False)["input_ids"] if i < table.shape[0]]
            old = [i for i in old if i != previous.unk_token_id] or old
            rows.append(torch.stack([row(i) for i in old]).mean(0) if old else table.mean(0))
        else:
            lang = next(x for x in ext.languages if x["id"] == new_id)
            rel = related.get(lang["code"])
            rows.append(row(lang_token_ids(previous, [rel])[rel]) if rel else mean_lang)
    over_ids, over_rows = [], []
    for lang in ext.languages:
        if lang["stage"] == stage and not lang["new"]:
            rel = related.get(lang["code"])
            over_ids.append(lang["id"])
            over_rows.append(row(lang_token_ids(previous, [rel])[rel]) if rel else row(lang["id"]))
    dim = table.shape[1]
    return (torch.stack(rows) if rows else torch.zeros(0, dim)), over_ids, (torch.stack(over_rows) if over_rows else torch.zeros(0, dim))


def _all_lang_ids(tokenizer: Any) -> list[int]:
    from lslo.languages import LANGUAGES, _token_id, detect_style

    style = detect_style(tokenizer)
    tokens = [f"__{x.m2m}__" if style == "m2m100" else x.flores200 for x in LANGUAGES]
    return [i for t in tokens if t and (i := _token_id(tokenizer, t)) is not None]


def add_languages(
    model: nn.Module,
    tokenizer: Any,
    languages: Mapping[str, str],
    related: Mapping[str, str] | None = None,
    previous_tokenizer: Any = None,
    lslo_config: LSLoConfig | None = None,
    freeze_old: bool = True,
) -> LSLoModel:
    """Add `languages` (code -> tier) to `model` (an LSLoModel, or a base that gets `lslo_config`'s LSLo first).

    `tokenizer` is the extended tokenizer (its newest stage holds these languages); `previous_tokenizer` the
    one before that stage (default: the tokenizer as the extension's earlier stages left it).
    """
    related = dict(related or {})
    ext = extension_of(tokenizer)
    if ext is None:
        raise LsloError("add_languages: the tokenizer has no added languages; extend it first (lslo.extend.tokenizer.extend_tokenizer)")
    stage = ext.stages
    missing = [c for c in languages if (entry := ext.language(c)) is None or entry["stage"] != stage]
    if missing:
        raise LsloError(f"add_languages: {missing[0]!r} is not among the languages the tokenizer's newest extension added; extend the tokenizer with it")
    if not isinstance(model, LSLoModel):
        require_m2m100(model, "add_languages")
        if lslo_config is None:
            raise LsloError("add_languages: a base model needs an lslo_config (its own languages and ranks)")
        model = add_lslo(model, lslo_config, tokenizer=previous_tokenizer or upto_stage(tokenizer, stage - 1))
    base = model.base_model
    embed, head = _embeddings(base)
    added = embed.added if isinstance(embed, ExtendedEmbedding) else None
    rows_before = (embed.base.num_embeddings if added is not None else embed.num_embeddings)
    if rows_before != ext.base_rows:
        raise LsloError(f"add_languages: the tokenizer extension starts new ids at {ext.base_rows}, the model has "
                        f"{rows_before} embedding rows; extend the tokenizer with base_rows={rows_before}")  # fmt: skip
    if added is not None and added.stages != stage - 1:
        raise LsloError(f"add_languages: the model holds {added.stages} added stages, the tokenizer {stage}; add them in order")
    previous = previous_tokenizer if previous_tokenizer is not None else upto_stage(tokenizer, stage - 1)
    rows, over_ids, over_rows = _init_rows(base, tokenizer, previous, stage, related, added)
    if added is None:
        added = _install(model, AddedRows(embed.embedding_dim))
    added.add_stage(rows.to(embed.weight.dtype), over_ids, over_rows.to(embed.weight.dtype))
    # LSLo: a LoRA per new language; old languages frozen.
    cfg = model.lslo_config
    new_cfg = LSLoConfig.from_dict({**cfg.to_dict(), "languages": {**cfg.languages, **dict(languages)}})
    from lslo.languages import lang_token_ids

    new_cfg.lang_token_ids = {**(cfg.lang_token_ids or {}), **lang_token_ids(tokenizer, list(languages))}
    ranks = [new_cfg.rank(c) for c in languages]
    scales = [new_cfg.scale(c) for c in languages]
    for name, layer in lslo_layers(base).items():
        base.set_submodule(name, grow_layer(layer, ranks, scales))
    stages = {**getattr(model, "language_stages", {}), **dict.fromkeys(languages, stage)}
    frozen = set(getattr(model, "frozen_languages", [])) | (set(range(len(cfg.languages))) if freeze_old else set())
    return _finish(LSLoModel(base, new_cfg, model.routing, model.base_identity), stages, frozen)


def parameter_counts(model: LSLoModel) -> dict[str, int]:
    """Trainable parameters after `add_languages`: the new rows and the new languages' LoRAs (exact counts)."""
    frozen = set(getattr(model, "frozen_languages", []))
    lora = sum(layer.num_lora_parameters(i) for layer in model.lslo_layers().values()
               for i in range(len(model.languages)) if i not in frozen)  # fmt: skip
    rows = sum(p.numel() for n, p in model.named_parameters() if "added." in n and p.requires_grad)
    return {"lora": lora, "embedding_rows": rows, "total": lora + rows}
