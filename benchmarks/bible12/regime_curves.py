"""What the regime's validation curves show: the plot (`curves.png`), how far each run over-fits after its
lowest validation loss, and how sensitive the best-by-validation pick is; from the result JSONs only."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import analysis, matrix
from .regime_family import CURVES_PNG, EXPERIMENTS, SUBSET, TREND_SUBSET, VALID_PER_DIRECTION, load_family
from .regime_sweep import lr_text


def plot_curves(results_dir: str | Path) -> Path | None:
    """Validation loss per epoch of every family run (one line per run) -> curves.png; None without runs."""
    data = load_family(results_dir)
    runs = [r for name in data for r in data[name] if r.get("curve")]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    colours = {e["name"]: f"C{i}" for i, e in enumerate(EXPERIMENTS)}
    for r in runs:
        pts = r["curve"]
        style = "--" if r.get("subset", SUBSET) != SUBSET else ("-" if r["seed"] == 1 else ":")
        ax.plot([p["epoch"] for p in pts], [p["valid_loss"] for p in pts], style, color=colours[r["experiment"]],
                marker="o", markersize=3, label=f"{r['run']} (lr {lr_text(r['lr'])})")  # fmt: skip
        best = r["checkpoints"]["best"]
        ax.plot([best["epoch"]], [best["valid_loss"]], "*", color=colours[r["experiment"]], markersize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (label-smoothed, 10 pairs x 132 directions)")
    ax.set_title(f"bible12 regime: {SUBSET} verses per language (dashed: {TREND_SUBSET}); * = best-by-validation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(results_dir) / CURVES_PNG
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)
    return path


def curve_lines(results_dir: Path, md: Path) -> list[str]:
    """The plot, linked relative to the markdown file that shows it."""
    if not (results_dir / CURVES_PNG).is_file():
        return []
    rel = os.path.relpath((results_dir / CURVES_PNG).resolve(), md.resolve().parent)
    return ["", "### Learning curves", "", f"![validation loss per epoch]({Path(rel).as_posix()})"]


def overfit_lines(data: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """What the curves show, per experiment: the lowest validation loss, where it was, and how far the loss rose
    from there to the last epoch (over-fitting, measured rather than read off the plot)."""
    rows = []
    for e in EXPERIMENTS:
        runs = [r for r in data.get(e["name"], []) if r.get("curve")]
        if not runs:
            continue
        lows = [min(r["curve"], key=lambda p: p["valid_loss"]) for r in runs]
        ends = [r["curve"][-1] for r in runs]
        rises = [end["valid_loss"] - low["valid_loss"] for low, end in zip(lows, ends, strict=True)]
        rising = [sum(b["valid_loss"] > a["valid_loss"] for a, b in itertools.pairwise(r["curve"])) for r in runs]
        test = [r["checkpoints"]["last"]["overall"]["spbleu"] - r["checkpoints"]["best"]["overall"]["spbleu"] for r in runs]
        loss = lambda v: analysis._cell(analysis.stats(v), 3)  # noqa: E731
        epochs = lambda pts: ", ".join(f"{p['epoch']:g}" for p in pts)  # noqa: E731
        rows.append(f"| {e['name']} | {len(runs)} | {loss([p['valid_loss'] for p in lows])} | {epochs(lows)} "
                    f"| {loss([p['valid_loss'] for p in ends])} | {epochs(ends)} | {loss(rises)} | {', '.join(map(str, rising))} "
                    f"| {analysis._cell(analysis.stats(test), 2, signed=True)} |")  # fmt: skip
    if not rows:
        return []
    return ["", "### Over-fitting, from the curves", "",
            "Validation loss per run (mean over seeds ± half the range): the lowest of every epoch (for the pruned run also "
            "those before pruning reached 90%, which its best model is not picked from), its epoch, the last epoch's, and the "
            "rise from the lowest to the last (0: still falling at the end); *epochs up*: epochs whose loss was above the "
            "epoch before. *Test, last - best*: what the rise did to the test scores, spBLEU (all directions) of the last "
            "model minus that of the best-by-validation one (below 0: the over-fitting the loss shows costs translation "
            "quality too).", "",
            "| experiment | seeds | lowest validation loss | at epoch | last validation loss | last epoch | rise after the lowest | epochs up | test, last - best (spBLEU) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|", *rows]  # fmt: skip


def _eligible(r: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The epochs a run's best model may come from: all, or for a pruned run those at its final ratio (from epoch
    start + duration of its `prune` config: `lslo train` keeps a pruned run's best only once pruning is final)."""
    prune = (r.get("config") or {}).get("prune")
    first = prune["start"] + prune["duration"] if prune and prune.get("unit", "epoch") == "epoch" else 0
    return [p for p in r["curve"] if p["epoch"] >= first]


