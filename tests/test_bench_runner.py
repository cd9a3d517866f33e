"""benchmarks/bible12/run.py: planning, resuming and rendering on synthetic result JSONs (nothing trains)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import results_md
from benchmarks.bible12 import analysis, matrix, render, run, runner


@pytest.fixture(autouse=True)
def no_real_results_md(tmp_path, monkeypatch):
    """Nothing here may touch benchmarks/RESULTS.md."""
    monkeypatch.setattr(results_md, "RESULTS_MD", tmp_path / "default-RESULTS.md")


TIERS = {"en": "high", "fr": "high", "zh": "medium", "sw": "low"}


def fake_result(experiment: str, seed: int | None, shift: float, low_shift: float = 0.0) -> dict:
    """A result JSON whose every direction scores 10 + shift (+ low_shift where a low language is in it)."""
    directions = {}
    for s in TIERS:
        for t in TIERS:
            if s != t:
                low = "low" in (TIERS[s], TIERS[t])
                value = 10.0 + shift + (low_shift if low else 0.0)
                directions[f"{s}-{t}"] = {"spbleu": value, "chrf": 3 * value, "n": 100}
    groups = {}
    for metric in ("spbleu", "chrf"):
        from lslo.report import tier_groups

        rows = {k: {**d, "src_tier": TIERS[k.split("-")[0]], "tgt_tier": TIERS[k.split("-")[1]]} for k, d in directions.items()}
        groups[metric] = {g: v["mean"] for g, v in tier_groups(rows, metric).items()}
    run = "base" if experiment == "base" else f"{experiment}.seed{seed}"
    result = {
        "format": matrix.FORMAT, "run": run, "experiment": experiment, "seed": seed, "about": "x",
        "budget": {"steps": 1000, "max_tokens": 2048},
        "eval": {"split": "test", "sentences_per_direction": 100, "beams": 5, "directions": len(directions)},
        "metrics": {"spbleu": "spBLEU[tok=bible12-small spm]", "chrf": "chrF++"}, "tiers": TIERS,
        "overall": {m: groups[m]["all"] for m in groups}, "groups": groups, "directions": directions,
        "base_model": "base/bible12-small", "git_commit": "abc1234",
        "machine": {"cpu": "x86_64", "cpu_cores": 2, "torch": "2.x"},
        "params": {"trainable": 0 if experiment == "base" else 1000, "base": 100000, "percent_of_base": 1.0},
    }  # fmt: skip
    if experiment != "base":
        result["train"] = {"seconds": 600.0 + 60 * (seed or 0), "peak_rss_mib": 900.0, "steps": 1000}
    return result


def write(results_dir: Path, result: dict) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{result['run']}.json").write_text(json.dumps(result))


def opts(tmp_path, *extra):
    return run.parse_args(["--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                             "--results-md", str(tmp_path / "RESULTS.md"), "--steps", "200", *extra])  # fmt: skip


def test_plan_same_budget_seeds_and_schedules(tmp_path):
    runs = runner.plan(opts(tmp_path))
    names = [r["run"] for r in runs]
    assert names[0] == "base" and len(names) == len(set(names))
    for exp in ("full", "lora", "lslo-228"):
        assert sum(r["experiment"] == exp for r in runs) >= 2  # at least two seeds
    wanted = {"full", "lora", "lslo-888", "lslo-228", "lslo-228-src", "lslo-228-attn", "lslo-228-ffn",
              "lslo-228-prune-lang", "lslo-228-prune-layer", "lslo-228-searched"}  # fmt: skip
    assert wanted <= {r["experiment"] for r in runs}
    trained = [r for r in runs if r["run"] != "base"]
    assert {(r["config"]["max_steps"], r["config"]["max_tokens"], r["config"]["max_epochs"]) for r in trained} == {(200, 2048, None)}
    assert {r["config"]["optimizer"] for r in trained} == {"adamw"}  # what the committed matrix ran with
    by = {r["run"]: r["config"] for r in trained}
    assert by["full.seed1"]["lr"] < by["lslo-228.seed1"]["lr"]
    assert by["lslo-228.seed2"]["seed"] == 2
    assert by["lslo-228.seed1"]["lslo"]["ranks"] == {"high": 2, "medium": 2, "low": 8}
    assert by["lslo-228-ffn.seed1"]["lslo"]["encoder_modules"] == ["fc1", "fc2"]
    assert by["lslo-228-ffn.seed1"]["lslo"]["decoder_routing"] == "tgt"  # the YAML's other lslo keys survive
    assert by["lslo-228-src.seed1"]["lslo"]["encoder_routing"] == "src"
    prune = by["lslo-228-prune-layer.seed1"]["prune"]
    assert prune == {"ratio": 0.9, "unit": "step", "start": 20, "duration": 120, "every": 10, "scope": "layer"}
    assert by["lslo-228-prune-lang.seed1"]["prune"]["scope"] == "language"
    from lslo.pruning import PruningConfig
    from lslo.run_config import TrainConfig

    for r in trained:  # every config is a valid TrainConfig once the placeholders are filled
        cfg = dict(r["config"])
        if cfg.get("lora_rank") == matrix.MATCH:
            cfg["lora_rank"] = 8
        for key in ("encoder_routing", "decoder_routing"):
            if cfg["lslo"].get(key) == matrix.SEARCHED:
                cfg["lslo"] = {**cfg["lslo"], key: None}
        TrainConfig.from_dict(cfg)
        if cfg.get("prune"):
            PruningConfig(**cfg["prune"])
    assert by["lora.seed1"]["lora_rank"] == matrix.MATCH
    assert by["lslo-228-searched.seed1"]["lslo"]["encoder_routing"] == matrix.SEARCHED
    assert [r["run"] for r in runner.select(runs, ["lslo-228", "base"])] == ["base", "lslo-228.seed1", "lslo-228.seed2"]
    assert [r["run"] for r in runner.select(runs, ["full.seed2"])] == ["full.seed2"]
    with pytest.raises(SystemExit):
        runner.select(runs, ["nope"])


def test_resume_skips_finished_runs_and_steps(tmp_path):
    o = opts(tmp_path)
    runs = runner.select(runner.plan(o), ["base", "lslo-228", "lslo-228-searched"])
    write(tmp_path / "results", fake_result("lslo-228", 1, 0.0))
    called = []
    done = runner.run_matrix(runs, o, do=lambda run, _: called.append(run["run"]))
    assert called == done == ["base", "lslo-228-searched.seed1", "lslo-228.seed2"]
    assert (tmp_path / "results" / "lslo-228.seed1.json").is_file()
    assert "| lslo-228 | 1 |" in (tmp_path / "RESULTS.md").read_text()  # rendered after each run
    assert not (tmp_path / "default-RESULTS.md").exists()

    # Within a run: a finished training and a finished search are not redone.
    run = next(r for r in runs if r["run"] == "lslo-228-searched.seed1")
    assert runner.steps_left(run, o.runs_dir, o.results_dir) == ["search", "train", "eval", "write"]
    search = tmp_path / "runs" / matrix.SEARCH_STEP / "lslo_config.json"
    search.parent.mkdir(parents=True)
    search.write_text("{}")
    runner.write_state(tmp_path / "runs" / run["run"], {"train": {"done": True}})
    assert runner.steps_left(run, o.runs_dir, o.results_dir) == ["eval", "write"]
    (tmp_path / "runs" / run["run"] / "eval").mkdir()
    (tmp_path / "runs" / run["run"] / "eval" / "results.json").write_text("{}")
    assert runner.steps_left(run, o.runs_dir, o.results_dir) == ["write"]
    base = next(r for r in runs if r["run"] == "base")
    assert runner.steps_left(base, o.runs_dir, o.results_dir) == ["eval", "write"]  # the base never trains


def test_searched_routing_equal_to_the_papers_reuses_its_run(tmp_path, monkeypatch):
    """When the search finds the paper's routing, the searched run trains exactly what lslo-228 trained: its
    result is reused (marked `same_as`) instead of training again; a different routing does train."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"encoder_layers": 4, "decoder_layers": 4}))
    o = opts(tmp_path, "--base", str(base))
    monkeypatch.setattr(runner, "call", lambda *a, **k: (_ for _ in ()).throw(AssertionError("nothing may run")))
    write(tmp_path / "results", fake_result("lslo-228", 1, 0.25))
    search = tmp_path / "runs" / matrix.SEARCH_STEP
    search.mkdir(parents=True)
    (search / "lslo_config.json").write_text(json.dumps({"encoder_routing": "src*3,tgt*1", "decoder_routing": "tgt*4"}))
    run = next(r for r in runner.plan(o) if r["run"] == "lslo-228-searched.seed1")
    result = runner.execute(run, o)
    assert result["same_as"] == "lslo-228.seed1" and result["run"] == "lslo-228-searched.seed1"
    assert result["search"]["routing"] == {"encoder_routing": "src*3,tgt*1", "decoder_routing": "tgt*4"}
    assert result["overall"]["spbleu"] == 10.25 and analysis.load_all(o.results_dir)["lslo-228-searched"][0]["same_as"]
    assert "lslo-228-searched.seed1 trains exactly what lslo-228.seed1 trains" in render.render(o.results_dir)

    (tmp_path / "results" / "lslo-228-searched.seed1.json").unlink()
    (search / "lslo_config.json").write_text(json.dumps({"encoder_routing": "src*2,tgt*2", "decoder_routing": "tgt*4"}))
    run = next(r for r in runner.plan(o) if r["run"] == "lslo-228-searched.seed1")
    with pytest.raises(AssertionError, match="nothing may run"):  # a routing of its own: it trains
        runner.execute(run, o)


