"""benchmarks/bible12/regime.py and its regime_*.py: sweep, plan, resume-by-prefix, subsets, rendering (nothing trains)."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest
from test_bench_runner import fake_result

from benchmarks import results_md
from benchmarks.bible12 import matrix, regime, regime_curves, run, runner


@pytest.fixture(autouse=True)
def no_real_results_md(tmp_path, monkeypatch):
    monkeypatch.setattr(results_md, "RESULTS_MD", tmp_path / "default-RESULTS.md")


def opts(tmp_path, *extra):
    return run.parse_args(["--family", "regime", "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                             "--results-md", str(tmp_path / "RESULTS.md"), "--data", str(tmp_path / "data" / "bible"), *extra])  # fmt: skip


def write_sweep(results: Path, group: str, k: int, loss: float, recorded: bool = True) -> None:
    """A sweep result; `recorded=False`: a session was killed before the bench recorded its CPU time."""
    lr = regime.LR_CENTRE[group] * regime.LR_FACTOR**k
    results.mkdir(parents=True, exist_ok=True)
    r = {"format": regime.SWEEP_FORMAT, "run": f"sweep.{group}.lr{regime.lr_text(lr)}", "experiment": f"sweep.{group}",
         "group": group, "lr": lr, "lr_step": k, "min_valid_loss": loss, "epoch_of_min": 2.0, "git_commit": "abc",
         "machine": {"date": "2026-12-03 08:00 UTC", "cpu": "x86_64", "cpu_cores": 2, "torch": "2.x"},
         "train": {"seconds": 3600.0 * (2 + k), "cpu_seconds": 1200.0 * (2 + k), "tokens": 1000, "omp_num_threads": ["1"],
                   "recorded_s": 3600.0 * (2 + k) + (5 if recorded else -600)}}  # fmt: skip
    (results / f"{r['run']}.json").write_text(json.dumps(r))


def test_defaults_and_plan(tmp_path):
    o = opts(tmp_path)
    assert (o.max_sentences, o.beams) == (regime.MAX_SENTENCES, regime.BEAMS)
    assert run.parse_args([]).max_sentences == matrix.MAX_SENTENCES  # the matrix keeps its own defaults
    runs = regime.plan(o)
    sweeps = [r for r in runs if r["kind"] == "sweep"]
    assert [r["lr_step"] for r in sweeps] == [0] * 4 + [-1] * 4 + [1] * 4  # every method's centre first
    assert {r["group"] for r in sweeps} == {"full", "lora", "lslo", "lslo-888"}  # lslo-888: a check of lslo's lr
    family = [r["run"] for r in runs if r["kind"] == "family"]
    compared = ("full", "lora", "lslo-228", "lslo-888", "lslo-228-prune")  # every experiment a claim compares: 3 seeds
    assert {f"{e}.seed{i}" for e in compared for i in (1, 2, 3)} | {"full-v33.seed1", "lslo-228-v33.seed1", "full-v33.seed2",
                                                                     "lslo-228-v33.seed2"} == set(family)  # fmt: skip
    assert all(r["group"] == "lslo" for r in runs if r["experiment"] == "lslo-888")  # its seeds share seed 1's lr
    assert regime.chosen_lr("full", o.results_dir) is None
    assert [r["run"] for r in regime.select(runs, ["sweep.lora"])] == [r["run"] for r in sweeps if r["group"] == "lora"]
    with pytest.raises(runner.BenchError, match="--only 'nope'"):
        regime.select(runs, ["nope"])


def test_sweep_extends_at_an_edge_and_chooses_the_lowest(tmp_path):
    results = tmp_path / "results"
    for k, loss in ((-1, 3.0), (0, 2.9), (1, 2.8)):  # still falling at the high edge
        write_sweep(results, "lslo", k, loss)
    grid = regime.sweep_lrs("lslo", results)
    assert len(grid) == 4 and math.isclose(grid[-1], regime.LR_CENTRE["lslo"] * 9)
    assert regime.chosen_lr("lslo", results) is None  # the new edge is not run yet
    write_sweep(results, "lslo", 2, 3.5)  # diverges: k = 1 is interior now
    assert math.isclose(regime.chosen_lr("lslo", results), regime.LR_CENTRE["lslo"] * 3)
    for k, loss in ((-1, 3.0), (0, 2.5), (1, 2.7)):
        write_sweep(results, "full", k, loss)
    assert math.isclose(regime.chosen_lr("full", results), regime.LR_CENTRE["full"])
    for k in range(-regime.LR_MAX_STEP, 2):  # the edge may move only LR_MAX_STEP away
        write_sweep(results, "lora", k, 5.0 + k)
    assert len(regime.sweep_lrs("lora", results)) == regime.LR_MAX_STEP + 2
    assert math.isclose(regime.chosen_lr("lora", results), regime.LR_CENTRE["lora"] / regime.LR_FACTOR**regime.LR_MAX_STEP)


def test_subsets_nest_and_keep_verses_aligned(tmp_path):
    data = tmp_path / "data" / "bible"
    for split, n in (("train", 40), ("valid", 5), ("test", 6)):
        (data / split).mkdir(parents=True)
        for lang in ("en", "fr"):
            (data / split / f"{lang}.txt").write_text("".join(f"{lang} verse {i}\n" for i in range(n)))
            (data / split / f"{lang}.ids").write_text("".join(f"1.1.{i}\n" for i in range(n)))
    o = opts(tmp_path)
    small, large = regime.build_subset(o, 10), regime.build_subset(o, 30)
    ids = {p: (p / "train" / "en.ids").read_text().splitlines() for p in (small, large)}
    assert len(ids[small]) == 10 and len(ids[large]) == 30 and set(ids[small]) <= set(ids[large])
    assert (small / "train" / "fr.ids").read_text().splitlines() == ids[small]  # the same verses in every language
    assert [line.split()[-1] for line in (small / "train" / "fr.txt").read_text().splitlines()] == [i.split(".")[-1] for i in ids[small]]
    assert (small / "test" / "en.txt").read_text() == (data / "test" / "en.txt").read_text()
    assert regime.build_subset(o, 10) == small  # built once


def test_a_sweep_run_is_the_prefix_of_the_family_run(tmp_path, monkeypatch):
    """Sweep and family configs differ only in max_epochs and share a folder: seed 1 resumes the chosen sweep run."""
    monkeypatch.setattr(regime, "build_subset", lambda o, n: Path(o.data + f"-v{n}"))
    monkeypatch.setattr(regime, "steps_per_epoch", lambda *a: 37)
    o = opts(tmp_path)
    exp = regime.experiment("lslo-228")
    sweep, family = (regime.run_config(exp, 1, 2e-3, e, o) for e in (regime.SWEEP_EPOCHS, regime.EPOCHS))
    assert {k for k in sweep if sweep[k] != family[k]} == {"max_epochs"}
    assert family["optimizer"] == "adamw"  # what the family's runs started with, for every method
    assert family["warmup_steps"] == 37 and family["save_every"] == 9 and family["eval_every"] == "epoch" and family["keep_best"]
    assert regime.run_config(exp, 2, 2e-3, regime.EPOCHS, o)["out_dir"] != family["out_dir"]
    prune = regime.run_config(regime.experiment("lslo-228-prune"), 1, 2e-3, regime.EPOCHS, o)
    assert prune["prune"]["unit"] == "epoch" and (prune["prune"]["start"], prune["prune"]["duration"]) == (2, 10)
    small = regime.run_config(regime.experiment("lslo-228-v33"), 1, 2e-3, regime.EPOCHS, o)
    assert small["data"].endswith(f"-v{regime.TREND_SUBSET}") and family["data"].endswith(f"-v{regime.SUBSET}")


def test_execute_resumes_the_sweep_folder_and_evaluates_best_and_last(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(regime, "build_subset", lambda o, n: Path(o.data + f"-v{n}"))
    monkeypatch.setattr(regime, "steps_per_epoch", lambda *a: 10)
    monkeypatch.setattr(runner, "count_params", lambda cfg: {"trainable": 5, "base": 100, "percent_of_base": 5.0})
    o = opts(tmp_path)
    calls = []

    def fake_call(argv, log, watch=None):
        calls.append(argv[3:5])
        if argv[3] == "train":
            import yaml

            cfg = yaml.safe_load(Path(argv[4]).read_text())
            out = Path(cfg["out_dir"])
            (out / "best").mkdir(parents=True, exist_ok=True)
            epochs = cfg["max_epochs"]
            losses = [3.0 - 0.1 * e if e <= 3 else 2.7 + 0.05 * (e - 3) for e in range(1, epochs + 1)]  # best at epoch 3
            (out / "metrics.jsonl").write_text("".join(json.dumps({"step": 10 * e, "epoch": float(e), "valid_loss": v, "valid_nll": v})
                                                       + "\n" for e, v in enumerate(losses, 1)))  # fmt: skip
            best = min(range(epochs), key=lambda i: losses[i])
            (out / "best" / "lslo_best.json").write_text(json.dumps({"step": 10 * (best + 1), "epoch": best + 1.0, "valid_loss": losses[best]}))
            watch()  # the bench's progress from the metrics the training wrote
            summary = {"steps": 10 * epochs, "epochs": float(epochs), "tokens": 1, "elapsed": 60.0, "interrupted": False}
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(json.dumps(summary, indent=1) + "\n")
        else:
            out = Path(argv[argv.index("--out") + 1])
            out.mkdir(parents=True)
            r = fake_result("x", 1, 1.0 if "best" in argv[4] else 0.0)
            (out / "results.json").write_text(json.dumps({**r, "groups": {m: {g: {"mean": v} for g, v in r["groups"][m].items()} for m in r["groups"]},
                                                          "metrics": {m: {"name": n} for m, n in r["metrics"].items()}}))  # fmt: skip
        return {"rc": 0, "wall_s": 61.0, "peak_rss_mib": 10.0, "cpu_s": 30.0, "omp_num_threads": None}

    monkeypatch.setattr(runner, "call", fake_call)
    sweep = next(r for r in regime.plan(o) if r["run"].startswith("sweep.lslo.") and r["lr_step"] == 0)
    res = regime.execute(sweep, o)
    assert res["min_valid_loss"] == pytest.approx(2.7) and res["epoch_of_min"] == 3.0 and calls[-1][0] == "train"
    for k, loss in ((-1, 3.1), (1, 2.9)):
        write_sweep(Path(o.results_dir), "lslo", k, loss)
    assert math.isclose(regime.chosen_lr("lslo", o.results_dir), regime.LR_CENTRE["lslo"])
    assert "epoch 4/4 (step 40): valid loss 2.7500 (lowest 2.7000, epoch 3)" in capsys.readouterr().out
    calls.clear()
    res = regime.execute(next(r for r in regime.plan(o) if r["run"] == "lslo-228.seed1"), o)
    train_dirs = {Path(a[1]).parent for a in calls if a[0] == "train"}
    assert train_dirs == {Path(sweep_cfg := res["config"]["out_dir"]).parent} and "config.e15.yaml" in calls[0][1]
    assert Path(sweep_cfg, "..", "config.e4.yaml").resolve().is_file()  # the sweep's config, same folder
    assert [a[1].endswith("best") for a in calls if a[0] == "eval"] == [False, True]
    out = capsys.readouterr().out  # resumed from the sweep's 4 epochs: only the new ones are shown
    assert "epoch 4/15" not in out and "epoch 5/15 (step 50): valid loss 2.8000 (lowest 2.7000, epoch 3)" in out
    assert res["checkpoints"]["best"]["epoch"] == 3.0 and res["checkpoints"]["last"]["epoch"] == 15.0
    assert res["overall"] == res["checkpoints"]["best"]["overall"] != res["checkpoints"]["last"]["overall"]
    assert res["eval_cost"] == {"models": 2, "wall_s": 122.0, "cpu_s": 60.0} and "cost" not in res["checkpoints"]["best"]
    assert res["train"]["recorded_s"] == 122.0 and regime.cpu_minutes(res["train"]) == 1.0  # the sweep's session + its own
    assert regime.cpu_minutes({**res["train"], "seconds": 600.0}) is None  # 10 min trained, 2 recorded: a session went missing
    assert regime.cpu_minutes({k: v for k, v in res["train"].items() if k != "recorded_s"}) is None  # not known
    assert res["train"]["train_cpu_s"] is None  # the fake trainer kept no CPU clock; one that does is preferred:
    assert regime.cpu_minutes({**res["train"], "seconds": 600.0, "train_cpu_s": 540.0}) == 9.0
    calls.clear()
    regime.execute(next(r for r in regime.plan(o) if r["run"] == "lslo-228.seed1"), o)  # everything done: nothing runs
    assert calls == []


def family_result(experiment: str, seed: int, best: float, last: float, low: float = 0.0) -> dict:
    r = fake_result(experiment, seed, best, low)
    r_last = fake_result(experiment, seed, last, low)
    ck = {k: r[k] for k in ("overall", "groups", "directions", "metrics", "tiers")}
    ck_last = {k: r_last[k] for k in ("overall", "groups", "directions", "metrics", "tiers")}
    r.update(format=regime.FORMAT, lr=1e-3, subset=regime.SUBSET,
             checkpoints={"best": {"step": 30, "epoch": 3.0, "valid_loss": 2.5, **ck}, "last": {"step": 150, "epoch": 15.0, **ck_last}},
             curve=[{"step": 10 * e, "epoch": float(e), "valid_loss": 3.0 - 0.1 * min(e, 3) + 0.01 * e, "valid_nll": 1.0} for e in range(1, 16)],
             train={"seconds": 600.0, "cpu_seconds": 590.0, "steps_per_epoch": 10, "omp_num_threads": ["1"],
                    "recorded_s": 605.0 if seed == 1 else 300.0},
             eval_cost={"models": 2, "wall_s": 960.0, "cpu_s": 950.0} if seed == 1 else None,
             machine={"date": "2026-12-03 08:00 UTC", "cpu": "x86_64", "cpu_cores": 2, "torch": "2.x"})  # fmt: skip
    return r


def test_render_uses_the_best_models_shows_last_and_plots(tmp_path):
    o = opts(tmp_path)
    results = Path(o.results_dir)
    results.mkdir(parents=True)
    for k, loss in ((-1, 3.0), (0, 2.5), (1, 2.7)):
        write_sweep(results, "full", k, loss)
    write_sweep(results, "lora", 0, 2.6, recorded=False)
    for exp, seed, best, last in (("full", 1, 1.0, 0.0), ("full", 2, 1.2, 0.2), ("lslo-228", 1, 2.0, 1.9), ("lslo-228", 2, 2.1, 2.0)):
        (results / f"{exp}.seed{seed}.json").write_text(json.dumps(family_result(exp, seed, best, last)))
    base = fake_result("base", None, -3.0)
    (results / "base.json").write_text(json.dumps({**base, "format": regime.FORMAT, "checkpoints": {},
                                                   "machine": {"date": "2026-12-03 07:00 UTC", "cpu": "x86_64", "cpu_cores": 2, "torch": "2.x"}}))  # fmt: skip
    regime.render_to_md(o)
    text = (tmp_path / "RESULTS.md").read_text()
    assert f"<!-- begin {regime.SECTION} -->" in text and not (tmp_path / "default-RESULTS.md").exists()
    assert "| full (full) | " in text and "**2.0e-4: 2.5000 (ep 2)**" in text and "| lslo (lslo-228) |" in text
    assert ("Cost of a sweep run (4 finished; 4 epochs, 1,000 target tokens, 1 thread(s) each): CPU time 20-60 min (median 40) "
            "over the 3 whose every session was recorded (1 had a session killed") in text
    assert "training wall time 60-180 min (median 120)" in text
    cost = next(line for line in text.split("### Cost")[1].splitlines() if line.startswith("| lslo-228 | "))
    assert cost.split("|")[5:9] == [" 10.0, 10.0 ", " 9.8, not recorded ", " 1, 1 ", " 16.0 (2), not recorded "]  # seed 2 lost a record
    claim = next(line for line in text.splitlines() if line.startswith("| LSLo (2/2/8) matches or beats full fine-tuning, overall"))
    cells = [c.strip() for c in claim.split("|")]
    assert cells[4].startswith("best (epochs ") and cells[5].startswith("+0.95 [") and cells[9] == "+1.85"  # best: 2.05 - 1.1; last: 1.95 - 0.1
    lo, hi = (float(x) for x in cells[5].split("[")[1].rstrip("]† ").split(","))
    assert lo <= 0.95 <= hi and cells[7].strip("*") in ("supported (higher)", "supported", "not resolved")
    assert (cells[7] == "**supported (higher)**") == (lo > 0) and "supported" in cells[12]  # cells[12]: the old rule's
    high = next(line for line in text.splitlines() if line.startswith("| 90% pruning improves high-resource"))
    assert "not measured yet" in high
    assert (results / "curves.png").stat().st_size > 1000 and "![validation loss per epoch](results/curves.png)" in text
    # The curve of family_result: 2.91, 2.82, 2.73 (lowest, epoch 3), then up 0.01 an epoch to 2.85 at epoch 15.
    over = next(line for line in text.splitlines() if line.startswith("| full | 2 | 2.730 ± 0.000 | 3, 3 |"))
    assert [c.strip() for c in over.split("|")][5:10] == ["2.850 ± 0.000", "15, 15", "0.120 ± 0.000", "12, 12", "-1.00 ± 0.00"]
    assert "| lora |" not in text.split("### Over-fitting")[1].split("###")[0]  # no runs, no row
    assert "| 100 | lslo-228 vs full |" in text and "gap moves" not in text  # one subset size only: no movement yet
    for exp, best, last in ((f"full-v{regime.TREND_SUBSET}", 0.5, 0.3), (f"lslo-228-v{regime.TREND_SUBSET}", 0.6, 0.9)):
        r = {**family_result(exp, 1, best, last), "subset": regime.TREND_SUBSET}
        (results / f"{exp}.seed1.json").write_text(json.dumps(r))
    regime.render_to_md(o)
    trend = (tmp_path / "RESULTS.md").read_text().split("### Trend")[1].split("###")[0]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in trend.splitlines() if line.startswith("| 33 |") or line.startswith("| 100 |")]
    assert [[c.split(" [")[0] for c in row] for row in rows] == [
        ["33", "lslo-228-v33 vs full-v33", "1, 1", "+0.10", "+0.60", "–"],  # the smaller subset first
        ["100", "lslo-228 vs full", "2, 2", "+0.95", "+1.85", rows[1][5]]]  # fmt: skip
    assert all(" [" in c for row in rows for c in row[3:5])  # every gap with its interval
    assert float(rows[1][5]) >= 0.2  # at least the observed range of full's seeds (1.0, 1.2)
    assert "From 33 to 100 verses the gap moves by +0.85 (best models) and +1.25 (last models)" in trend


def test_regime_command_line_errors_are_one_line(tmp_path, capsys):
    assert run.main(["--family", "regime", "--base", str(tmp_path / "missing"), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--base" in err and "no such model folder" in err
    assert run.main(["--family", "regime", "--list", "--only", "nope", "--results-dir", str(tmp_path / "r")]) == 2
    assert "not a run or experiment of the regime family" in capsys.readouterr().err


def test_reproduce_reruns_a_family_run_in_a_scratch_folder_with_the_swept_lr(tmp_path, capsys):
    o = opts(tmp_path, "--reproduce", "lslo-228.seed1")
    results = Path(o.results_dir)
    for k, loss in ((-1, 3.1), (0, 2.7), (1, 2.9)):
        write_sweep(results, "lslo", k, loss)
    for seed, best in ((1, 2.0), (2, 2.4)):  # spBLEU spread over the seeds (best checkpoints): 0.4
        (results / f"lslo-228.seed{seed}.json").write_text(json.dumps(family_result("lslo-228", seed, best, best - 1)))
    ran = []

    def do(r, scratch):  # stands in for train + eval: the re-run scores 0.1 above the committed seed 1
        ran.append((r["run"], scratch.runs_dir, regime.chosen_lr(r["group"], scratch.results_dir)))
        rerun = family_result("lslo-228", 1, 2.1, 1.0)
        rerun["curve"][6]["valid_loss"] += 0.002  # the validation curves part at epoch 7 only
        rerun["machine"].update(cpu_model="AMD EPYC", cpu_bf16=False)  # a CPU without bf16 instructions
        return rerun

    out = regime.reproduce(o, do)
    scratch = tmp_path / "bench-regime-reproduce"
    assert ran == [("lslo-228.seed1", str(scratch / "runs"), pytest.approx(regime.LR_CENTRE["lslo"]))]  # the committed sweep's lr
    assert out["metrics"]["spbleu"]["delta"] == pytest.approx(0.1) and out["spread"] == pytest.approx(0.4)
    assert out["within_spread"] is True and out["checkpoint"] == regime.CHECKPOINT
    assert out["curve"] == {"epochs": 15, "max_valid_loss_delta": pytest.approx(0.002)}
    assert out["committed"]["valid_loss"] == out["reproduced"]["valid_loss"] == pytest.approx(2.85)  # the last epoch's
    assert json.loads((results / "reproduce" / "lslo-228.seed1.json").read_text())["overall"]["spbleu"] == pytest.approx(12.1)
    assert [r["seed"] for r in regime.load_family(results)["lslo-228"]] == [1, 2]  # the reproduction is not a run
    regime.render_to_md(o)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "### Reproduction" in text and "--family regime --reproduce RUN" in text and "reproduced: Δ = +0.10" in text
    assert "| 2.850000 → 2.850000 (every epoch: largest change 2.0e-03 over 15) |" in text
    assert ", AMD EPYC 2 cores, no bf16 instructions, 2026-12-03 08:00 UTC |" in text
    for bad, message in (("sweep.lslo.lr2.0e-3", "not a family run"), ("full.seed1", "no committed result")):
        with pytest.raises(runner.BenchError, match=message):
            regime.reproduce(opts(tmp_path, "--reproduce", bad), do)


def fake_execute(log: list, monkeypatch, barrier=None, fail: str | None = None):
    """Stands in for `regime.execute`: one stand-in `lslo` child per run (through `regime._call`; the first two
    children wait for each other), then a sweep result (losses with an interior minimum, so no grid grows) or a
    family result; logs when each run started and ended."""

    def child(argv, log_file, watch=None):
        if barrier is not None and argv[-1] in first_two:
            barrier.wait(timeout=10)  # both children going at once: only if a job lets go of the lock meanwhile
        if argv[-1] == fail:
            failed.set()
            raise RuntimeError(f"{argv[-1]} broke")
        if fail is not None and argv[-1] in first_two:
            failed.wait(timeout=10)  # the other child ends after the failure (else a new run may rightly start)
            time.sleep(0.5)
        return {}

    failed = threading.Event()

    first_two: list[str] = []
    monkeypatch.setattr(runner, "call", child)

    def do(r, o):
        log.append(("start", r["run"]))
        if len(first_two) < 2:
            first_two.append(r["run"])
        regime._call(["lslo", "-m", "stand-in", r["run"]], Path(o.runs_dir) / "log")
        results = Path(o.results_dir)
        if r["kind"] == "sweep":
            write_sweep(results, r["group"], r["lr_step"], 3.0 + r["lr_step"] ** 2)
        else:
            exp, seed = r["experiment"], r["seed"] or 1
            results.mkdir(parents=True, exist_ok=True)
            (results / f"{r['run']}.json").write_text(json.dumps({**family_result(exp, seed, 1.0, 0.5), "run": r["run"]}))
        log.append(("end", r["run"]))
        return {}

    return do


def test_family_runs_jobs_side_by_side_and_family_runs_wait_for_their_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(regime, "build_subset", lambda o, n: Path(o.data + f"-v{n}"))
    monkeypatch.setattr(regime, "render_to_md", lambda o: None)
    monkeypatch.setattr(regime, "cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    log: list = []
    monkeypatch.setattr(regime, "execute", fake_execute(log, monkeypatch, threading.Barrier(2)))
    assert run.main(["--family", "regime", "--results-dir", str(tmp_path / "results"), "--runs-dir", str(tmp_path / "runs"),
                     "--results-md", str(tmp_path / "RESULTS.md"), "--base", str(tmp_path)]) == 0  # fmt: skip
    import os

    assert os.environ["OMP_NUM_THREADS"] == "1" and "2 job(s) side by side, OMP_NUM_THREADS=1" in capsys.readouterr().out
    monkeypatch.delenv("OMP_NUM_THREADS")
    started = [n for e, n in log if e == "start"]
    assert sorted(started) == sorted(r["run"] for r in regime.plan(opts(tmp_path))) and len(set(started)) == len(started)
    assert log[0][0] == log[1][0] == "start"  # the first two overlapped (the barrier would have broken otherwise)
    assert not regime._PYTHON.locked()
    at = {(e, n): i for i, (e, n) in enumerate(log)}
    for r in regime.plan(opts(tmp_path)):
        if r["kind"] == "family":  # every run of its group's sweep ended before it started
            sweeps = [n for e, n in log if e == "end" and n.startswith(f"sweep.{r['group']}.")]
            assert len(sweeps) == 3 and all(at[("end", s)] < at[("start", r["run"])] for s in sweeps)


def test_a_failed_job_stops_new_starts_and_lets_the_others_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(regime, "build_subset", lambda o, n: Path(o.data + f"-v{n}"))
    monkeypatch.setattr(regime, "render_to_md", lambda o: None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # an explicit setting is kept
    log: list = []
    first = [r["run"] for r in regime.plan(opts(tmp_path))][:2]
    monkeypatch.setattr(regime, "execute", fake_execute(log, monkeypatch, threading.Barrier(2), fail=first[0]))
    o = opts(tmp_path, "--jobs", "2")
    with pytest.raises(RuntimeError, match=f"{first[0]} broke"):
        regime.run_family(o)
    # Nothing new started and the other finished (the two jobs may take the lock, and so log their start, in either order).
    assert sorted(n for e, n in log if e == "start") == sorted(first) and ("end", first[1]) in log
    import os

    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert run.main(["--jobs", "2", "--results-dir", str(tmp_path / "r")]) == 2  # the matrix runs one at a time
    assert run.main(["--family", "regime", "--jobs", "0", "--results-dir", str(tmp_path / "r")]) == 2


def test_the_smoothed_pick_ignores_a_one_epoch_dip_and_a_pruned_run_picks_once_pruning_is_final():
    curve = [{"epoch": float(i + 1), "valid_loss": v} for i, v in enumerate([3.0, 2.0, 2.9, 2.1, 2.1, 2.2])]
    assert min(curve, key=lambda p: p["valid_loss"])["epoch"] == 2 and regime_curves.smoothed_pick(curve) == 5
    assert regime_curves.smoothed_pick(curve, width=1) == 2
    pruned = {"curve": curve, "config": {"prune": {"unit": "epoch", "start": 2, "duration": 2}}}
    assert [p["epoch"] for p in regime_curves._eligible(pruned)] == [4, 5, 6]
    assert regime_curves._eligible({"curve": curve, "config": {}}) == curve


def test_a_sweep_trained_in_another_precision_says_so(tmp_path):
    """A group swept on a CPU without bf16 instructions (fp32) beside bf16 groups: each row names its precision."""
    o = opts(tmp_path)
    results = Path(o.results_dir)
    for group, precision in (("full", "bf16"), ("lslo-888", "fp32")):
        write_sweep(results, group, 0, 2.5)
        path = next(results.glob(f"sweep.{group}.*.json"))
        path.write_text(json.dumps({**json.loads(path.read_text()), "budget": {"epochs": 4, "precision": precision}}))
    regime.render_to_md(o)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| lslo-888 (lslo-888; fp32) | " in text and "| full (full; bf16) | " in text and "(bf16 / fp32)" in text
    (results / "sweep.lslo-888.lr2.0e-3.json").unlink()  # one precision only: no note
    regime.render_to_md(o)
    assert "| full (full) | " in (tmp_path / "RESULTS.md").read_text()


def test_runs_made_otherwise_are_named_under_the_scores(tmp_path):
    """A seed trained in fp32 and evaluated in emulated bf16 beside bf16 runs on a bf16 CPU: named under the table."""
    o = opts(tmp_path)
    results = Path(o.results_dir)
    results.mkdir(parents=True)
    for exp, seed, precision, native in (("full", 1, "bf16", None), ("full", 2, "fp32", False), ("lslo-228", 1, "bf16", True)):
        r = family_result(exp, seed, 1.0, 1.0)
        r["budget"] = {"epochs": 15, "precision": precision}
        r["eval"] = {"precision": "bf16"}
        if native is not None:
            r["machine"]["cpu_bf16"] = native
        (results / f"{exp}.seed{seed}.json").write_text(json.dumps(r))
    regime.render_to_md(o)
    scores = (tmp_path / "RESULTS.md").read_text().split("### Scores")[1].split("###")[0]
    assert ("Made otherwise than the other runs, and averaged with them into their experiment's row: full.seed2 (trained in "
            "fp32 (most runs: bf16); evaluated in bf16 emulated on a CPU without bf16 instructions).") in scores
    assert "measured on the base" not in scores  # no base re-evaluated on such a CPU yet
    (results / "reproduce.base.json").write_text(json.dumps({"reproduced": {"machine": {"cpu_bf16": False}},
                                                             "metrics": {"spbleu": {"committed": 3.876, "reproduced": 3.886, "max_direction_delta": 0.79}}}))  # fmt: skip
    regime.render_to_md(o)
    scores = (tmp_path / "RESULTS.md").read_text().split("### Scores")[1].split("###")[0]
    assert "re-evaluated on such a CPU): spBLEU over all directions 3.88 → 3.89, single directions up to 0.79." in scores
    (results / "reproduce.base.json").unlink()
    (results / "full.seed2.json").unlink()
    regime.render_to_md(o)
    assert "Made otherwise" not in (tmp_path / "RESULTS.md").read_text()


def test_the_check_sweep_says_whether_its_choice_is_the_lr_its_runs_keep(tmp_path):
    """lslo-888's own sweep is only a check (its runs keep the lslo sweep's lr): the section says if they agree."""
    o = opts(tmp_path)
    results = Path(o.results_dir)
    for k, loss in ((-1, 3.0), (0, 2.5), (1, 2.7)):
        write_sweep(results, "lslo", k, loss)
    for k, loss in ((-1, 3.0), (0, 2.6), (1, 2.9)):
        write_sweep(results, "lslo-888", k, loss)
    regime.render_to_md(o)
    assert "`lslo-888`'s own sweep chooses 2.0e-3; its runs use the `lslo` sweep's 2.0e-3: the same lr" in (tmp_path / "RESULTS.md").read_text()
    write_sweep(results, "lslo-888", 1, 2.55)  # now 6.0e-3 is lowest: an edge, so the grid grows and waits for k = 2
    write_sweep(results, "lslo-888", 2, 2.58)
    regime.render_to_md(o)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "`lslo-888`'s own sweep chooses 6.0e-3; its runs use the `lslo` sweep's 2.0e-3: another lr" in text
    assert text.count("own sweep chooses") == 1  # the sweeps the experiments' runs use need no such line


def test_list_shows_how_far_an_unfinished_run_got(tmp_path, capsys):
    o = opts(tmp_path, "--list", "--only", "lora.seed2", "lora.seed3", "sweep.lora")
    results = Path(o.results_dir)
    for k, loss in ((-1, 3.0), (0, 2.5)):
        write_sweep(results, "lora", k, loss)  # k = 1 still to do: the sweep is not finished
    sweep_train = Path(o.runs_dir) / regime.train_key("lora", regime.LR_CENTRE["lora"] * regime.LR_FACTOR, 1) / "train"
    sweep_train.mkdir(parents=True)
    (sweep_train / "metrics.jsonl").write_text('{"step": 5, "loss": 4.0}\n')
    assert regime.run_family(o) == 0
    out = capsys.readouterr().out
    assert "(started: no epoch validated yet)" in out.split("sweep.lora.lr6.0e-3")[1].splitlines()[0]
    assert "lora.seed2                   to do    family\n" in out  # no chosen lr yet, so no folder to look in
    write_sweep(results, "lora", 1, 2.7)
    lr = regime.chosen_lr("lora", results)
    train_dir = Path(o.runs_dir) / regime.train_key("lora", lr, 2) / "train"
    train_dir.mkdir(parents=True)
    (train_dir / "metrics.jsonl").write_text(
        '{"step": 10, "loss": 4.1}\n{"step": 10, "epoch": 1.0, "valid_loss": 4.25, "valid_nll": 3.5}\n'
        '{"step": 20, "epoch": 2.0, "valid_loss": 4.125, "valid_nll": 3.4}\n{"step": 25, "lo'  # a line being written
    )
    (Path(o.runs_dir) / "lora.seed2" / "eval-last").mkdir(parents=True)
    (Path(o.runs_dir) / "lora.seed2" / "eval-last" / "results.json").write_text("{}")
    assert regime.run_family(o) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["lora.seed2"].endswith(f"(started: epoch 2 of {regime.EPOCHS} validated, loss 4.1250; last model evaluated)")
    assert lines["lora.seed3"].endswith("to do    family")
