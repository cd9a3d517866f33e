"""The paper's experiments (Cao et al., EMNLP 2024) reproduced on bible12: a resumable experiment matrix.

    python benchmarks/bible12/run.py                     # run every unfinished step, then render RESULTS.md
    python benchmarks/bible12/run.py --list              # the matrix and what is finished
    python benchmarks/bible12/run.py --only lslo-228 full   # some experiments (or runs: lslo-228.seed2, base)
    python benchmarks/bible12/run.py --render            # the RESULTS.md section from the committed JSON only
    python benchmarks/bible12/run.py --reproduce lslo-228.seed1  # re-run a finished run, compare with its JSON

Every experiment is a dict of `TrainConfig` overrides on top of configs/bible12-lslo.yaml (`EXPERIMENTS`);
each of its seeds is one run. A run is three steps, each a subprocess of the `lslo` CLI and each skipped
once done: `lslo train <config> --resume` (an interrupted training continues from its checkpoint),
`lslo eval` on all 132 directions (the first `--max-sentences` test verses per direction, beam 5), and
writing `benchmarks/bible12/results/<run>.json` (small, committed). A run is finished when that JSON
exists; an interrupted matrix resumes where it stopped. Checkpoints, logs and translations stay under
`runs/bench/` (not committed). The base model is evaluated once (`base`). `lslo-228-searched` first runs
`lslo search routing` (step `search-routing`) and trains with the routing it writes.

Every method gets the same budget: `--steps` optimizer steps of at most `--max-tokens` tokens. Learning
rates are a field of each experiment. Training time is the trainer's own `elapsed` (summed over resumed
sessions); peak memory is the RSS high-water mark of the `lslo train` child process (`ru_maxrss` from
`os.wait4`; the maximum over resumed sessions). Trainable parameters are counted on the model the trainer
builds from the run's config (and, for pruned runs, what survives the pruning masks).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # regime.py, the second family
sys.modules.setdefault("run", sys.modules[__name__])  # regime.py's `import run` is this module, even as __main__
import results_md  # noqa: E402

FORMAT = "lslo-bible12-bench/1"
REPRODUCE_FORMAT = "lslo-bible12-reproduce/1"
CONFIG = ROOT / "configs" / "bible12-lslo.yaml"
RESULTS_DIR = HERE / "results"
RUNS_DIR = ROOT / "runs" / "bench"
SECTION = "bible12"

# Budget, the same for every method, sized on the 2-core CPU machine (benchmarks/bible12/README.md): full
# training of the base ran at 1.1-1.3 s per 2,048-token step when the cores were free, so 1,000 steps keep
# a run's training under 30 minutes there.
STEPS = 1000
MAX_TOKENS = 2048
MAX_SENTENCES = 100
BEAMS = 5
VALID_PER_DIRECTION = 10  # the final validation loss: 1,320 pairs over 132 directions (a small share of a run)

LR_ADAPTER = 2e-3  # LSLo and shared LoRA: the value of configs/bible12-lslo.yaml
LR_FULL = 2e-4  # full fine-tuning: a fifth of the base's pretraining peak lr (1e-3); not swept

# `lora_rank` placeholder: the rank whose shared-LoRA parameter count is closest to this experiment's.
MATCH = "match-params:lslo-228"
# `encoder_routing` / `decoder_routing` placeholder: the routing that `lslo search routing` wrote.
SEARCHED = "searched"
SEARCH_STEP = "search-routing"
# The routing search is short next to training: the issue asks for a search that takes minutes on CPU, and the
# tiny-model recovery test (tests/test_search.py) recovers every layer's route in 150 steps.
SEARCH_STEPS = 300
NEAR_TIE = 0.05  # a learned target weight this close to 0.5 is marked as a near tie in RESULTS.md

ATTN_ENC, ATTN_DEC = ["q", "k", "v"], ["q", "k", "v", "cross_q", "cross_k", "cross_v"]
FFN = ["fc1", "fc2"]


def _prune(scope: str) -> dict[str, Any]:
    # The paper prunes from epoch 2 to 12 of its run; here the cubic schedule runs from 10% to 70% of the
    # steps and masks are recomputed every 5% ("N%" values are resolved against --steps).
    return {"ratio": 0.9, "unit": "step", "start": "10%", "duration": "60%", "every": "5%", "scope": scope}


EXPERIMENTS: list[dict[str, Any]] = [
    {"name": "full", "seeds": [1, 2], "about": "full fine-tuning (every weight trains)",
     "overrides": {"method": "full", "lr": LR_FULL}},
    {"name": "lora", "seeds": [1, 2], "about": "shared peft LoRA on LSLo's linears, rank matched to lslo-228's parameter count",
     "overrides": {"method": "lora", "lr": LR_ADAPTER, "lora_rank": MATCH}},
    {"name": "lslo-888", "seeds": [1, 2], "about": "LSLo, ranks high/medium/low = 8/8/8",
     "overrides": {"lr": LR_ADAPTER, "lslo": {"ranks": {"high": 8, "medium": 8, "low": 8}}}},
    {"name": "lslo-228", "seeds": [1, 2], "about": "LSLo 2/2/8, top quarter of the encoder by target (the paper's best)",
     "overrides": {"lr": LR_ADAPTER, "lslo": {"ranks": {"high": 2, "medium": 2, "low": 8}}}},
    {"name": "lslo-228-src", "seeds": [1], "about": "LSLo 2/2/8, every encoder layer routed by source",
     "overrides": {"lr": LR_ADAPTER, "lslo": {"encoder_routing": "src"}}},
    {"name": "lslo-228-attn", "seeds": [1], "about": "LSLo 2/2/8 on attention positions only (q, k, v; cross q, k, v)",
     "overrides": {"lr": LR_ADAPTER, "lslo": {"encoder_modules": ATTN_ENC, "decoder_modules": ATTN_DEC}}},
    {"name": "lslo-228-ffn", "seeds": [1], "about": "LSLo 2/2/8 on fc1/fc2 only",
     "overrides": {"lr": LR_ADAPTER, "lslo": {"encoder_modules": FFN, "decoder_modules": FFN}}},
    {"name": "lslo-228-prune-lang", "seeds": [1], "about": "LSLo 2/2/8, 90% gradual pruning, language scope",
     "overrides": {"lr": LR_ADAPTER, "prune": _prune("language")}},
    {"name": "lslo-228-prune-layer", "seeds": [1], "about": "LSLo 2/2/8, 90% gradual pruning, layer scope",
     "overrides": {"lr": LR_ADAPTER, "prune": _prune("layer")}},
    {"name": "lslo-228-searched", "seeds": [1], "about": "LSLo 2/2/8 with the routing `lslo search routing` learned",
     "needs": SEARCH_STEP,
     "overrides": {"lr": LR_ADAPTER, "lslo": {"encoder_routing": SEARCHED, "decoder_routing": SEARCHED}}},
]  # fmt: skip

# The paper's claims, each a comparison a - b on one score (group "all", "low": directions with a
# low-resource language on either side, or "no-low": the others; see GROUP_LABELS). kind "better": the claim is
# that a beats b; kind "kept": that a loses nothing against b. `noise`: whose seed spread stands in when neither side has two seeds.
CLAIMS: list[dict[str, Any]] = [
    {"claim": "LSLo (2/2/8) matches or beats full fine-tuning, overall", "a": "lslo-228", "b": "full",
     "group": "all", "kind": "kept",
     "if_not": "the base is small and under-trained (a few CPU hours), so updating every weight (embeddings, layer "
               "norms, all layers) still pays; the paper fine-tunes a converged 1.2B model, where full fine-tuning "
               "over-fits and lets languages interfere. Here LSLo 2/2/8 is also a far larger share of the base"},
    {"claim": "LSLo (2/2/8) beats full fine-tuning on low-resource directions", "a": "lslo-228", "b": "full",
     "group": "low", "kind": "better",
     "if_not": "as above; and the low-resource languages were seen least in pretraining (1/32 of their verses), so "
               "their embeddings and shared weights gain most from full fine-tuning"},
    {"claim": "The best LSLo on bible12 (8/8/8) matches or beats full fine-tuning, overall", "a": "lslo-888",
     "b": "full", "group": "all", "kind": "kept",
     "if_not": "the reasons of the 2/2/8 rows hold for any adapter that leaves the embeddings, layer norms and "
               "base weights of an under-trained base frozen, whatever its ranks"},
    {"claim": "Language-specific LoRAs beat one shared LoRA of the same size (the paper's premise)", "a": "lslo-228",
     "b": "lora", "group": "all", "kind": "better",
     "if_not": "at the same count a shared rank-48 LoRA gives every language 48 directions of change where LSLo 2/2/8"
               " gives a high- or medium-resource language 2 (low: 8); on a small base that is still learning the "
               "languages, capacity per language seems to matter more than keeping languages apart"},
    {"claim": "Ranks 2/2/8 keep the quality of 8/8/8 where they differ: high- and medium-resource languages need "
              "only a small subspace", "a": "lslo-228", "b": "lslo-888", "group": "no-low", "kind": "kept",
     "if_not": "rank 2 gives a high- or medium-resource language a quarter of rank 8's directions of change, and on a "
               "small base that is still learning its languages capacity per language pays (see the shared-LoRA "
               "claim); the paper's large model already knows these languages well"},
    {"claim": "LSLo in the fully connected layers beats LSLo in attention", "a": "lslo-228-ffn", "b": "lslo-228-attn",
     "group": "all", "kind": "better",
     "if_not": "in a 4+4-layer model with d_model 256 the attention positions (q, k, v and cross-attention) hold as "
               "many LoRA parameters as fc1/fc2, so placement matters less than in M2M-100"},
    {"claim": "Routing the top encoder layers by target beats routing all of them by source", "a": "lslo-228",
     "b": "lslo-228-src", "group": "all", "kind": "better",
     "if_not": "with 4 encoder layers the top quarter is a single layer: the two routings differ in one layer, a "
               "difference that the seed spread can hide"},
    {"claim": "90% pruning (language scope) keeps the quality", "a": "lslo-228-prune-lang", "b": "lslo-228",
     "group": "all", "kind": "kept",
     "if_not": "after the last pruning step only the last 30% of a short budget (300 of 1,000 steps) is left to "
               "recover; the paper keeps training 3 of its 15 epochs, many more steps. With one seed of the pruned run, a"
               " loss this small may also be noise"},
    {"claim": "90% pruning (layer scope) keeps the quality", "a": "lslo-228-prune-layer", "b": "lslo-228",
     "group": "all", "kind": "kept", "if_not": "as for language scope"},
    {"claim": "Searched routing is as good as the paper's routing", "a": "lslo-228-searched", "b": "lslo-228",
     "group": "all", "kind": "kept",
     "if_not": "a short search (minutes on CPU): layers whose weights sit near 0.5 can flip with another seed"},
]  # fmt: skip
NOISE = "lslo-228"
NOT_MEASURED = "not measured yet"

GROUP_COLUMNS = ("H->*", "M->*", "L->*", "*->H", "*->M", "*->L", "all")
GROUP_LABELS = {"all": "all directions", "low": "low-resource (L as source or target)",
                "no-low": "high/medium only (no L side)", "high": "high-resource only (H on both sides)"}  # fmt: skip
METRICS = ("spbleu", "chrf")


# -- the plan --------------------------------------------------------------------------------------


def experiment(name: str) -> dict[str, Any]:
    for e in EXPERIMENTS:
        if e["name"] == name:
            return e
    raise KeyError(name)


def run_name(name: str, seed: int) -> str:
    return f"{name}.seed{seed}"


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


def call(argv: Sequence[str], log: Path) -> dict[str, Any]:
    """Run `argv` (stdout and stderr to `log`); its exit code, wall time and peak RSS (ru_maxrss, MiB)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {shlex.join(argv)}  > {log}", flush=True)
    start = time.time()
    interrupted = False
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        while True:
            try:
                _, status, usage = os.wait4(proc.pid, 0)
                break
            except KeyboardInterrupt:  # the child got the signal too: let it checkpoint and exit
                interrupted = True
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
    from lslo.languages import lang_token_ids
    from lslo.tokenizer import load_tokenizer
    from lslo.train import TrainConfig, build_model, load_base_model, resolve_languages

    tc = TrainConfig.from_dict({**cfg, "prune": None})
    tokenizer = load_tokenizer(tc.tokenizer or tc.base_model)
    languages = resolve_languages(tc, [])
    model = build_model(tc, load_base_model(tc.base_model), languages, lang_token_ids(tokenizer, list(languages)))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = model.parameter_report()
    out = {"trainable": trainable, "base": report["base_params"], "percent_of_base": 100 * trainable / report["base_params"]}
    if tc.method == "lslo":
        from lslo.config import format_routing

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
            res = call(_cli("train", str(config_file), "--resume", "--no-progress"), log)
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
    from lslo.pruning import subspace_report

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


