"""The paper's regime on bible12: 15 epochs over a small multi-way subset, learning rates swept per method.

    python benchmarks/bible12/run.py --family regime            # sweep, then the family (resumable), one job per core
    python benchmarks/bible12/run.py --family regime --list     # the plan, what is finished, how far the rest got
    python benchmarks/bible12/run.py --family regime --only sweep.full full.seed1
    python benchmarks/bible12/run.py --family regime --render   # RESULTS.md section + curves from the JSON

The matrix (`run.py`) gives every method under half an epoch of the 997-verse training set. Cao et al. fine-tune
for 15 epochs of FLORES-101 dev (997 sentences per language) and prune on an epoch schedule, a regime where full
fine-tuning can over-fit a small set and language-specific subspaces can pay off. This family runs that regime:

- data: a nested subset of bible12 `train` (`SUBSET` verses per language, the same verses in every language: a
  seeded permutation's first N), all 132 directions; `TREND_SUBSET` (a third of it) for the trend runs, which
  show how the LSLo - full gap moves as the data grows 3x. Validation and test are
  bible12's own `valid` and `test`.
- budget: `EPOCHS` epochs; warm-up one epoch; validation loss on `VALID_PER_DIRECTION` pairs per direction after
  every epoch; both the last model and the model of the lowest validation loss (`best/`) are evaluated.
- checkpoint rule, fixed before any test score was seen: the verdicts use the best-by-validation model (what
  fairseq's `checkpoint_best.pt` is, and fair to methods that over-fit at different speeds); the last model's
  scores are shown beside them.
- learning rates: one sweep protocol for every method. Each sweep runs `SWEEP_EPOCHS` epochs with exactly the
  family's config at lr = centre x 3^k (centre: the matrix's value, 2e-3 for adapters and 2e-4 for full
  fine-tuning), k = -1, 0, 1, and adds k = -2 or 2 while the lowest validation loss sits at an edge of the grid.
  The chosen lr is the one of the lowest validation loss; since a sweep run is the first `SWEEP_EPOCHS` epochs of
  the family run with that lr (the schedule does not depend on the budget), seed 1 resumes it instead of starting
  over. LSLo 8/8/8 and the pruned LSLo take LSLo 2/2/8's lr (same method, other ranks); the shared LoRA its own.
- test: the first `MAX_SENTENCES` test verses of each direction, greedy, under bf16 autocast (cheaper than the
  matrix's beam 5 in fp32; every run of the family, and the base, is decoded the same way).

This module is what to run and running it: the subsets, each run's config, the plan, executing a run (train,
evaluate, write its JSON), reproducing one, and the jobs side by side (`run_family`). The rest, by job (none
of them imports this module; `regime_family` imports none of them):

- `regime_family.py`: the family as data (the constants above, EXPERIMENTS, SWEEPS) and `load_family`;
- `regime_sweep.py`: the learning-rate sweep (`sweep_lrs`, `chosen_lr`, `load_sweep`);
- `regime_verdicts.py`: the claims (CLAIMS, TREND) and their judgement;
- `regime_curves.py`: curves.png, over-fitting and the best-model pick, from the validation curves;
- `regime_render.py`: the RESULTS.md section (`render`, `render_to_md`).

The names other code uses are re-exported here (`regime.SECTION`, `regime.chosen_lr`, `regime.render_to_md`, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from benchmarks import results_md

from . import analysis, matrix, runner
from .regime_family import BEAMS as BEAMS
from .regime_family import CHECKPOINT as CHECKPOINT
from .regime_family import CURVES_PNG as CURVES_PNG
from .regime_family import EPOCHS as EPOCHS
from .regime_family import EVAL_PRECISION as EVAL_PRECISION
from .regime_family import EXPERIMENTS as EXPERIMENTS
from .regime_family import FORMAT as FORMAT
from .regime_family import LR_CENTRE as LR_CENTRE
from .regime_family import LR_FACTOR as LR_FACTOR
from .regime_family import LR_MAX_STEP as LR_MAX_STEP
from .regime_family import LR_STEPS as LR_STEPS
from .regime_family import MAX_SENTENCES as MAX_SENTENCES
from .regime_family import MAX_TOKENS as MAX_TOKENS
from .regime_family import RESULTS_DIR as RESULTS_DIR
from .regime_family import RUNS_DIR as RUNS_DIR
from .regime_family import SECTION as SECTION
from .regime_family import SUBSET as SUBSET
from .regime_family import SUBSET_SEED as SUBSET_SEED
from .regime_family import SWEEP_EPOCHS as SWEEP_EPOCHS
from .regime_family import SWEEP_FORMAT as SWEEP_FORMAT
from .regime_family import SWEEPS as SWEEPS
from .regime_family import TREND_SUBSET as TREND_SUBSET
from .regime_family import VALID_PER_DIRECTION as VALID_PER_DIRECTION
from .regime_family import experiment as experiment
from .regime_family import load_family as load_family
from .regime_render import cpu_minutes as cpu_minutes
from .regime_render import render as render
from .regime_render import render_to_md as render_to_md
from .regime_sweep import chosen_lr as chosen_lr
from .regime_sweep import load_sweep as load_sweep
from .regime_sweep import lr_text as lr_text
from .regime_sweep import sweep_lrs as sweep_lrs
from .regime_verdicts import CLAIMS as CLAIMS
from .regime_verdicts import TREND as TREND

# -- data and plan -------------------------------------------------------------------------------------


def subset_dir(opts: argparse.Namespace, verses: int) -> Path:
    return Path(opts.data).parent / f"{Path(opts.data).name}-v{verses}"


def build_subset(opts: argparse.Namespace, verses: int) -> Path:
    """`<data>-v<N>/`: train = the same N verses of every language (a seeded permutation's first N, so the
    subsets nest), valid and test = bible12's own. Written once, atomically."""
    import numpy as np

    from lslo.io import atomic_dir

    out = subset_dir(opts, verses)
    if (out / "train").is_dir():
        return out
    src = Path(opts.data)
    with atomic_dir(out) as tmp:
        for split in ("valid", "test"):
            shutil.copytree(src / split, tmp / split)
        (tmp / "train").mkdir()
        files = sorted((src / "train").glob("*.txt"))
        n = len(files[0].read_text(encoding="utf-8").splitlines())
        pick = sorted(np.random.default_rng(SUBSET_SEED).permutation(n)[:verses].tolist())
        for f in files:
            for path in (f, f.with_suffix(".ids")):
                lines = path.read_text(encoding="utf-8").splitlines()
                (tmp / "train" / path.name).write_text("".join(lines[i] + "\n" for i in pick), encoding="utf-8")
    return out


