"""`--family newlang`: adding languages the shipped base has never seen, on bible22 (bible12 + es, hi, tr).

    python benchmarks/bible12/run.py --family newlang --list          # the plan and what is finished
    python benchmarks/bible12/run.py --family newlang                 # run what is unfinished (resumable)
    python benchmarks/bible12/run.py --family newlang --render        # RESULTS.md section + curves (newlang_render.py)

Starting points: `base` (the shipped base; for lslo-add its 12 languages get fresh LSLo LoRAs, B = 0, so it
translates as the base does) and `lslo12` (lslo-add only: full fine-tuning has no recipe for an LSLo model) an LSLo model fine-tuned on the 12 languages, `configs/bible12-lslo.yaml` for
`--steps` steps: the situation of an LSLo user adding a language; its LoRAs stay frozen. Language sets: es (a
relative of fr/it), hi (a script the base has no pieces for), tr (unrelated), each alone, and `seq`: es, then hi,
then tr added one after another (chained runs; the last one is scored; its first stage is the es-alone run). Methods, on the same new-language
data and step budget:

- `lslo-add`: `new_languages` on the starting point (old LoRAs and base frozen, new rows masked for old targets);
- `full-ext`: the practitioners' recipe, `method: full` with the extended vocabulary, on the new directions;
- `full-ext-replay`: the same with every direction of the 15 languages (replay of the old directions);
- `lora-ext`: one shared peft LoRA on LSLo's linears, of the new language's LSLo rank (its tier's), with the new
  rows trainable (peft `trainable_token_indices`); languages alone only (a chain would need each stage merged).

Learning rates, one rule fixed before any run: each method takes the centre of its class in the project's sweep
protocol (adapters 2e-3, full fine-tuning 2e-4; `regime_family.LR_CENTRE`), unswept here.

A run is: `lslo train --resume` (checkpoints under `--runs-dir`, default runs/bench-newlang), `lslo eval` on the
132 old directions and on the new language's directions (greedy, `--max-sentences` test verses each), and a
result JSON in benchmarks/bible12/results-newlang/: new-language spBLEU/chrF++ (into and out of it), the change
on the 132 old directions against the starting point's own evaluation (mean delta, and the number of changed
hypotheses: expected 0 for lslo-add), CPU seconds and the tokenizer extension report.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bible12.matrix import LR_ADAPTER, LR_FULL, ROOT
from benchmarks.bible12.newlang_render import FORMAT, train_cpu
from benchmarks.bible12.runner import BenchError, _cli, _write_yaml, call, last_json, read_state, write_state
from benchmarks.results_md import machine
from lslo.io import write_json
from lslo.scoring import PieceTokenizer, piece_tokenizer, rescore

RESULTS_DIR = ROOT / "benchmarks" / "bible12" / "results-newlang"
RUNS_DIR = ROOT / "runs" / "bench-newlang"
SCORING_SPM = "scoring-spm.model"  # in the bible22 folder: the family's spBLEU pieces (`scoring_pieces`)
OLD = ("en", "fr", "it", "de", "zh", "ja", "ko", "ru", "sw", "tl", "fa", "vi")
NEW: dict[str, dict[str, Any]] = {"es": {"tier": "medium", "related": "fr"}, "hi": {"tier": "low"}, "tr": {"tier": "low"}}
SETS: dict[str, tuple[str, ...]] = {"es": ("es",), "hi": ("hi",), "tr": ("tr",), "seq": ("es", "hi", "tr")}
METHODS = ("lslo-add", "full-ext", "full-ext-replay", "lora-ext")
RANKS = {"high": 2, "medium": 2, "low": 8}  # LSLo's default ranks (lslo.config); lora-ext takes the new language's
STARTS = ("base", "lslo12")
LR = {"lslo-add": LR_ADAPTER, "full-ext": LR_FULL, "full-ext-replay": LR_FULL, "lora-ext": LR_ADAPTER}  # class centres
SEEDS = {"main": (1, 2), "other": (1,)}
VALID_CURVES = 10  # validation verses per direction: curves only (no `keep_best`: every run's last model is scored)


def plan(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run: the starting points' own runs, then start x set x method x seed (seq: one run per stage)."""
    runs: list[dict[str, Any]] = [{"run": f"start-{s}", "kind": "start", "scored": True} for s in STARTS]
    for start in STARTS:
        for name, langs in SETS.items():
            for method in METHODS if start == "base" else ("lslo-add",):  # full FT of an LSLo model: no such recipe
                if method == "lora-ext" and len(langs) > 1:
                    continue
                main_row = name in ("es", "seq") and method in ("lslo-add", "full-ext")  # two seeds
                for seed in SEEDS["main" if main_row else "other"]:
                    alone = f"{start}.{langs[0]}.{method}.seed{seed}"  # a chain's first stage is that run, same config
                    prev, first = (alone, 2) if len(langs) > 1 and any(r["run"] == alone for r in runs) else (None, 1)
                    for k in range(first, len(langs) + 1):
                        tag = f"{start}.{name}.{method}.seed{seed}" + (f".stage{k}" if len(langs) > 1 else "")
                        runs.append({"run": tag, "kind": "add", "start": start, "set": name, "method": method, "seed": seed,
                                     "langs": list(langs[:k]), "new": langs[k - 1], "after": prev,
                                     "scored": k == len(langs)})  # fmt: skip
                        prev = tag
    return runs