def smoothed_pick(curve: Sequence[Mapping[str, Any]], width: int = 3) -> float:
    """The epoch of the lowest validation loss averaged over `width` neighbouring epochs (centred; shorter at the
    ends of `curve`): a pick less moved by one epoch's noise."""
    half = width // 2
    losses = [p["valid_loss"] for p in curve]
    means = [sum(losses[max(0, i - half):i + half + 1]) / len(losses[max(0, i - half):i + half + 1]) for i in range(len(losses))]
    return curve[min(range(len(curve)), key=means.__getitem__)]["epoch"]


def selection_lines(data: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """How sensitive the best-by-validation pick is: the runner-up epoch and its loss margin, and the pick a 3-epoch
    smoothed loss makes, per run, from the committed validation curves."""
    rows, moved, margins = [], [], []
    for e in EXPERIMENTS:
        for r in data.get(e["name"], []):
            curve = _eligible(r) if r.get("curve") else []
            if len(curve) < 2:
                continue
            ranked = sorted(curve, key=lambda p: p["valid_loss"])
            best, second = ranked[0], ranked[1]
            smooth = smoothed_pick(curve)
            margins.append(second["valid_loss"] - best["valid_loss"])
            if smooth != best["epoch"]:
                moved.append(r["run"])
            test = r["checkpoints"]["last"]["overall"]["spbleu"] - r["checkpoints"]["best"]["overall"]["spbleu"]
            rows.append(f"| {r['run']} | {best['epoch']:g} | {second['epoch']:g} | {margins[-1]:.4f} | {smooth:g}"
                        f"{' (moved)' if smooth != best['epoch'] else ''} | {curve[0]['epoch']:g}-{curve[-1]['epoch']:g} | {test:+.2f} |")  # fmt: skip
    if not rows:
        return []
    margins.sort()
    return ["", "### How sensitive the best-model pick is", "",
            f"The best model is the epoch of the lowest validation loss on {VALID_PER_DIRECTION} pairs per direction "
            "(the same verses in every direction). Per run, from the committed curves: the runner-up epoch and how much "
            "higher its loss is, and the epoch a 3-epoch centred mean of the loss would pick; *eligible*: the epochs "
            "the pick may come from (a pruned run: once pruning is final). The JSON holds test scores for the best "
            "and the last model only, so how far the scores would move under another pick is not measured; *test, "
            "last - best* shows how far they move over the rest of training.", "",
            "| run | best epoch | runner-up | loss margin | smoothed pick | eligible | test, last - best (spBLEU) |",
            "|---|---:|---:|---:|---:|---|---:|", *rows, "",
            f"The runner-up lies a median {margins[len(margins) // 2]:.4f} (range {margins[0]:.4f}-{margins[-1]:.4f}) above "
            f"the lowest loss; the smoothed pick moves {len(moved)} of {len(rows)} runs"
            + (f" ({', '.join(moved)})" if moved else "") + ". A new family that picks a checkpoint by validation uses "
            f"at least {matrix.VALID_PER_DIRECTION_NEW} distinct verses per direction (`matrix.VALID_PER_DIRECTION_NEW`); "
            "the newlang family picks none (it scores each run's last model), so its validation only draws curves."]  # fmt: skip
