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

Also here: per tier/layer/position accounting of what survives (`subspace_report`, `plot_subspace`) and a
compact export that stores only the surviving entries (`save_compact`, `load_compact`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lslo.config import POSITIONS
from lslo.errors import LsloError
from lslo.io import atomic_dir, atomic_path
from lslo.layer import LSLoLinear
from lslo.model import LSLoModel, open_adapter

SCOPES = ("language", "layer", "matrix")
UNITS = ("epoch", "step")
MATRICES = ("B", "AB")
_POSITION_OF = {path: pos for pos, path in POSITIONS.items()}


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
    if isinstance(model, LSLoModel):
        return model.lslo_layers()
    return {n: m for n, m in model.named_modules() if isinstance(m, LSLoLinear)}


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


# -- accounting ----------------------------------------------------------------------------------


def locate(name: str) -> tuple[str, int, str]:
    """`model.encoder.layers.3.self_attn.q_proj` -> ("encoder", 3, "q")."""
    parts = name.split(".")
    i = parts.index("layers")
    return parts[i - 1], int(parts[i + 1]), _POSITION_OF[".".join(parts[i + 2 :])]


def subspace_report(model: LSLoModel) -> dict[str, Any]:
    """What survives pruning, by tier x side x layer x position (and aggregated by position, layer, tier).

    Each row counts entries of A and B (`A_kept`/`A_total`, `B_kept`/`B_total`, summed over the tier's
    languages); `share` is kept / total over the pruned matrices (those with masks; both when none).
    """
    layers = model.lslo_layers()
    pruned = [k for k in "AB" if any(getattr(m, f"lora_{k}_mask") is not None for m in layers.values())] or ["A", "B"]
    tiers = model.lslo_config.languages
    rows: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for name, layer in layers.items():
        side, index, position = locate(name)
        for i, lang in enumerate(model.languages):
            row = rows.setdefault((tiers[lang], side, index, position), {
                "tier": tiers[lang], "side": side, "layer": index, "position": position,
                "A_kept": 0, "A_total": 0, "B_kept": 0, "B_total": 0,
            })  # fmt: skip
            for kind in "AB":
                weight, mask = getattr(layer, f"lora_{kind}"), getattr(layer, f"lora_{kind}_mask")
                part = weight[layer.span(i)] if kind == "A" else weight[:, layer.span(i)]
                row[f"{kind}_total"] += part.numel()
                if mask is None:
                    row[f"{kind}_kept"] += part.numel()
                else:
                    row[f"{kind}_kept"] += int((mask[layer.span(i)] if kind == "A" else mask[:, layer.span(i)]).sum())
    out_rows = list(rows.values())
    for row in out_rows:
        row["share"] = _share([row], pruned)

    def by(key: Any) -> dict[Any, float]:
        groups: dict[Any, list[dict[str, Any]]] = {}
        for row in out_rows:
            groups.setdefault(key(row), []).append(row)
        return {k: _share(v, pruned) for k, v in groups.items()}

    positions = by(lambda r: (r["side"], r["position"]))
    layer_shares = by(lambda r: (r["side"], r["layer"]))
    return {
        "pruned_matrices": "".join(pruned),
        "rows": out_rows,
        "positions": [{"side": s, "position": p, "share": v} for (s, p), v in positions.items()],
        "layers": [{"side": s, "layer": i, "share": v} for (s, i), v in layer_shares.items()],
        "tiers": by(lambda r: r["tier"]),
    }


def _share(rows: list[dict[str, Any]], kinds: list[str]) -> float:
    total = sum(r[f"{k}_total"] for r in rows for k in kinds)
    return sum(r[f"{k}_kept"] for r in rows for k in kinds) / max(total, 1)


def plot_subspace(report: dict[str, Any], path: str | Path) -> None:
    """PNG heatmaps of the surviving share by layer (x) and position (y), one row per tier, one column per side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report["rows"]
    tiers = [t for t in ("high", "medium", "low") if any(r["tier"] == t for r in rows)]
    sides = [s for s in ("encoder", "decoder") if any(r["side"] == s for r in rows)]
    fig = Figure(figsize=(5.0 * len(sides), 2.6 * len(tiers) + 0.6), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(tiers), len(sides), squeeze=False)
    image = None
    for ti, tier in enumerate(tiers):
        for si, side in enumerate(sides):
            mine = [r for r in rows if r["tier"] == tier and r["side"] == side]
            positions = [p for p in POSITIONS if any(r["position"] == p for r in mine)]
            layers = sorted({r["layer"] for r in mine})
            grid = np.full((len(positions), len(layers)), np.nan)
            for r in mine:
                grid[positions.index(r["position"]), layers.index(r["layer"])] = r["share"]
            ax = axes[ti][si]
            image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(layers)), [str(i) for i in layers])
            ax.set_yticks(range(len(positions)), positions)
            ax.set_title(f"{tier} tier, {side}", fontsize=10)
            ax.set_xlabel("layer")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label=f"surviving share of {report['pruned_matrices']}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# -- compact export ------------------------------------------------------------------------------

COMPACT_CONFIG = "adapter_config.json"
COMPACT_WEIGHTS = "adapter_compact.safetensors"
VALUE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save_compact(model: LSLoModel, directory: str | Path, dtype: str = "float32") -> dict[str, Any]:
    """Store only the surviving LoRA entries: per matrix kind, their values plus a bitmap or flat indices.

    A pruned matrix kind (masks present) is stored as its kept values, in layer order, plus whichever index
    is smaller: a bitmap over all entries (1 bit each) or flat indices over all layers' entries (int32, 4
    bytes per kept entry; int64 past 2**31 entries). A dense kind is stored as plain values. Returns the
    summary written into `adapter_config.json`.
    """
    if dtype not in VALUE_DTYPES:
        raise LsloError(f"save_compact: dtype={dtype!r}; use one of {', '.join(VALUE_DTYPES)}")
    layers = model.lslo_layers()
    tensors: dict[str, torch.Tensor] = {}
    encodings: dict[str, str] = {}
    for kind in "AB":
        weights = torch.cat([getattr(m, f"lora_{kind}").detach().cpu().reshape(-1) for m in layers.values()])
        masks = [getattr(m, f"lora_{kind}_mask") for m in layers.values()]
        if any(m is None for m in masks):
            encodings[kind] = "dense"
            tensors[f"{kind}.values"] = weights.to(VALUE_DTYPES[dtype])
            continue
        keep = torch.cat([m.cpu().reshape(-1) for m in masks])
        tensors[f"{kind}.values"] = weights[keep].to(VALUE_DTYPES[dtype])
        if keep.numel() / 8 <= 4 * int(keep.sum()):
            encodings[kind] = "bitmap"
            tensors[f"{kind}.bitmap"] = torch.from_numpy(np.packbits(keep.numpy()))
        else:
            encodings[kind] = "indices"
            index_dtype = torch.int32 if keep.numel() < 2**31 else torch.int64
            tensors[f"{kind}.indices"] = keep.nonzero().reshape(-1).to(index_dtype)
    summary = {"format": "lslo-compact", "version": 1, "dtype": dtype, "encoding": encodings,
               "layers": list(layers), "config": model.lslo_config.to_dict(), "base_model": model.base_identity}  # fmt: skip
    with atomic_dir(directory) as tmp:
        text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
        (tmp / COMPACT_CONFIG).write_text(text, encoding="utf-8")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / COMPACT_WEIGHTS))
    return summary


@torch.no_grad()
def load_compact(base_model: nn.Module, directory: str | Path) -> LSLoModel:
    """Load an adapter written by `save_compact` onto `base_model` (masks restored: it can train on)."""
    model, meta, weights_path = open_adapter(base_model, directory, COMPACT_CONFIG, COMPACT_WEIGHTS, "lslo-compact",
                                             "lslo.pruning.save_compact / lslo export --compact")  # fmt: skip
    config_path = Path(directory) / COMPACT_CONFIG
    layers = model.lslo_layers()
    if list(layers) != meta["layers"]:
        raise LsloError(f"{config_path}: its layers do not match the config's; the file is damaged")
    tensors = load_file(str(weights_path))
    for kind, encoding in meta["encoding"].items():
        weights = [getattr(m, f"lora_{kind}") for m in layers.values()]
        sizes = [w.numel() for w in weights]
        values = tensors[f"{kind}.values"].float()
        if encoding == "dense":
            flat = values
        else:
            if encoding == "bitmap":
                bits = np.unpackbits(tensors[f"{kind}.bitmap"].numpy(), count=sum(sizes))
                keep = torch.from_numpy(bits.astype(bool))
            else:
                keep = torch.zeros(sum(sizes), dtype=torch.bool)
                keep[tensors[f"{kind}.indices"].long()] = True
            flat = torch.zeros(sum(sizes)).masked_scatter_(keep, values)
            for layer, w, mask in zip(layers.values(), weights, keep.split(sizes), strict=True):
                setattr(layer, f"lora_{kind}_mask", mask.view(w.shape).to(w.device))
        for w, part in zip(weights, flat.split(sizes), strict=True):
            w.copy_(part.view(w.shape))
    return model
