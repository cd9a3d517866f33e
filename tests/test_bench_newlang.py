"""The newlang benchmark family's plan and bookkeeping (benchmarks/bible12/newlang.py); no training here."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    assert {"base.es.lslo-add.seed2", "base.es.full-ext.seed2"} <= set(runs) and "base.hi.lslo-add.seed2" not in runs
    stage3 = runs["base.seq.lslo-add.seed2.stage3"]
    assert stage3["langs"] == ["es", "hi", "tr"] and stage3["new"] == "tr" and stage3["scored"]
    assert not runs["base.seq.lslo-add.seed2.stage2"]["scored"]
    cfg = newlang.run_config(stage3, o)
    assert cfg["method"] == "lslo" and cfg["start_from"].endswith("base.seq.lslo-add.seed2.stage2/train")
    assert cfg["new_languages"] == {"tr": newlang.NEW["tr"]}
    # a chain's first stage is the es-alone run of the same start, method and seed (same config): not trained twice
    assert not any(r.endswith(".stage1") for r in runs)
    assert runs["lslo12.seq.lslo-add.seed2.stage2"]["after"] == "lslo12.es.lslo-add.seed2"
    full = newlang.run_config(runs["base.seq.full-ext.seed1.stage2"], o)
    assert full["method"] == "full" and full["base_model"].endswith("base.es.full-ext.seed1/train/model")
    replay2 = newlang.run_config(runs["base.seq.full-ext-replay.seed1.stage2"], o)
    assert replay2["base_model"].endswith("base.es.full-ext-replay.seed1/train/model") and len(replay2["pairs"]) == 2 * 13 + 2 * 12 + 132
    replay = newlang.run_config(runs["base.es.full-ext-replay.seed1"], o)
    assert len(replay["pairs"]) == 2 * 12 + 132 and "en-fr" in replay["pairs"]
    assert "start_from" not in newlang.run_config(runs["base.es.lslo-add.seed1"], o)
    assert newlang.run_config(runs["lslo12.es.lslo-add.seed1"], o)["start_from"].endswith("start-lslo12/train")
    lora = newlang.run_config(runs["base.hi.lora-ext.seed1"], o)  # the shared LoRA: the new language's LSLo rank
    assert lora["method"] == "lora" and lora["lora_rank"] == 8 and newlang.run_config(runs["base.es.lora-ext.seed1"], o)["lora_rank"] == 2
    assert not any(".seq.lora-ext" in r for r in runs)  # a chain of shared LoRAs would need each stage merged
    from benchmarks.bible12.matrix import VALID_PER_DIRECTION_NEW

    for r in runs.values():  # the last model is scored; a family that picks one by validation needs >= 50 verses
        if r["kind"] == "add":
            c = newlang.run_config(r, o)
            assert not c.get("keep_best") or c["valid_max_per_direction"] >= VALID_PER_DIRECTION_NEW


def test_changed_hypotheses(tmp_path):
    for name, lines in (("a", "x\ny\nz\n"), ("b", "x\nY\nz\n"), ("c", "x\n")):
        (tmp_path / name / "directions" / "en-fr").mkdir(parents=True)
        (tmp_path / name / "directions" / "en-fr" / "hyp.txt").write_text(lines)
    assert newlang.changed_hypotheses(tmp_path / "a", tmp_path / "a", ["en-fr"]) == {"en-fr": 0}
    assert newlang.changed_hypotheses(tmp_path / "a", tmp_path / "b", ["en-fr"]) == {"en-fr": 1}
    with pytest.raises(BenchError, match="evaluate the same verses"):
        newlang.changed_hypotheses(tmp_path / "a", tmp_path / "c", ["en-fr"])


def synthetic(tmp_path, shift_full=-2.0, shift_lora=-0.5, lslo_changed=0):
    """Result JSONs of start-base and the four methods on es: old scores shifted by method, new scores by method."""
    import json
    import random

    from lslo.languages import BIBLE12_TIERS

    rng = random.Random(0)
    old = {d: {"spbleu": rng.uniform(1, 10), "chrf": rng.uniform(10, 30)} for d in newlang.old_directions()}
    new = {d: {"spbleu": rng.uniform(1, 5), "chrf": rng.uniform(10, 20)} for d in newlang.new_directions(["es"])}
    res = tmp_path / "res"
    res.mkdir(parents=True)
    common = {"format": newlang.FORMAT, "tiers": dict(BIBLE12_TIERS), "machine": {"cpu": "x", "cpu_cores": 2, "torch": "t", "date": "d"},
              "settings": {"steps": 300, "max_tokens": 2048, "precision": "fp32", "max_sentences": 30,
                           "spbleu": {"metric": "spBLEU(spm scoring-spm.model, sha256:0123)", "sha256": "0123"}}}  # fmt: skip

    def shifted(scores, by):
        return {d: {k: v + by for k, v in x.items()} for d, x in scores.items()}

    def mean(scores):
        return {k: sum(x[k] for x in scores.values()) / len(scores) for k in ("spbleu", "chrf")}

    (res / "start-base.json").write_text(json.dumps({**common, "run": "start-base", "kind": "start", "start": "base",
                                                      "old": mean(old), "old_directions": old}))  # fmt: skip
    for method, o, n in (("lslo-add", 0.0, 0.0), ("full-ext", shift_full, -0.1), ("full-ext-replay", -0.2, -0.3), ("lora-ext", shift_lora, -3.0)):
        r = {**common, "run": f"base.es.{method}.seed1", "kind": "add", "start": "base", "set": "es", "method": method, "seed": 1,
             "new_languages": ["es"], "tiers": {**BIBLE12_TIERS, "es": "medium"}, "old_directions": shifted(old, o),
             "new_directions": shifted(new, n), "old": mean(shifted(old, o)), "new": mean(shifted(new, n)), "old_start": mean(old),
             "old_changed_hypotheses": lslo_changed if method == "lslo-add" else 500, "old_hypotheses": 3960,
             "trained_parameters": 1000, "train": {"cpu_s": 600}, "valid_curve": [{"step": 100, "valid_loss": 5, "valid_nll": 4}],
             "extension": {"languages": {"es": {"tokens_per_word_before": 2.7, "tokens_per_word_after": 1.8}}}}  # fmt: skip
        (res / f"{r['run']}.json").write_text(json.dumps(r))
    return res


def verdict(text, claim):
    row = next(line for line in text.splitlines() if line.startswith(f"| {claim} |"))
    return row.rstrip(" |").rsplit("| ", 1)[1]


def test_render_judges_forgetting_and_exactness(tmp_path):
    """The section reads the JSONs only: forgetting claims follow the old scores, the new-language claims the new
    ones, and the exactness line counts changed hypotheses (a mutation of each flips what it must)."""
    from benchmarks.bible12 import newlang_render

    text = newlang_render.render(synthetic(tmp_path / "a"))
    assert verdict(text, "es: full fine-tuning lowers the old directions") == "supported"
    assert verdict(text, "es: the shared LoRA lowers the old directions") == "supported"
    assert verdict(text, "es: replay forgets less than no replay") == "supported"
    assert verdict(text, "es: LSLo-add matches or beats the shared LoRA on es's directions").startswith("supported")
    assert verdict(text, "hi: full fine-tuning lowers the old directions") == "–"  # not measured
    assert "1 of 1 LSLo-add runs leave every old hypothesis" in text
    assert "| base.es.full-ext.seed1 | full FT, extended vocabulary | " in text
    text = newlang_render.render(synthetic(tmp_path / "b", shift_full=+2.0, shift_lora=0.0, lslo_changed=3))
    assert verdict(text, "es: full fine-tuning lowers the old directions") == "contradicted"
    assert verdict(text, "es: the shared LoRA lowers the old directions") == "not resolved"
    assert "0 of 1 LSLo-add runs" in text and "NOT for base.es.lslo-add.seed1" in text
    assert newlang_render.plot_curves(tmp_path / "b" / "res").is_file()


def test_render_refuses_an_older_format_and_the_family_redoes_it(tmp_path):
    """A JSON of another format is a one-line error at render time, and the run counts as unfinished (redone)."""
    import json

    from benchmarks.bible12 import newlang_render
    from benchmarks.bible12.runner import BenchError

    res = synthetic(tmp_path / "a")
    path = res / "base.es.lslo-add.seed1.json"
    run = next(r for r in newlang.plan(opts(tmp_path)) if r["run"] == "base.es.lslo-add.seed1")
    o = opts(tmp_path)
    o.results_dir = str(res)
    assert newlang.finished(run, o)
    path.write_text(json.dumps({**json.loads(path.read_text()), "format": "lslo-bible12-newlang/1"}))
    assert not newlang.finished(run, o)
    with pytest.raises(BenchError, match=r"base\.es\.lslo-add\.seed1\.json: format 'lslo-bible12-newlang/1'.*again"):
        newlang_render.render(res)


def test_scoring_pieces_cover_every_script_of_the_family(tmp_path):
    """One piece model for the family, trained on every language's training text: a script the shipped base has no
    pieces for (hi) gets word pieces, not bytes, and the model is built once (same file on a second call)."""
    data = tmp_path / "bible22"
    (data / "train").mkdir(parents=True)
    words = {"en": "the cat sat on a mat and the dog", "hi": "अब कख गघ चछ जझ टठ डढ तथ दध"}
    for lang, text in words.items():
        (data / "train" / f"{lang}.txt").write_text("\n".join(" ".join(text.split()[i:] + text.split()[:i]) for i in range(200)) + "\n")
    pieces = newlang.scoring_pieces(data)
    sha = pieces.info["sha256"]
    hi = pieces("अब कख गघ").split()
    assert hi and not any(p.startswith("<0x") for p in hi)
    assert newlang.scoring_pieces(data).info["sha256"] == sha and not list(data.glob("*.tmp"))


def test_render_chains_and_the_lslo12_start(tmp_path):
    """A run's forgetting Δ is against its own starting point (start-lslo12 for lslo12.*), and a chain reports its
    first language's directions against the run that added it."""
    import json

    from benchmarks.bible12 import newlang_render

    res = synthetic(tmp_path / "a")
    base = json.loads((res / "base.es.lslo-add.seed1.json").read_text())
    start = json.loads((res / "start-base.json").read_text())
    up = {d: {k: v + 1.0 for k, v in x.items()} for d, x in start["old_directions"].items()}
    mean_up = {k: start["old"][k] + 1.0 for k in ("spbleu", "chrf")}
    (res / "start-lslo12.json").write_text(json.dumps({**start, "run": "start-lslo12", "start": "lslo12",
                                                        "old_directions": up, "old": mean_up}))  # fmt: skip
    (res / "lslo12.es.lslo-add.seed1.json").write_text(json.dumps({**base, "run": "lslo12.es.lslo-add.seed1", "start": "lslo12",
                                                                    "old_directions": up, "old": mean_up, "old_start": mean_up}))  # fmt: skip
    for method, changed in (("lslo-add", 0), ("full-ext", 321)):
        r = json.loads((res / f"base.es.{method}.seed1.json").read_text())
        seq_dirs = {d: {"spbleu": 2.0 + (method == "lslo-add"), "chrf": 15.0} for d in newlang.new_directions(["es", "hi", "tr"])}
        r |= {"run": f"base.seq.{method}.seed1.stage3", "set": "seq", "new_languages": ["es", "hi", "tr"],
              "new_directions": seq_dirs, "new": {"spbleu": 2.0 + (method == "lslo-add"), "chrf": 15.0},
              "earlier_language": {"language": "es", "against": f"base.es.{method}.seed1", "changed": changed, "of": 720},
              "extension": {"languages": {"tr": {"tokens_per_word_before": 5.1, "tokens_per_word_after": 2.3}}}}  # fmt: skip
        (res / f"{r['run']}.json").write_text(json.dumps(r))
    text = newlang_render.render(res)
    row = next(line for line in text.splitlines() if line.startswith("| lslo12.es.lslo-add.seed1 |"))
    assert "(+0.00)" in row  # against start-lslo12, not the base (+1.00)
    assert "`start-lslo12` (300 steps" in text
    assert ("es's 24 directions with the old languages" in text and "base.seq.lslo-add.seed1.stage3 (LSLo-add): 0 of 720"
            in text and "base.seq.full-ext.seed1.stage3 (full FT, extended vocabulary): 321 of 720" in text)  # fmt: skip
    assert verdict(text, "seq: full fine-tuning lowers the old directions (es, hi, tr added in turn)") == "supported"
    assert verdict(text, "seq: LSLo-add matches or beats full fine-tuning on the three languages' directions").startswith("supported")
    seq_row = next(line for line in text.splitlines() if line.startswith("| base.seq.lslo-add.seed1.stage3 |") and "→" in line)
    assert "| 3.00 / 15.00 |" in seq_row and "5.10 → 2.30" in seq_row  # all 78 directions; tr's tokenizer line


def test_chain_cpu_sums_every_stage(tmp_path):
    from benchmarks.bible12.runner import write_state

    o = opts(tmp_path)
    runs = {r["run"]: r for r in newlang.plan(o)}
    for name, cpu in (("base.es.lslo-add.seed1", 100.0), ("base.seq.lslo-add.seed1.stage2", 20.0), ("base.seq.lslo-add.seed1.stage3", 3.0)):
        write_state(Path(o.runs_dir) / name, {"train": {"done": True, "cpu_s": cpu}})
    assert newlang._chain_cpu(runs["base.seq.lslo-add.seed1.stage3"], o) == 123.0
    # a resumed run: the trainer's clock (every process's training) wins over the last process's CPU
    write_state(Path(o.runs_dir) / "base.es.lslo-add.seed1", {"train": {"done": True, "cpu_s": 40.0, "summary": {"cpu_s": 100.0}}})
    assert newlang._chain_cpu(runs["base.seq.lslo-add.seed1.stage3"], o) == 123.0
    assert newlang._chain_cpu(runs["base.es.lslo-add.seed1"], o) is None
