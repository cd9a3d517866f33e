"""Gradual magnitude pruning of LSLo matrices down to each language's minimal subspace (Cao et al., 2024).

The pruned fraction follows the cubic schedule of Zhu & Gupta (2017), as in the paper's reference code:
0 before `start`, `R - R * (1 - (t - start) / duration) ** 3` during, `R` after; t counts epochs or
optimizer steps and the masks are recomputed every `every` units. Entries are ranked by magnitude within a
group (`scope`):

- `language`: one ranking per language over its matrices in every layer (each language ends at exactly R;
  layers and positions compete, so the survivors show where a language needs its parameters);
- `layer`: one ranking per LSLo layer over all languages' slices (languages compete);
- `matrix`: each language's matrix in each layer on its own.

Only B is pruned by default (A stays dense, as in the reference code); `matrices="AB"` prunes A too. A and
B are never ranked against each other (their scales differ). Masks only grow: an entry once pruned ranks
first forever. Masks live on the layers (`LSLoLinear.lora_A_mask` / `lora_B_mask`) and are applied to the
weights after each optimizer step, never in forward.

What survives is counted and exported by `lslo.subspace` (`subspace_report`, `plot_subspace`, `save_compact`,
`load_compact`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from lslo.errors import LsloError
from lslo.layer import LSLoLinear
from lslo.model import LSLoModel, lslo_layers

SCOPES = ("language", "layer", "matrix")
UNITS = ("epoch", "step")
MATRICES = ("B", "AB")


@dataclass
class PruningConfig:
    """Gradual pruning choices (paper: ratio 0.9, start 2, duration 10 epochs, pruned every epoch)."""

    ratio: float = 0.9  # final pruned fraction R
    start: float = 2.0  # t1: first update (in `unit`s)
    duration: float = 10.0  # t2: R is reached at start + duration
    unit: str = "epoch"  # "epoch" | "step"
    every: float = 1.0  # recompute masks every this many units
    scope: str = "language"  # "language" | "layer" | "matrix"
    matrices: str = "B"  # "B" | "AB"

    def __post_init__(self) -> None:
        def bad(key: str, fix: str) -> LsloError:
            return LsloError(f"pruning: {key}={getattr(self, key)!r}; {fix}")

        if not 0.0 <= self.ratio < 1.0:
            raise bad("ratio", "give the final pruned fraction in [0, 1), e.g. 0.9")
        if self.start < 0 or self.duration < 0:
            raise bad("start" if self.start < 0 else "duration", "use a value >= 0")
        if not self.every > 0:
            raise bad("every", "use a value > 0, e.g. 1")
        for key, allowed in (("unit", UNITS), ("scope", SCOPES), ("matrices", MATRICES)):
            if getattr(self, key) not in allowed:
                raise bad(key, f"use one of {', '.join(allowed)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sparsity_at(t: float, cfg: PruningConfig) -> float:
    """The cubic schedule: pruned fraction at time t (epochs or steps, as `cfg.unit`)."""
    if t < cfg.start:
        return 0.0
    if cfg.duration == 0 or t >= cfg.start + cfg.duration:
        return cfg.ratio
    return cfg.ratio - cfg.ratio * (1.0 - (t - cfg.start) / cfg.duration) ** 3


# -- masks ---------------------------------------------------------------------------------------


def _layers(model: LSLoModel | nn.Module) -> dict[str, LSLoLinear]:
    """Name -> LSLo layer (relative to the base model of an `LSLoModel`)."""
    return model.lslo_layers() if isinstance(model, LSLoModel) else lslo_layers(model)


def _pieces(layer: LSLoLinear, kind: str, lang: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, keep-mask) views of language `lang`'s slice of matrix `kind` ("A" or "B")."""
    s = layer.span(lang)
    if kind == "A":
        return layer.lora_A[s], layer.lora_A_mask[s]
    return layer.lora_B[:, s], layer.lora_B_mask[:, s]


def ensure_masks(model: LSLoModel | nn.Module, matrices: str = "B") -> None:
    """Give every LSLo layer an all-keep mask for each matrix in `matrices` that has none yet."""
    for layer in _layers(model).values():
        for kind in matrices:
            if getattr(layer, f"lora_{kind}_mask") is None:
                weight = getattr(layer, f"lora_{kind}")
                setattr(layer, f"lora_{kind}_mask", torch.ones_like(weight, dtype=torch.bool))


