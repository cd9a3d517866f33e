"""The `bible12` section of benchmarks/RESULTS.md, rendered from the result JSONs only."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import results_md

from .analysis import GROUP_COLUMNS, GROUP_LABELS, _cell, agg, load_all, stats, verdict
from .matrix import (
    CLAIMS,
    EXPERIMENTS,
    NEAR_TIE,
    NOISE,
    NOT_MEASURED,
    REPRODUCE_FORMAT,
    ROOT,
    SECTION,
    experiment,
)


def render(results_dir: str | os.PathLike) -> str:
    """The RESULTS.md section, from the result JSONs in `results_dir` only."""
    data = load_all(results_dir)
    order = ["base", *(e["name"] for e in EXPERIMENTS)]
    any_run = next((runs[0] for runs in data.values() if runs), None)
    rel = Path(results_dir).resolve()
    rel_text = str(rel.relative_to(ROOT)) if rel.is_relative_to(ROOT) else str(rel)
    lines = ["## bible12: the paper's experiments", ""]
    lines.append(f"Command: `make bench` (= `python benchmarks/bible12/run.py`) · rendered from `{rel_text}/*.json` "
                 "with `python benchmarks/bible12/run.py --render`.")  # fmt: skip
    if any_run is None:
        lines += ["", f"No run has finished yet: every result below is \"{NOT_MEASURED}\"."]
    else:
        m = any_run["machine"]
        commits = sorted({r["git_commit"] for runs in data.values() for r in runs})
        dates = sorted({r["machine"]["date"] for runs in data.values() for r in runs if r["machine"].get("date")})
        when = (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}") if dates else "date not recorded"
        budgets = sorted({(r["budget"]["steps"], r["budget"]["max_tokens"], r["budget"].get("precision", "auto"))
                          for runs in data.values() for r in runs})  # fmt: skip
        evals = sorted({(r["eval"]["sentences_per_direction"], r["eval"]["beams"], r["eval"]["directions"]) for runs in data.values() for r in runs})
        lines += [
            "",
            f"Base: `{any_run['base_model']}` · budget per run: "
            + "; ".join(f"{s} steps of <= {t} tokens ({p})" for s, t, p in budgets)
            + " · test: " + "; ".join(f"first {n} verses of each of {d} directions, beam {b}" for n, b, d in evals)
            + f" · machine: {m.get('gpu', m['cpu'])}, {m['cpu_cores']} cores, torch {m['torch']} · {when} · commits {', '.join(commits)}",
            "",
            f"Scores are macro averages over directions grouped by the source (X->*) or target (*->X) tier; "
            f"`mean ± h` is the mean over seeds and h half the max-min range (one seed: no ±). spBLEU is "
            f"`{any_run['metrics']['spbleu']}` (the base model's own SentencePiece model, not FLORES').",
        ]  # fmt: skip
        if len(budgets) > 1 or len(evals) > 1:
            lines += ["", "> warning: the runs were made with different budgets or test subsets; compare with care."]
    for metric, title in (("spbleu", "spBLEU"), ("chrf", "chrF++")):
        lines += ["", f"### {title}", "", "| experiment | seeds | " + " | ".join(GROUP_COLUMNS) + " |",
                  "|---|---:|" + "---:|" * len(GROUP_COLUMNS)]  # fmt: skip
        for name in order:
            runs = data.get(name, [])
            if not runs:
                lines.append(f"| {name} | 0 | {NOT_MEASURED} |" + " |" * (len(GROUP_COLUMNS) - 1))
                continue
            cells = [_cell(agg(runs, metric, g)) for g in GROUP_COLUMNS]
            lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", "### Cost", "", "| experiment | what | trainable params | % of base | training time (min) | peak RSS, training (MiB) |",
              "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for name in order:
        runs = data.get(name, [])
        about = "the base model, not fine-tuned" if name == "base" else experiment(name)["about"]
        if not runs:
            lines.append(f"| {name} | {about} | {NOT_MEASURED} | | | |")
            continue
        p = runs[0]["params"]
        count = f"{p['trainable']:,}"
        pct = f"{p['percent_of_base']:.3f}"
        if p.get("surviving") is not None:
            count += f" ({p['surviving']:,} after pruning)"
            pct += f" ({p['surviving_percent_of_base']:.3f})"
        if name == "base":
            lines.append(f"| {name} | {about} | 0 | 0 | – | – |")
            continue
        minutes = stats([r["train"]["seconds"] / 60 for r in runs])
        rss = stats([r["train"]["peak_rss_mib"] for r in runs])
        single = [r for r in runs if "1" in r["train"].get("omp_num_threads", [])]
        mark = "; ".join(r["run"] + (f", {r['train']['cpu_seconds'] / 60:.1f} CPU min" if r["train"].get("cpu_seconds") else "")
                         for r in single)  # fmt: skip
        mark = f" (single-threaded: {mark})" if mark else ""
        lines.append(f"| {name} | {about} | {count} | {pct} | {_cell(minutes, 1)}{mark} | {_cell(rss, 0)} |")
    lines += ["", "Runs marked *single-threaded* trained with `OMP_NUM_THREADS=1` beside another single-threaded job "
              "(two or three runs at a time on the 2 cores), which is slower per run than a training alone on both cores; "
              "their CPU time (user + system of the `lslo train` process) is the time on one core, whatever else ran."]  # fmt: skip
    lines += subspace_lines(data) + search_lines(data)
    from .inference import cells, judge, method_text

    judged = judge(CLAIMS, data, "spbleu")
    m = next((r["claims_tested"] for r in judged if r is not None), 0)
    lines += ["", "### The paper's claims on bible12", "",
              "Δ = first - second experiment (means over seeds); *directions* counts the directions of the group where "
              "the first experiment scores higher (spBLEU, means over seeds).", "", method_text(m), "",
              "The old rule: the *seed spread* of an experiment with two or more seeds is the larger of its max-min range "
              "over seeds and the range expected from its directions (1.96 x the sd over directions of the per-direction "
              "difference between seeds / sqrt(directions)); Δ *exceeds the seed spread* when |Δ| is larger than the "
              f"larger spread of the two experiments (when neither has two seeds, `{NOISE}`'s stands in).", "",
              "| claim (paper) | comparison | group | Δ spBLEU [interval] | p (raw; adjusted) | verdict | Δ chrF++ "
              "| directions | old rule: seed spread (spBLEU) | old rule's verdict | likely reason, where the data leans against the claim |",
              "|---|---|---|---:|---:|---|---:|---:|---:|---|---|"]  # fmt: skip
    for claim, r in zip(CLAIMS, judged, strict=True):
        v, vc = verdict(claim, data, "spbleu"), verdict(claim, data, "chrf")
        dc = "–" if vc["delta"] is None else f"{vc['delta']:+.2f}"
        sp = "–" if v["spread"] is None else f"{v['spread']:.2f} ({v['spread_of']})"
        group = GROUP_LABELS[claim["group"]]
        interval, p, text = cells(r)
        if r is None:
            text = v["verdict"]  # not measured: says which experiment is missing
        reason = claim["if_not"] if r is not None and not r["verdict"].startswith("supported") else ""
        wins = "–" if v.get("wins") is None else f"{v['wins'][0]}/{v['wins'][2]}" + (f" ({v['wins'][1]} equal)" if v["wins"][1] else "")
        old = v["verdict"] if r is not None else "–"
        lines.append(f"| {claim['claim']} | {claim['a']} vs {claim['b']} | {group} | {interval} | {p} | **{text}** | {dc} "
                     f"| {wins} | {sp} | {old} | {reason} |")  # fmt: skip
    lines += reproduction_lines(results_dir)
    return "\n".join(lines)


def subspace_lines(data: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Each pruned run's surviving subspace per tier (next to the unpruned count) and per position."""
    pruned = [r for name in data for r in data[name] if r.get("params", {}).get("subspace")]
    if not pruned:
        return []
    lines = ["", "### Pruning: what each tier keeps", "",
             "Per language, the LSLo parameters (A and B entries) before pruning and after (the masks of the trained "
             "run, counted by `LSLoModel.parameter_report`), as % of the base; *kept* = the surviving share of the "
             "pruned matrices (B by default) summed over the tier's languages.", "",
             "| run | scope | tier | languages | params per language before → after | % of base per language before → after | kept of pruned |",
             "|---|---|---|---|---:|---:|---:|"]  # fmt: skip
    for r in pruned:
        sub, before = r["params"]["subspace"], r["params"].get("tiers", {})
        for tier, t in sub["tiers"].items():
            n = len(t["languages"])
            b = before.get(tier)
            count = (f"{b['params'] // n:,} → " if b else "") + f"{t['params'] // n:,}"
            pct = (f"{b['percent_per_language']:.3f}% → " if b else "") + f"{t['percent_per_language']:.3f}%"
            lines.append(f"| {r['run']} | {r['config']['prune']['scope']} | {tier} | {' '.join(t['languages'])} | {count} | {pct} | "
                         f"{100 * t['kept_share']:.1f}% |")  # fmt: skip
    lines += ["", "Kept share of the pruned matrices by side and position (all tiers):", "",
              "| run | " + " | ".join(f"{p['side'][:3]} {p['position']}" for p in pruned[0]["params"]["subspace"]["positions"]) + " |",
              "|---|" + "---:|" * len(pruned[0]["params"]["subspace"]["positions"])]  # fmt: skip
    for r in pruned:
        lines.append(f"| {r['run']} | " + " | ".join(f"{100 * p['share']:.1f}%" for p in r["params"]["subspace"]["positions"]) + " |")
    return lines


