"""The added rows of a model with added languages, in place: installed into the embeddings and output layer,
frozen per language, saved next to an adapter, loaded back, and folded into a merged direction.

`lslo.model` calls `save_added`, `load_added` and `plain_direction`; this module imports nothing from it (the
LSLo model arrives as an argument), so the two do not import each other. The surgery that adds languages is
`lslo.extend.model`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lslo.errors import LsloError
from lslo.extend.embeddings import AddedRows, ExtendedEmbedding, ExtendedHead
from lslo.layer import LSLoLinear

if TYPE_CHECKING:
    from lslo.model import LSLoModel


def _embeddings(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    inner = model.model
    return inner.encoder.embed_tokens, model.lm_head


def _freeze_slices(layer: LSLoLinear, frozen: list[int]) -> None:
    """Zero the gradient of the frozen languages' slices of A and B (hooks kept on the layer)."""
    for handle in getattr(layer, "_frozen_hooks", []):
        handle.remove()
    keep_a = torch.ones(layer.lora_A.shape[0], 1)
    for i in frozen:
        keep_a[layer.span(i)] = 0
    keep_b = keep_a.t()
    layer._frozen_hooks = [
        layer.lora_A.register_hook(lambda g, m=keep_a: g * m.to(g.device, g.dtype)),
        layer.lora_B.register_hook(lambda g, m=keep_b: g * m.to(g.device, g.dtype)),
    ]


@torch.no_grad()
def _install(model: LSLoModel, added: AddedRows) -> AddedRows:
    """Swap the model's embeddings and output layer for the extended ones reading `added`."""
    base = model.base_model
    embed, head = _embeddings(base)
    inner = base.model
    inner.encoder.embed_tokens = ExtendedEmbedding(embed, added)
    inner.decoder.embed_tokens = inner.encoder.embed_tokens
    base.lm_head = ExtendedHead(head, added, model.routing, [0] * len(model.languages))
    return added


def _finish(model: LSLoModel, stages: Mapping[str, int], frozen: set[int]) -> LSLoModel:
    """Record each language's stage (the head reads it) and freeze the `frozen` languages' LoRA slices."""
    model.language_stages = dict(stages)
    model.frozen_languages = sorted(frozen)
    model.base_model.lm_head.stage_of = torch.tensor([stages.get(c, 0) for c in model.languages], dtype=torch.long)
    for layer in model.lslo_layers().values():
        _freeze_slices(layer, model.frozen_languages)
    return model


ADDED_CONFIG = "lslo_added_languages.json"
ADDED_WEIGHTS = "lslo_added_rows.safetensors"


def has_added(model: Any) -> bool:
    return bool(getattr(model, "language_stages", None))


def save_added(model: LSLoModel, folder: str | Path) -> None:
    """Write the added rows (per stage) and what they need next to an adapter (`LSLoModel.save_pretrained`)."""
    from safetensors.torch import save_file

    added = model.base_model.model.encoder.embed_tokens.added
    tensors = {f"rows.{s}": p.detach().cpu().contiguous() for s, p in enumerate(added.rows)}
    tensors.update({f"overrides.{s}": p.detach().cpu().contiguous() for s, p in enumerate(added.overrides)})
    meta = {"format": "lslo-added-languages", "version": 1, "base_rows": model.base_model.model.encoder.embed_tokens.base_rows,
            "row_stage": added.row_stage, "override_ids": added.override_ids, "override_stage": added.override_stage,
            "language_stages": model.language_stages, "frozen_languages": model.frozen_languages}  # fmt: skip
    folder = Path(folder)
    (folder / ADDED_CONFIG).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    save_file(tensors, str(folder / ADDED_WEIGHTS), metadata={"format": "pt"})


def load_added(model: LSLoModel, folder: str | Path) -> LSLoModel:
    """Put the added rows saved in `folder` into a just-loaded adapter (no-op when it has none)."""
    from safetensors.torch import load_file

    from lslo.languages import register_language

    folder = Path(folder)
    if not (folder / ADDED_CONFIG).is_file():
        return model
    try:
        meta = json.loads((folder / ADDED_CONFIG).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / ADDED_WEIGHTS))
        stages = int(max(meta["row_stage"] + meta["override_stage"], default=0))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise LsloError(f"{folder}: added-language files unreadable ({err}); re-save the model with lslo") from None
    embed = model.base_model.model.encoder.embed_tokens
    if embed.num_embeddings != meta["base_rows"]:
        raise LsloError(f"{folder}: made for a base with {meta['base_rows']} embedding rows, this one has {embed.num_embeddings}")
    for code in meta["language_stages"]:
        register_language(code)
    added = _install(model, AddedRows(embed.embedding_dim))
    for s in range(stages):
        ids = [i for i, st in zip(meta["override_ids"], meta["override_stage"], strict=True) if st == s + 1]
        added.add_stage(tensors[f"rows.{s}"], ids, tensors[f"overrides.{s}"])
    for p in list(added.rows) + list(added.overrides):
        p.requires_grad_(False)  # a loaded model trains nothing new unless languages are added to it
    return _finish(model, meta["language_stages"], set(meta["frozen_languages"]))


@torch.no_grad()
def plain_direction(model: LSLoModel, merged: nn.Module, src: str, tgt: str) -> nn.Module:
    """`merged` (a copy of `model`'s base with direction src->tgt folded in) as a plain transformers model.

    An old direction gets the base's own embedding and output layer back (the model an LSLo run without added
    languages exports, bit for bit). A direction with an added language gets a vocabulary of the base rows plus
    the added rows up to its languages' stage; the input rows of its existing-but-untrained language tokens are
    their trained rows (the output layer keeps the base rows: it is then untied), and the added ids its target
    may not use are listed in `generation_config.suppress_tokens`.
    """
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100ScaledWordEmbedding

    embed = merged.model.encoder.embed_tokens
    if not isinstance(embed, ExtendedEmbedding):
        return merged
    stage = {code: model.language_stages.get(code, 0) for code in model.languages}
    s_src, s_tgt = (stage[model.languages[model.language_index(c)[0]]] for c in (src, tgt))
    base_embed, head, added = embed.base, merged.lm_head.base, embed.added
    inner = merged.model
    if max(s_src, s_tgt) == 0:
        inner.encoder.embed_tokens = inner.decoder.embed_tokens = inner.shared = base_embed
        merged.lm_head = head
        return merged
    width = added.width(max(s_src, s_tgt))
    rows = added.all_rows(width).to(base_embed.weight.dtype)
    w_in = torch.cat([base_embed.weight, rows], 0)
    w_out = torch.cat([head.weight, rows], 0)
    tokens = {model.lang_token_id(model.language_index(c)[0]) for c in (src, tgt)}
    overrides = added.all_overrides()
    for j, token in enumerate(added.override_ids):
        if token in tokens:
            w_in[token] = overrides[j].to(w_in.dtype)
    size, dim = w_in.shape
    new_embed = M2M100ScaledWordEmbedding(size, dim, base_embed.padding_idx, embed_scale=base_embed.embed_scale)
    new_embed.weight = nn.Parameter(w_in.clone())
    inner.encoder.embed_tokens = inner.decoder.embed_tokens = inner.shared = new_embed
    merged.lm_head = nn.Linear(dim, size, bias=False, device=w_out.device, dtype=w_out.dtype)
    merged.lm_head.weight = nn.Parameter(w_out.clone())
    merged.config.vocab_size = size
    merged.config.tie_word_embeddings = bool(torch.equal(w_in, w_out))
    blocked = list(range(embed.base_rows + added.width(s_tgt), size))
    merged.generation_config.suppress_tokens = blocked or None
    return merged