def test_train_summary_is_read_from_the_log():
    log = 'warning: something {odd}\n{\n  "steps": 5,\n  "interrupted": false\n}\nmore noise\n'
    assert runner.last_json(log) == {"steps": 5, "interrupted": False}
    with pytest.raises(ValueError):
        runner.last_json("no summary")


def test_spread_and_verdicts(tmp_path):
    results = tmp_path / "results"
    write(results, fake_result("base", None, -5.0))
    write(results, fake_result("full", 1, 0.0))
    write(results, fake_result("full", 2, 0.4))
    write(results, fake_result("lslo-228", 1, 1.0, low_shift=0.0))
    write(results, fake_result("lslo-228", 2, 1.2, low_shift=0.0))
    write(results, fake_result("lslo-228-ffn", 1, 1.3))
    write(results, fake_result("lslo-228-attn", 1, 1.0))
    write(results, fake_result("lslo-228-prune-lang", 1, -1.0))
    data = analysis.load_all(results)
    assert [r["seed"] for r in data["full"]] == [1, 2]
    s = analysis.agg(data["full"], "spbleu", "all")
    assert s["mean"] == pytest.approx(10.2) and s["spread"] == pytest.approx(0.4) and s["n"] == 2
    assert analysis.agg(data["lslo-228-ffn"], "spbleu", "all")["spread"] is None

    claims = {c["claim"]: c for c in matrix.CLAIMS}
    overall = analysis.verdict(claims["LSLo (2/2/8) matches or beats full fine-tuning, overall"], data)
    assert overall["delta"] == pytest.approx(0.9) and overall["spread"] == pytest.approx(0.4)
    assert overall["verdict"].startswith("supported") and "beyond the seed spread" in overall["verdict"]
    # FFN vs attention: one seed each, so lslo-228's spread (0.2) stands in; 0.3 exceeds it.
    ffn = analysis.verdict(claims["LSLo in the fully connected layers beats LSLo in attention"], data)
    assert ffn["spread"] == pytest.approx(0.2) and "stand-in" in ffn["spread_of"]
    assert ffn["verdict"].startswith("supported")
    pruned = analysis.verdict(claims["90% pruning (language scope) keeps the quality"], data)
    assert pruned["delta"] == pytest.approx(-2.1) and pruned["verdict"].startswith("contradicted")
    assert pruned["against"] and not overall["against"] and not ffn["against"]  # the reason column shows for pruned only
    table = render.render(results)
    assert claims["90% pruning (language scope) keeps the quality"]["if_not"] in table
    assert claims["LSLo (2/2/8) matches or beats full fine-tuning, overall"]["if_not"] not in table
    missing = analysis.verdict(claims["90% pruning (layer scope) keeps the quality"], data)
    assert missing["delta"] is None and missing["verdict"].startswith(matrix.NOT_MEASURED)
    assert "lslo-228-prune-layer" in missing["verdict"]

    # Within the spread: not resolved for a "better" claim, supported for a "kept" claim.
    write(results, fake_result("lslo-228-ffn", 1, 1.15))
    near = analysis.verdict(claims["LSLo in the fully connected layers beats LSLo in attention"], analysis.load_all(results))
    assert near["verdict"].startswith("not resolved")
    # The low-resource group averages only directions with a low language.
    write(results, fake_result("lslo-228", 1, 0.0, low_shift=3.0))
    write(results, fake_result("lslo-228", 2, 0.0, low_shift=3.0))
    data = analysis.load_all(results)
    assert analysis.score(data["lslo-228"][0], "spbleu", "low") == pytest.approx(13.0)
    low = analysis.verdict(claims["LSLo (2/2/8) beats full fine-tuning on low-resource directions"], data)
    assert low["delta"] == pytest.approx(2.8) and low["verdict"].startswith("supported")
    # "no-low" is the complement: where 2/2/8 and 8/8/8 differ (a low language has rank 8 in both).
    assert analysis.score(data["lslo-228"][0], "spbleu", "no-low") == pytest.approx(10.0)
    write(results, fake_result("lslo-888", 1, 5.0, low_shift=-5.0))
    ranks = analysis.verdict(next(c for c in matrix.CLAIMS if c["b"] == "lslo-888"), analysis.load_all(results))
    assert ranks["delta"] == pytest.approx(-5.0) and ranks["verdict"].startswith("contradicted")
    assert ranks["wins"][2] == 6  # en, fr, zh: 3 x 2 directions, none with sw


