"""Tables, heatmap and checks for evaluation results (the results.json that `lslo.evaluate` writes).

- `tier_groups`: macro averages of per-direction scores by source tier x target tier (H->L ...), by
  source tier (H->*), by target tier (*->H) and overall ("all"), as in the paper's tables.
- `write_tables`: results.csv, tiers.md and heatmap.png next to results.json.
- `compare_runs`: several runs side by side, with deltas against the first.
- `recompute`: every score again from the written text files, with sacrebleu alone.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lslo.config import TIERS
from lslo.errors import LsloError
from lslo.io import atomic_path, write_text

SHORT = {"high": "H", "medium": "M", "low": "L"}
GROUPS = (
    *(f"{SHORT[s]}->{SHORT[t]}" for s in TIERS for t in TIERS),
    *(f"{SHORT[s]}->*" for s in TIERS),
    *(f"*->{SHORT[t]}" for t in TIERS),
    "all",
)
METRICS = ("spbleu", "chrf")
CSV_COLUMNS = (
    "src", "tgt", "src_tier", "tgt_tier", "n", "spbleu", "chrf", "spbleu_metric", "spbleu_signature", "chrf_signature",
)  # fmt: skip


def order_by_tier(languages: Sequence[str], tiers: Mapping[str, str]) -> list[str]:
    """Languages high tier first, then medium, then low (then untiered); the given order within a tier."""
    return sorted(languages, key=lambda lang: TIERS.index(tiers[lang]) if tiers[lang] in TIERS else len(TIERS))


def _in_group(group: str, src_tier: str, tgt_tier: str) -> bool:
    if group == "all":
        return True
    if src_tier is None or tgt_tier is None:  # tiers unknown: only the overall mean
        return False
    s, t = group.split("->")
    return s in ("*", SHORT[src_tier]) and t in ("*", SHORT[tgt_tier])


def tier_groups(rows: Mapping[str, Mapping[str, Any]], metric: str) -> dict[str, dict[str, Any]]:
    """Per group: the mean of `metric` over its directions (None if it has none) and their number."""
    out: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        values = [r[metric] for r in rows.values() if _in_group(group, r["src_tier"], r["tgt_tier"])]
        out[group] = {"mean": sum(values) / len(values) if values else None, "n_directions": len(values)}
    return out


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def tier_table(results: Mapping[str, Any], metric: str) -> str:
    """Markdown: source tier (rows) x target tier (columns) means, with "as source"/"as target" margins."""
    groups = results["groups"][metric]
    name = results["metrics"][metric]["name"]
    if all(row["src_tier"] is None for row in results["directions"].values()):  # no tiers known: overall only
        n = groups["all"]["n_directions"]
        return f"### {name}\n\n| directions | mean |\n|---|---|\n| all ({n}) | {_fmt(groups['all']['mean'])} |\n"
    lines = [
        f"### {name}",
        "",
        "| source \\ target | high | medium | low | as source |",
        "|---|---|---|---|---|",
    ]
    for s in TIERS:
        cells = [_fmt(groups[f"{SHORT[s]}->{SHORT[t]}"]["mean"]) for t in TIERS]
        lines.append(f"| {s} | {' | '.join(cells)} | {_fmt(groups[f'{SHORT[s]}->*']['mean'])} |")
    cells = [_fmt(groups[f"*->{SHORT[t]}"]["mean"]) for t in TIERS]
    lines.append(f"| as target | {' | '.join(cells)} | {_fmt(groups['all']['mean'])} (all) |")
    return "\n".join(lines) + "\n"


def _csv(results: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    metric = results["metrics"]["spbleu"]["name"]
    for row in results["directions"].values():
        writer.writerow([*(row[c] for c in CSV_COLUMNS[:5]), repr(row["spbleu"]), repr(row["chrf"]), metric,
                         row["spbleu_signature"], row["chrf_signature"]])  # fmt: skip
    return buf.getvalue()


def _matrix(results: Mapping[str, Any], metric: str) -> list[list[float]]:
    index = {lang: i for i, lang in enumerate(results["languages"])}
    n = len(index)
    grid = [[math.nan] * n for _ in range(n)]
    for row in results["directions"].values():
        grid[index[row["src"]]][index[row["tgt"]]] = row[metric]
    return grid


def heatmap(results: Mapping[str, Any], path: str | os.PathLike) -> None:
    """PNG: the source x target matrix of spBLEU and of chrF++, languages ordered by tier."""
    from matplotlib.figure import Figure

    langs = results["languages"]
    labels = [f"{lang} ({SHORT.get(results['tiers'][lang], '?')})" for lang in langs]
    n = len(langs)
    size = max(4.0, 0.45 * n + 2)
    fig = Figure(figsize=(2 * size + 1, size), layout="constrained")
    axes = fig.subplots(1, 2)
    bounds = [i - 0.5 for i in range(1, n) if results["tiers"][langs[i]] != results["tiers"][langs[i - 1]]]
    for ax, metric in zip(axes, METRICS, strict=True):
        grid = _matrix(results, metric)
        image = ax.imshow(grid, cmap="viridis")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(results["metrics"][metric]["name"], fontsize=9)
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_xlabel("target")
        ax.set_ylabel("source")
        for b in bounds:
            ax.axhline(b, color="white", linewidth=1.5)
            ax.axvline(b, color="white", linewidth=1.5)
        if n <= 16:
            for i in range(n):
                for j in range(n):
                    if not math.isnan(grid[i][j]):
                        light = image.norm(grid[i][j]) > 0.6
                        ax.text(j, i, f"{grid[i][j]:.1f}", ha="center", va="center", fontsize=6,
                                color="black" if light else "white")  # fmt: skip
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def delta_heatmap(before: Mapping[str, Any], after: Mapping[str, Any], path: str | os.PathLike,
                  names: tuple[str, str] = ("base", "fine-tuned")) -> None:  # fmt: skip
    """PNG: `after` - `before` per direction (source x target), spBLEU and chrF++, languages by tier; gains in
    blue, losses in red, the colour scale symmetric around 0. Directions missing from either run stay blank."""
    from matplotlib.figure import Figure

    langs = [lang for lang in before["languages"] if lang in after["languages"]]
    sub = {"languages": langs}
    n = len(langs)
    labels = [f"{lang} ({SHORT.get(before['tiers'][lang], '?')})" for lang in langs]
    size = max(4.0, 0.45 * n + 2)
    fig = Figure(figsize=(2 * size + 1, size + 0.4), layout="constrained")
    fig.suptitle(f"{names[1]} - {names[0]}, every direction", fontsize=10)
    for ax, metric in zip(fig.subplots(1, 2), METRICS, strict=True):
        grids = [_matrix({**sub, "directions": {k: r for k, r in run["directions"].items()
                                                if r["src"] in langs and r["tgt"] in langs}}, metric)
                 for run in (before, after)]  # fmt: skip
        grid = [[b - a for a, b in zip(ra, rb, strict=True)] for ra, rb in zip(*grids, strict=True)]
        span = max((abs(v) for row in grid for v in row if not math.isnan(v)), default=1.0) or 1.0
        image = ax.imshow(grid, cmap="RdBu", vmin=-span, vmax=span)
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_title(f"{before['metrics'][metric]['name']}: change", fontsize=9)
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        ax.set_xlabel("target")
        ax.set_ylabel("source")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_tables(results: Mapping[str, Any], out_dir: str | os.PathLike) -> None:
    """results.csv, tiers.md and heatmap.png in `out_dir`."""
    out = Path(out_dir)
    write_text(out / "results.csv", _csv(results))
    header = f"# Tier groups\n\nMacro averages of per-direction scores; {len(results['directions'])} directions.\n\n"
    write_text(out / "tiers.md", header + "\n".join(tier_table(results, m) for m in METRICS))
    heatmap(results, out / "heatmap.png")


# ----------------------------------------------------------------------------- comparing and checking


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """results.json from a file or from the directory that holds it."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise LsloError(
            f"{path}: no results.json there; give an evaluation output directory or its results.json"
        )
    try:
        results = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LsloError(f"{p}: not valid JSON ({e.msg}, line {e.lineno}); re-run the evaluation") from None
    if not isinstance(results, dict) or "groups" not in results or "directions" not in results:
        raise LsloError(f"{p}: not an lslo results.json (no groups/directions); re-run the evaluation")
    return results


