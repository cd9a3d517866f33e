"""Embedding rows for added vocabulary, and an output head that keeps old directions exact. Math on tensors only.

The base embedding and output matrices stay as they are (frozen, same shapes, so every kernel that computes an
old direction is the one it was). New ids (from `base_rows` on) read rows from per-stage parameters (stage s =
the s-th time languages were added; only the newest stage trains):

    embedding(id) = base(id)                          id < base_rows (an existing-but-untrained language token
                                                       of a new language reads its own trainable row instead)
                  = rows[id - base_rows] * scale      id >= base_rows
    logits        = [base_head(h), h @ rows[:k]^T]    k = the new rows a sample's target language may use

A sample whose target is an old language gets k = 0: the new columns take no probability mass. When every
sample of a call shares k, the logits are exactly that wide (an old-target call returns the base head's
logits, bit for bit); when samples differ, the columns a sample may not use are -inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lslo.routing import Routing


class AddedRows(nn.Module):
    """Rows of added ids and the input rows that replace existing language tokens, one parameter per stage."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.rows = nn.ParameterList()  # stage s-1: the new ids' rows added at stage s
        self.overrides = nn.ParameterList()  # stage s-1: input rows of existing tokens given to stage s languages
        self.row_stage: list[int] = []
        self.override_ids: list[int] = []
        self.override_stage: list[int] = []

    def add_stage(self, rows: torch.Tensor, override_ids: Sequence[int], overrides: torch.Tensor) -> None:
        """Append stage len(self.rows)+1; earlier stages stop training."""
        for p in list(self.rows) + list(self.overrides):
            p.requires_grad_(False)
        stage = len(self.rows) + 1
        self.rows.append(nn.Parameter(rows.detach().clone()))
        self.overrides.append(nn.Parameter(overrides.detach().clone().reshape(len(override_ids), self.dim)))
        self.row_stage += [stage] * rows.shape[0]
        self.override_ids += list(override_ids)
        self.override_stage += [stage] * len(override_ids)

    @property
    def stages(self) -> int:
        return len(self.rows)

    def all_rows(self, upto: int | None = None) -> torch.Tensor:
        """The new ids' rows (of the first `upto` of them), stages concatenated."""
        cat = torch.cat(list(self.rows), 0) if len(self.rows) else torch.zeros(0, self.dim)
        return cat if upto is None else cat[:upto]

    def all_overrides(self) -> torch.Tensor:
        return torch.cat(list(self.overrides), 0) if len(self.overrides) else torch.zeros(0, self.dim)

    def width(self, stage: int) -> int:
        """How many new rows a target language added at `stage` may use (0 for an old language)."""
        return sum(s <= stage for s in self.row_stage)


class ExtendedEmbedding(nn.Module):
    """A frozen base embedding (its rows and scale untouched) followed by the added rows."""

    def __init__(self, base: nn.Embedding, added: AddedRows) -> None:
        super().__init__()
        self.base = base
        self.added = added
        self.base_rows = base.num_embeddings

    @property
    def weight(self) -> torch.Tensor:  # what code reading `embed_tokens.weight` (dtype, device) expects
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        new = ids >= self.base_rows
        over_ids = torch.tensor(self.added.override_ids, dtype=ids.dtype, device=ids.device)
        over = torch.isin(ids, over_ids) if over_ids.numel() else torch.zeros_like(new)
        if not bool((new | over).any()):
            return self.base(ids)  # old ids only: the base's own lookup
        out = self.base(ids.masked_fill(new, 0))
        scale = getattr(self.base, "embed_scale", 1.0)
        table = torch.cat([self.added.all_rows(), self.added.all_overrides()], 0).to(out.device)
        index = torch.where(new, ids - self.base_rows, 0)
        if over_ids.numel():
            position = (ids.unsqueeze(-1) == over_ids).float().argmax(-1)
            index = torch.where(over, len(self.added.row_stage) + position, index)
        extra = F.embedding(index, table) * scale
        return torch.where((new | over).unsqueeze(-1), extra.to(out.dtype), out)


class ExtendedHead(nn.Module):
    """The base output layer, then the added rows' logits for the samples whose target language may use them.

    Each output row's target language is read from the model's `Routing` (as an LSLo layer reads it), and
    `stage_of[language index]` is the stage that language was added at (0: an old language).
    """

    def __init__(self, base: nn.Linear, added: AddedRows, routing: Routing, stage_of: Sequence[int]) -> None:
        super().__init__()
        self.base = base
        self.added = added
        self.routing = routing
        self.register_buffer("stage_of", torch.tensor(list(stage_of), dtype=torch.long), persistent=False)

    def target_stages(self, rows: int) -> int | torch.Tensor:
        """The target stage of each of `rows` output rows, or one int when they share it."""
        index, single = self.routing.lookup("tgt", rows)
        if single is not None:
            return int(self.stage_of[single])
        stages = self.stage_of.to(index.device)[index]
        return int(stages[0]) if bool((stages == stages[0]).all()) else stages

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.base(h)
        stages = self.target_stages(h.shape[0])
        row_stage = torch.tensor(self.added.row_stage, dtype=torch.long, device=h.device)
        if isinstance(stages, int):
            width = self.added.width(stages)
            if width == 0:
                return logits  # an old target language: exactly the base's logits
            return torch.cat([logits, F.linear(h, self.added.all_rows(width).to(h.dtype))], -1)
        width = int((row_stage.unsqueeze(0) <= stages.unsqueeze(1)).sum(1).max())
        if width == 0:
            return logits
        extra = F.linear(h, self.added.all_rows(width).to(h.dtype))
        blocked = row_stage[:width].unsqueeze(0) > stages.unsqueeze(1)  # (rows, width)
        extra = extra.masked_fill(blocked.view(blocked.shape[0], *([1] * (h.dim() - 2)), width), float("-inf"))
        return torch.cat([logits, extra.to(logits.dtype)], -1)
