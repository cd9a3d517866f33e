"""Statistics of the bible12 results: tier groups, seed spread, verdicts on claims, reproduction checks.

Pure functions of result JSONs (`load_all`); nothing here trains, evaluates or writes.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .matrix import FORMAT, NOISE, NOT_MEASURED, REPRODUCE_FORMAT


def sign_test(wins: int, losses: int) -> float:
    """One-sided sign test: P(at least `wins` of `wins + losses` directions improve | no effect), ties left out."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n else 1.0


GROUP_COLUMNS = ("H->*", "M->*", "L->*", "*->H", "*->M", "*->L", "all")
GROUP_LABELS = {"all": "all directions", "low": "low-resource (L as source or target)",
                "no-low": "high/medium only (no L side)", "high": "high-resource only (H on both sides)"}  # fmt: skip
METRICS = ("spbleu", "chrf")


def load_all(results_dir: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """experiment -> its runs' result JSONs (sorted by seed)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") == FORMAT:
            out.setdefault(data["experiment"], []).append(data)
    for runs in out.values():
        runs.sort(key=lambda r: r["seed"] or 0)
    return out


def in_group(result: Mapping[str, Any], direction: str, group: str) -> bool:
    """Whether a direction ("src-tgt") belongs to a tier group: "all", "low" (a low-resource language on either
    side), "no-low" (none), "high" (high-resource on both sides), or a column of GROUP_COLUMNS ("H->*": source tier high, "*->L": target tier low, ...)."""
    src, tgt = (result["tiers"][x] for x in direction.split("-"))
    if group == "high":
        return src == tgt == "high"
    if group in GROUP_LABELS:
        return group == "all" or ("low" in (src, tgt)) == (group == "low")
    left, right = group.split("->")
    tier = {"H": "high", "M": "medium", "L": "low"}
    return src == tier[left] if right == "*" else tgt == tier[right]


def score(result: Mapping[str, Any], metric: str, group: str) -> float | None:
    """A run's macro average over a tier group (a column of GROUP_COLUMNS or a key of GROUP_LABELS)."""
    if group not in ("low", "no-low", "high"):
        return result["groups"][metric].get(group)
    values = [d[metric] for key, d in result["directions"].items() if in_group(result, key, group)]
    return sum(values) / len(values) if values else None


def seed_noise(runs: Sequence[Mapping[str, Any]], metric: str, group: str) -> float | None:
    """How far apart two seeds' group averages are expected to land (95%), estimated from the directions:
    1.96 x sd over directions of the per-direction score difference between seeds / sqrt(directions).

    Two seeds give one observed range of the average, which can be near 0 by luck; the per-direction
    differences give many draws of the same noise. None with fewer than two seeds.
    """
    diffs = [b["directions"][k][metric] - a["directions"][k][metric]
             for i, a in enumerate(runs) for b in runs[i + 1:]
             for k in a["directions"] if k in b["directions"] and in_group(a, k, group)]  # fmt: skip
    n = sum(in_group(runs[0], k, group) for k in runs[0]["directions"]) if runs else 0
    return 1.96 * statistics.stdev(diffs) / math.sqrt(n) if len(diffs) > 1 and n else None


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, spread (max - min over seeds; None with one seed) and the number of seeds."""
    return {"mean": statistics.fmean(values), "spread": max(values) - min(values) if len(values) > 1 else None,
            "n": len(values)}  # fmt: skip


def agg(runs: Sequence[Mapping[str, Any]], metric: str, group: str) -> dict[str, Any] | None:
    """stats() of the runs' group averages, plus `noise` (seed_noise) and `bound`: the larger of the observed
    range and that estimate, what a difference must exceed to count as beyond the seed spread."""
    values = [v for v in (score(r, metric, group) for r in runs) if v is not None]
    if not values:
        return None
    out = stats(values)
    out["noise"] = seed_noise(runs, metric, group) if out["spread"] is not None else None
    out["bound"] = None if out["spread"] is None else max(out["spread"], out["noise"] or 0.0)
    return out


def _cell(s: Mapping[str, Any] | None, digits: int = 2, signed: bool = False) -> str:
    if s is None:
        return "–"
    text = f"{s['mean']:{'+' if signed else ''}.{digits}f}"
    return text + (f" ± {s['spread'] / 2:.{digits}f}" if s["spread"] is not None else "")


def directions_better(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]], metric: str,
                      group: str) -> tuple[int, int, int]:  # fmt: skip
    """(directions where a's mean over seeds beats b's, directions where they are equal, directions compared)."""
    def means(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        keys = [k for k in runs[0]["directions"] if in_group(runs[0], k, group) and all(k in r["directions"] for r in runs)]
        return {k: statistics.fmean(r["directions"][k][metric] for r in runs) for k in keys}

    ma, mb = means(runs_a), means(runs_b)
    common = [k for k in ma if k in mb]
    return sum(ma[k] > mb[k] for k in common), sum(ma[k] == mb[k] for k in common), len(common)


def verdict(claim: Mapping[str, Any], data: Mapping[str, Sequence[Mapping[str, Any]]], metric: str = "spbleu") -> dict[str, Any]:
    """One claim: the difference a - b, the seed spread it is judged against and the verdict text.

    The difference exceeds the seed spread when |a - b| > the larger `bound` of a and b (their max-min range over
    seeds, or seed_noise's estimate where that is larger); when neither has two seeds, `NOISE`'s bound stands
    in. Runs of a that are runs of b (`same_as`: the search found b's routing) are compared with those only.
    """
    a, b, group = claim["a"], claim["b"], claim["group"]
    missing = [x for x in (a, b) if not data.get(x)]
    if missing:
        return {"delta": None, "spread": None, "verdict": f"{NOT_MEASURED} (missing: {', '.join(missing)})"}
    runs_a, runs_b, note = data[a], data[b], ""
    same = [r for r in runs_b if r["run"] in {x.get("same_as") for x in runs_a}]
    if same and len(same) == len(runs_a):
        runs_b, note = same, f" (the same run as {', '.join(r['run'] for r in same)})"
    sa, sb = agg(runs_a, metric, group), agg(runs_b, metric, group)
    if sa is None or sb is None:
        return {"delta": None, "spread": None, "verdict": f"{NOT_MEASURED} (no {group} directions)"}
    delta = sa["mean"] - sb["mean"]
    wins = directions_better(runs_a, runs_b, metric, group)
    bounds = [s["bound"] for s in (sa, sb) if s["bound"] is not None]
    source = "/".join(x for x, s in ((a, sa), (b, sb)) if s["bound"] is not None)
    noise = agg(data[NOISE], metric, group) if data.get(NOISE) else None
    if not bounds and noise is not None and noise["bound"] is not None:
        bounds, source = [noise["bound"]], f"{NOISE} (stand-in)"
    if not bounds:
        return {"delta": delta, "spread": None, "spread_of": None, "wins": wins,
                "against": delta < 0 if claim["kind"] == "kept" else delta <= 0,
                "verdict": f"seed spread {NOT_MEASURED} (one seed each); a - b = {delta:+.2f}{note}"}  # fmt: skip
    spread = max(bounds)
    beyond = abs(delta) > spread
    if claim["kind"] == "better":
        if beyond and delta > 0:
            text = f"supported: {a} better by {delta:+.2f}, beyond the seed spread"
        elif beyond:
            text = f"contradicted: {b} better by {-delta:.2f}, beyond the seed spread"
        else:
            text = f"not resolved: difference {delta:+.2f} within the seed spread"
    else:
        if beyond and delta < 0:
            text = f"contradicted: {a} loses {-delta:.2f}, beyond the seed spread"
        elif beyond:
            text = f"supported: {a} better by {delta:+.2f}, beyond the seed spread"
        else:
            text = f"supported: difference {delta:+.2f} within the seed spread"
    against = text.startswith(("contradicted", "not resolved"))
    return {"delta": delta, "spread": spread, "spread_of": source, "wins": wins, "against": against,
            "verdict": text + note}  # fmt: skip



def reproduction(committed: Mapping[str, Any], reproduced: Mapping[str, Any],
                 data: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:  # fmt: skip
    """Committed vs re-run scores of one run, judged against the seed spread of its experiment (all directions).

    The spread is agg's `bound` (max-min range or seed_noise) over the committed seeds of the run's experiment,
    or of `NOISE` when the experiment has one seed; with neither, the comparison is reported without a verdict.
    """
    name = committed["experiment"]
    metrics, dirs = {}, committed["directions"]
    for metric in METRICS:
        a, b = committed["groups"][metric], reproduced["groups"][metric]
        metrics[metric] = {
            "committed": a["all"], "reproduced": b["all"], "delta": b["all"] - a["all"],
            "groups": {g: b[g] - a[g] for g in GROUP_COLUMNS if a.get(g) is not None and b.get(g) is not None},
            "max_direction_delta": max(abs(reproduced["directions"][k][metric] - d[metric]) for k, d in dirs.items()),
        }  # fmt: skip
    spread, spread_of = None, None
    for source in (name, NOISE):
        s = agg(data.get(source, []), "spbleu", "all")
        if s is not None and s["bound"] is not None:
            spread, spread_of = s["bound"], source + ("" if source == name else " (stand-in)")
            break
    within = None if spread is None else abs(metrics["spbleu"]["delta"]) <= spread
    return {"format": REPRODUCE_FORMAT, "run": committed["run"], "experiment": name, "metrics": metrics,
            "spread": spread, "spread_of": spread_of, "within_spread": within,
            "curve": curve_change(committed.get("curve"), reproduced.get("curve")),
            "committed": {"git_commit": committed["git_commit"], "date": committed["machine"].get("date"),
                          **_train_facts(committed)},
            "reproduced": {"git_commit": reproduced["git_commit"], "machine": reproduced["machine"],
                           **_train_facts(reproduced)}}  # fmt: skip


def curve_change(a: Sequence[Mapping[str, Any]] | None, b: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """How far two validation curves (the regime's per-epoch losses) lie apart: the largest |difference| of the
    validation loss at the epochs both have, and how many; None where a run has no curve."""
    if not a or not b:
        return None
    by_epoch = {p["epoch"]: p["valid_loss"] for p in b}
    diffs = [abs(by_epoch[p["epoch"]] - p["valid_loss"]) for p in a if p["epoch"] in by_epoch]
    return {"epochs": len(diffs), "max_valid_loss_delta": max(diffs) if diffs else None}


def _train_facts(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a reproduction compares of a run's training: time, validation loss and thread count (which moves the
    numbers a little: see the README)."""
    train = result.get("train") or {}
    if train.get("valid_loss") is None and result.get("curve"):  # the regime's runs: the last epoch's
        train = {**train, "valid_loss": result["curve"][-1]["valid_loss"]}
    threads = train.get("omp_num_threads")  # one entry per session; absent: OMP_NUM_THREADS unset (all cores)
    return {"train_seconds": train.get("seconds"), "valid_loss": train.get("valid_loss"),
            "omp_num_threads": ",".join(sorted(set(threads))) if threads else None}  # fmt: skip