def search_lines(data: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The routing `lslo search routing` found, its learned target weights by layer, next to the paper's routing."""
    searched = [r for name in data for r in data[name] if r.get("search")]
    if not searched:
        return []
    lines = ["", "### Routing search", "",
             "`lslo search routing` trains both a source- and a target-indexed LoRA at every LSLo position, mixed by "
             "learned softmax weights (one pair per layer and side); a layer routes by target when its target weight "
             "exceeds 0.5. Weights are the target's share.", "",
             "| run | search steps | side | routing found | paper's routing (lslo-228) | target weight by layer (bottom → top) |",
             "|---|---:|---|---|---|---|"]  # fmt: skip
    paper = (data.get("lslo-228") or [{}])[0].get("params", {}).get("routing", {})
    for r in searched:
        weights = r["search"].get("weights") or {}
        for side in ("encoder", "decoder"):
            keys = sorted((k for k in weights if k.split(".")[0] == side), key=lambda k: int(k.split(".")[1]))
            w = " ".join(f"{weights[k][1]:.2f}" + ("*" if abs(weights[k][1] - 0.5) < NEAR_TIE else "") for k in keys) or "–"
            ours = r["search"]["routing"][f"{side}_routing"]
            lines.append(f"| {r['run']} | {r['search']['steps']} | {side} | `{ours}` | `{paper.get(f'{side}_routing', '–')}` | {w} |")
    lines += ["", f"\\* within {NEAR_TIE} of the 0.5 threshold: a near tie, which another seed or a longer search may flip."]
    for r in searched:
        if r.get("same_as"):
            lines += ["", f"{r['run']} trains exactly what {r['same_as']} trains (same routing per layer, same seed and "
                          f"budget), so {r['same_as']}'s result stands for it: it was not trained again."]  # fmt: skip
    return lines


def render_to_md(results_dir: str | os.PathLike, md: str | os.PathLike | None = None) -> Path:
    """Update the section in `md` (default: benchmarks/RESULTS.md); returns the file written."""
    return results_md.update_section_in(md, SECTION, render(results_dir))



def machine_text(m: Mapping[str, Any]) -> str:
    """A result's machine in a few words: the GPU, or the CPU (its model where recorded) and its cores, and
    "no bf16 instructions" where bf16 autocast ran emulated there."""
    text = m.get("gpu") or m.get("cpu_model") or m["cpu"]
    text += f" {m['cpu_cores']} cores"
    return text + (", no bf16 instructions" if m.get("cpu_bf16") is False and not m.get("gpu") else "")


def reproduction_lines(results_dir: str | os.PathLike, command: str = "run.py --reproduce RUN") -> list[str]:
    paths = sorted(Path(results_dir).glob("reproduce.*.json"))
    if not paths:
        return []
    lines = ["", "### Reproduction", "",
             f"A finished run trained and evaluated again from scratch (`{command}`, in a scratch folder) "
             "and compared with its committed JSON; the verdict is on spBLEU over all directions, against the seed "
             "spread of the run's experiment.", "",
             "| run | spBLEU committed → re-run | chrF++ committed → re-run | largest change of one direction (spBLEU / chrF++) "
             "| seed spread (spBLEU) | verdict | re-run: commit, machine, date | validation loss committed → re-run "
             "| training threads committed → re-run | training time committed → re-run (min) |",
             "|---|---:|---:|---:|---:|---|---|---:|---:|---:|"]  # fmt: skip
    for path in paths:
        r = json.loads(path.read_text(encoding="utf-8"))
        if r.get("format") != REPRODUCE_FORMAT:
            continue
        sb, sc = r["metrics"]["spbleu"], r["metrics"]["chrf"]
        if r["within_spread"] is None:
            text, spread = f"{NOT_MEASURED}: seed spread unknown; Δ = {sb['delta']:+.2f}", "–"
        else:
            spread = f"{r['spread']:.2f} ({r['spread_of']})"
            text = ("reproduced" if r["within_spread"] else "NOT reproduced") + f": Δ = {sb['delta']:+.2f}"
        m = r["reproduced"]["machine"]
        c, p = r["committed"], r["reproduced"]
        minutes = " → ".join("–" if t is None else f"{t / 60:.1f}" for t in (c["train_seconds"], p["train_seconds"]))
        loss = " → ".join("–" if v is None else f"{v:.6f}" for v in (c.get("valid_loss"), p.get("valid_loss")))
        if (curve := r.get("curve")) and curve["epochs"]:
            loss += f" (every epoch: largest change {curve['max_valid_loss_delta']:.1e} over {curve['epochs']})"
        threads = " → ".join("all cores" if x.get("omp_num_threads") is None else x["omp_num_threads"] for x in (c, p))
        lines.append(f"| {r['run']} | {sb['committed']:.2f} → {sb['reproduced']:.2f} | {sc['committed']:.2f} → {sc['reproduced']:.2f} "
                     f"| {sb['max_direction_delta']:.2f} / {sc['max_direction_delta']:.2f} | {spread} | {text} "
                     f"| {p['git_commit']}, {machine_text(m)}, {m.get('date', '?')} | {loss} "
                     f"| {threads} | {minutes} |")  # fmt: skip
    return lines

