"""Running the bible12 matrix: the plan, each run's steps (search, train, eval, write) as `lslo` subprocesses,
its result JSON, and the reproduction of a finished run. Resumable: every step is skipped once done.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import results_md

from .analysis import METRICS, load_all, reproduction
from .matrix import EXPERIMENTS, FORMAT, MATCH, ROOT, SEARCH_STEP, SEARCHED, experiment, run_name
from .render import render_to_md


def resolve_steps(value: Any, steps: int) -> Any:
    """ "10%" -> 10% of `steps` (at least 1); anything else as is."""
    if isinstance(value, str) and value.endswith("%"):
        return max(1, round(steps * float(value[:-1]) / 100))
    return value


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run_config(exp: Mapping[str, Any], seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    """The full TrainConfig dict of one run (placeholders MATCH / SEARCHED still unresolved)."""
    import yaml

    cfg = yaml.safe_load(Path(opts.config).read_text(encoding="utf-8"))
    common = {
        "data": opts.data, "base_model": opts.base, "out_dir": str(Path(opts.runs_dir) / run_name(exp["name"], seed) / "train"),
        "max_epochs": None, "max_steps": opts.steps, "max_tokens": opts.max_tokens, "seed": seed,
        "warmup_steps": resolve_steps("10%", opts.steps), "save_every": resolve_steps("10%", opts.steps),
        "eval_every": opts.steps, "valid_max_per_direction": opts.valid_per_direction, "progress": False,
        "precision": opts.precision,
        "optimizer": "adamw",  # what the committed matrix ran with (LanguageAdamW came later; with 12 languages in
        # every batch it is nearly the same algorithm, but a re-run reproduces the committed runs' optimizer)
    }  # fmt: skip
    cfg = deep_merge(deep_merge(cfg, common), exp["overrides"])
    if cfg.get("prune"):
        cfg["prune"] = {k: resolve_steps(v, opts.steps) for k, v in cfg["prune"].items()}
    return cfg


def plan(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run of the matrix in order: the base evaluation first, then seed 1 of every experiment, then
    the further seeds (so the claims get a first answer early)."""
    runs: list[dict[str, Any]] = [{"run": "base", "experiment": "base", "seed": None}]
    max_seeds = max(len(e["seeds"]) for e in EXPERIMENTS)
    for i in range(max_seeds):
        for e in EXPERIMENTS:
            if i < len(e["seeds"]):
                seed = e["seeds"][i]
                runs.append({"run": run_name(e["name"], seed), "experiment": e["name"], "seed": seed,
                             "config": run_config(e, seed, opts), "needs": e.get("needs")})  # fmt: skip
    return runs


def select(runs: Sequence[dict[str, Any]], only: Sequence[str] | None) -> list[dict[str, Any]]:
    """The runs that `--only` names (experiment names, run names or "base"); all when None."""
    if not only:
        return list(runs)
    known = {r["run"] for r in runs} | {r["experiment"] for r in runs}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise SystemExit(f"run.py: error: --only {unknown[0]!r} is not an experiment or run; see --list")
    return [r for r in runs if r["run"] in only or r["experiment"] in only]


def result_path(results_dir: str | os.PathLike, run: str) -> Path:
    return Path(results_dir) / f"{run}.json"


def finished(run: Mapping[str, Any], results_dir: str | os.PathLike) -> bool:
    return result_path(results_dir, run["run"]).is_file()


