"""The regime family as data: its protocol's constants, its experiments and sweep groups, and its result JSONs
read back (`load_family`). The protocol itself is described in `regime.py`'s docstring; every other `regime_*`
module builds on this one, which imports none of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import matrix

FORMAT = "lslo-bible12-regime/1"
SWEEP_FORMAT = "lslo-bible12-regime-sweep/1"
SECTION = "bible12-regime"
RESULTS_DIR = matrix.HERE / "results" / "regime"
RUNS_DIR = matrix.ROOT / "runs" / "bench-regime"
CURVES_PNG = "curves.png"

EPOCHS = 15
SWEEP_EPOCHS = 4
SUBSET = 100
TREND_SUBSET = 33  # the trend's smaller point: 33 -> 100 verses is the 3x growth (300 verses: ~6 CPU hours a run)
SUBSET_SEED = 0
MAX_TOKENS = 2048
VALID_PER_DIRECTION = 10
MAX_SENTENCES = 50
BEAMS = 1
EVAL_PRECISION = "bf16"
CHECKPOINT = "best"  # the verdicts' checkpoint, chosen before any test score was seen
LR_CENTRE = {"full": matrix.LR_FULL, "lora": matrix.LR_ADAPTER, "lslo": matrix.LR_ADAPTER, "lslo-888": matrix.LR_ADAPTER}
LR_STEPS = (-1, 0, 1)  # the first grid, in powers of LR_FACTOR around the centre
LR_FACTOR = 3.0
LR_MAX_STEP = 3  # how far an edge may extend the grid

SWEPT = "swept"  # `lr` placeholder: the lr the sweep of the experiment's `sweep` group chose
PRUNE = {"ratio": 0.9, "unit": "epoch", "start": 2, "duration": 10, "every": 1, "scope": "language"}  # the paper's t1, t2
R228 = {"ranks": {"high": 2, "medium": 2, "low": 8}}

EXPERIMENTS: list[dict[str, Any]] = [
    {"name": "full", "seeds": [1, 2, 3], "sweep": "full", "about": "full fine-tuning", "overrides": {"method": "full"}},
    {"name": "lora", "seeds": [1, 2, 3], "sweep": "lora", "about": "shared peft LoRA, rank matched to lslo-228's parameter count",
     "overrides": {"method": "lora", "lora_rank": matrix.MATCH}},
    {"name": "lslo-228", "seeds": [1, 2, 3], "sweep": "lslo", "about": "LSLo 2/2/8 (the paper's best routing)",
     "overrides": {"lslo": R228}},
    {"name": "lslo-888", "seeds": [1, 2, 3], "sweep": "lslo", "about": "LSLo 8/8/8",
     "overrides": {"lslo": {"ranks": {"high": 8, "medium": 8, "low": 8}}}},
    {"name": "lslo-228-prune", "seeds": [1, 2, 3], "sweep": "lslo",
     "about": "LSLo 2/2/8, 90% gradual pruning (language scope, epochs 2 to 12, every epoch)",
     "overrides": {"lslo": R228, "prune": PRUNE}},
    {"name": f"full-v{TREND_SUBSET}", "seeds": [1, 2], "sweep": "full", "subset": TREND_SUBSET, "about": f"full fine-tuning, {TREND_SUBSET} verses",
     "overrides": {"method": "full"}},
    {"name": f"lslo-228-v{TREND_SUBSET}", "seeds": [1, 2], "sweep": "lslo", "subset": TREND_SUBSET, "about": f"LSLo 2/2/8, {TREND_SUBSET} verses",
     "overrides": {"lslo": R228}},
]  # fmt: skip
# Which experiment's config each sweep group sweeps. "lslo-888" is swept to check that LSLo 2/2/8's lr (which the
# lslo-888 runs keep, so that their seeds stay comparable) is fair to 8/8/8: the table shows both choices.
SWEEPS = {"full": "full", "lora": "lora", "lslo": "lslo-228", "lslo-888": "lslo-888"}


def experiment(name: str) -> dict[str, Any]:
    return next(e for e in EXPERIMENTS if e["name"] == name)


def load_family(results_dir: str | Path, checkpoint: str = CHECKPOINT) -> dict[str, list[dict[str, Any]]]:
    """experiment -> its runs, each seen through one checkpoint ("best" or "last") for the statistics."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        if r.get("format") != FORMAT:
            continue
        if r["checkpoints"]:
            r = {**r, **{k: r["checkpoints"][checkpoint][k] for k in ("overall", "groups", "directions")}}
        out.setdefault(r["experiment"], []).append(r)
    for runs in out.values():
        runs.sort(key=lambda r: r["seed"] or 0)
    return out
