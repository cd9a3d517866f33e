"""The regime's learning-rate sweep: each group's grid (`sweep_lrs`: LR_STEPS powers of LR_FACTOR around the
centre, grown at a winning edge up to LR_MAX_STEP), the lr it chose (`chosen_lr`) and its result JSONs
(`load_sweep`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .regime_family import LR_CENTRE, LR_FACTOR, LR_MAX_STEP, LR_STEPS, SWEEP_FORMAT


def lr_text(lr: float) -> str:
    return f"{lr:.1e}".replace("e-0", "e-")


def sweep_lrs(group: str, results_dir: str | Path) -> list[float]:
    """The group's grid: LR_STEPS around the centre, extended while the lowest loss sits at a finished edge."""
    steps = list(LR_STEPS)
    done = {r["lr_step"]: r["min_valid_loss"] for r in load_sweep(results_dir).get(group, [])}
    while all(k in done for k in steps):
        best = min(steps, key=lambda k: done[k])
        if best == steps[0] and -best < LR_MAX_STEP:
            steps.insert(0, best - 1)
        elif best == steps[-1] and best < LR_MAX_STEP:
            steps.append(best + 1)
        else:
            break
    return [LR_CENTRE[group] * LR_FACTOR**k for k in steps]


def chosen_lr(group: str, results_dir: str | Path) -> float | None:
    """The swept lr of the lowest validation loss once every run of the grid is in; else None."""
    runs = {r["lr"]: r for r in load_sweep(results_dir).get(group, [])}
    grid = sweep_lrs(group, results_dir)
    if not all(any(math.isclose(lr, x) for x in runs) for lr in grid):
        return None
    return min(runs.values(), key=lambda r: r["min_valid_loss"])["lr"]


def load_sweep(results_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """group -> its finished sweep runs (result JSONs of SWEEP_FORMAT), by lr."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(results_dir).glob("sweep.*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        if r.get("format") == SWEEP_FORMAT:
            out.setdefault(r["group"], []).append(r)
    for runs in out.values():
        runs.sort(key=lambda r: r["lr"])
    return out