def pending(runs: Sequence[dict[str, Any]], results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    return [r for r in runs if not finished(r, results_dir)]


def read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "bench_state.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_state(run_dir: Path, state: Mapping[str, Any]) -> None:
    from lslo.io import write_json

    write_json(run_dir / "bench_state.json", state)


def steps_left(run: Mapping[str, Any], runs_dir: str | os.PathLike, results_dir: str | os.PathLike) -> list[str]:
    """Which of the run's steps (search, train, eval, write) still have to happen."""
    if finished(run, results_dir):
        return []
    run_dir = Path(runs_dir) / run["run"]
    left = []
    if run.get("needs") == SEARCH_STEP and not (Path(runs_dir) / SEARCH_STEP / "lslo_config.json").is_file():
        left.append("search")
    if run["run"] != "base" and not read_state(run_dir).get("train", {}).get("done"):
        left.append("train")
    if not (run_dir / "eval" / "results.json").is_file():
        left.append("eval")
    return [*left, "write"]


# -- running -----------------------------------------------------------------------------------------


class BenchError(Exception):
    """Bad use of the runner: main() prints it as one line and exits 2."""


class Interrupted(Exception):
    pass


class ValidationProgress:
    """Called while a training runs: prints each validation it logged since the last call (`lslo train
    --no-progress` writes nothing until it ends), e.g. `[lslo-228.seed1] epoch 7/15 (step 2380): valid loss 4.3165
    (lowest 4.3050, epoch 4)`. *Lowest* follows `lslo train`'s rule for `best/`: a validation logged while pruning
    was short of its ratio (`best_eligible: false`) is shown but cannot be the lowest."""

    def __init__(self, name: str, metrics: Path, of: str = "") -> None:
        self.name, self.metrics, self.of = name, metrics, of
        earlier = self._entries()  # resumed: what earlier sessions logged is not news
        self.seen = len(earlier)
        self.lowest: tuple[float, float] | None = min(((e["valid_loss"], e["epoch"]) for e in earlier
                                                       if e.get("best_eligible", True)), default=None)  # fmt: skip

    def _entries(self) -> list[dict[str, Any]]:
        rows = []
        try:
            for line in self.metrics.read_text(encoding="utf-8").splitlines():
                rows.append(json.loads(line))
        except (OSError, ValueError):  # not there yet, or the line being written
            pass
        return [r for r in rows if "valid_loss" in r]

    def __call__(self) -> None:
        entries = self._entries()
        for e in entries[self.seen :]:
            eligible = e.get("best_eligible", True)
            if eligible and (self.lowest is None or e["valid_loss"] < self.lowest[0]):
                self.lowest = (e["valid_loss"], e["epoch"])
            note = "not a best candidate: pruning short of its ratio" if not eligible else ""
            if self.lowest is not None:
                note += ("; " if note else "") + f"lowest {self.lowest[0]:.4f}, epoch {self.lowest[1]:g}"
            print(f"[{self.name}] epoch {e['epoch']:g}{self.of} (step {e['step']}): valid loss {e['valid_loss']:.4f} "
                  f"({note})", flush=True)  # fmt: skip
        self.seen = max(self.seen, len(entries))


def call(argv: Sequence[str], log: Path, watch: Callable[[], None] | None = None, every: float = 20.0) -> dict[str, Any]:
    """Run `argv` (stdout and stderr to `log`); its exit code, wall time and peak RSS (ru_maxrss, MiB). `watch`
    is called every `every` seconds while it runs, and once at the end (progress from its files)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {shlex.join(argv)}  > {log}", flush=True)
    start = time.time()
    interrupted = False
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        while True:
            try:
                pid, status, usage = os.wait4(proc.pid, 0 if watch is None else os.WNOHANG)
                if pid:
                    break
                watch()  # type: ignore[misc]
                time.sleep(every)
            except KeyboardInterrupt:  # the child got the signal too: let it checkpoint and exit
                interrupted = True
        if watch is not None:
            watch()
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    result = {"rc": rc, "wall_s": round(time.time() - start, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
              "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if interrupted:
        raise Interrupted(f"interrupted during {argv[3] if len(argv) > 3 else argv}")
    if rc != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:])
        raise RuntimeError(f"{shlex.join(argv)} exited with {rc}; last lines of {log}:\n{tail}")
    return result


def last_json(text: str) -> dict[str, Any]:
    """The last top-level JSON object printed in `text` (the train summary)."""
    decoder = json.JSONDecoder()
    start = len(text)
    while (start := text.rfind("{\n", 0, start)) >= 0:
        if start == 0 or text[start - 1] == "\n":
            try:
                obj, _ = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return obj
    raise ValueError("no JSON summary in the output")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lslo.cli", *args]


def _write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    import yaml

    from lslo.io import write_text

    write_text(path, yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True))


def count_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Trainable parameters of the model `lslo train` builds from `cfg`, and the base's parameter count."""
    from lslo.run_config import TrainConfig
    from lslo.run_setup import resolve_languages, setup_model
    from lslo.tokenizer import load_tokenizer

    tc = TrainConfig.from_dict({**cfg, "prune": None})
    tokenizer = load_tokenizer(tc.tokenizer or tc.base_model)
    model = setup_model(tc, tokenizer, resolve_languages(tc, []))  # the languages as given: no corpus to read
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = model.parameter_report()
    out = {"trainable": trainable, "base": report["base_params"], "percent_of_base": 100 * trainable / report["base_params"]}
    if tc.method == "lslo":
        from lslo.routing import format_routing

        out["routing"] = {f"{side}_routing": format_routing(model.lslo_config.routes(side, len(stack.layers)))
                          for side, stack in (("encoder", model.base_model.model.encoder), ("decoder", model.base_model.model.decoder))}  # fmt: skip
        out["tiers"] = {t: {"languages": r["languages"], "params": r["params"], "percent_per_language": r["percent_per_language"]}
                        for t, r in report["tiers"].items()}  # fmt: skip
    return out


def match_rank(target_cfg: Mapping[str, Any], lora_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The shared-LoRA rank whose trainable-parameter count is closest to the LSLo run's (counted, not guessed):
    a shared LoRA's count is linear in its rank, so r = round(LSLo count / count at r = 1)."""
    target = count_params(target_cfg)["trainable"]
    per_rank = count_params({**lora_cfg, "lora_rank": 1})["trainable"]
    rank = max(1, round(target / per_rank))
    return {"lora_rank": rank, "matched_to_params": target, "params_per_rank": per_rank}


def resolve_placeholders(run: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """Fill MATCH (LoRA rank) and SEARCHED (routing) into the run's config; returns notes for the JSON."""
    cfg, notes = run["config"], {}
    if cfg.get("lora_rank") == MATCH:
        target = experiment(MATCH.split(":", 1)[1])
        notes["rank_matching"] = match_rank(run_config(target, run["seed"], opts), cfg)
        notes["rank_matching"]["target"] = target["name"]
        cfg["lora_rank"] = notes["rank_matching"]["lora_rank"]
    lslo = cfg.get("lslo") or {}
    if SEARCHED in (lslo.get("encoder_routing"), lslo.get("decoder_routing")):
        found = json.loads((Path(opts.runs_dir) / SEARCH_STEP / "lslo_config.json").read_text(encoding="utf-8"))
        for key in ("encoder_routing", "decoder_routing"):
            if lslo.get(key) == SEARCHED:
                lslo[key] = found[key]
        weights = Path(opts.runs_dir) / SEARCH_STEP / "routing_weights.json"
        notes["search"] = {"steps": opts.search_steps, "routing": {k: found[k] for k in ("encoder_routing", "decoder_routing")},
                           "weights": json.loads(weights.read_text(encoding="utf-8"))["weights"] if weights.is_file() else None}  # fmt: skip
    return notes


def run_search(opts: argparse.Namespace) -> None:
    out = Path(opts.runs_dir) / SEARCH_STEP
    if (out / "lslo_config.json").is_file():
        return
    cfg = run_config(experiment("lslo-228"), 1, opts)
    cfg["out_dir"] = str(out / "unused")
    _write_yaml(Path(opts.runs_dir) / "configs" / f"{SEARCH_STEP}.yaml", cfg)
    call(_cli("search", "routing", str(Path(opts.runs_dir) / "configs" / f"{SEARCH_STEP}.yaml"),
              "--steps", str(opts.search_steps), "--out", str(out)), Path(opts.runs_dir) / "logs" / f"{SEARCH_STEP}.log")  # fmt: skip


def effective(cfg: Mapping[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """What a run trains, for comparing runs: the config without its output folder, routing spelled out per
    layer (so `encoder_routing: null` and the `src*3,tgt*1` it stands for compare equal)."""
    from lslo.config import LSLoConfig

    shape = json.loads((Path(opts.base) / "config.json").read_text(encoding="utf-8"))
    out = {k: v for k, v in cfg.items() if k != "out_dir"}
    lslo = dict(out.get("lslo") or {})
    routing = LSLoConfig(languages={"xx": "high"}, encoder_routing=lslo.get("encoder_routing"), decoder_routing=lslo.get("decoder_routing"))
    for side in ("encoder", "decoder"):
        lslo[f"{side}_routing"] = routing.routes(side, shape[f"{side}_layers"])
    out["lslo"] = lslo
    return out


def twin(run: Mapping[str, Any], opts: argparse.Namespace) -> str | None:
    """A finished run of another experiment that trains exactly what `run` trains (e.g. the searched routing
    came out as the paper's); its name, or None. Training is deterministic per seed, so its result stands."""
    mine = effective(run["config"], opts)
    for other in plan(opts):
        if other["run"] in ("base", run["run"]) or other.get("needs") or not finished(other, opts.results_dir):
            continue
        if effective(other["config"], opts) == mine:
            return other["run"]
    return None


def execute(run: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """Do the run's unfinished steps; write and return its result JSON."""
    from lslo.io import write_json

    run_dir = Path(opts.runs_dir) / run["run"]
    todo = steps_left(run, opts.runs_dir, opts.results_dir)
    print(f"== {run['run']}: {', '.join(todo) or 'finished'}", flush=True)
    if not todo:
        return json.loads(result_path(opts.results_dir, run["run"]).read_text(encoding="utf-8"))
    if "search" in todo:
        run_search(opts)
    state = read_state(run_dir)
    notes: dict[str, Any] = {}
    if run["run"] != "base":
        notes = resolve_placeholders(run, opts)
        same = twin(run, opts) if "train" in todo else None
        if same is not None:
            result = json.loads(result_path(opts.results_dir, same).read_text(encoding="utf-8"))
            result.update(run=run["run"], experiment=run["experiment"], about=experiment(run["experiment"])["about"],
                          config=run["config"], same_as=same, **notes)  # fmt: skip
            write_json(result_path(opts.results_dir, run["run"]), result)
            print(f"== {run['run']}: trains exactly what {same} trained; its result stands (not run again)", flush=True)
            return result
        config_file = run_dir / "config.yaml"
        if "train" in todo:
            _write_yaml(config_file, run["config"])
            log = run_dir / "logs" / f"train-{int(time.time())}.log"
            watch = ValidationProgress(run["run"], Path(run["config"]["out_dir"]) / "metrics.jsonl")
            res = call(_cli("train", str(config_file), "--resume", "--no-progress"), log, watch)
            summary = last_json(log.read_text(encoding="utf-8"))
            train = state.setdefault("train", {"sessions": []})
            train["sessions"].append(res)
            train["summary"] = summary
            if summary.get("interrupted"):
                write_state(run_dir, state)
                raise Interrupted(f"{run['run']}: training interrupted at step {summary['steps']}; run again to resume")
            train["done"] = True
            write_state(run_dir, state)
    if "eval" in todo:
        model = opts.base if run["run"] == "base" else str(run_dir / "train")
        extra = ["--languages", *base_languages(opts)] if run["run"] == "base" else []
        res = call(_cli("eval", model, "--data", opts.data, "--max-sentences", str(opts.max_sentences),
                        "--beams", str(opts.beams), "--out", str(run_dir / "eval"), "--no-progress", *extra),
                   run_dir / "logs" / f"eval-{int(time.time())}.log")  # fmt: skip
        state["eval"] = res
        write_state(run_dir, state)
    result = build_result(run, state, run_dir, opts, notes)
    write_json(result_path(opts.results_dir, run["run"]), result)
    print(f"wrote {result_path(opts.results_dir, run['run'])}", flush=True)
    return result


def base_languages(opts: argparse.Namespace) -> list[str]:
    import yaml

    langs = yaml.safe_load(Path(opts.config).read_text(encoding="utf-8"))["languages"]
    return list(langs)


def _subspace(run_dir: Path) -> dict[str, Any] | None:
    """What an LSLo run's pruning masks keep: total, per tier (params, % of base per language, kept share of
    the pruned matrices) and kept share per side and position. None for other methods."""
    from lslo.loading import load_model
    from lslo.model import LSLoModel
    from lslo.subspace import subspace_report

    model, _, _ = load_model(str(run_dir / "train"))
    if not isinstance(model, LSLoModel):
        return None
    report, sub = model.parameter_report(), subspace_report(model)
    tiers = {t: {"languages": r["languages"], "params": r["params"], "percent_per_language": r["percent_per_language"],
                 "kept_share": sub["tiers"][t]} for t, r in report["tiers"].items()}  # fmt: skip
    return {"surviving": report["total"], "pruned_matrices": sub["pruned_matrices"], "tiers": tiers,
            "positions": sub["positions"]}  # fmt: skip


def build_result(run: Mapping[str, Any], state: Mapping[str, Any], run_dir: Path, opts: argparse.Namespace,
                 notes: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The committed per-run JSON: scores by tier group and direction, params, time, memory, provenance."""
    from lslo.report import load_results

    ev = load_results(run_dir / "eval")
    groups = {m: {g: ev["groups"][m][g]["mean"] for g in ev["groups"][m]} for m in METRICS}
    directions = {k: {"spbleu": round(r["spbleu"], 4), "chrf": round(r["chrf"], 4), "n": r["n"]} for k, r in ev["directions"].items()}
    result: dict[str, Any] = {
        "format": FORMAT,
        "run": run["run"], "experiment": run["experiment"], "seed": run["seed"],
        "about": "the base model, not fine-tuned" if run["run"] == "base" else experiment(run["experiment"])["about"],
        "budget": {"steps": opts.steps, "max_tokens": opts.max_tokens, "precision": opts.precision},
        "eval": {"split": "test", "sentences_per_direction": opts.max_sentences, "beams": opts.beams,
                 "directions": len(directions), **{k: v for k, v in state.get("eval", {}).items() if k != "rc"}},
        "metrics": {m: ev["metrics"][m]["name"] for m in METRICS},
        "tiers": ev["tiers"],
        "overall": {m: groups[m]["all"] for m in METRICS},
        "groups": groups,
        "directions": directions,
        "base_model": opts.base,
        "git_commit": results_md.machine()["git_commit"],
        "machine": results_md.machine(),
    }  # fmt: skip
    if run["run"] == "base":
        result["params"] = {"trainable": 0, "percent_of_base": 0.0}
        return result
    params = count_params(run["config"])
    if run["config"].get("prune"):
        sub = _subspace(run_dir)
        if sub is not None:
            params["surviving"] = sub.pop("surviving")
            params["surviving_percent_of_base"] = 100 * params["surviving"] / params["base"]
            params["subspace"] = sub
    summary = state["train"]["summary"]
    sessions = state["train"]["sessions"]
    result.update(
        params=params,
        train={"seconds": summary["elapsed"], "steps": summary["steps"], "tokens": summary["tokens"],
               "train_loss": summary.get("train_loss"), "valid_loss": summary.get("valid_loss"),
               "peak_rss_mib": max(s["peak_rss_mib"] for s in sessions), "sessions": len(sessions),
               "omp_num_threads": sorted({str(s.get("omp_num_threads")) for s in sessions}),
               "cpu_seconds": sum(s["cpu_s"] for s in sessions) if all("cpu_s" in s for s in sessions) else None,
               "memory_kind": "peak RSS of the `lslo train` process (ru_maxrss via os.wait4), max over sessions"},
        config=run["config"],
        **notes,
    )  # fmt: skip
    return result


def run_matrix(runs: Sequence[dict[str, Any]], opts: argparse.Namespace,
               do: Callable[[dict[str, Any], argparse.Namespace], Any] = execute) -> list[str]:  # fmt: skip
    """Run every unfinished run in order (finished ones are skipped); the names of those run."""
    done = []
    for run in runs:
        if finished(run, opts.results_dir):
            print(f"== {run['run']}: finished ({result_path(opts.results_dir, run['run'])})", flush=True)
            continue
        do(run, opts)
        done.append(run["run"])
        render_to_md(opts.results_dir, opts.results_md)
    return done



def reproduce(opts: argparse.Namespace, do: Callable[[dict[str, Any], argparse.Namespace], Any] = execute) -> dict[str, Any]:
    """Run `opts.reproduce` again in a scratch folder next to `--runs-dir` (resumable, like any run), then write
    `reproduce.<run>.json` next to the committed results (and the re-run's result JSON to `reproduce/<run>.json`)
    and return it."""
    target = opts.reproduce
    committed_path = result_path(opts.results_dir, target)
    scratch = argparse.Namespace(**vars(opts))
    root = Path(opts.runs_dir).parent / "bench-reproduce"
    scratch.results_dir, scratch.runs_dir, scratch.results_md = str(root / "results"), str(root / "runs"), str(root / "RESULTS.md")
    # Planned with the scratch options: the config's out_dir must be in the scratch folder, or `lslo train
    # --resume` would find the committed run's own checkpoints and "reproduce" it without training.
    runs = [r for r in plan(scratch) if r["run"] == target]
    if not runs:
        raise BenchError(f"--reproduce {target}: not a run of the matrix (see --list; e.g. lslo-228.seed1, base)")
    if not committed_path.is_file():
        raise BenchError(f"--reproduce {target}: no committed result {committed_path} to compare with; run it first")
    run_matrix(runs, scratch, do)
    committed = json.loads(committed_path.read_text(encoding="utf-8"))
    reproduced = json.loads(result_path(scratch.results_dir, target).read_text(encoding="utf-8"))
    out = reproduction(committed, reproduced, load_all(opts.results_dir))
    from lslo.io import write_json

    write_json(Path(opts.results_dir) / f"reproduce.{target}.json", out)
    write_json(Path(opts.results_dir) / "reproduce" / f"{target}.json", reproduced)  # the re-run's own result, kept
    return out

