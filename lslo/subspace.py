"""The surviving subspace of a pruned LSLo model: what each tier, layer and position keeps, and a compact export.

`subspace_report` / `plot_subspace` count the entries the pruning masks (`lslo.pruning`) keep, per tier x side x
layer x position; `save_compact` / `load_compact` store only those entries (values plus a bitmap or flat
indices), so a 90%-pruned adapter is about a tenth of the dense one on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lslo.config import POSITIONS
from lslo.errors import LsloError
from lslo.io import atomic_dir, atomic_path
from lslo.model import LSLoModel, open_adapter

_POSITION_OF = {path: pos for pos, path in POSITIONS.items()}


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
                                             "lslo.subspace.save_compact / lslo export --compact")  # fmt: skip
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