def changed_hypotheses(before: Path, after: Path, directions: Sequence[str]) -> dict[str, int]:
    """Per direction, how many hypothesis lines differ between two `lslo eval` output folders."""
    out = {}
    for d in directions:
        a = (before / "directions" / d / "hyp.txt").read_text(encoding="utf-8").splitlines()
        b = (after / "directions" / d / "hyp.txt").read_text(encoding="utf-8").splitlines()
        if len(a) != len(b):
            raise BenchError(f"{after}: {d} has {len(b)} hypotheses, the starting point {len(a)}; evaluate the same verses")
        out[d] = sum(x != y for x, y in zip(a, b, strict=True))
    return out


def old_directions() -> list[str]:
    return [f"{s}-{t}" for s in OLD for t in OLD if s != t]


def new_directions(langs: Sequence[str]) -> list[str]:
    every = (*OLD, *langs)
    return [f"{s}-{t}" for s in every for t in every if s != t and (s in langs or t in langs)]


def run_config(run: Mapping[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    """The `lslo train` config of one run."""
    runs = Path(opts.runs_dir)
    cfg: dict[str, Any] = {
        "data": str(Path(opts.data).parent / "bible22"), "base_model": opts.base, "out_dir": str(runs / run["run"] / "train"),
        "languages": {c: t for c, t in _tiers().items()}, "max_steps": opts.steps, "max_tokens": opts.max_tokens,
        "lr": LR[run["method"]], "warmup_steps": 100, "label_smoothing": 0.1, "precision": opts.precision, "seed": run["seed"],
        "save_every": 100, "eval_every": max(100, opts.steps // 5), "valid_max_per_direction": VALID_CURVES, "progress": False,
        "new_languages": {run["new"]: NEW[run["new"]]}, "new_language_vocab": 2000,
    }  # fmt: skip
    previous = runs / run["after"] / "train" if run["after"] else None
    if run["method"] == "lslo-add":
        cfg["method"] = "lslo"
        start = previous or (runs / "start-lslo12" / "train" if run["start"] == "lslo12" else None)
        if start is not None:
            cfg["start_from"] = str(start)
    elif run["method"] == "lora-ext":
        cfg["method"] = "lora"
        cfg["lora_rank"] = RANKS[NEW[run["new"]]["tier"]]
    else:
        cfg["method"] = "full"
        if previous is not None:
            cfg["base_model"] = str(previous / "model")
        if run["method"] == "full-ext-replay":
            cfg["pairs"] = new_directions(run["langs"]) + old_directions()
    return cfg


def _tiers() -> dict[str, str]:
    from lslo.languages import BIBLE12_TIERS

    return dict(BIBLE12_TIERS)


def scoring_pieces(data: Path) -> PieceTokenizer:
    """The family's spBLEU piece model, one for every run: a SentencePiece unigram model trained on bible22's
    training text of all its languages (built once, deterministically, beside the data). The shipped base's own
    model has no pieces for hi's script (byte pieces: a byte-level BLEU), and an extended model's pieces depend on
    the run; FLORES-200's model would do, but nothing may be downloaded here."""
    import sentencepiece as spm

    path = data / SCORING_SPM
    if not path.is_file():
        lines = [line for f in sorted((data / "train").glob("*.txt")) for line in f.read_text(encoding="utf-8").splitlines()]
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=f, model_type="unigram",
                                           vocab_size=8000, hard_vocab_limit=False, character_coverage=0.9995,
                                           byte_fallback=True, num_threads=1, shuffle_input_sentence=False,
                                           minloglevel=2)  # fmt: skip
        os.replace(tmp, path)
    return piece_tokenizer(spm=path)


def evaluate(model: Path, out: Path, directions: Sequence[str], opts: argparse.Namespace, log: Path) -> dict[str, Any]:
    """`lslo eval` (cached), then its hypotheses scored again with the family's piece model (`scoring_pieces`)."""
    data = Path(opts.data).parent / "bible22"
    if not (out / "results.json").is_file():
        call(_cli("eval", str(model), "--data", str(data), "--split", "test", "--out", str(out),
                  "--directions", *directions, "--beams", str(opts.beams), "--max-sentences", str(opts.max_sentences),
                  "--no-progress"), log)  # fmt: skip
    return scored_results(out, data)


def scored_results(out: Path, data: Path) -> dict[str, Any]:
    """An `lslo eval` folder's results under the family's piece model (scored again once, beside it)."""
    pieces = scoring_pieces(data)
    scored = out.with_name(f"{out.name}.scored-{pieces.info['sha256'][:12]}")
    if not (scored / "results.json").is_file():
        rescore(out, scored, pieces)
    return json.loads((scored / "results.json").read_text(encoding="utf-8"))


def execute(run: dict[str, Any], opts: argparse.Namespace) -> dict[str, Any] | None:
    """Train (resumable), evaluate and (for a scored run) write the result JSON; returns it."""
    runs = Path(opts.runs_dir)
    run_dir = runs / run["run"]
    state = read_state(run_dir)
    if run["kind"] == "start":
        if run["run"] == "start-base":
            model = Path(opts.base)
        else:
            model = run_dir / "train"
            if not state.get("train", {}).get("done"):
                cfg = {"data": opts.data, "base_model": opts.base, "out_dir": str(model), "max_steps": opts.steps,
                       "max_epochs": None, "max_tokens": opts.max_tokens, "precision": opts.precision, "progress": False}  # fmt: skip
                _write_yaml(run_dir / "train.yaml", cfg)
                summary = call(_cli("train", "configs/bible12-lslo.yaml", "--resume", *[f"--set={k}={v}" for k, v in cfg.items()
                                                                                       if v is not None]), run_dir / "train.log")  # fmt: skip
                write_state(run_dir, {**state, "train": {"done": True, **summary}})
        old = evaluate(model, run_dir / "eval-old", old_directions(), opts, run_dir / "eval-old.log")
        result = {"format": FORMAT, "run": run["run"], "start": run["run"].removeprefix("start-"), "kind": "start",
                  "tiers": _tiers(), "old": _mean_scores(old), "old_directions": _direction_scores(old),
                  "train": read_state(run_dir).get("train"), "machine": machine(), "settings": _settings(opts)}  # fmt: skip
        write_json(Path(opts.results_dir) / f"{run['run']}.json", result)
        return result
    if not state.get("train", {}).get("done"):
        _write_yaml(run_dir / "train.yaml", run_config(run, opts))
        res = call(_cli("train", str(run_dir / "train.yaml"), "--resume"), run_dir / "train.log")
        summary = last_json((run_dir / "train.log").read_text(encoding="utf-8"))
        write_state(run_dir, {**state, "train": {"done": True, **res, "summary": summary}})
        state = read_state(run_dir)
    if not run["scored"]:
        return None
    model = run_dir / "train"
    old = evaluate(model, run_dir / "eval-old", old_directions(), opts, run_dir / "eval-old.log")
    new = evaluate(model, run_dir / "eval-new", new_directions(run["langs"]), opts, run_dir / "eval-new.log")
    start_eval = runs / f"start-{run['start']}" / "eval-old"
    changed = changed_hypotheses(start_eval, run_dir / "eval-old", old_directions())
    start_scores = scored_results(start_eval, Path(opts.data).parent / "bible22")
    report = json.loads((model / "new_languages.json").read_text(encoding="utf-8"))["report"]
    earlier = None
    if len(run["langs"]) > 1:  # the chain's first language: its directions against its own (alone) run, the first stage
        # evaluated on their own, as the alone run's eval-new was: `lslo eval` batches mix directions and cap a batch's
        # length by its longest source, so only the same directions give the same batches (and the same caps)
        first = run["langs"][0]
        alone = f"{run['start']}.{first}.{run['method']}.seed{run['seed']}"
        dirs = new_directions([first])
        evaluate(model, run_dir / "eval-earlier", dirs, opts, run_dir / "eval-earlier.log")
        by_dir = changed_hypotheses(runs / alone / "eval-new", run_dir / "eval-earlier", dirs)
        earlier = {"language": first, "against": alone, "changed": sum(by_dir.values()), "of": len(dirs) * opts.max_sentences}
    result = {"format": FORMAT, "run": run["run"], "kind": "add", "start": run["start"], "set": run["set"],
              "method": run["method"], "seed": run["seed"], "new_languages": run["langs"],
              "tiers": {**_tiers(), **{c: NEW[c]["tier"] for c in run["langs"]}},
              "new": _mean_scores(new), "old": _mean_scores(old), "old_start": _mean_scores(start_scores),
              "new_directions": _direction_scores(new), "old_directions": _direction_scores(old),
              "old_changed_hypotheses": sum(changed.values()), "old_changed_by_direction": changed,
              "old_hypotheses": len(old_directions()) * opts.max_sentences, "earlier_language": earlier,
              "chain_cpu_s": _chain_cpu(run, opts),
              "trained_parameters": trained_parameters(model, run["method"], run["new"], report),
              "valid_curve": _valid_curve(model / "metrics.jsonl"), "train": state["train"], "extension": report,
              "lr": LR[run["method"]], "machine": machine(), "settings": _settings(opts)}  # fmt: skip
    write_json(Path(opts.results_dir) / f"{run['run']}.json", result)
    return result


def _chain_cpu(run: Mapping[str, Any], opts: argparse.Namespace) -> float | None:
    """CPU seconds of training the whole chain up to this run (every stage's), None for a run that is not chained."""
    if not run["after"]:
        return None
    by_name = {r["run"]: r for r in plan(opts)}
    total, r = 0.0, run
    while r is not None:
        total += train_cpu(read_state(Path(opts.runs_dir) / r["run"])["train"])
        r = by_name[r["after"]] if r["after"] else None
    return total


def _settings(opts: argparse.Namespace) -> dict[str, Any]:
    pieces = scoring_pieces(Path(opts.data).parent / "bible22")
    return {"steps": opts.steps, "max_tokens": opts.max_tokens, "precision": opts.precision, "beams": opts.beams,
            "max_sentences": opts.max_sentences, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "spbleu": {"metric": pieces.metric, "sha256": pieces.info["sha256"]}}  # fmt: skip


def _direction_scores(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per direction: spBLEU and chrF++ (`lslo eval`'s "chrf" is chrF++, word order 2)."""
    return {d: {"spbleu": r["spbleu"], "chrf": r["chrf"]} for d, r in results["directions"].items()}


def _valid_curve(metrics: Path) -> list[dict[str, float]]:
    """The run's validation records (new directions): step, loss, NLL."""
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"step": r["step"], "valid_loss": r["valid_loss"], "valid_nll": r["valid_nll"]} for r in rows if "valid_nll" in r]


def trained_parameters(run_dir: Path, method: str, new: str, report: Mapping[str, Any]) -> int:
    """The parameters the run trained: the new language's LoRA and its embedding rows (lslo-add); the shared LoRA
    and the new rows (lora-ext); every parameter (full)."""
    from lslo.loading import load_model

    model, _, _ = load_model(str(run_dir))
    d_model = int(model.config.d_model)
    rows = int(report["pieces_added"]) + 1  # the stage's new pieces and the language's token row (new or reused)
    if method == "lslo-add":
        return int(model.parameter_report()["languages"][new]["params"]) + rows * d_model
    if method == "lora-ext":
        lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
        return int(lora) + rows * d_model
    return int(sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()))


def _mean_scores(results: Mapping[str, Any]) -> dict[str, float]:
    rows = list(results["directions"].values()) if isinstance(results["directions"], dict) else list(results["directions"])
    keys = [k for k in ("spbleu", "chrf++", "chrf") if rows and k in rows[0]]
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def finished(run: Mapping[str, Any], opts: argparse.Namespace) -> bool:
    if not run["scored"]:
        return bool(read_state(Path(opts.runs_dir) / run["run"]).get("train", {}).get("done"))
    path = Path(opts.results_dir) / f"{run['run']}.json"  # an older format's JSON is redone (training, evals cached)
    return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT


def run_family(opts: argparse.Namespace) -> int:
    """List the plan, or run every unfinished run in order (each resumable)."""
    from benchmarks.bible12.newlang_render import render_to_md

    if opts.render:
        print(f"wrote {render_to_md(opts.results_dir, opts.results_md)}")
        return 0
    runs = plan(opts)
    if opts.only:
        runs = [r for r in runs if any(r["run"] == o or r["run"].startswith(o + ".") for o in opts.only)]
    if opts.list:
        for r in runs:
            print(f"{r['run']:<48} {'finished' if finished(r, opts) else 'to do'}")
        return 0
    data = Path(opts.data).parent / "bible22"
    if not (data / "manifest.json").is_file():  # bible12 + es, hi, tr on bible12's verse ids (bible12 only read)
        call(_cli("data", "bible-unseen", "--bible12", opts.data, "--out", str(data), "--languages", *NEW),
             Path(opts.runs_dir) / "bible22.log")  # fmt: skip
    for r in runs:
        if not finished(r, opts):
            execute(r, opts)
    print(f"wrote {render_to_md(opts.results_dir, opts.results_md)}")
    return 0
