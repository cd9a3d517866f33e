"""The demo's verdict: "clearly above" only with a higher average and a significant sign test on both metrics."""

from __future__ import annotations

import math

import pytest

from benchmarks import demo_run


@pytest.fixture(scope="module")
def demo():
    return demo_run


def test_sign_test_is_the_binomial_tail(demo):
    assert demo.sign_test(0, 0) == 1.0
    assert demo.sign_test(3, 0) == pytest.approx(1 / 8)
    assert demo.sign_test(66, 66) == pytest.approx(sum(math.comb(132, k) for k in range(66, 133)) / 2**132)
    assert demo.sign_test(66, 66) > 0.5 > demo.sign_test(80, 52)
    assert demo.sign_test(99, 33) < 1e-8


def _result(gain: dict[str, float], improved: dict[str, int], worse: dict[str, int]) -> dict:
    scores = {"base": {m: {"all": 10.0} for m in gain}, "lslo": {m: {"all": 10.0 + g} for m, g in gain.items()}}
    return {"scores": scores, "directions": 132, "directions_improved": improved, "directions_worse": worse}


def test_verdict_needs_both_metrics(demo):
    said, gains, p = demo.verdict(_result({"spbleu": 1.3, "chrf": 0.8}, {"spbleu": 99, "chrf": 90}, {"spbleu": 33, "chrf": 42}))
    assert said == "clearly above" and gains["chrf"] == pytest.approx(0.8) and p["chrf"] < 0.05
    # A higher chrF++ average that half of the directions do not share is not a clear gain.
    said, _, p = demo.verdict(_result({"spbleu": 1.3, "chrf": 0.33}, {"spbleu": 99, "chrf": 66}, {"spbleu": 33, "chrf": 66}))
    assert said == "NOT clearly above (clearly above on spBLEU only)" and p["chrf"] > 0.5
    # Most directions improving does not help a lower average.
    said, _, _ = demo.verdict(_result({"spbleu": -0.1, "chrf": -0.2}, {"spbleu": 99, "chrf": 99}, {"spbleu": 33, "chrf": 33}))
    assert said == "NOT clearly above"


def test_an_evaluation_beside_the_training_ends_when_its_results_are_written(demo, tmp_path):
    """The base's evaluation runs in the background: its phase ends at its results.json, not at the next phase."""
    import os

    out = tmp_path / "eval-base"
    out.mkdir()
    (out / "results.json").write_text("{}")
    started = 1_000_000.0
    os.utime(out / "results.json", (started + 95.0, started + 95.0))
    line = f"OMP_NUM_THREADS=1 python -m lslo.cli eval base --data d --no-progress --out {out} > log 2>&1 & base=$!; \\"
    assert demo.phase_end(line, next_start=0.2, started=started) == pytest.approx(95.0)
    # Not written (the evaluation failed), or not an evaluation: the next phase's start.
    assert demo.phase_end(line.replace(str(out), str(tmp_path / "none")), 0.2, started) == 0.2
    assert demo.phase_end("python -m lslo.cli train c.yaml --set out_dir=x", 310.0, started) == 310.0