def test_one_seed_everywhere_says_spread_not_measured(tmp_path):
    results = tmp_path / "results"
    write(results, fake_result("lslo-228-ffn", 1, 1.0))
    write(results, fake_result("lslo-228-attn", 1, 0.5))
    claim = next(c for c in matrix.CLAIMS if c["a"] == "lslo-228-ffn")
    v = analysis.verdict(claim, analysis.load_all(results))
    assert v["spread"] is None and matrix.NOT_MEASURED in v["verdict"] and "+0.50" in v["verdict"]
    assert not v["against"]  # one seed, but the difference points the claim's way
    write(results, fake_result("lslo-228-attn", 1, 1.5))
    assert analysis.verdict(claim, analysis.load_all(results))["against"]


def test_render_and_results_md(tmp_path, monkeypatch):
    results = tmp_path / "results"
    write(results, fake_result("base", None, -5.0))
    write(results, fake_result("full", 1, 0.0))
    late = fake_result("full", 2, 0.4)
    late["machine"]["date"] = "2026-11-26 04:12 UTC"
    write(results, late)
    text = render.render(results)
    assert "· 2026-11-26 04:12 UTC · commits abc1234" in text  # the page names when its runs were written
    assert "| full | 2 | 10.20 ± 0.20 |" in text
    assert "| base | 1 | 5.00 |" in text
    assert "| lslo-228 | 0 | not measured yet |" in text
    assert "spBLEU[tok=bible12-small spm]" in text and "1000 steps of <= 2048 tokens" in text
    claims = [line for line in text.splitlines() if line.startswith("| LSLo (2/2/8) matches")]
    assert len(claims) == 1 and "not measured yet (missing: lslo-228)" in claims[0] and "| – | – | – |" in claims[0]
    cost = next(line for line in text.splitlines() if line.startswith("| full | full fine-tuning"))
    assert "| 1,000 | 1.000 | 11.5 ± 0.5 | 900 ± 0 |" in cost

    late["train"].update(omp_num_threads=["1"], cpu_seconds=690.0)  # trained beside another run: marked, with CPU time
    write(results, late)
    cost = next(line for line in render.render(results).splitlines() if line.startswith("| full | full fine-tuning"))
    assert "| 11.5 ± 0.5 (single-threaded: full.seed2, 11.5 CPU min) |" in cost

    empty = render.render(tmp_path / "nothing")
    assert "No run has finished yet" in empty
    scores = empty.split("### spBLEU")[1].split("### Cost")[0]
    rows = [line.split("|")[3:-1] for line in scores.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| experiment")]  # fmt: skip
    assert rows and all(cell.strip() in ("", "not measured yet") for row in rows for cell in row)  # nothing invented
    claim_rows = [line for line in empty.splitlines() if line.startswith("| ") and " vs " in line]
    assert len(claim_rows) == len(matrix.CLAIMS) and all("not measured yet" in line for line in claim_rows)

    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n<!-- begin other -->\nkeep me\n<!-- end other -->\n")
    assert run.main(["--render", "--results-dir", str(results), "--results-md", str(md)]) == 0
    out = md.read_text()
    assert "keep me" in out and "<!-- begin bible12 -->" in out and "| full | 2 |" in out


def test_render_pruned_subspace_and_searched_routing(tmp_path):
    """The pruning and search sections show what each run's JSON says: per-tier counts before -> after, kept
    share by position, the routing found next to the paper's and the learned target weights in layer order."""
    results = tmp_path / "results"
    unpruned = fake_result("lslo-228", 1, 0.0)
    unpruned["params"]["routing"] = {"encoder_routing": "src*9,tgt*3", "decoder_routing": "tgt*12"}
    write(results, unpruned)
    pruned = fake_result("lslo-228-prune-layer", 1, -0.5)
    pruned["config"] = {"prune": {"scope": "layer", "ratio": 0.9}}
    pruned["params"].update(
        surviving=300, surviving_percent_of_base=0.3,
        tiers={"high": {"languages": ["en", "fr"], "params": 800, "percent_per_language": 0.4},
               "low": {"languages": ["sw"], "params": 1600, "percent_per_language": 1.6}},
        subspace={"pruned_matrices": "B",
                  "tiers": {"high": {"languages": ["en", "fr"], "params": 120, "percent_per_language": 0.06, "kept_share": 0.05},
                            "low": {"languages": ["sw"], "params": 180, "percent_per_language": 0.18, "kept_share": 0.2}},
                  "positions": [{"side": "encoder", "position": "fc1", "share": 0.25}, {"side": "decoder", "position": "q", "share": 0.025}]},
    )  # fmt: skip
    write(results, pruned)
    searched = fake_result("lslo-228-searched", 1, 0.1)
    searched["search"] = {"steps": 300, "routing": {"encoder_routing": "src*2,tgt", "decoder_routing": "tgt*3"},
                          "weights": {"encoder.10": [0.1, 0.9], "encoder.2": [0.7, 0.3], "encoder.3": [0.48, 0.52], "decoder.0": [0.2, 0.8]}}  # fmt: skip
    write(results, searched)
    lines = render.render(results).splitlines()
    assert "| lslo-228-prune-layer.seed1 | layer | high | en fr | 400 → 60 | 0.400% → 0.060% | 5.0% |" in lines
    assert "| lslo-228-prune-layer.seed1 | layer | low | sw | 1,600 → 180 | 1.600% → 0.180% | 20.0% |" in lines
    assert "| run | enc fc1 | dec q |" in lines and "| lslo-228-prune-layer.seed1 | 25.0% | 2.5% |" in lines
    assert "| lslo-228-searched.seed1 | 300 | encoder | `src*2,tgt` | `src*9,tgt*3` | 0.30 0.52* 0.90 |" in lines  # 2, 3, 10
    assert "| lslo-228-searched.seed1 | 300 | decoder | `tgt*3` | `tgt*12` | 0.80 |" in lines
    assert not [x for x in render.render(tmp_path / "none").splitlines() if x.startswith("### Pruning") or x.startswith("### Routing")]


def test_reproduce_reruns_in_a_scratch_folder_and_judges_against_the_seed_spread(tmp_path, capsys):
    results = tmp_path / "results"
    write(results, fake_result("lslo-228", 1, shift=1.0))
    write(results, fake_result("lslo-228", 2, shift=1.4))  # spBLEU spread over seeds: 0.4
    ran = []

    def do(run, o):  # stands in for train + eval: the re-run scores 0.1 above the committed seed 1
        ran.append((run["run"], o.results_dir, o.runs_dir, run["config"]["out_dir"]))
        rerun = fake_result("lslo-228", 1, shift=1.1)
        rerun["train"].update(omp_num_threads=["1"], valid_loss=4.1285)  # the committed run: all cores, no loss
        write(Path(o.results_dir), rerun)

    r = runner.reproduce(opts(tmp_path, "--reproduce", "lslo-228.seed1"), do)
    scratch = tmp_path / "bench-reproduce"
    # Everything of the re-run, the trainer's out_dir included, is in the scratch folder: never the committed
    # run's checkpoints, which `lslo train --resume` would take as a finished training.
    assert ran == [("lslo-228.seed1", str(scratch / "results"), str(scratch / "runs"),
                    str(scratch / "runs" / "lslo-228.seed1" / "train"))]  # fmt: skip
    assert r["metrics"]["spbleu"]["delta"] == pytest.approx(0.1) and r["metrics"]["spbleu"]["max_direction_delta"] == pytest.approx(0.1)
    assert r["spread"] == pytest.approx(0.4) and r["spread_of"] == "lslo-228" and r["within_spread"] is True
    assert json.loads((results / "reproduce.lslo-228.seed1.json").read_text())["within_spread"] is True
    kept = json.loads((results / "reproduce" / "lslo-228.seed1.json").read_text())  # the re-run's own JSON
    assert kept["overall"]["spbleu"] == pytest.approx(11.1) and kept["train"]["omp_num_threads"] == ["1"]
    data = analysis.load_all(results)  # the committed JSONs are untouched and the reproduction is not a run
    assert [x["overall"]["spbleu"] for x in data["lslo-228"]] == pytest.approx([11.0, 11.4])
    text = render.render(results)
    assert "### Reproduction" in text and "reproduced: Δ = +0.10" in text
    assert "| – → 4.128500 | all cores → 1 | 11.0 → 11.0 |" in text  # what differs in the re-run's training

    far = analysis.reproduction(fake_result("full", 1, 1.0), fake_result("full", 1, 2.0), data)
    assert far["within_spread"] is False and far["spread_of"] == "lslo-228 (stand-in)"  # full has one seed
    assert analysis.reproduction(fake_result("full", 1, 1.0), fake_result("full", 1, 1.0), {})["within_spread"] is None

    with pytest.raises(runner.BenchError, match="no committed result"):
        runner.reproduce(opts(tmp_path, "--reproduce", "full.seed1"), do)
    argv = ["--results-dir", str(results), "--runs-dir", str(tmp_path / "runs"), "--base", str(tmp_path), "--reproduce", "nope.seed1"]
    assert run.main(argv) == 2
    assert "not a run of the matrix" in capsys.readouterr().err


def test_seed_spread_is_at_least_what_the_directions_predict(tmp_path):
    """Two seeds whose averages agree by luck: the per-direction differences still say how far apart two seeds
    land, and that estimate (not the lucky 0 range) is what a claim's difference must exceed."""
    results = tmp_path / "results"
    s1, s2 = fake_result("lslo-228", 1, 1.0), fake_result("lslo-228", 2, 1.0)
    keys = sorted(s2["directions"])
    for i, k in enumerate(keys):  # +-0.5 alternating: the overall average is unchanged, each direction moves
        s2["directions"][k]["spbleu"] += 0.5 if i % 2 else -0.5
    write(results, s1)
    write(results, s2)
    write(results, fake_result("lslo-228-prune-lang", 1, 0.8))
    data = analysis.load_all(results)
    s = analysis.agg(data["lslo-228"], "spbleu", "all")
    diffs = [s2["directions"][k]["spbleu"] - s1["directions"][k]["spbleu"] for k in keys]
    import math
    import statistics

    expected = 1.96 * statistics.stdev(diffs) / math.sqrt(len(keys))
    assert s["spread"] == pytest.approx(0.0) and s["noise"] == pytest.approx(expected) and s["bound"] == pytest.approx(expected)
    assert analysis.seed_noise(data["lslo-228"][:1], "spbleu", "all") is None
    claim = next(c for c in matrix.CLAIMS if c["a"] == "lslo-228-prune-lang")
    v = analysis.verdict(claim, data)
    assert v["delta"] == pytest.approx(-0.2) and expected > 0.2  # 0.2 would be "beyond" a 0 range, not beyond this
    assert v["spread"] == pytest.approx(expected) and v["verdict"].startswith("supported") and "within" in v["verdict"]
    # per direction the seeds' mean is 10.75 or 11.25: prune-lang (10.8) is above it in half the directions
    assert v["wins"] == (len(keys) // 2, 0, len(keys))


def test_searched_run_equal_to_a_seed_is_compared_with_that_seed(tmp_path):
    results = tmp_path / "results"
    write(results, fake_result("lslo-228", 1, 1.0))
    write(results, fake_result("lslo-228", 2, 1.6))
    twin = fake_result("lslo-228-searched", 1, 1.0)
    twin["same_as"] = "lslo-228.seed1"
    write(results, twin)
    claim = next(c for c in matrix.CLAIMS if c["a"] == "lslo-228-searched")
    v = analysis.verdict(claim, analysis.load_all(results))
    assert v["delta"] == pytest.approx(0.0) and "the same run as lslo-228.seed1" in v["verdict"]
    n = len(twin["directions"])
    assert v["wins"] == (0, n, n)
    assert f"| 0/{n} ({n} equal) |" in render.render(results)


def test_call_records_cpu_time_and_threads(tmp_path, monkeypatch):
    import sys

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('done')"
    res = runner.call([sys.executable, "-c", busy], tmp_path / "logs" / "busy.log")
    assert res["rc"] == 0 and res["omp_num_threads"] == "1"
    assert 0.3 <= res["cpu_s"] <= res["wall_s"] + 0.2  # the child's own CPU time, not ours
    assert (tmp_path / "logs" / "busy.log").read_text() == "done\n"
    with pytest.raises(RuntimeError, match="exited with 3"):
        runner.call([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "logs" / "fail.log")


def test_call_shows_the_validations_of_a_running_training(tmp_path, capsys):
    """`lslo train --no-progress` is silent for hours: the bench prints each validation it logs while it runs (not the
    ones of earlier sessions), from its metrics.jsonl, a half-written last line skipped until it is whole."""
    import json
    import sys

    metrics = tmp_path / "train" / "metrics.jsonl"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"step": 10, "epoch": 1.0, "valid_loss": 4.0}) + "\n")  # a session before this one
    child = (
        "import json, time, sys\n"
        f"f = open({str(metrics)!r}, 'a')\n"
        "for e, v in ((2, 3.5), (3, 3.7)):\n"
        "    f.write(json.dumps({'step': 10 * e, 'epoch': float(e), 'loss': 9.0}) + '\\n')\n"
        "    f.write(json.dumps({'step': 10 * e, 'epoch': float(e), 'valid_loss': v})[:9]); f.flush(); time.sleep(0.3)\n"
        "    f.write(json.dumps({'step': 10 * e, 'epoch': float(e), 'valid_loss': v})[9:] + '\\n'); f.flush(); time.sleep(0.3)\n"
    )
    watch = runner.ValidationProgress("r.seed1", metrics, "/15")
    res = runner.call([sys.executable, "-c", child], tmp_path / "logs" / "train.log", watch, every=0.05)
    assert res["rc"] == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[r.seed1]")]
    assert shown == ["[r.seed1] epoch 2/15 (step 20): valid loss 3.5000 (lowest 3.5000, epoch 2)",
                     "[r.seed1] epoch 3/15 (step 30): valid loss 3.7000 (lowest 3.5000, epoch 2)"]  # fmt: skip


