"""The regime's RESULTS.md section (`render`, written by `render_to_md` with curves.png), from its result JSONs
only: the protocol's summary, the sweep table, scores, curves (`regime_curves`), verdicts (`regime_verdicts`),
cost and reproductions."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import results_md

from . import analysis, matrix
from . import render as render_mod
from .regime_curves import curve_lines, overfit_lines, plot_curves, selection_lines
from .regime_family import (
    CHECKPOINT,
    EPOCHS,
    EVAL_PRECISION,
    EXPERIMENTS,
    LR_FACTOR,
    LR_MAX_STEP,
    SECTION,
    SUBSET,
    SWEEP_EPOCHS,
    SWEEPS,
    TREND_SUBSET,
    experiment,
    load_family,
)
from .regime_sweep import chosen_lr, load_sweep, lr_text
from .regime_verdicts import claim_lines


def cpu_minutes(train: Mapping[str, Any]) -> float | None:
    """A run's CPU time in minutes, or None where it is not known. First choice: `lslo train`'s own CPU clock
    (`train_cpu_s`), carried in its checkpoints across resumes like the training time, so a killed session costs
    nothing but the work it redoes. Runs begun before lslo kept that clock fall back on the user + system time of
    the `lslo train` processes summed over the bench's sessions, which is unknown where a session was killed with
    the shell that ran it (a session's end) before the bench recorded its resource use. Its sign: the recorded
    sessions' wall time (`recorded_s`) falls short of the training time (`seconds`)."""
    if train.get("train_cpu_s") is not None:
        return train["train_cpu_s"] / 60
    if train.get("recorded_s") is None or train["recorded_s"] < train["seconds"] - 60:
        return None
    return train["cpu_seconds"] / 60


def render(opts: argparse.Namespace) -> str:
    """The RESULTS.md section of the regime family, from its result JSONs only."""
    rd = Path(opts.results_dir)
    rel = rd.resolve().relative_to(matrix.ROOT) if rd.resolve().is_relative_to(matrix.ROOT) else rd
    sweep, data, last = load_sweep(rd), load_family(rd), load_family(rd, "last")
    runs = [r for g in sweep.values() for r in g] + [r for g in data.values() for r in g]
    precisions = sorted({str(r["budget"].get("precision")) for r in runs if r.get("budget", {}).get("precision")})
    precision = " / ".join(precisions) or opts.precision  # what the runs trained with, not this command's option
    lines = [f"## {SECTION}: the paper's regime (many epochs over a small set)", "",
             f"Command: `make bench BENCH_ARGS=\"--family regime\"` (= `python benchmarks/bible12/run.py --family regime`) · "
             f"rendered from `{rel}/*.json` with `python benchmarks/bible12/run.py --family regime --render`. "
             "The protocol (subset, budget, learning-rate sweep, checkpoint rule) is in `benchmarks/bible12/README.md`.", "",
             f"{EPOCHS} epochs over the same {SUBSET} verses of every language (trend runs: {TREND_SUBSET}), all 132 directions, "
             f"batches of <= {opts.max_tokens} tokens ({precision}); validation loss after every epoch; the verdicts use "
             f"the **{CHECKPOINT}-by-validation** model (rule fixed before any test score was seen), the last model is shown "
             f"beside it. Test: the first {opts.max_sentences} verses of each direction, beam {opts.beams}, {EVAL_PRECISION} "
             "autocast (not comparable with the matrix's beam-5 fp32 scores)."]  # fmt: skip
    everything = [r for g in sweep.values() for r in g] + [r for runs in data.values() for r in runs]
    if everything:
        dates = sorted({r["machine"]["date"] for r in everything})
        m = everything[0]["machine"]
        lines += ["", f"Machine: {m.get('gpu', m['cpu'])}, {m['cpu_cores']} cores, torch {m['torch']} · {dates[0]} to {dates[-1]} · "
                      f"commits {', '.join(sorted({r['git_commit'] for r in everything}))}"]  # fmt: skip
    lines += ["", "### Learning-rate sweep", "",
              f"Each method's runs of {SWEEP_EPOCHS} epochs at lr = centre x {LR_FACTOR:g}^k; cell: the lowest validation loss "
              "(at epoch); **bold**: chosen (the lowest). Seed 1 of the family continues the chosen run.", "",
              "| method (config swept) | " + " | ".join(f"k = {k}" for k in range(-LR_MAX_STEP, LR_MAX_STEP + 1)) + " | chosen lr |",
              "|---|" + "---:|" * (2 * LR_MAX_STEP + 2)]  # fmt: skip
    for group, exp in SWEEPS.items():
        runs = {r["lr_step"]: r for r in sweep.get(group, [])}
        lr = chosen_lr(group, rd)
        cells = []
        for k in range(-LR_MAX_STEP, LR_MAX_STEP + 1):
            r = runs.get(k)
            text = "" if r is None else f"{lr_text(r['lr'])}: {r['min_valid_loss']:.4f} (ep {r['epoch_of_min']:g})"
            cells.append(f"**{text}**" if r is not None and lr is not None and math.isclose(r["lr"], lr) else text)
        label = f"{group} ({exp}{_precision_note(sweep.get(group, []), precisions)})"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {lr_text(lr) if lr else matrix.NOT_MEASURED} |")
    lines += _check_sweep_lines(rd)
    lines += _sweep_cost_lines(sweep)
    md = Path(opts.results_md) if opts.results_md else results_md.RESULTS_MD
    lines += _score_lines(data, last) + _made_otherwise_lines(data, rd) + curve_lines(rd, md) + overfit_lines(data) + selection_lines(data)
    lines += claim_lines(data, last)
    lines += _cost_lines(data)
    lines += render_mod.reproduction_lines(rd, "run.py --family regime --reproduce RUN")
    return "\n".join(lines)


def _check_sweep_lines(rd: Path) -> list[str]:
    """For a group swept only as a check (its experiment's runs keep another group's lr, e.g. lslo-888 keeps
    LSLo 2/2/8's): whether its own sweep agrees with the lr its runs use."""
    used = {e["sweep"] for e in EXPERIMENTS}
    out = []
    for group, exp in SWEEPS.items():
        if group in used:
            continue
        kept_group = experiment(exp)["sweep"]
        own, kept = chosen_lr(group, rd), chosen_lr(kept_group, rd)
        if own is None or kept is None:
            continue
        verdict = ("the same lr, so the shared lr is fair to it." if math.isclose(own, kept) else
                   "another lr, so its runs are not at their own best lr (a run at its own lr would be a new experiment).")  # fmt: skip
        out.append(f"`{exp}`'s own sweep chooses {lr_text(own)}; its runs use the `{kept_group}` sweep's {lr_text(kept)}: {verdict}")
    return ["", *out] if out else []


def _precision_note(runs: Sequence[Mapping[str, Any]], precisions: Sequence[str]) -> str:
    """"; fp32" where a group's runs trained in another precision than the family's runs as a whole (e.g. a
    sweep run on a CPU without bf16 instructions, where bf16 is emulated): its losses are then not strictly
    comparable with the other rows'."""
    own = sorted({str(r["budget"].get("precision")) for r in runs if r.get("budget", {}).get("precision")})
    return f"; {' / '.join(own)}" if own and len(precisions) > 1 and own != list(precisions) else ""


def _score_lines(data: Mapping[str, Any], last: Mapping[str, Any]) -> list[str]:
    cols = ("all", "no-low", "low", "high")
    lines = ["", "### Scores", "",
             "Mean over seeds ± half the max-min range. Groups: all directions; high/medium only (no low-resource side); "
             "low-resource on either side; high-resource on both sides. *best epoch*: where each seed's validation loss "
             "was lowest.", "",
             "| experiment | seeds | lr | best epoch | " + " | ".join(f"spBLEU {c}" for c in cols) + " | chrF++ all | spBLEU all, last model | chrF++ all, last model |",
             "|---|---:|---:|---:|" + "---:|" * (len(cols) + 3)]  # fmt: skip
    for name in ["base", *(e["name"] for e in EXPERIMENTS)]:
        runs = data.get(name, [])
        if not runs:
            lines.append(f"| {name} | 0 | {matrix.NOT_MEASURED} |" + " |" * (len(cols) + 4))
            continue
        lr = "–" if name == "base" else lr_text(runs[0]["lr"])
        epochs = "–" if name == "base" else ", ".join(f"{r['checkpoints']['best']['epoch']:g}" for r in runs)
        cells = [analysis._cell(analysis.agg(runs, "spbleu", c)) for c in cols] + [analysis._cell(analysis.agg(runs, "chrf", "all"))]
        cells += [analysis._cell(analysis.agg(last.get(name, []), m, "all")) for m in analysis.METRICS]
        lines.append(f"| {name} | {len(runs)} | {lr} | {epochs} | " + " | ".join(cells) + " |")
    return lines


def _setting(r: Mapping[str, Any]) -> tuple[str | None, bool]:
    """How a run was made, where runs may differ: its training precision, and whether its bf16 evaluation was
    emulated (a CPU without bf16 instructions: other kernels, so other rounding than the native runs')."""
    emulated = r.get("machine", {}).get("cpu_bf16") is False and r.get("eval", {}).get("precision") == "bf16"
    return r.get("budget", {}).get("precision"), emulated


def _made_otherwise_lines(data: Mapping[str, Sequence[Mapping[str, Any]]], rd: Path) -> list[str]:
    """The family runs made otherwise than most (another training precision, or an emulated bf16 evaluation),
    named under the scores table: their scores are averaged into their experiment's like any seed's."""
    runs = [r for name, rs in data.items() if name != "base" for r in rs]
    precisions = [p for p, _ in map(_setting, runs) if p]
    usual = max(set(precisions), key=precisions.count) if precisions else None
    odd = []
    for r in runs:
        precision, emulated = _setting(r)
        what = ([f"trained in {precision} (most runs: {usual})"] if precision and precision != usual else [])
        what += ["evaluated in bf16 emulated on a CPU without bf16 instructions"] if emulated else []
        if what:
            odd.append(f"{r['run']} ({'; '.join(what)})")
    if not odd:
        return []
    return ["", f"Made otherwise than the other runs, and averaged with them into their experiment's row: {', '.join(odd)}. "
                "What these settings change (other rounding, so other greedy choices) is not separated from the seed's own "
                "variation." + _emulated_base_text(rd)]  # fmt: skip


def _emulated_base_text(rd: Path) -> str:
    """What evaluating on a CPU without bf16 instructions alone does, where measured: the base (no training, so
    no seed) re-evaluated there (`--reproduce base`), against its committed evaluation."""
    path = rd / "reproduce.base.json"
    if not path.is_file():
        return ""
    r = json.loads(path.read_text(encoding="utf-8"))
    if r["reproduced"]["machine"].get("cpu_bf16") is not False:
        return ""
    sb = r["metrics"]["spbleu"]
    return (f" The evaluation alone, measured on the base (*Reproduction*, `base`, re-evaluated on such a CPU): spBLEU over "
            f"all directions {sb['committed']:.2f} → {sb['reproduced']:.2f}, single directions up to {sb['max_direction_delta']:.2f}.")



def _sweep_cost_lines(sweep: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """What one sweep run cost, from the JSON: CPU and wall minutes (range and median) and the tokens it trained."""
    runs = [r["train"] for g in sweep.values() for r in g if r.get("train")]
    if not runs:
        return []
    import statistics

    def span(v: list[float]) -> str:
        v = sorted(v)
        return f"{v[0]:.0f}-{v[-1]:.0f} min (median {statistics.median(v):.0f})"

    threads = "/".join(sorted({x for t in runs for x in t["omp_num_threads"]}))
    cpu = [m for m in map(cpu_minutes, runs) if m is not None]
    cpu_text = f"CPU time {span(cpu)} over the {len(cpu)} whose every session was recorded" if cpu else "CPU time not recorded"
    if len(cpu) < len(runs):
        cpu_text += f" ({len(runs) - len(cpu)} had a session killed with the shell before its CPU time was recorded)"
    return ["", f"Cost of a sweep run ({len(runs)} finished; {SWEEP_EPOCHS} epochs, {runs[0]['tokens']:,} target tokens, "
                f"{threads} thread(s) each): {cpu_text}; training wall time {span([t['seconds'] / 60 for t in runs])} "
                "(two runs shared the 2 cores at low priority with other work, which the wall time includes)."]  # fmt: skip


def _eval_minutes(r: Mapping[str, Any]) -> str:
    c = r.get("eval_cost") or {}
    return "not recorded" if c.get("wall_s") is None else f"{c['wall_s'] / 60:.1f} ({c['models']})"


def _cost_lines(data: Mapping[str, Any]) -> list[str]:
    lines = ["", "### Cost", "", "| experiment | trainable params | % of base | steps per epoch | training time per run (min) "
             "| CPU time per run (min) | threads | evaluation wall time per run (min; models) |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]  # fmt: skip
    if data.get("base"):
        lines.append(f"| base | 0 | 0 | – | – | – | – | {', '.join(_eval_minutes(r) for r in data['base'])} |")
    for e in EXPERIMENTS:
        runs = data.get(e["name"], [])
        if not runs:
            continue
        p = runs[0]["params"]
        count = f"{p['trainable']:,}" + (f" ({p['surviving']:,} after pruning)" if p.get("surviving") is not None else "")
        minutes = ", ".join(f"{r['train']['seconds'] / 60:.1f}" for r in runs)
        cpu = ", ".join("not recorded" if (m := cpu_minutes(r["train"])) is None else f"{m:.1f}" for r in runs)
        threads = ", ".join("/".join(r["train"]["omp_num_threads"]) for r in runs)
        lines.append(f"| {e['name']} | {count} | {p['percent_of_base']:.3f} | {runs[0]['train']['steps_per_epoch']} | {minutes} "
                     f"| {cpu} | {threads} | {', '.join(map(_eval_minutes, runs))} |")  # fmt: skip
    if len(lines) > 5:
        lines += ["", "Training time: `lslo train`'s own clock, carried across resumes (the family runs continue their "
                      "method's chosen sweep run, whose 4 epochs it includes). CPU time: `lslo train`'s own CPU clock (all threads), "
                      "carried across resumes like its training time; for runs begun before lslo kept it, user + system of "
                      "the `lslo train` processes summed over sessions, *not recorded* where a session was killed with the "
                      "shell that ran it before the bench could record it. Evaluation: the `lslo eval` runs' wall time, summed over the "
                      "models evaluated (last and best-by-validation; one where they are the same)."]  # fmt: skip
    return lines


def render_to_md(opts: argparse.Namespace) -> Path:
    plot_curves(opts.results_dir)
    return results_md.update_section_in(opts.results_md, SECTION, render(opts))
