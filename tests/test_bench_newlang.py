"""The newlang benchmark family's plan and bookkeeping (benchmarks/bible12/newlang.py); no training here."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.bible12 import newlang
from benchmarks.bible12.runner import BenchError


def opts(tmp_path) -> argparse.Namespace:
    return argparse.Namespace(base="base/bible12-small", data=str(tmp_path / "bible12"), runs_dir=str(tmp_path / "runs"),
                              results_dir=str(tmp_path / "res"), steps=100, max_tokens=1024, precision="fp32",
                              max_sentences=3, beams=1, only=None, list=False)  # fmt: skip


def test_plan_chains_stages_and_compares_methods(tmp_path):
    o = opts(tmp_path)
    runs = {r["run"]: r for r in newlang.plan(o)}
    assert {"start-base", "start-lslo12"} <= set(runs)
    for method in newlang.METHODS:  # every method on every language alone, from the base
        for lang in ("es", "hi", "tr"):
            assert f"base.{lang}.{method}.seed1" in runs
    assert not any(r.startswith("lslo12.") and "full" in r for r in runs)
    stage3 = runs["base.seq.lslo-add.seed2.stage3"]
    assert stage3["langs"] == ["es", "hi", "tr"] and stage3["new"] == "tr" and stage3["scored"]
    assert not runs["base.seq.lslo-add.seed2.stage2"]["scored"]
    cfg = newlang.run_config(stage3, o)
    assert cfg["method"] == "lslo" and cfg["start_from"].endswith("base.seq.lslo-add.seed2.stage2/train")
    assert cfg["new_languages"] == {"tr": newlang.NEW["tr"]}
    full = newlang.run_config(runs["base.seq.full-ext.seed1.stage2"], o)
    assert full["method"] == "full" and full["base_model"].endswith("base.seq.full-ext.seed1.stage1/train/model")
    replay = newlang.run_config(runs["base.es.full-ext-replay.seed1"], o)
    assert len(replay["pairs"]) == 2 * 12 + 132 and "en-fr" in replay["pairs"]
    assert "start_from" not in newlang.run_config(runs["base.es.lslo-add.seed1"], o)
    assert newlang.run_config(runs["lslo12.es.lslo-add.seed1"], o)["start_from"].endswith("start-lslo12/train")
    lora = newlang.run_config(runs["base.hi.lora-ext.seed1"], o)  # the shared LoRA: the new language's LSLo rank
    assert lora["method"] == "lora" and lora["lora_rank"] == 8 and newlang.run_config(runs["base.es.lora-ext.seed1"], o)["lora_rank"] == 2
    assert not any(".seq.lora-ext" in r for r in runs)  # a chain of shared LoRAs would need each stage merged


def test_changed_hypotheses(tmp_path):
    for name, lines in (("a", "x\ny\nz\n"), ("b", "x\nY\nz\n"), ("c", "x\n")):
        (tmp_path / name / "directions" / "en-fr").mkdir(parents=True)
        (tmp_path / name / "directions" / "en-fr" / "hyp.txt").write_text(lines)
    assert newlang.changed_hypotheses(tmp_path / "a", tmp_path / "a", ["en-fr"]) == {"en-fr": 0}
    assert newlang.changed_hypotheses(tmp_path / "a", tmp_path / "b", ["en-fr"]) == {"en-fr": 1}
    with pytest.raises(BenchError, match="evaluate the same verses"):
        newlang.changed_hypotheses(tmp_path / "a", tmp_path / "c", ["en-fr"])