def test_validation_progress_takes_the_lowest_only_from_validations_that_may_be_best(tmp_path, capsys):
    """A pruned run's validations before pruning reached its ratio cannot be `best/`: the progress line agrees."""
    metrics = tmp_path / "metrics.jsonl"
    rows = [(1, 3.0, False), (2, 2.5, False), (3, 2.9, True), (4, 2.8, True)]
    metrics.write_text(json.dumps({"step": 10, "epoch": 1.0, "valid_loss": 3.0, "best_eligible": False}) + "\n")
    watch = runner.ValidationProgress("p.seed1", metrics, "/4")  # resumed after epoch 1: nothing eligible yet
    with open(metrics, "a") as f:
        f.writelines(json.dumps({"step": 10 * e, "epoch": float(e), "valid_loss": v, **({} if ok else {"best_eligible": False})}) + "\n"
                     for e, v, ok in rows[1:])  # fmt: skip
    watch()
    assert capsys.readouterr().out.splitlines() == [
        "[p.seed1] epoch 2/4 (step 20): valid loss 2.5000 (not a best candidate: pruning short of its ratio)",
        "[p.seed1] epoch 3/4 (step 30): valid loss 2.9000 (lowest 2.9000, epoch 3)",
        "[p.seed1] epoch 4/4 (step 40): valid loss 2.8000 (lowest 2.8000, epoch 4)"]  # fmt: skip
    assert runner.ValidationProgress("p.seed1", metrics).lowest == (2.8, 4.0)  # a later resume reads the same rule
