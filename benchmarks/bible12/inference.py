"""The verdict rule of every bible12 family: a paired bootstrap over languages and seeds, intervals corrected for
the number of claims, and the verdict read off the interval (see benchmarks/bible12/README.md, *Verdicts*).

Why a bootstrap over languages: the directions of a comparison are not independent draws. Every direction shares
its source language with 10 others and its target language with 10 others, and all of them score the same test
verses, so a language that one method happens to suit moves 22 directions at once. Resampling directions (or a sign
test over them) treats 132 correlated numbers as 132 independent ones and gives intervals too narrow. Here each
replicate draws the languages again, with replacement within each resource tier (the tiers are fixed by design),
and weights a direction s->t by (times s was drawn) x (times t was drawn): the pigeonhole bootstrap for a crossed
design (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat.), which carries both the source and the target
language's effect into the interval and is, if anything, conservative. Where an experiment has two or more seeds,
each replicate also draws its seeds with replacement (with two seeds this sees about half of the seed-to-seed
variance: a known weakness of the bootstrap at n = 2). An experiment with one seed contributes no seed variation:
its interval covers which languages were tested, not which seed was drawn, and it does not borrow another
experiment's spread; the tables say so. The test verses themselves are not resampled (the JSON holds one corpus
score per direction): the interval is conditional on these 50 verses.

Pure functions of the runs' result JSONs (numpy only); nothing here trains or writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .analysis import in_group

LEVEL = 0.95  # family-wise: each interval is at 1 - (1 - LEVEL) / (claims tested), Bonferroni
REPLICATES = 20000
SEED = 0  # the bootstrap's own random stream: fixed, so a re-render gives the same intervals
# spBLEU: a "kept" (matches or beats) claim holds when the interval's lower end is above -MARGIN. 0: no margin was
# fixed before these families' test scores were read, and one chosen after reading them would decide verdicts.
MARGIN = 0.0
ONE_SEED = "†"  # marks a comparison where an experiment has one seed (no seed variation in its interval)


def paired_bootstrap(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]], metric: str, group: str,
                     level: float = LEVEL, replicates: int = REPLICATES, seed: int = SEED) -> dict[str, Any] | None:  # fmt: skip
    """Δ = mean over the group's directions of (a's mean over seeds - b's), its `level` percentile interval and
    two-sided bootstrap p (twice the smaller share of replicates on either side of 0), from a bootstrap that
    resamples languages within tiers (pigeonhole weights) and, for an experiment with >= 2 seeds, its seeds.
    None when no direction of the group is in both."""
    ref = runs_a[0]
    keys = [k for k in ref["directions"] if in_group(ref, k, group)
            and all(k in r["directions"] for r in (*runs_a, *runs_b))]  # fmt: skip
    if not keys:
        return None
    a = np.array([[r["directions"][k][metric] for k in keys] for r in runs_a], dtype=float)  # seeds x directions
    b = np.array([[r["directions"][k][metric] for k in keys] for r in runs_b], dtype=float)
    delta = float(a.mean(0).mean() - b.mean(0).mean())
    langs = sorted({x for k in keys for x in k.split("-")})
    index = {lang: i for i, lang in enumerate(langs)}
    src = np.array([index[k.split("-")[0]] for k in keys])
    tgt = np.array([index[k.split("-")[1]] for k in keys])
    rng = np.random.default_rng(seed)
    counts = np.zeros((replicates, len(langs)))
    tiers: dict[str, list[int]] = {}
    for lang, i in index.items():
        tiers.setdefault(ref["tiers"].get(lang) or "none", []).append(i)
    for members in tiers.values():  # languages drawn again, with replacement, within each tier
        draws = rng.multinomial(len(members), [1 / len(members)] * len(members), size=replicates)
        counts[:, members] = draws
    weights = counts[:, src] * counts[:, tgt]  # replicates x directions: the pigeonhole weights

    def seed_means(x: np.ndarray) -> np.ndarray:  # replicates x directions: the mean over drawn seeds
        if x.shape[0] == 1:
            return np.broadcast_to(x[0], (replicates, x.shape[1]))
        drawn = rng.multinomial(x.shape[0], [1 / x.shape[0]] * x.shape[0], size=replicates) / x.shape[0]
        return drawn @ x

    total = weights.sum(1)
    ok = total > 0  # a replicate that drew no direction of the group (possible for small groups) is left out
    boot = (weights * (seed_means(a) - seed_means(b))).sum(1)[ok] / total[ok]
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    p = min(1.0, 2 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    return {"delta": delta, "lo": float(lo), "hi": float(hi), "p": p, "level": level, "directions": len(keys),
            "languages": len(langs), "seeds": (len(runs_a), len(runs_b)), "replicates": int(ok.sum())}  # fmt: skip


def decide(kind: str, lo: float, hi: float) -> str:
    """The verdict from the corrected interval [lo, hi] of Δ = a - b.

    "better" (a beats b): supported when lo > 0, contradicted when hi < 0, else not resolved.
    "kept" (a matches or beats b; a non-inferiority claim with margin MARGIN): supported when lo > -MARGIN,
    contradicted when hi < -MARGIN, else not resolved.
    """
    if kind != "better" and lo == hi == 0.0:  # the same model on both sides (a search that found b's routing)
        return "supported"
    bound = 0.0 if kind == "better" else -MARGIN
    if lo > bound:
        return "supported"
    if hi < bound:
        return "contradicted"
    return "not resolved"


def judge(claims: Sequence[Mapping[str, Any]], data: Mapping[str, Sequence[Mapping[str, Any]]], metric: str = "spbleu",
          views: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]] | None = None) -> list[dict[str, Any] | None]:  # fmt: skip
    """Every claim of a family judged together: m = the claims with both sides measured, each interval at
    1 - (1 - LEVEL) / m (Bonferroni), p adjusted to min(1, m p); None for a claim not measured.
    A claim with `models` (e.g. "last") is judged on `views[models]` instead of `data`.
    `same_as`: a run of a that is a run of b (the search found b's routing) is compared with that run only."""
    pairs = []
    for claim in claims:
        runs = (views or {}).get(claim.get("models"), data)
        runs_a, runs_b = runs.get(claim["a"]), runs.get(claim["b"])
        if not runs_a or not runs_b:
            pairs.append(None)
            continue
        same = [r for r in runs_b if r["run"] in {x.get("same_as") for x in runs_a}]
        pairs.append((runs_a, same if same and len(same) == len(runs_a) else runs_b))
    m = sum(p is not None for p in pairs)
    out: list[dict[str, Any] | None] = []
    for claim, pair in zip(claims, pairs, strict=True):
        result = None if pair is None else paired_bootstrap(*pair, metric, claim["group"], level=1 - (1 - LEVEL) / m)
        if result is not None:
            verdict = decide(claim["kind"], result["lo"], result["hi"])
            if claim["kind"] != "better" and verdict == "supported":  # say which side of 0 the interval lies on
                verdict += (f" (lower, but within the {MARGIN:g} margin)" if result["hi"] < 0
                            else " (higher)" if result["lo"] > 0 else "")  # fmt: skip
            result.update(claims_tested=m, p_adjusted=min(1.0, m * result["p"]), verdict=verdict,
                          one_seed=min(result["seeds"]) == 1)  # fmt: skip
        out.append(result)
    return out


def p_text(p: float, replicates: int) -> str:
    """A bootstrap p for a table: below the resolution of the replicates it is given as a bound."""
    return f"< {2 / replicates:.0e}" if p == 0 else f"{p:.2g}"


def cells(r: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """(Δ [interval], p (two-sided; Bonferroni-adjusted), verdict) of `judge`'s result, for a table row."""
    if r is None:
        return "–", "–", "–"
    mark = f" {ONE_SEED}" if r["one_seed"] else ""
    interval = f"{r['delta']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]{mark}"
    return interval, f"{p_text(r['p'], r['replicates'])}; {p_text(r['p_adjusted'], r['replicates'])}", r["verdict"]


def method_text(m: int) -> str:
    """The paragraph that names the method above a claims table."""
    return (f"**Verdict** (the rule in `benchmarks/bible12/README.md`, *Verdicts*): Δ spBLEU with its "
            f"{100 * (1 - (1 - LEVEL) / max(m, 1)):.1f}% interval ({m} claims tested here, Bonferroni: "
            f"{100 * LEVEL:.0f}% family-wise) and two-sided p (raw; Bonferroni-adjusted, x{m}) from a paired bootstrap "
            f"({REPLICATES:,} replicates) that resamples the languages within each tier, weighting each direction by how "
            "often its source and its target language were drawn (source and target effects), and each experiment's "
            "seeds where it has two or more. A claim is supported when the interval lies above "
            + (f"0 (a *matches or beats* claim: above -{MARGIN:g} spBLEU, a non-inferiority margin), " if MARGIN else
               "0 (a *matches or beats* claim too: no non-inferiority margin was fixed before the scores were read), ")
            + f"contradicted when it lies below, otherwise not resolved. {ONE_SEED}: an experiment of the comparison has one "
            "seed, so its interval holds no seed-to-seed variation (it borrows no other experiment's). "
            "*Old rule*: the verdict of the previous release (|Δ| against the larger seed spread), kept for one release.")