def _groups(layers: list[LSLoLinear], num_langs: int, scope: str) -> Iterator[list[tuple[LSLoLinear, int]]]:
    if scope == "language":
        for lang in range(num_langs):
            yield [(layer, lang) for layer in layers]
    elif scope == "layer":
        for layer in layers:
            yield [(layer, lang) for lang in range(num_langs)]
    else:
        for layer in layers:
            for lang in range(num_langs):
                yield [(layer, lang)]


@torch.no_grad()
def _prune_group(weights: list[torch.Tensor], masks: list[torch.Tensor], ratio: float) -> None:
    """Prune the round(ratio * n) smallest-magnitude entries of one group; already pruned ones go first."""
    keep = torch.cat([m.reshape(-1) for m in masks])
    n = keep.numel()
    k = max(math.floor(ratio * n + 0.5), n - int(keep.sum()))
    if k == 0:
        return
    scores = torch.cat([w.detach().reshape(-1).abs().float() for w in weights]).masked_fill(~keep, -1.0)
    new_keep = torch.ones_like(keep)
    new_keep[torch.topk(scores, k, largest=False, sorted=False).indices] = False
    for mask, part in zip(masks, new_keep.split([m.numel() for m in masks]), strict=True):
        mask.copy_(part.view(mask.shape))


@torch.no_grad()
def prune(model: LSLoModel | nn.Module, ratio: float, scope: str = "language", matrices: str = "B") -> None:
    """Grow the keep-masks so that each `scope` group has `ratio` of its entries pruned; zero them."""
    if scope not in SCOPES:
        raise LsloError(f"pruning: scope={scope!r}; use one of {', '.join(SCOPES)}")
    layers = list(_layers(model).values())
    if not layers:
        raise LsloError("pruning: the model has no LSLo layers; build it with add_lslo")
    ensure_masks(model, matrices)
    num_langs = len(layers[0].ranks)
    for kind in matrices:
        for group in _groups(layers, num_langs, scope):
            pieces = [_pieces(layer, kind, lang) for layer, lang in group]
            _prune_group([w for w, _ in pieces], [m for _, m in pieces], ratio)
    for layer in layers:
        layer.apply_masks()


def apply_masks(model: LSLoModel | nn.Module) -> None:
    """Zero every pruned entry of every LSLo layer."""
    for layer in _layers(model).values():
        layer.apply_masks()


