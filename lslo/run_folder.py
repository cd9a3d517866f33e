"""A training run's output folder: the checks before a run starts or resumes there (`check_out_dir`), what an
interrupted write left behind, the checkpoints (listed, pruned) and the RNG streams they carry, and the saved model.

    run.json                 the configuration (a different run here is refused)
    metrics.jsonl            one JSON record per log / validation
    checkpoints/step-N/      latest checkpoint (trainable weights, optimizer, schedule, sampler, RNG, log)
    model/                   the trained adapter or model (`save_pretrained`), written at the end
    best/                    with `keep_best`: the model of the lowest validation loss (+ lslo_best.json)
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lslo.errors import LsloError
from lslo.io import atomic_dir, write_json
from lslo.run_config import LEGACY_SETTINGS, RESUMABLE_KEYS, TrainConfig

# -- the RNG streams a checkpoint carries ------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}



# -- output directory and checkpoints ------------------------------------------------------------


def _clean_partial(folder: Path) -> None:
    """Undo what an interrupted atomic write left behind.

    `.<name>.*.tmp` is a half-written output: removed. `.<name>.old` is the previous complete version
    of a directory that was being replaced: put back when `<name>` is missing, else removed.
    """
    if not folder.is_dir():
        return
    for p in sorted(folder.iterdir()):
        if not p.name.startswith("."):
            continue
        if p.name.endswith(".old"):
            target = p.with_name(p.name[1:-4])
            if not target.exists():
                os.replace(p, target)
                continue
        if p.name.endswith(".tmp") or p.name.endswith(".old"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def checkpoints(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))


def prune_checkpoints(out: Path, keep: int) -> None:
    """Remove all but the newest `keep` checkpoints."""
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old)


PATH_KEYS = ("data", "base_model", "out_dir", "tokenizer")


def _same_setting(key: str, before: Any, now: Any) -> bool:
    """Equal settings; paths are compared after resolving symlinks (a run reached by another path)."""
    if key in PATH_KEYS and isinstance(before, str) and isinstance(now, str):
        return os.path.realpath(before) == os.path.realpath(now)
    return before == now


def check_out_dir(cfg: TrainConfig) -> bool:
    """Check that `cfg.out_dir` may be used; True when there is a run to resume."""
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise LsloError(f"out_dir {out}: is a file; give a directory")
    run_file = out / "run.json"
    if not run_file.is_file():
        if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
            raise LsloError(f"out_dir {out}: not empty and holds no lslo run; choose a new directory")
        return False
    saved = json.loads(run_file.read_text(encoding="utf-8"))
    for key, value in LEGACY_SETTINGS.items():  # e.g. a run started before `optimizer` existed keeps AdamW
        if key not in saved and getattr(cfg, key) == TrainConfig.__dataclass_fields__[key].default:
            setattr(cfg, key, value)
    now = cfg.to_dict()
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                for f in dataclasses.fields(TrainConfig)}  # fmt: skip
    for key in sorted(set(saved) | set(now)):
        # A key that a newer lslo added is compared with the value such runs had: older runs still resume.
        before = saved.get(key, LEGACY_SETTINGS.get(key, defaults.get(key)))
        if key not in RESUMABLE_KEYS and not _same_setting(key, before, now.get(key)):
            if not checkpoints(out) and not (out / "model").exists():
                return False  # a run that stopped before its first checkpoint: nothing to lose, start afresh
            raise LsloError(
                f"out_dir {out}: holds a different run ({key}={before!r} there, {now.get(key)!r} now); "
                "choose a new directory"
            )
    if not cfg.resume:
        raise LsloError(
            f"out_dir {out}: already holds this run; resume it (resume: true / --resume) or choose a new directory"
        )
    return True


# -- the trained model -----------------------------------------------------------------------------


BEST_FILE = "lslo_best.json"  # in best/: the step, epoch and validation loss of the kept model


def save_model(model: nn.Module, tokenizer: Any, method: str, folder: Path, best: Mapping[str, Any] | None = None) -> None:
    """Write the trained adapter or model (a full model with its tokenizer) to `folder`, atomically."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        if method == "full" or getattr(tokenizer, "lslo_extension", None) is not None:  # full FT, or languages added
            from lslo.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, tmp)
        if best is not None:
            write_json(tmp / BEST_FILE, dict(best))
