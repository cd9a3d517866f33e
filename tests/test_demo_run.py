"""The demo's verdict: "clearly above" only with a higher average and a significant sign test on both metrics."""

from __future__ import annotations

import json
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


def test_other_lengths_lists_each_demo_json_with_its_verdict(demo, tmp_path):
    assert demo.other_lengths(tmp_path) == []  # none measured: no table
    r = _result({"spbleu": 0.1, "chrf": -0.88}, {"spbleu": 72, "chrf": 45}, {"spbleu": 60, "chrf": 87})
    r.update(train_steps=300, train_max_tokens=1024, settings={"max_sentences": 20}, wall_s=516.0,
             machine={"date": "2026-12-07 15:35 UTC", "git_commit": "ab16044"},
             phases=[{"command": "python -m lslo.cli eval base", "start_s": 95.1}, {"command": "python -m lslo.cli train c", "start_s": 95.3},
                     {"command": "python -m pip install x", "start_s": 4.0}])  # fmt: skip
    (tmp_path / "demo-300steps.json").write_text(json.dumps(r))
    row = demo.other_lengths(tmp_path)[-1]
    assert row == ("| `demo-300steps.json` | 132 | 300 x 1024 | 20 | base evaluated beside the training | 8.6 | +0.10 | -0.88 | "
                   "NOT clearly above | 2026-12-07 15:35 UTC, ab16044 |")  # fmt: skip
    r["phases"][1]["start_s"] = 400.0  # the training after the base's evaluation
    (tmp_path / "demo-300steps.json").write_text(json.dumps(r))
    assert "| one after another |" in demo.other_lengths(tmp_path)[-1]