@cache
def steps_per_epoch(data: str, base: str, config: str, max_tokens: int) -> int:
    """Optimizer steps in one epoch of `data` (the sampler's own plan, as `lslo train` counts them)."""
    import yaml

    from lslo.run_config import TrainConfig
    from lslo.run_setup import training_data

    cfg = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    cfg.update(data=data, base_model=base, out_dir="unused", max_tokens=max_tokens, progress=False)
    return training_data(TrainConfig.from_dict(cfg))[3].batches_per_epoch(0)


def train_key(exp: str, lr: float, seed: int) -> str:
    """The training folder's name: a sweep run and the family run with the same lr share it (seed 1 resumes)."""
    return f"{exp}.lr{lr_text(lr)}.seed{seed}"


def run_config(exp: Mapping[str, Any], seed: int, lr: float, epochs: int, opts: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig dict of one regime run (`lora_rank` may still be the MATCH placeholder)."""
    import yaml

    data = str(build_subset(opts, exp.get("subset", SUBSET)))
    spe = steps_per_epoch(data, opts.base, opts.config, opts.max_tokens)
    cfg = yaml.safe_load(Path(opts.config).read_text(encoding="utf-8"))
    common = {
        "data": data, "base_model": opts.base, "out_dir": str(Path(opts.runs_dir) / train_key(exp["name"], lr, seed) / "train"),
        "max_epochs": epochs, "max_steps": None, "max_tokens": opts.max_tokens, "seed": seed, "lr": lr,
        "warmup_steps": spe, "save_every": max(1, spe // 4), "eval_every": "epoch", "keep_best": True,
        "valid_max_per_direction": VALID_PER_DIRECTION, "progress": False, "precision": opts.precision,
        # The family's runs started (commit 675b864) before `LanguageAdamW` was LSLo's default; a batch of ~60
        # verses of random directions holds all 12 languages on both sides almost always, so the two are nearly
        # the same algorithm here, but every run of the family keeps the one it started with.
        "optimizer": "adamw",
    }  # fmt: skip
    return runner.deep_merge(runner.deep_merge(cfg, common), exp["overrides"])


def plan(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """The sweep runs (centre first, so each method starts early), the base, then seed 1, 2 of every experiment."""
    runs: list[dict[str, Any]] = []
    for k_order in (0, -1, 1, -2, 2, -3, 3):
        for group, exp in SWEEPS.items():
            for lr in sweep_lrs(group, opts.results_dir):
                if math.isclose(lr, LR_CENTRE[group] * LR_FACTOR**k_order):
                    runs.append({"run": f"sweep.{group}.lr{lr_text(lr)}", "experiment": f"sweep.{group}", "kind": "sweep",
                                 "group": group, "lr": lr, "lr_step": k_order, "seed": 1, "of": exp})  # fmt: skip
    runs.append({"run": "base", "experiment": "base", "kind": "base", "seed": None})
    for i in range(max(len(e["seeds"]) for e in EXPERIMENTS)):
        for e in EXPERIMENTS:
            if i < len(e["seeds"]):
                runs.append({"run": matrix.run_name(e["name"], e["seeds"][i]), "experiment": e["name"], "kind": "family",
                             "group": e["sweep"], "seed": e["seeds"][i]})  # fmt: skip
    return runs


def select(runs: Sequence[dict[str, Any]], only: Sequence[str] | None) -> list[dict[str, Any]]:
    """`--only` names runs, experiments, `sweep` (every sweep run) or `sweep.GROUP`."""
    if not only:
        return list(runs)
    known = {r["run"] for r in runs} | {r["experiment"] for r in runs} | {"sweep"}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise runner.BenchError(f"--only {unknown[0]!r} is not a run or experiment of the regime family; see --list")
    return [r for r in runs if {r["run"], r["experiment"], r["kind"]} & set(only)]


def result_path(opts: argparse.Namespace, run: str) -> Path:
    return Path(opts.results_dir) / f"{run}.json"


# -- running ---------------------------------------------------------------------------------------------


def _train(run: Mapping[str, Any], cfg: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """`lslo train --resume` in the run's training folder; the summary and the sessions' resource use."""
    from lslo.io import write_json

    folder = Path(cfg["out_dir"]).parent
    state_file = folder / "bench_state.json"
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {"sessions": []}
    epochs_done = state.get("summary", {}).get("epochs_budget")
    if epochs_done is not None and epochs_done >= cfg["max_epochs"]:
        return state
    config_file = folder / f"config.e{cfg['max_epochs']}.yaml"
    runner._write_yaml(config_file, cfg)
    log = folder / "logs" / f"train-{int(time.time())}.log"
    watch = runner.ValidationProgress(run["run"], Path(cfg["out_dir"]) / "metrics.jsonl", f"/{cfg['max_epochs']}")
    res = _call(runner._cli("train", str(config_file), "--resume", "--no-progress"), log, watch)
    summary = runner.last_json(log.read_text(encoding="utf-8"))
    state["sessions"].append({**res, "epochs_budget": cfg["max_epochs"]})
    if summary.get("interrupted"):
        write_json(state_file, state)
        raise runner.Interrupted(f"{run['run']}: training interrupted at step {summary['steps']}; run again to resume")
    state["summary"] = {**summary, "epochs_budget": cfg["max_epochs"]}
    write_json(state_file, state)
    return state


def curve(train_dir: Path) -> list[dict[str, Any]]:
    """Validation loss per epoch from the run's metrics.jsonl (a last line still being written is skipped)."""
    rows = []
    for line in (train_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [{k: r[k] for k in ("step", "epoch", "valid_loss", "valid_nll")} for r in rows if "valid_loss" in r]


def _eval(model: Path, out: Path, opts: argparse.Namespace) -> dict[str, Any]:
    """`lslo eval` of `model` into `out` (once); its scores, and what the evaluation cost (`cost.json`)."""
    from lslo.io import write_json

    if not (out / "results.json").is_file():
        res = _call(runner._cli("eval", str(model), "--data", opts.data, "--languages", *runner.base_languages(opts),
                                "--max-sentences", str(opts.max_sentences), "--beams", str(opts.beams),
                                "--precision", EVAL_PRECISION, "--out", str(out), "--no-progress"),
                    out.parent / "logs" / f"{out.name}-{int(time.time())}.log")  # fmt: skip
        write_json(out / "cost.json", {k: res[k] for k in ("wall_s", "cpu_s", "omp_num_threads")})
    from lslo.report import load_results

    ev = load_results(out)
    cost = json.loads((out / "cost.json").read_text(encoding="utf-8")) if (out / "cost.json").is_file() else None
    groups = {m: {g: ev["groups"][m][g]["mean"] for g in ev["groups"][m]} for m in analysis.METRICS}
    return {"metrics": {m: ev["metrics"][m]["name"] for m in analysis.METRICS}, "tiers": ev["tiers"],
            "overall": {m: groups[m]["all"] for m in analysis.METRICS}, "groups": groups,
            "directions": {k: {"spbleu": round(r["spbleu"], 4), "chrf": round(r["chrf"], 4), "n": r["n"]}
                           for k, r in ev["directions"].items()}, "cost": cost}  # fmt: skip


def _eval_cost(*evals: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluations' summed wall and CPU seconds (None where one was not recorded)."""
    costs = [e.get("cost") for e in evals]
    total = lambda k: None if any(c is None or c.get(k) is None for c in costs) else round(sum(c[k] for c in costs), 1)  # noqa: E731
    return {"models": len(evals), "wall_s": total("wall_s"), "cpu_s": total("cpu_s")}


def _common(run: Mapping[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    return {"run": run["run"], "experiment": run["experiment"], "seed": run["seed"],
            "git_commit": results_md.machine()["git_commit"], "machine": results_md.machine()}  # fmt: skip


def _train_facts(state: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    s, sessions = state["summary"], state["sessions"]
    return {"seconds": s["elapsed"], "steps": s["steps"], "epochs": s["epochs"], "tokens": s["tokens"],
            "steps_per_epoch": cfg["warmup_steps"], "train_loss": s.get("train_loss"),
            "peak_rss_mib": max(x["peak_rss_mib"] for x in sessions), "sessions": len(sessions),
            "omp_num_threads": sorted({str(x.get("omp_num_threads")) for x in sessions}),
            "cpu_seconds": sum(x["cpu_s"] for x in sessions), "recorded_s": round(sum(x["wall_s"] for x in sessions), 1),
            "train_cpu_s": s.get("cpu_s")}  # fmt: skip


def execute(run: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """Do what the run still needs (train / evaluate); write and return its result JSON."""
    from lslo.io import write_json

    print(f"== {run['run']}", flush=True)
    out: dict[str, Any]
    if run["kind"] == "base":
        ev = _eval(Path(opts.base), Path(opts.runs_dir) / "base" / "eval", opts)
        out = {"format": FORMAT, **_common(run, opts), "about": "the base model, not fine-tuned",
               "checkpoints": {}, **{k: v for k, v in ev.items() if k != "cost"}, "eval_cost": _eval_cost(ev)}  # fmt: skip
        out["params"] = {"trainable": 0, "percent_of_base": 0.0}
    elif run["kind"] == "sweep":
        exp = experiment(run["of"])
        cfg = run_config(exp, 1, run["lr"], SWEEP_EPOCHS, opts)
        notes = _resolve_rank(cfg, 1, run["lr"], opts)
        state = _train(run, cfg, opts)
        points = curve(Path(cfg["out_dir"]))
        best = min(points, key=lambda p: p["valid_loss"])
        out = {"format": SWEEP_FORMAT, **_common(run, opts), "group": run["group"], "lr": run["lr"], "lr_step": run["lr_step"],
               "epochs": SWEEP_EPOCHS, "curve": points, "min_valid_loss": best["valid_loss"], "epoch_of_min": best["epoch"],
               "train": _train_facts(state, cfg), "config": cfg, **notes}  # fmt: skip
    else:
        exp = experiment(run["experiment"])
        lr = chosen_lr(run["group"], opts.results_dir)
        if lr is None:
            raise runner.BenchError(f"{run['run']}: the {run['group']} learning-rate sweep is not finished; run `--only sweep.{run['group']}` first")
        cfg = run_config(exp, run["seed"], lr, EPOCHS, opts)
        notes = _resolve_rank(cfg, run["seed"], lr, opts)
        state = _train(run, cfg, opts)
        train_dir = Path(cfg["out_dir"])
        last = _eval(train_dir, Path(opts.runs_dir) / run["run"] / "eval-last", opts)
        best_info = json.loads((train_dir / "best" / "lslo_best.json").read_text(encoding="utf-8"))
        same = best_info["step"] == state["summary"]["steps"]
        best = last if same else _eval(train_dir / "best", Path(opts.runs_dir) / run["run"] / "eval-best", opts)
        params = runner.count_params(cfg)
        if cfg.get("prune"):
            sub = runner._subspace(train_dir.parent)
            if sub is not None:
                params["surviving"] = sub.pop("surviving")
                params["surviving_percent_of_base"] = 100 * params["surviving"] / params["base"]
                params["subspace"] = sub
        cost = _eval_cost(last) if same else _eval_cost(last, best)
        last, best = ({k: v for k, v in e.items() if k != "cost"} for e in (last, best))
        chosen = {"last": {"step": state["summary"]["steps"], "epoch": state["summary"]["epochs"], **last},
                  "best": {**best_info, "same_as_last": same, **best}}  # fmt: skip
        out = {"format": FORMAT, **_common(run, opts), "about": exp["about"], "lr": lr, "lr_from": f"sweep.{run['group']}",
               "subset": exp.get("subset", SUBSET), "verdict_checkpoint": CHECKPOINT, "checkpoints": chosen,
               **{k: chosen[CHECKPOINT][k] for k in ("metrics", "tiers", "overall", "groups", "directions")},
               "curve": curve(train_dir), "params": params, "train": _train_facts(state, cfg), "eval_cost": cost,
               "config": cfg, **notes}  # fmt: skip
    out["budget"] = {"epochs": SWEEP_EPOCHS if run["kind"] == "sweep" else EPOCHS, "max_tokens": opts.max_tokens,
                     "precision": opts.precision}  # fmt: skip
    out["eval"] = {"split": "test", "sentences_per_direction": opts.max_sentences, "beams": opts.beams,
                   "precision": EVAL_PRECISION}  # fmt: skip
    write_json(result_path(opts, run["run"]), out)
    print(f"wrote {result_path(opts, run['run'])}", flush=True)
    return out


def _resolve_rank(cfg: dict[str, Any], seed: int, lr: float, opts: argparse.Namespace) -> dict[str, Any]:
    """Fill the MATCH placeholder: the shared-LoRA rank whose parameter count is closest to lslo-228's."""
    if cfg.get("lora_rank") != matrix.MATCH:
        return {}
    target = matrix.MATCH.split(":", 1)[1]
    match = runner.match_rank(run_config(experiment(target), seed, lr, EPOCHS, opts), cfg)
    cfg["lora_rank"] = match["lora_rank"]
    return {"rank_matching": {**match, "target": target}}


def reproduce(opts: argparse.Namespace, do: Any = None) -> dict[str, Any]:
    """Train and evaluate a finished family run (or the base) again from scratch, in a scratch folder next to
    `--runs-dir` (resumable, like any run), with the lr the committed sweep chose; write
    `reproduce.<run>.json` (committed vs re-run scores, judged against the seed spread of the run's experiment,
    both through the verdicts' checkpoint) and the re-run's own JSON to `reproduce/<run>.json`."""
    from lslo.io import write_json

    target, results = opts.reproduce, Path(opts.results_dir)
    run = next((r for r in plan(opts) if r["run"] == target and r["kind"] != "sweep"), None)
    if run is None:
        raise runner.BenchError(f"--reproduce {target}: not a family run of the regime (see --list; e.g. lslo-228.seed1, base)")
    if not result_path(opts, target).is_file():
        raise runner.BenchError(f"--reproduce {target}: no committed result {result_path(opts, target)} to compare with; run it first")
    root = Path(opts.runs_dir).parent / "bench-regime-reproduce"
    scratch = argparse.Namespace(**{**vars(opts), "runs_dir": str(root / "runs"), "results_dir": str(root / "results")})
    Path(scratch.results_dir).mkdir(parents=True, exist_ok=True)
    for sweep in results.glob("sweep.*.json"):  # the committed sweep decides the lr; the run itself starts over
        shutil.copy2(sweep, Path(scratch.results_dir) / sweep.name)
    reproduced = json.loads(result_path(scratch, target).read_text(encoding="utf-8")) if result_path(scratch, target).is_file() \
        else (do or execute)(run, scratch)  # fmt: skip
    committed = json.loads(result_path(opts, target).read_text(encoding="utf-8"))
    out = {**analysis.reproduction(committed, reproduced, load_family(results)), "checkpoint": CHECKPOINT}
    write_json(results / f"reproduce.{target}.json", out)
    write_json(results / "reproduce" / f"{target}.json", reproduced)
    return out


def progress(opts: argparse.Namespace, run: Mapping[str, Any]) -> str:
    """How far an unfinished run got, from its folders (what a resume continues from): the epochs validated and
    the latest validation loss, and the models evaluated; "" when it has not started."""
    if run["kind"] == "base":
        return ""
    sweep = run["kind"] == "sweep"
    name, lr = (run["of"], run["lr"]) if sweep else (run["experiment"], chosen_lr(run["group"], opts.results_dir))
    if lr is None:
        return ""
    train_dir = Path(opts.runs_dir) / train_key(name, lr, run["seed"]) / "train"
    if not (train_dir / "metrics.jsonl").is_file():
        return ""
    points = curve(train_dir)  # the trainer may be writing its last line right now
    epochs = SWEEP_EPOCHS if sweep else EPOCHS
    text = (f"started: epoch {points[-1]['epoch']:g} of {epochs} validated, loss {points[-1]['valid_loss']:.4f}" if points
            else "started: no epoch validated yet")  # fmt: skip
    evaluated = [m for m in ("last", "best") if (Path(opts.runs_dir) / run["run"] / f"eval-{m}" / "results.json").is_file()]
    return text + (f"; {' and '.join(evaluated)} model evaluated" if evaluated else "")


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_family(opts: argparse.Namespace) -> int:
    """Run every unfinished run of the plan, `opts.jobs` at a time (one `lslo train` / `lslo eval` child each)."""
    runs = select(plan(opts), opts.only)
    if opts.list:
        for r in runs:
            done = result_path(opts, r["run"]).is_file()
            lr = f" lr {lr_text(r['lr'])}" if r.get("lr") else ""
            far = "" if done else progress(opts, r)
            print(f"{r['run']:<28} {'finished' if done else 'to do':<8} {r['kind']}{lr}" + (f" ({far})" if far else ""))
        return 0
    jobs = opts.jobs or cores()
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:  # the children split the cores; an explicit setting wins
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores() // jobs))
    print(f"{jobs} job(s) side by side, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    _schedule(opts, jobs)
    render_to_md(opts)
    return 0


# Jobs are threads that spend their time waiting for `lslo` children; their own Python work (planning, configs,
# parameter counts, reading results) runs one at a time under this lock, which a job lets go of while its
# child runs. Concurrent first imports of transformers' lazy modules fail, so nothing here may overlap.
_PYTHON = threading.Lock()
_JOB = threading.local()


def _call(argv: Sequence[str], log: Path, watch: Callable[[], None] | None = None) -> dict[str, Any]:
    """runner.call; in a job, other jobs may run Python while the child runs."""
    if not getattr(_JOB, "holds", False):
        return runner.call(argv, log, watch)
    _PYTHON.release()
    try:
        return runner.call(argv, log, watch)
    finally:
        _PYTHON.acquire()


def _job(run: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    with _PYTHON:
        _JOB.holds = True
        try:
            return execute(run, opts)
        finally:
            _JOB.holds = False


def _schedule(opts: argparse.Namespace, jobs: int) -> None:
    """Keep `jobs` runs going. The plan is made again after each run, since the sweep may grow (an edge won) and
    family runs wait for their sweep. A run that fails or is interrupted stops new starts; the runs still going
    finish (an interrupted training has checkpointed), then its error is raised."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    done: set[str] = set()
    going: dict[str, Future[dict[str, Any]]] = {}
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while True:
            with _PYTHON:
                if error is None:
                    todo = [r for r in select(plan(opts), opts.only)
                            if r["run"] not in done and r["run"] not in going and not result_path(opts, r["run"]).is_file()]  # fmt: skip
                    ready = [r for r in todo if r["kind"] != "family" or chosen_lr(r["group"], opts.results_dir) is not None]
                    for r in ready[: jobs - len(going)]:
                        if r["kind"] != "base":  # made here, once, not by two jobs at the same time
                            build_subset(opts, experiment(r.get("of") or r["experiment"]).get("subset", SUBSET))
                        going[r["run"]] = pool.submit(_job, r, opts)
                    if not going and todo:
                        print(f"waiting for a sweep: {', '.join(r['run'] for r in todo)} need finished sweeps", flush=True)
            if not going:
                break
            finished, _ = wait(going.values(), return_when=FIRST_COMPLETED)
            with _PYTHON:
                for name, future in [(n, f) for n, f in going.items() if f in finished]:
                    del going[name]
                    done.add(name)
                    if future.exception() is not None:
                        error = error or future.exception()
                    else:
                        render_to_md(opts)
    if error is not None:
        raise error