# -- rendering ---------------------------------------------------------------------------------------


def load_all(results_dir: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """experiment -> its runs' result JSONs (sorted by seed)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") == FORMAT:
            out.setdefault(data["experiment"], []).append(data)
    for runs in out.values():
        runs.sort(key=lambda r: r["seed"] or 0)
    return out


def in_group(result: Mapping[str, Any], direction: str, group: str) -> bool:
    """Whether a direction ("src-tgt") belongs to a tier group: "all", "low" (a low-resource language on either
    side), "no-low" (none), "high" (high-resource on both sides), or a column of GROUP_COLUMNS ("H->*": source tier high, "*->L": target tier low, ...)."""
    src, tgt = (result["tiers"][x] for x in direction.split("-"))
    if group == "high":
        return src == tgt == "high"
    if group in GROUP_LABELS:
        return group == "all" or ("low" in (src, tgt)) == (group == "low")
    left, right = group.split("->")
    tier = {"H": "high", "M": "medium", "L": "low"}
    return src == tier[left] if right == "*" else tgt == tier[right]


def score(result: Mapping[str, Any], metric: str, group: str) -> float | None:
    """A run's macro average over a tier group (a column of GROUP_COLUMNS or a key of GROUP_LABELS)."""
    if group not in ("low", "no-low", "high"):
        return result["groups"][metric].get(group)
    values = [d[metric] for key, d in result["directions"].items() if in_group(result, key, group)]
    return sum(values) / len(values) if values else None


def seed_noise(runs: Sequence[Mapping[str, Any]], metric: str, group: str) -> float | None:
    """How far apart two seeds' group averages are expected to land (95%), estimated from the directions:
    1.96 x sd over directions of the per-direction score difference between seeds / sqrt(directions).

    Two seeds give one observed range of the average, which can be near 0 by luck; the per-direction
    differences give many draws of the same noise. None with fewer than two seeds.
    """
    diffs = [b["directions"][k][metric] - a["directions"][k][metric]
             for i, a in enumerate(runs) for b in runs[i + 1:]
             for k in a["directions"] if k in b["directions"] and in_group(a, k, group)]  # fmt: skip
    n = sum(in_group(runs[0], k, group) for k in runs[0]["directions"]) if runs else 0
    return 1.96 * statistics.stdev(diffs) / math.sqrt(n) if len(diffs) > 1 and n else None


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, spread (max - min over seeds; None with one seed) and the number of seeds."""
    return {"mean": statistics.fmean(values), "spread": max(values) - min(values) if len(values) > 1 else None,
            "n": len(values)}  # fmt: skip


def agg(runs: Sequence[Mapping[str, Any]], metric: str, group: str) -> dict[str, Any] | None:
    """stats() of the runs' group averages, plus `noise` (seed_noise) and `bound`: the larger of the observed
    range and that estimate, what a difference must exceed to count as beyond the seed spread."""
    values = [v for v in (score(r, metric, group) for r in runs) if v is not None]
    if not values:
        return None
    out = stats(values)
    out["noise"] = seed_noise(runs, metric, group) if out["spread"] is not None else None
    out["bound"] = None if out["spread"] is None else max(out["spread"], out["noise"] or 0.0)
    return out


def _cell(s: Mapping[str, Any] | None, digits: int = 2) -> str:
    if s is None:
        return "–"
    text = f"{s['mean']:.{digits}f}"
    return text + (f" ± {s['spread'] / 2:.{digits}f}" if s["spread"] is not None else "")


def directions_better(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]], metric: str,
                      group: str) -> tuple[int, int, int]:  # fmt: skip
    """(directions where a's mean over seeds beats b's, directions where they are equal, directions compared)."""
    def means(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        keys = [k for k in runs[0]["directions"] if in_group(runs[0], k, group) and all(k in r["directions"] for r in runs)]
        return {k: statistics.fmean(r["directions"][k][metric] for r in runs) for k in keys}

    ma, mb = means(runs_a), means(runs_b)
    common = [k for k in ma if k in mb]
    return sum(ma[k] > mb[k] for k in common), sum(ma[k] == mb[k] for k in common), len(common)


def verdict(claim: Mapping[str, Any], data: Mapping[str, Sequence[Mapping[str, Any]]], metric: str = "spbleu") -> dict[str, Any]:
    """One claim: the difference a - b, the seed spread it is judged against and the verdict text.

    The difference exceeds the seed spread when |a - b| > the larger `bound` of a and b (their max-min range over
    seeds, or seed_noise's estimate where that is larger); when neither has two seeds, `NOISE`'s bound stands
    in. Runs of a that are runs of b (`same_as`: the search found b's routing) are compared with those only.
    """
    a, b, group = claim["a"], claim["b"], claim["group"]
    missing = [x for x in (a, b) if not data.get(x)]
    if missing:
        return {"delta": None, "spread": None, "verdict": f"{NOT_MEASURED} (missing: {', '.join(missing)})"}
    runs_a, runs_b, note = data[a], data[b], ""
    same = [r for r in runs_b if r["run"] in {x.get("same_as") for x in runs_a}]
    if same and len(same) == len(runs_a):
        runs_b, note = same, f" (the same run as {', '.join(r['run'] for r in same)})"
    sa, sb = agg(runs_a, metric, group), agg(runs_b, metric, group)
    if sa is None or sb is None:
        return {"delta": None, "spread": None, "verdict": f"{NOT_MEASURED} (no {group} directions)"}
    delta = sa["mean"] - sb["mean"]
    wins = directions_better(runs_a, runs_b, metric, group)
    bounds = [s["bound"] for s in (sa, sb) if s["bound"] is not None]
    source = "/".join(x for x, s in ((a, sa), (b, sb)) if s["bound"] is not None)
    noise = agg(data[NOISE], metric, group) if data.get(NOISE) else None
    if not bounds and noise is not None and noise["bound"] is not None:
        bounds, source = [noise["bound"]], f"{NOISE} (stand-in)"
    if not bounds:
        return {"delta": delta, "spread": None, "spread_of": None, "wins": wins,
                "against": delta < 0 if claim["kind"] == "kept" else delta <= 0,
                "verdict": f"seed spread {NOT_MEASURED} (one seed each); a - b = {delta:+.2f}{note}"}  # fmt: skip
    spread = max(bounds)
    beyond = abs(delta) > spread
    if claim["kind"] == "better":
        if beyond and delta > 0:
            text = f"supported: {a} better by {delta:+.2f}, beyond the seed spread"
        elif beyond:
            text = f"contradicted: {b} better by {-delta:.2f}, beyond the seed spread"
        else:
            text = f"not resolved: difference {delta:+.2f} within the seed spread"
    else:
        if beyond and delta < 0:
            text = f"contradicted: {a} loses {-delta:.2f}, beyond the seed spread"
        elif beyond:
            text = f"supported: {a} better by {delta:+.2f}, beyond the seed spread"
        else:
            text = f"supported: difference {delta:+.2f} within the seed spread"
    against = text.startswith(("contradicted", "not resolved"))
    return {"delta": delta, "spread": spread, "spread_of": source, "wins": wins, "against": against,
            "verdict": text + note}  # fmt: skip


def render(results_dir: str | os.PathLike) -> str:
    """The RESULTS.md section, from the result JSONs in `results_dir` only."""
    data = load_all(results_dir)
    order = ["base", *(e["name"] for e in EXPERIMENTS)]
    any_run = next((runs[0] for runs in data.values() if runs), None)
    rel = Path(results_dir).resolve()
    rel_text = str(rel.relative_to(ROOT)) if rel.is_relative_to(ROOT) else str(rel)
    lines = ["## bible12: the paper's experiments", ""]
    lines.append(f"Command: `make bench` (= `python benchmarks/bible12/run.py`) · rendered from `{rel_text}/*.json` "
                 "with `python benchmarks/bible12/run.py --render`.")  # fmt: skip
    if any_run is None:
        lines += ["", f"No run has finished yet: every result below is \"{NOT_MEASURED}\"."]
    else:
        m = any_run["machine"]
        commits = sorted({r["git_commit"] for runs in data.values() for r in runs})
        dates = sorted({r["machine"]["date"] for runs in data.values() for r in runs if r["machine"].get("date")})
        when = (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}") if dates else "date not recorded"
        budgets = sorted({(r["budget"]["steps"], r["budget"]["max_tokens"], r["budget"].get("precision", "auto"))
                          for runs in data.values() for r in runs})  # fmt: skip
        evals = sorted({(r["eval"]["sentences_per_direction"], r["eval"]["beams"], r["eval"]["directions"]) for runs in data.values() for r in runs})
        lines += [
            "",
            f"Base: `{any_run['base_model']}` · budget per run: "
            + "; ".join(f"{s} steps of <= {t} tokens ({p})" for s, t, p in budgets)
            + " · test: " + "; ".join(f"first {n} verses of each of {d} directions, beam {b}" for n, b, d in evals)
            + f" · machine: {m.get('gpu', m['cpu'])}, {m['cpu_cores']} cores, torch {m['torch']} · {when} · commits {', '.join(commits)}",
            "",
            f"Scores are macro averages over directions grouped by the source (X->*) or target (*->X) tier; "
            f"`mean ± h` is the mean over seeds and h half the max-min range (one seed: no ±). spBLEU is "
            f"`{any_run['metrics']['spbleu']}` (the base model's own SentencePiece model, not FLORES').",
        ]  # fmt: skip
        if len(budgets) > 1 or len(evals) > 1:
            lines += ["", "> warning: the runs were made with different budgets or test subsets; compare with care."]
    for metric, title in (("spbleu", "spBLEU"), ("chrf", "chrF++")):
        lines += ["", f"### {title}", "", "| experiment | seeds | " + " | ".join(GROUP_COLUMNS) + " |",
                  "|---|---:|" + "---:|" * len(GROUP_COLUMNS)]  # fmt: skip
        for name in order:
            runs = data.get(name, [])
            if not runs:
                lines.append(f"| {name} | 0 | {NOT_MEASURED} |" + " |" * (len(GROUP_COLUMNS) - 1))
                continue
            cells = [_cell(agg(runs, metric, g)) for g in GROUP_COLUMNS]
            lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", "### Cost", "", "| experiment | what | trainable params | % of base | training time (min) | peak RSS, training (MiB) |",
              "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for name in order:
        runs = data.get(name, [])
        about = "the base model, not fine-tuned" if name == "base" else experiment(name)["about"]
        if not runs:
            lines.append(f"| {name} | {about} | {NOT_MEASURED} | | | |")
            continue
        p = runs[0]["params"]
        count = f"{p['trainable']:,}"
        pct = f"{p['percent_of_base']:.3f}"
        if p.get("surviving") is not None:
            count += f" ({p['surviving']:,} after pruning)"
            pct += f" ({p['surviving_percent_of_base']:.3f})"
        if name == "base":
            lines.append(f"| {name} | {about} | 0 | 0 | – | – |")
            continue
        minutes = stats([r["train"]["seconds"] / 60 for r in runs])
        rss = stats([r["train"]["peak_rss_mib"] for r in runs])
        single = [r for r in runs if "1" in r["train"].get("omp_num_threads", [])]
        mark = "; ".join(r["run"] + (f", {r['train']['cpu_seconds'] / 60:.1f} CPU min" if r["train"].get("cpu_seconds") else "")
                         for r in single)  # fmt: skip
        mark = f" (single-threaded: {mark})" if mark else ""
        lines.append(f"| {name} | {about} | {count} | {pct} | {_cell(minutes, 1)}{mark} | {_cell(rss, 0)} |")
    lines += ["", "Runs marked *single-threaded* trained with `OMP_NUM_THREADS=1` beside another single-threaded job "
              "(two or three runs at a time on the 2 cores), which is slower per run than a training alone on both cores; "
              "their CPU time (user + system of the `lslo train` process) is the time on one core, whatever else ran."]  # fmt: skip
    lines += subspace_lines(data) + search_lines(data)
    lines += ["", "### The paper's claims on bible12", "",
              "Δ = first - second experiment (means over seeds). The *seed spread* of an experiment with two or more "
              "seeds is the larger of its max-min range over seeds and the range expected from its directions "
              "(1.96 x the sd over directions of the per-direction difference between seeds / sqrt(directions): "
              "two seeds give one draw of the range, the directions give many). Δ *exceeds the seed spread* when "
              "|Δ| is larger than the larger spread of the two experiments (when neither has two seeds, "
              f"`{NOISE}`'s stands in). The verdict is on spBLEU; *directions* counts the directions of the group "
              "where the first experiment scores higher (spBLEU, means over seeds).", "",
              "| claim (paper) | comparison | group | Δ spBLEU | Δ chrF++ | seed spread (spBLEU) | directions "
              "| verdict | likely reason, where the data leans against the claim |",
              "|---|---|---|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for claim in CLAIMS:
        v, vc = verdict(claim, data, "spbleu"), verdict(claim, data, "chrf")
        d = "–" if v["delta"] is None else f"{v['delta']:+.2f}"
        dc = "–" if vc["delta"] is None else f"{vc['delta']:+.2f}"
        sp = "–" if v["spread"] is None else f"{v['spread']:.2f} ({v['spread_of']})"
        group = GROUP_LABELS[claim["group"]]
        reason = claim["if_not"] if v.get("against") else ""
        wins = "–" if v.get("wins") is None else f"{v['wins'][0]}/{v['wins'][2]}" + (f" ({v['wins'][1]} equal)" if v["wins"][1] else "")
        lines.append(f"| {claim['claim']} | {claim['a']} vs {claim['b']} | {group} | {d} | {dc} | {sp} | {wins} | {v['verdict']} | {reason} |")
    lines += reproduction_lines(results_dir)
    return "\n".join(lines)


def subspace_lines(data: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Each pruned run's surviving subspace per tier (next to the unpruned count) and per position."""
    pruned = [r for name in data for r in data[name] if r.get("params", {}).get("subspace")]
    if not pruned:
        return []
    lines = ["", "### Pruning: what each tier keeps", "",
             "Per language, the LSLo parameters (A and B entries) before pruning and after (the masks of the trained "
             "run, counted by `LSLoModel.parameter_report`), as % of the base; *kept* = the surviving share of the "
             "pruned matrices (B by default) summed over the tier's languages.", "",
             "| run | scope | tier | languages | params per language before → after | % of base per language before → after | kept of pruned |",
             "|---|---|---|---|---:|---:|---:|"]  # fmt: skip
    for r in pruned:
        sub, before = r["params"]["subspace"], r["params"].get("tiers", {})
        for tier, t in sub["tiers"].items():
            n = len(t["languages"])
            b = before.get(tier)
            count = (f"{b['params'] // n:,} → " if b else "") + f"{t['params'] // n:,}"
            pct = (f"{b['percent_per_language']:.3f}% → " if b else "") + f"{t['percent_per_language']:.3f}%"
            lines.append(f"| {r['run']} | {r['config']['prune']['scope']} | {tier} | {' '.join(t['languages'])} | {count} | {pct} | "
                         f"{100 * t['kept_share']:.1f}% |")  # fmt: skip
    lines += ["", "Kept share of the pruned matrices by side and position (all tiers):", "",
              "| run | " + " | ".join(f"{p['side'][:3]} {p['position']}" for p in pruned[0]["params"]["subspace"]["positions"]) + " |",
              "|---|" + "---:|" * len(pruned[0]["params"]["subspace"]["positions"])]  # fmt: skip
    for r in pruned:
        lines.append(f"| {r['run']} | " + " | ".join(f"{100 * p['share']:.1f}%" for p in r["params"]["subspace"]["positions"]) + " |")
    return lines


def search_lines(data: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The routing `lslo search routing` found, its learned target weights by layer, next to the paper's routing."""
    searched = [r for name in data for r in data[name] if r.get("search")]
    if not searched:
        return []
    lines = ["", "### Routing search", "",
             "`lslo search routing` trains both a source- and a target-indexed LoRA at every LSLo position, mixed by "
             "learned softmax weights (one pair per layer and side); a layer routes by target when its target weight "
             "exceeds 0.5. Weights are the target's share.", "",
             "| run | search steps | side | routing found | paper's routing (lslo-228) | target weight by layer (bottom → top) |",
             "|---|---:|---|---|---|---|"]  # fmt: skip
    paper = (data.get("lslo-228") or [{}])[0].get("params", {}).get("routing", {})
    for r in searched:
        weights = r["search"].get("weights") or {}
        for side in ("encoder", "decoder"):
            keys = sorted((k for k in weights if k.split(".")[0] == side), key=lambda k: int(k.split(".")[1]))
            w = " ".join(f"{weights[k][1]:.2f}" + ("*" if abs(weights[k][1] - 0.5) < NEAR_TIE else "") for k in keys) or "–"
            ours = r["search"]["routing"][f"{side}_routing"]
            lines.append(f"| {r['run']} | {r['search']['steps']} | {side} | `{ours}` | `{paper.get(f'{side}_routing', '–')}` | {w} |")
    lines += ["", f"\\* within {NEAR_TIE} of the 0.5 threshold: a near tie, which another seed or a longer search may flip."]
    for r in searched:
        if r.get("same_as"):
            lines += ["", f"{r['run']} trains exactly what {r['same_as']} trains (same routing per layer, same seed and "
                          f"budget), so {r['same_as']}'s result stands for it: it was not trained again."]  # fmt: skip
    return lines


def render_to_md(results_dir: str | os.PathLike, md: str | os.PathLike | None = None) -> Path:
    """Update the section in `md` (default: benchmarks/RESULTS.md); returns the file written."""
    default = results_md.RESULTS_MD
    results_md.RESULTS_MD = Path(md) if md else default
    try:
        results_md.update_section(SECTION, render(results_dir))
        return results_md.RESULTS_MD
    finally:
        results_md.RESULTS_MD = default


# -- command line ------------------------------------------------------------------------------------


# -- reproduction: re-run a finished run from scratch and compare it with its committed JSON ----------


def reproduction(committed: Mapping[str, Any], reproduced: Mapping[str, Any],
                 data: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:  # fmt: skip
    """Committed vs re-run scores of one run, judged against the seed spread of its experiment (all directions).

    The spread is agg's `bound` (max-min range or seed_noise) over the committed seeds of the run's experiment,
    or of `NOISE` when the experiment has one seed; with neither, the comparison is reported without a verdict.
    """
    name = committed["experiment"]
    metrics, dirs = {}, committed["directions"]
    for metric in METRICS:
        a, b = committed["groups"][metric], reproduced["groups"][metric]
        metrics[metric] = {
            "committed": a["all"], "reproduced": b["all"], "delta": b["all"] - a["all"],
            "groups": {g: b[g] - a[g] for g in GROUP_COLUMNS if a.get(g) is not None and b.get(g) is not None},
            "max_direction_delta": max(abs(reproduced["directions"][k][metric] - d[metric]) for k, d in dirs.items()),
        }  # fmt: skip
    spread, spread_of = None, None
    for source in (name, NOISE):
        s = agg(data.get(source, []), "spbleu", "all")
        if s is not None and s["bound"] is not None:
            spread, spread_of = s["bound"], source + ("" if source == name else " (stand-in)")
            break
    within = None if spread is None else abs(metrics["spbleu"]["delta"]) <= spread
    return {"format": REPRODUCE_FORMAT, "run": committed["run"], "experiment": name, "metrics": metrics,
            "spread": spread, "spread_of": spread_of, "within_spread": within,
            "committed": {"git_commit": committed["git_commit"], "date": committed["machine"].get("date"),
                          **_train_facts(committed)},
            "reproduced": {"git_commit": reproduced["git_commit"], "machine": reproduced["machine"],
                           **_train_facts(reproduced)}}  # fmt: skip


def _train_facts(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a reproduction compares of a run's training: time, validation loss and thread count (which moves the
    numbers a little: see the README)."""
    train = result.get("train") or {}
    threads = train.get("omp_num_threads")  # one entry per session; absent: OMP_NUM_THREADS unset (all cores)
    return {"train_seconds": train.get("seconds"), "valid_loss": train.get("valid_loss"),
            "omp_num_threads": ",".join(sorted(set(threads))) if threads else None}  # fmt: skip


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


def reproduction_lines(results_dir: str | os.PathLike) -> list[str]:
    paths = sorted(Path(results_dir).glob("reproduce.*.json"))
    if not paths:
        return []
    lines = ["", "### Reproduction", "",
             "A finished run trained and evaluated again from scratch (`run.py --reproduce RUN`, in a scratch folder) "
             "and compared with its committed JSON; the verdict is on spBLEU over all directions, against the seed "
             "spread of the run's experiment.", "",
             "| run | spBLEU committed → re-run | chrF++ committed → re-run | largest change of one direction (spBLEU / chrF++) "
             "| seed spread (spBLEU) | verdict | re-run: commit, machine, date | validation loss committed → re-run "
             "| training threads committed → re-run | training time committed → re-run (min) |",
             "|---|---:|---:|---:|---:|---|---|---:|---:|---:|"]  # fmt: skip
    for path in paths:
        r = json.loads(path.read_text(encoding="utf-8"))
        if r.get("format") != REPRODUCE_FORMAT:
            continue
        sb, sc = r["metrics"]["spbleu"], r["metrics"]["chrf"]
        if r["within_spread"] is None:
            text, spread = f"{NOT_MEASURED}: seed spread unknown; Δ = {sb['delta']:+.2f}", "–"
        else:
            spread = f"{r['spread']:.2f} ({r['spread_of']})"
            text = ("reproduced" if r["within_spread"] else "NOT reproduced") + f": Δ = {sb['delta']:+.2f}"
        m = r["reproduced"]["machine"]
        c, p = r["committed"], r["reproduced"]
        minutes = " → ".join("–" if t is None else f"{t / 60:.1f}" for t in (c["train_seconds"], p["train_seconds"]))
        loss = " → ".join("–" if v is None else f"{v:.6f}" for v in (c.get("valid_loss"), p.get("valid_loss")))
        threads = " → ".join("all cores" if x.get("omp_num_threads") is None else x["omp_num_threads"] for x in (c, p))
        lines.append(f"| {r['run']} | {sb['committed']:.2f} → {sb['reproduced']:.2f} | {sc['committed']:.2f} → {sc['reproduced']:.2f} "
                     f"| {sb['max_direction_delta']:.2f} / {sc['max_direction_delta']:.2f} | {spread} | {text} "
                     f"| {p['git_commit']}, {m.get('gpu', m['cpu'])} {m['cpu_cores']} cores, {m.get('date', '?')} | {loss} "
                     f"| {threads} | {minutes} |")  # fmt: skip
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="base/bible12-small", help="the shipped base model (default: %(default)s)")
    ap.add_argument("--data", default="data/bible12")
    ap.add_argument("--config", default=str(CONFIG.relative_to(ROOT)), help="the run config the experiments override")
    ap.add_argument("--steps", type=int, default=STEPS, help="optimizer steps per run, every method (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="tokens per batch, every method (default: %(default)s)")
    ap.add_argument("--precision", default="bf16", choices=["auto", "fp32", "bf16"],
                    help="training autocast, every method (default: %(default)s; bf16 is faster on CPUs with bf16 "
                         "instructions and on GPUs; fp32 where the CPU lacks them)")  # fmt: skip
    ap.add_argument("--search-steps", type=int, default=SEARCH_STEPS, help="steps of the routing search (default: %(default)s)")
    ap.add_argument("--max-sentences", type=int, default=None, help=f"test verses per direction (default: {MAX_SENTENCES}; regime: 50)")
    ap.add_argument("--beams", type=int, default=None, help=f"beam size (default: {BEAMS}; regime: 1)")
    ap.add_argument("--valid-per-direction", type=int, default=VALID_PER_DIRECTION,
                    help="validation pairs per direction, scored once at the end of training (default: %(default)s)")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME", help="experiments or runs (e.g. lslo-228, full.seed2, base)")
    ap.add_argument("--list", action="store_true", help="print the matrix and what is finished, then stop")
    ap.add_argument("--render", action="store_true", help="only regenerate the RESULTS.md section from the result JSONs")
    ap.add_argument("--results-dir", default=None, help="per-run result JSONs (default: the committed folder of the family)")
    ap.add_argument("--runs-dir", default=None, help="checkpoints, logs, translations (default: runs/bench; regime: runs/bench-regime)")
    ap.add_argument("--family", choices=["matrix", "regime"], default="matrix",
                    help="matrix: the paper's experiments at a fixed step budget (default); regime: the paper's 15 epochs over "
                         "a small subset, learning rates swept per method (benchmarks/bible12/regime.py)")  # fmt: skip
    ap.add_argument("--results-md", default=None, help="the markdown file to update (default: benchmarks/RESULTS.md)")
    ap.add_argument("--reproduce", metavar="RUN", help="train and evaluate a finished run again (in runs/bench-reproduce/) "
                    "and write results/reproduce.RUN.json: committed vs re-run scores and the seed spread")  # fmt: skip
    opts = ap.parse_args(argv)
    if opts.family == "regime":
        import regime

        defaults = {"max_sentences": regime.MAX_SENTENCES, "beams": regime.BEAMS, "results_dir": str(regime.RESULTS_DIR),
                    "runs_dir": str(regime.RUNS_DIR)}  # fmt: skip
    else:
        defaults = {"max_sentences": MAX_SENTENCES, "beams": BEAMS, "results_dir": str(RESULTS_DIR), "runs_dir": str(RUNS_DIR)}
    for key, value in defaults.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.family == "regime":
        return regime_main(opts)
    if opts.render:
        print(f"updated section {SECTION!r} of {render_to_md(opts.results_dir, opts.results_md)}")
        return 0
    runs = select(plan(opts), opts.only)
    if opts.list:
        for r in runs:
            left = steps_left(r, opts.runs_dir, opts.results_dir)
            status = "finished" if not left else "to do: " + ", ".join(left)
            about = "evaluate the base once" if r["run"] == "base" else experiment(r["experiment"])["about"]
            over = "" if r["run"] == "base" else " " + json.dumps(experiment(r["experiment"])["overrides"])
            print(f"{r['run']:<28} {status:<32} {about}{over}")
        return 0
    if not Path(opts.base).is_dir():
        print(f"run.py: error: --base {opts.base}: no such model folder; build it with `make base` or give --base", file=sys.stderr)
        return 2
    try:
        if opts.reproduce:
            r = reproduce(opts)
            print(f"{r['run']}: spBLEU {r['metrics']['spbleu']['committed']:.2f} committed, {r['metrics']['spbleu']['reproduced']:.2f} "
                  f"re-run; within the seed spread: {r['within_spread']}")  # fmt: skip
        else:
            run_matrix(runs, opts)
    except BenchError as err:
        print(f"run.py: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"run.py: stopped ({err}); run the same command again to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("run.py: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"updated section {SECTION!r} of {render_to_md(opts.results_dir, opts.results_md)}")
    return 0


def regime_main(opts: argparse.Namespace) -> int:
    """`--family regime`: the same runner's steps and statistics on the regime family (regime.py)."""
    import regime

    try:
        if opts.render:
            print(f"updated section {regime.SECTION!r} of {regime.render_to_md(opts)}")
            return 0
        if not opts.list and not Path(opts.base).is_dir():
            raise BenchError(f"--base {opts.base}: no such model folder; build it with `make base` or give --base")
        return regime.run_family(opts)
    except BenchError as err:
        print(f"run.py: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"run.py: stopped ({err}); run the same command again to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("run.py: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
