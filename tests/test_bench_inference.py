"""The verdict rule (benchmarks/bible12/inference.py): paired bootstrap over languages and seeds, Bonferroni, decisions."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bible12 import inference

TIERS = {**dict.fromkeys(["en", "fr", "de", "it"], "high"), **dict.fromkeys(["zh", "ja", "ko", "ru"], "medium"),
         **dict.fromkeys(["sw", "tl", "fa", "vi"], "low")}  # fmt: skip
KEYS = [f"{s}-{t}" for s in TIERS for t in TIERS if s != t]


def run(name: str, seed: int, scores: dict[str, float]) -> dict:
    return {"run": f"{name}.seed{seed}", "experiment": name, "seed": seed, "tiers": TIERS,
            "directions": {k: {"spbleu": v, "chrf": v} for k, v in scores.items()}}  # fmt: skip


def family(effect, seeds_a=(0.0,), seeds_b=(0.0,), noise=0.0, seed=0) -> tuple[list[dict], list[dict]]:
    """b: random per-direction scores; a: b + effect(direction) + a per-seed offset + independent noise."""
    rng = np.random.default_rng(seed)
    base = {k: float(rng.normal(7, 1)) for k in KEYS}
    runs_b = [run("b", i + 1, {k: base[k] + off for k in KEYS}) for i, off in enumerate(seeds_b)]
    runs_a = [run("a", i + 1, {k: base[k] + effect(k) + off + noise * float(rng.normal()) for k in KEYS})
              for i, off in enumerate(seeds_a)]  # fmt: skip
    return runs_a, runs_b


def test_a_constant_shift_is_its_own_interval_and_two_sided():
    up = inference.paired_bootstrap(*family(lambda k: 0.3), "spbleu", "all", replicates=2000)
    assert up["delta"] == pytest.approx(0.3) and up["lo"] == pytest.approx(0.3) and up["hi"] == pytest.approx(0.3)
    assert up["p"] == 0 and up["directions"] == 132 and up["languages"] == 12
    a, b = family(lambda k: 0.1 * (KEYS.index(k) % 7 - 3), noise=0.5)
    forward = inference.paired_bootstrap(a, b, "spbleu", "all", replicates=4000)
    backward = inference.paired_bootstrap(b, a, "spbleu", "all", replicates=4000)
    assert backward["delta"] == pytest.approx(-forward["delta"])
    assert backward["p"] == pytest.approx(forward["p"], abs=0.02)  # two-sided: the same p either way round
    assert 0 < forward["p"] <= 1 and forward["lo"] < forward["delta"] < forward["hi"]


@pytest.mark.parametrize("shift", [0.0, 0.06, 0.13, 0.14, 0.16, 0.2, 0.25])
def test_p_is_two_sided_it_agrees_with_the_interval(shift):
    """The two-sided p is below 1 - level exactly when the level interval leaves out 0 (a one-sided p, half of
    it, would call a Δ whose interval holds 0 significant); a Δ centred on 0 has p near 1, not near 0.5."""
    a, b = family(lambda k: shift + 0.1 * (KEYS.index(k) % 7 - 3), noise=0.5, seed=3)
    r = inference.paired_bootstrap(a, b, "spbleu", "all", level=0.95, replicates=4000)
    assert (r["p"] < 0.05) == (r["lo"] > 0 or r["hi"] < 0), r
    if shift == 0.0:
        assert r["lo"] < 0 < r["hi"] and r["p"] > 0.6, r


@pytest.mark.parametrize("side", ["source", "target", "both"])
def test_language_effects_widen_the_interval_beyond_an_independent_directions_one(side):
    """Δ made only of source- and/or target-language effects: 132 directions but 12 languages of evidence. The
    interval is much wider than a bootstrap that resamples directions as if independent would give."""
    rng = np.random.default_rng(1)
    u, v = ({lang: float(rng.normal()) * (side in (s, "both")) for lang in TIERS} for s in ("source", "target"))
    a, b = family(lambda k: u[k.split("-")[0]] + v[k.split("-")[1]])
    r = inference.paired_bootstrap(a, b, "spbleu", "all", replicates=4000)
    d = np.array([u[k.split("-")[0]] + v[k.split("-")[1]] for k in KEYS])
    naive = np.quantile([rng.choice(d, d.size).mean() for _ in range(4000)], [0.025, 0.975])
    assert (r["hi"] - r["lo"]) > 2.0 * (naive[1] - naive[0])
    assert r["lo"] < r["delta"] < r["hi"]


def test_seeds_are_resampled_and_one_seed_borrows_nothing():
    """A seed offset shared by every direction widens the interval of a two-seed experiment; the same runs averaged
    into one seed give a narrower one (no seed variation to see)."""
    a, b = family(lambda k: 0.2, seeds_a=(-0.4, 0.4), seeds_b=(0.3, -0.3), noise=0.05)
    two = inference.paired_bootstrap(a, b, "spbleu", "all", replicates=4000)
    mean_a = [run("a", 1, {k: float(np.mean([r["directions"][k]["spbleu"] for r in a])) for k in KEYS})]
    mean_b = [run("b", 1, {k: float(np.mean([r["directions"][k]["spbleu"] for r in b])) for k in KEYS})]
    one = inference.paired_bootstrap(mean_a, mean_b, "spbleu", "all", replicates=4000)
    assert two["delta"] == pytest.approx(one["delta"]) and two["seeds"] == (2, 2) and one["seeds"] == (1, 1)
    assert (two["hi"] - two["lo"]) > 3 * (one["hi"] - one["lo"])


def test_groups_keep_only_their_directions():
    a, b = family(lambda k: 1.0 if TIERS[k.split("-")[0]] == TIERS[k.split("-")[1]] == "high" else 0.0)
    high = inference.paired_bootstrap(a, b, "spbleu", "high", replicates=1000)
    assert high["directions"] == 12 and high["delta"] == pytest.approx(1.0)
    low = inference.paired_bootstrap(a, b, "spbleu", "low", replicates=1000)
    assert low["directions"] == 132 - 56 and low["delta"] == pytest.approx(0.0)


@pytest.mark.parametrize(("kind", "lo", "hi", "want"), [
    ("better", 0.01, 0.5, "supported"), ("better", -0.01, 0.5, "not resolved"), ("better", -0.5, -0.01, "contradicted"),
    ("kept", 0.01, 0.2, "supported"), ("kept", -0.01, 0.2, "not resolved"), ("kept", -0.9, -0.01, "contradicted"),
    ("kept", 0.0, 0.0, "supported"), ("better", 0.0, 0.0, "not resolved"),  # identical models match, don't beat
])  # fmt: skip
def test_the_verdict_is_read_off_the_interval(kind, lo, hi, want):
    assert inference.MARGIN == 0.0  # no margin fixed in advance: "matches or beats" needs the interval above 0
    assert inference.decide(kind, lo, hi) == want


def test_a_margin_fixed_in_advance_makes_kept_a_non_inferiority_claim(monkeypatch):
    monkeypatch.setattr(inference, "MARGIN", 0.5)
    assert inference.decide("kept", -0.49, 0.2) == "supported"
    assert inference.decide("kept", -0.51, 0.2) == "not resolved"
    assert inference.decide("kept", -0.9, -0.51) == "contradicted"
    assert inference.decide("better", -0.49, 0.2) == "not resolved"
    assert "above -0.5 spBLEU, a non-inferiority margin" in inference.method_text(3)


def test_judge_corrects_for_the_claims_tested_and_skips_missing_ones():
    a, b = family(lambda k: 0.05, noise=0.4)
    data = {"a": a, "b": b}
    claims = [{"a": "a", "b": "b", "group": g, "kind": "better"} for g in ("all", "low", "no-low")]
    claims.append({"a": "a", "b": "missing", "group": "all", "kind": "better"})
    judged = inference.judge(claims, data)
    assert judged[3] is None and all(r["claims_tested"] == 3 for r in judged[:3])
    alone = inference.paired_bootstrap(a, b, "spbleu", "all", level=0.95)
    first = judged[0]
    assert first["level"] == pytest.approx(1 - 0.05 / 3) and first["p_adjusted"] == pytest.approx(min(1, 3 * first["p"]))
    assert first["p"] == pytest.approx(alone["p"])  # the same replicates: p itself is not corrected, the interval is
    assert first["lo"] < alone["lo"] and first["hi"] > alone["hi"]
    kept = inference.judge([{"a": "a", "b": "b", "group": "all", "kind": "kept"}], {"a": a, "b": b})[0]
    better = inference.judge([{"a": "a", "b": "b", "group": "all", "kind": "better"}], {"a": a, "b": b})[0]
    assert kept["verdict"] == better["verdict"] == "not resolved" and kept["one_seed"]  # no margin: the same rule
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inference, "MARGIN", 0.5)
        kept = inference.judge([{"a": "a", "b": "b", "group": "all", "kind": "kept"}], {"a": a, "b": b})[0]
    assert kept["verdict"].startswith("supported")
    again = inference.judge(claims, data)
    assert [r and r["lo"] for r in again] == [r and r["lo"] for r in judged]  # seeded: a re-render is identical
