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

This file is the command line only. The package `benchmarks.bible12`: `matrix.py` (the experiments and claims
as data), `runner.py` (plan, steps, result JSON, reproduction), `analysis.py` (seed spread, verdicts),
`render.py` (the RESULTS.md section) and `regime.py` (the second family, `--family regime`; its parts in
`regime_*.py`).
Also runs as `python -m benchmarks.bible12.run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python benchmarks/bible12/run.py): import it as the package it is
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "benchmarks.bible12"  # noqa: A001

from benchmarks.bible12 import regime  # noqa: E402
from benchmarks.bible12.matrix import (  # noqa: E402
    BEAMS,
    CONFIG,
    MAX_SENTENCES,
    MAX_TOKENS,
    RESULTS_DIR,
    ROOT,
    RUNS_DIR,
    SEARCH_STEPS,
    SECTION,
    STEPS,
    VALID_PER_DIRECTION,
    experiment,
)  # fmt: skip
from benchmarks.bible12.render import render_to_md  # noqa: E402
from benchmarks.bible12.runner import BenchError, Interrupted, plan, reproduce, run_matrix, select, steps_left  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="base/bible12-small", help="the shipped base model (default: %(default)s)")
    ap.add_argument("--data", default="data/bible12")
    ap.add_argument("--config", default=str(CONFIG.relative_to(ROOT)), help="the run config the experiments override")
    ap.add_argument("--steps", type=int, default=STEPS, help="optimizer steps per run, every method (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="tokens per batch, every method (default: %(default)s)")
    ap.add_argument("--precision", default="fast", choices=["auto", "fast", "fp32", "bf16"],
                    help="training autocast, every method (default: %(default)s = bf16 on GPUs and on CPUs with bf16 "
                         "instructions, where the committed runs used it; fp32 elsewhere, where bf16 is emulated and "
                         "~27x slower)")  # fmt: skip
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
    ap.add_argument("--family", choices=["matrix", "regime", "newlang"], default="matrix",
                    help="matrix: the paper's experiments at a fixed step budget (default); regime: the paper's 15 epochs over "
                         "a small subset, learning rates swept per method (benchmarks/bible12/regime.py)")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=None, metavar="N",
                    help="regime: runs trained side by side, the cores split between them (default: one per core, with "
                         "OMP_NUM_THREADS=1; two one-thread jobs did 1.4x the tokens of one two-thread job on 2 cores, "
                         "RESULTS.md train_throughput; --jobs 1: one run at a time on every core)")  # fmt: skip
    ap.add_argument("--results-md", default=None, help="the markdown file to update (default: benchmarks/RESULTS.md)")
    ap.add_argument("--reproduce", metavar="RUN", help="train and evaluate a finished run again (in runs/bench-reproduce/; regime: runs/bench-regime-reproduce/) "
                    "and write results/reproduce.RUN.json: committed vs re-run scores and the seed spread")  # fmt: skip
    opts = ap.parse_args(argv)
    if opts.family == "newlang":  # benchmarks/bible12/newlang.py
        from benchmarks.bible12 import newlang

        defaults = {"max_sentences": 30, "beams": 1, "results_dir": str(newlang.RESULTS_DIR), "runs_dir": str(newlang.RUNS_DIR)}
    elif opts.family == "regime":
        defaults = {"max_sentences": regime.MAX_SENTENCES, "beams": regime.BEAMS, "results_dir": str(regime.RESULTS_DIR),
                    "runs_dir": str(regime.RUNS_DIR)}  # fmt: skip
    else:
        defaults = {"max_sentences": MAX_SENTENCES, "beams": BEAMS, "results_dir": str(RESULTS_DIR), "runs_dir": str(RUNS_DIR)}
    for key, value in defaults.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and run; bad use is one line and exit 2, an interruption exit 130 (resumable)."""
    opts = parse_args(argv)
    try:
        if opts.jobs is not None and opts.jobs < 1:
            raise BenchError(f"--jobs {opts.jobs}: give 1 or more")
        if opts.jobs not in (None, 1) and opts.family != "regime":
            raise BenchError("--jobs: only the regime family runs jobs side by side; add --family regime or drop --jobs")
        if opts.family == "newlang":
            from benchmarks.bible12 import newlang

            return newlang.run_family(opts)
        return regime_main(opts) if opts.family == "regime" else matrix_main(opts)
    except BenchError as err:
        print(f"run.py: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as err:
        print(f"run.py: stopped ({err}); run the same command again to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("run.py: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def matrix_main(opts: argparse.Namespace) -> int:
    """The matrix: render, list, reproduce a run, or run what is unfinished."""
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
    _check_base(opts)
    if opts.reproduce:
        r = reproduce(opts)
        print(f"{r['run']}: spBLEU {r['metrics']['spbleu']['committed']:.2f} committed, {r['metrics']['spbleu']['reproduced']:.2f} "
              f"re-run; within the seed spread: {r['within_spread']}")  # fmt: skip
    else:
        run_matrix(runs, opts)
    print(f"updated section {SECTION!r} of {render_to_md(opts.results_dir, opts.results_md)}")
    return 0


def regime_main(opts: argparse.Namespace) -> int:
    """`--family regime`: the same runner's steps and statistics on the regime family (regime.py)."""
    if opts.render:
        print(f"updated section {regime.SECTION!r} of {regime.render_to_md(opts)}")
        return 0
    if not opts.list:
        _check_base(opts)
    if opts.reproduce:
        r = regime.reproduce(opts)
        verdict = "no seed spread yet" if r["within_spread"] is None else ("within" if r["within_spread"] else "OUTSIDE") + " the seed spread"
        print(f"{r['run']}: spBLEU {r['metrics']['spbleu']['committed']:.2f} committed, {r['metrics']['spbleu']['reproduced']:.2f} "
              f"re-run ({verdict}); updated section {regime.SECTION!r} of {regime.render_to_md(opts)}")  # fmt: skip
        return 0
    return regime.run_family(opts)


def _check_base(opts: argparse.Namespace) -> None:
    if not Path(opts.base).is_dir():
        raise BenchError(f"--base {opts.base}: no such model folder; build it with `make base` or give --base")


if __name__ == "__main__":
    sys.exit(main())

