"""The training checkpoint format: nested state as JSON, its tensors in one safetensors file (no pickle).

`write_checkpoint(folder, state)` takes any nesting of dicts, lists, tuples, numbers, strings, None, torch tensors
and numpy arrays (a model's trainable weights, an optimizer's `state_dict`, RNG states, a sampler's position, a
training log) and writes `checkpoint.json` + `checkpoint.safetensors`, atomically. `read_checkpoint(folder)`
gives the same structure back, bit for bit; a folder written by lslo before this format (`state.pt`) is still
read, with `torch.load`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lslo.errors import LsloError
from lslo.io import atomic_dir

STATE_JSON = "checkpoint.json"
TENSORS = "checkpoint.safetensors"
LEGACY = "state.pt"  # the pickle of lslo before 0.2: read only
FORMAT = "lslo-checkpoint/1"


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """A JSON-able copy of `obj`; tensors and arrays move to `tensors` under their path."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "iu" else obj.copy())
        return {"__ndarray__": path, "dtype": obj.dtype.str}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, f"{path}.k{i}"), _encode(v, tensors, f"{path}.{i}")]
                              for i, (k, v) in enumerate(obj.items())]}  # fmt: skip
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at {path}")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]))
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    return {k: _decode(v, tensors) for k, v in obj.items()}


def write_checkpoint(folder: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` to `folder` (replaced atomically: a crash leaves the previous checkpoint or this one)."""
    tensors: dict[str, torch.Tensor] = {}
    doc = {"format": FORMAT, "state": _encode(state, tensors, "s")}
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps(doc) + "\n", encoding="utf-8")


def read_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    """The state `write_checkpoint` wrote to `folder` (or an older lslo's `state.pt`)."""
    folder = Path(folder)
    if (folder / STATE_JSON).is_file():
        doc = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise LsloError(f"{folder}: checkpoint format {doc.get('format')!r}, not {FORMAT}; resume with the lslo that wrote it")
        return _decode(doc["state"], load_file(str(folder / TENSORS)))
    if (folder / LEGACY).is_file():
        return torch.load(folder / LEGACY, map_location="cpu", weights_only=False)
    raise LsloError(f"{folder}: no checkpoint there ({STATE_JSON} or {LEGACY}); the folder is damaged, remove it")
