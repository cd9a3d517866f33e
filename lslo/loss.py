"""The training loss, in one place: label-smoothed cross-entropy over a batch's target tokens.

`lslo train` (each micro-batch of a step, and validation) and the architecture searches (`lslo.search`) compute
it with `batch_loss`; labels are padded with `IGNORE_INDEX`, which the loss skips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # the label of a padded position: not counted


def label_smoothed_nll(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Summed label-smoothed cross-entropy, summed NLL, and the number of counted tokens.

    Per token: (1 - eps) * -log p(y) + eps / V * sum_v -log p(v), the same as
    `F.cross_entropy(..., label_smoothing=eps)`; positions labelled -100 are ignored. After `compile_loss()`
    (what `compile: true` calls) the terms come from one compiled kernel set: log-softmax, the gather and both
    sums fused instead of a pass over the (tokens x vocabulary) logits each.
    """
    loss, nll, n = (_compiled or _terms)(logits, labels, epsilon)
    return loss, nll, int(n)


def _terms(logits: torch.Tensor, labels: torch.Tensor, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lprobs = F.log_softmax(logits.float(), dim=-1)
    mask = labels != IGNORE_INDEX
    target = labels.masked_fill(~mask, 0)
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    blocked = torch.isneginf(lprobs)  # vocabulary a row's target language may not use (lslo.extend): -inf
    # Traced (no data-dependent branch): always the masked form, equal to the plain one when nothing is blocked.
    if epsilon and (torch.compiler.is_compiling() or bool(blocked.any())):  # smooth over the vocabulary the row may use
        smooth = -lprobs.masked_fill(blocked, 0.0).sum(-1)
        loss = (1.0 - epsilon) * nll + epsilon * smooth / (~blocked).sum(-1)
    else:
        smooth = -lprobs.sum(-1)
        loss = (1.0 - epsilon) * nll + epsilon / lprobs.size(-1) * smooth
    return loss.masked_fill(~mask, 0.0).sum(), nll.masked_fill(~mask, 0.0).sum(), mask.sum()


Terms = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
_compiled: Terms | None = None  # the compiled terms in use (`use_compiled_loss`); None: `_terms`, eagerly


def compile_loss(backend: str = "inductor") -> None:
    """Compute `label_smoothed_nll`'s terms with `torch.compile` from now on, in this process (dynamic shapes:
    one graph for every batch size, length and vocabulary)."""
    if _compiled is None:
        use_compiled_loss(torch.compile(_terms, dynamic=True, backend=backend))


def compiled_loss() -> Terms | None:
    """The compiled terms `label_smoothed_nll` runs (None: the eager ones)."""
    return _compiled


def use_compiled_loss(terms: Terms | None) -> Terms | None:
    """Run `terms` (a compiled `_terms`, as `compiled_loss()` returned it; None: eager) from now on; returns the
    one used before. For code that times or tests eager and compiled steps in one process."""
    global _compiled
    before, _compiled = _compiled, terms
    return before


@contextlib.contextmanager
def eager_loss() -> Iterator[None]:
    """Inside, `label_smoothed_nll` runs eagerly (a `compile_loss` inside lasts until the end); the state before
    is restored when it ends."""
    before = use_compiled_loss(None)
    try:
        yield
    finally:
        use_compiled_loss(before)


def batch_loss(
    model: nn.Module,
    inputs: Mapping[str, Any],
    labels: torch.Tensor,
    epsilon: float = 0.0,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """`label_smoothed_nll` of the model's logits on one batch, the forward pass under `autocast()`: the summed
    smoothed loss, the summed NLL and the number of target tokens (inputs and labels on the model's device)."""
    with autocast():
        logits = model(**{"use_cache": False, **inputs}).logits  # no decoding cache: a loss never reads it
    return label_smoothed_nll(logits, labels, epsilon)