def compare_runs(result_paths: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> str:
    """Markdown tables (spBLEU, chrF++): tier groups x runs; each later run shows its delta to the first."""
    if not result_paths:
        raise LsloError("compare: give at least one results.json or evaluation directory")
    runs = [load_results(p) for p in result_paths]
    if names is None:
        names = [Path(p).name if Path(p).is_dir() else Path(p).parent.name for p in result_paths]
    if len(names) != len(runs):
        raise LsloError(f"compare: {len(names)} names for {len(runs)} runs; give one name per run")
    out: list[str] = []
    for metric in METRICS:
        metric_names = sorted({r["metrics"][metric]["name"] for r in runs})
        out.append(f"### {' / '.join(metric_names)}\n")
        if len(metric_names) > 1:
            out.append(
                f"> warning: the runs use different {metric} tokenizations; deltas are not comparable.\n"
            )
        out.append("| group | " + " | ".join(names) + " |")
        out.append("|---|" + "---|" * len(runs))
        for group in GROUPS:
            first = runs[0]["groups"][metric][group]["mean"]
            cells = [_fmt(first)]
            for run in runs[1:]:
                value = run["groups"][metric][group]["mean"]
                delta = "" if value is None or first is None else f" ({value - first:+.2f})"
                cells.append(_fmt(value) + delta)
            out.append(f"| {group} | " + " | ".join(cells) + " |")
        out.append("")
    if len({tuple(sorted(r["directions"])) for r in runs}) > 1:
        out.append("> warning: the runs cover different directions; group means average different sets.\n")
    return "\n".join(out)


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n") if text else []


def _without_version(signature: str) -> str:
    return "|".join(part for part in signature.split("|") if not part.startswith("version:"))


def recompute(results_dir: str | os.PathLike, check_pieces: bool = False) -> float:
    """Recompute every score in results.json from the written files with sacrebleu; the max abs difference.

    Per-direction spBLEU (BLEU, tokenize none, on the piece files) and chrF++ (on the plain files), then
    the tier-group means from those. With `check_pieces`, the piece files are also re-made from the plain
    files with the recorded SentencePiece model (needs that file). Raises ValueError when a sacrebleu
    signature (version aside) differs from the recorded one.
    """
    from sacrebleu.metrics import BLEU, CHRF

    out = Path(results_dir)
    results = load_results(out)
    diff = 0.0
    rows: dict[str, dict[str, Any]] = {}
    sp = None
    if check_pieces:
        import sentencepiece

        info = results["metrics"]["spbleu"]["pieces"]
        if "path" not in info:
            raise ValueError(f"results in {out} record no SentencePiece file; cannot check the pieces")
        sp = sentencepiece.SentencePieceProcessor(model_file=info["path"])
    for key, row in results["directions"].items():
        text = {name: _read_lines(out / rel) for name, rel in row["files"].items()}
        if sp is not None:
            for side in ("hyp", "ref"):
                if [" ".join(sp.encode(s, out_type=str)) for s in text[side]] != text[f"{side}_pieces"]:
                    raise ValueError(f"{key}: {side}.pieces.txt is not the SentencePiece split of {side}.txt")
        bleu, chrf = BLEU(tokenize="none"), CHRF(word_order=2)
        new = {
            "spbleu": bleu.corpus_score(text["hyp_pieces"], [text["ref_pieces"]]).score,
            "chrf": chrf.corpus_score(text["hyp"], [text["ref"]]).score,
        }
        for metric, sig in (("spbleu", bleu.get_signature()), ("chrf", chrf.get_signature())):
            if _without_version(str(sig)) != _without_version(row[f"{metric}_signature"]):
                raise ValueError(f"{key}: {metric} signature {sig} differs from the recorded one")
            diff = max(diff, abs(new[metric] - row[metric]))
        if len(text["hyp"]) != row["n"]:
            diff = math.inf
        rows[key] = {**row, **new}
    for metric in METRICS:
        for group, stats in tier_groups(rows, metric).items():
            recorded = results["groups"][metric][group]["mean"]
            if (stats["mean"] is None) != (recorded is None):
                diff = math.inf
            elif recorded is not None:
                diff = max(diff, abs(stats["mean"] - recorded))
    return diff


# Tier groups the sample translations are drawn from, in the order they are shown: both ends of the resource
# range first, then the middle.
SAMPLE_GROUPS = ("H->L", "L->H", "H->H", "M->M", "L->L", "H->M", "M->L", "L->M", "M->H")


def _results_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p if p.is_dir() else p.parent


def _sample_line(refs: Sequence[str]) -> int:
    """The first line whose reference has 6-20 words (readable in a table), else the first line."""
    return next((i for i, ref in enumerate(refs) if 6 <= len(ref.split()) <= 20), 0)


def sample_translations(result_paths: Sequence[str | os.PathLike], names: Sequence[str] | None = None,
                        n_directions: int = 6) -> str:  # fmt: skip
    """Markdown: one test sentence of up to `n_directions` directions (one per tier group, both ends of the
    resource range first): its source, every run's hypothesis and the reference, and where the files are.

    The directions are those every run evaluated; the sentences and references come from the first run.
    """
    if n_directions <= 0 or not result_paths:
        return ""
    runs = [load_results(p) for p in result_paths]
    dirs = [_results_dir(p) for p in result_paths]
    names = list(names) if names is not None else [d.name for d in dirs]
    if len(names) != len(runs):
        raise LsloError(f"samples: {len(names)} names for {len(runs)} runs; give one name per run")
    common = [k for k in runs[0]["directions"] if all(k in r["directions"] for r in runs[1:])]
    rows = runs[0]["directions"]
    picked: list[str] = []
    for group in SAMPLE_GROUPS:
        key = next((k for k in common if k not in picked and _in_group(group, rows[k]["src_tier"], rows[k]["tgt_tier"])), None)
        if key is not None:
            picked.append(key)
    picked += [k for k in common if k not in picked]  # untiered runs: the first directions
    picked = picked[:n_directions]
    out = ["### Sample translations", ""]
    for key in picked:
        row = rows[key]
        try:
            src = _read_lines(dirs[0] / row["files"]["src"])
            ref = _read_lines(dirs[0] / row["files"]["ref"])
            hyps = [_read_lines(d / r["directions"][key]["files"]["hyp"]) for d, r in zip(dirs, runs, strict=True)]
        except (OSError, KeyError):
            return f"> samples: the text files of {key} are missing next to the results.json; re-run the evaluation\n"
        i = _sample_line(ref)
        tiers = f" ({row['src_tier']} → {row['tgt_tier']})" if row["src_tier"] else ""
        out += [f"**{row['src']} → {row['tgt']}**{tiers}, test line {i + 1}", "", "| | |", "|---|---|"]
        cells = [("source", src), *zip(names, hyps, strict=True), ("reference", ref)]
        out += [f"| {name} | {_cell(lines[i] if i < len(lines) else '')} |" for name, lines in cells]
        out.append("")
    out.append("Every hypothesis: " + ", ".join(f"`{d}/directions/<src>-<tgt>/hyp.txt` ({n})" for d, n in zip(dirs, names, strict=True))
               + "; sources and references beside them (`src.txt`, `ref.txt`).")  # fmt: skip
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "∅"