def mask_state(model: LSLoModel | nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Layer name -> {"A": mask, "B": mask} (only the masks that exist), on the CPU."""
    out = {}
    for name, layer in _layers(model).items():
        masks = {k: getattr(layer, f"lora_{k}_mask") for k in "AB"}
        masks = {k: m.detach().cpu().clone() for k, m in masks.items() if m is not None}
        if masks:
            out[name] = masks
    return out


def load_mask_state(model: LSLoModel | nn.Module, state: dict[str, dict[str, torch.Tensor]]) -> None:
    layers = _layers(model)
    unknown = sorted(set(state) - set(layers))
    if unknown:
        raise LsloError(f"pruning state: layer {unknown[0]!r} is not in this model; resume with the same config")
    for name, layer in layers.items():
        for kind in "AB":
            mask = state.get(name, {}).get(kind)
            weight = getattr(layer, f"lora_{kind}")
            if mask is not None and tuple(mask.shape) != tuple(weight.shape):
                raise LsloError(f"pruning state: mask of {name}.lora_{kind} has shape {tuple(mask.shape)}, "
                                f"expected {tuple(weight.shape)}; resume with the same config")  # fmt: skip
            setattr(layer, f"lora_{kind}_mask", None if mask is None else mask.to(weight.device, torch.bool))
        layer.apply_masks()


# -- the trainer callback ------------------------------------------------------------------------


class GradualPruner:
    """Trainer callback: `pruner(step, model)` after every optimizer step.

    Recomputes the masks when the schedule is due and zeroes the pruned entries after every step, so
    AdamW momentum and weight decay never revive them. Once bound to a model (`setup`, or the first call)
    it also masks the gradients of pruned entries (so clipping and Adam's moments ignore them), and with
    an optimizer it zeroes their optimizer state at each mask update. `state_dict()` holds the masks and
    the schedule position for resume.
    """

    def __init__(
        self,
        model: LSLoModel | None = None,
        cfg: PruningConfig | None = None,
        steps_per_epoch: int | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.cfg = cfg or PruningConfig()
        self.model: LSLoModel | None = None
        self.optimizer = optimizer
        self.steps_per_epoch = steps_per_epoch
        self.last_time: float | None = None  # schedule time of the last mask update
        self.ratio = 0.0  # pruned fraction of the last mask update
        self._pending: dict[str, Any] | None = None
        self._hooks: list[Any] = []
        if model is not None:
            self.setup(model, optimizer, steps_per_epoch)

    def setup(
        self, model: LSLoModel, optimizer: torch.optim.Optimizer | None = None, steps_per_epoch: int | None = None
    ) -> None:
        """Bind to the model being trained (and its optimizer and epoch length, when known)."""
        self.close()
        self.model = model
        self.optimizer = optimizer or self.optimizer
        self.steps_per_epoch = steps_per_epoch or self.steps_per_epoch
        for layer in _layers(model).values():
            for kind in self.cfg.matrices:
                param = getattr(layer, f"lora_{kind}")
                self._hooks.append(param.register_hook(_GradMask(layer, kind)))
        if self._pending is not None:
            load_mask_state(model, self._pending)
            self._pending = None

    def close(self) -> None:
        """Remove the gradient hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @property
    def final(self) -> bool:
        """Whether the masks have reached the final ratio (a model kept before that is not the pruned one)."""
        return self.ratio >= self.cfg.ratio - 1e-9

    def time(self, step: int) -> float:
        if self.cfg.unit == "step":
            return float(step)
        if not self.steps_per_epoch:
            raise LsloError("pruning: unit='epoch' needs steps_per_epoch (optimizer steps per epoch); give it or use unit='step'")
        return step / self.steps_per_epoch

    def _due(self, t: float) -> float | None:
        """The schedule time to update the masks at, or None when no update is due."""
        c = self.cfg
        if t < c.start:
            return None
        end = c.start + c.duration
        tq = end if t >= end else c.start + math.floor((t - c.start) / c.every + 1e-9) * c.every
        return tq if self.last_time is None or tq > self.last_time else None

    def __call__(self, step: int, model: LSLoModel | None = None) -> None:
        if self.model is None or (model is not None and model is not self.model):
            if model is None:
                raise LsloError("GradualPruner: no model; pass one to GradualPruner(...) or setup()")
            self.setup(model)
        tq = self._due(self.time(step))
        if tq is not None:
            self.last_time, self.ratio = tq, sparsity_at(tq, self.cfg)
            prune(self.model, self.ratio, self.cfg.scope, self.cfg.matrices)
            self._zero_optimizer_state()
        else:
            apply_masks(self.model)

    @torch.no_grad()
    def _zero_optimizer_state(self) -> None:
        if self.optimizer is None:
            return
        for layer in _layers(self.model).values():
            for kind in self.cfg.matrices:
                param, mask = getattr(layer, f"lora_{kind}"), getattr(layer, f"lora_{kind}_mask")
                for value in self.optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        value.masked_fill_(~mask, 0)

    def state_dict(self) -> dict[str, Any]:
        masks = mask_state(self.model) if self.model is not None else (self._pending or {})
        return {"config": self.cfg.to_dict(), "last_time": self.last_time, "ratio": self.ratio, "masks": masks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("config") != self.cfg.to_dict():
            raise LsloError("pruning state: saved with other pruning settings; resume with the same ones")
        self.last_time, self.ratio = state["last_time"], state["ratio"]
        if self.model is not None:
            load_mask_state(self.model, state["masks"])
        else:
            self._pending = state["masks"]


class _GradMask:
    """Gradient hook: zero the gradient of the pruned entries of one matrix (a no-op while unpruned)."""

    def __init__(self, layer: LSLoLinear, kind: str) -> None:
        self.layer, self.kind = layer, kind

    def __call__(self, grad: torch.Tensor) -> torch.Tensor | None:
        mask = getattr(self.layer, f"lora_{self.kind}_mask")
        return None if mask is None else grad.masked_fill(~mask, 0.0)
