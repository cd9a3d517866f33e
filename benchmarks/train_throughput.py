"""Training throughput on CPU: what makes `lslo train` faster on the regime's runs, measured in one run.

    python benchmarks/train_throughput.py                       # the regime's set-up (bible12-v100, bf16)
    python benchmarks/train_throughput.py --steps 20 --rounds 1 # quicker

Every variant trains the same model from the same seed on the same batches (the sampler of `lslo train`, the
bible12 regime subset), with `lslo train`'s step: bf16 autocast forward, label-smoothed loss over the batch's
target tokens, backward, AdamW. Variants:

- `eager`: today's step, both threads (the baseline);
- `eager-1t`: the same on one thread;
- `compile`: the model's forward compiled by `torch.compile(dynamic=True)` (inductor, C++ kernels on CPU);
- `pair-1t`: two `eager-1t` processes side by side (one job per core): their summed tokens/s.

Rounds are interleaved (every variant once per round, `compile` only in the first `--compile-rounds`; median
over rounds). Each timed window follows
`--warmup` untimed steps (for `compile`, that is where it compiles; the compile time is reported apart).
Exactness: the per-step losses of every variant against `eager`'s (max |difference|). The padding share of the
batches (padded positions / all positions of the target side) says how much packing could gain at most.
Writes `benchmarks/results/train_throughput.json` and the `train_throughput` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from benchmarks import results_md  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "train_throughput.json"
VARIANTS = ("eager", "eager-1t", "compile", "pair-1t")


def build(method: str, opts: argparse.Namespace) -> tuple[Any, Any, Any, float]:
    """(model, sampler, optimizer, label smoothing) exactly as `lslo train` builds them for the regime's runs."""
    from lslo.train import TrainConfig, setup_model, training_data

    over = {"data": opts.data, "base_model": opts.base, "out_dir": "unused", "method": method, "max_tokens": opts.max_tokens,
            "progress": False, "seed": 1}  # fmt: skip
    if method == "lora":
        over["lora_rank"] = 48
    cfg = TrainConfig.from_yaml(opts.config, **over)
    tokenizer, languages, _, sampler = training_data(cfg)
    model = setup_model(cfg, tokenizer, languages)  # seeded with cfg.seed, as `lslo train` does
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps)
    return model, sampler, optimizer, cfg.label_smoothing


def run_variant(method: str, variant: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Train `--warmup` + `--steps` steps; tokens/s of the timed steps, every step's loss, the compile time."""
    from lslo.loss import batch_loss
    from lslo.precision import autocast

    torch.set_num_threads(1 if variant.endswith("1t") else opts.threads)
    model, sampler, optimizer, eps = build(method, opts)
    if variant == "compile":
        model.base_model.compile(dynamic=True)
    losses, times, tokens, padded, positions = [], [], 0, 0, 0
    for i in range(opts.warmup + opts.steps):
        batch = sampler.next_batch()
        start = time.perf_counter()
        loss, _, n = batch_loss(model, batch.model_inputs(), batch.labels, eps, lambda: autocast("bf16", "cpu"))
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        losses.append(loss.item() / n)
        times.append(elapsed)
        if i >= opts.warmup:
            tokens += n
            padded += batch.labels.numel() - n
            positions += batch.labels.numel()
    timed = sum(times[opts.warmup:])
    return {"method": method, "variant": variant, "threads": torch.get_num_threads(), "tokens_per_s": tokens / timed,
            "timed_s": timed, "warmup_s": sum(times[: opts.warmup]), "losses": losses,
            "padding_share": padded / positions}  # fmt: skip


def run_pair(method: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Two one-thread processes side by side: their summed tokens/s over the wall time both took."""
    argv = [sys.executable, __file__, "--child", method, "--variant", "eager-1t", *opts.forward]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - start
    # Each child reports its own timed window; together they did twice the work in the overlap of those windows.
    per = [o["tokens_per_s"] for o in outs]
    return {"method": method, "variant": "pair-1t", "threads": 1, "tokens_per_s": sum(per), "per_process": per,
            "wall_s": wall, "losses": outs[0]["losses"], "padding_share": outs[0]["padding_share"]}  # fmt: skip


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = ["## train_throughput: CPU training speed of the regime's runs", "",
             f"Command: `{data['command']}` · {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} · {m['date']} · commit {m['git_commit']}", "",
             f"{data['steps']} timed steps after {data['warmup']} untimed ones, the same batches for every variant (`{data['data']}`, "
             f"<= {data['max_tokens']} tokens, bf16 autocast); median over {data['rounds']} interleaved rounds. Ratio: tokens/s over `eager` "
             "(today's `lslo train`, both threads) of the same method in the same run. *Loss Δ*: the largest |difference| "
             f"of a step's loss from `eager`'s. Target-side padding share of the batches: {100 * data['padding_share']:.1f}% "
             "(the most that packing could save on the decoder side).", "",
             "| method | variant | threads | tokens/s | ratio to eager | loss Δ (max over steps) | warm-up / compile (s) |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for method, rows in data["results"].items():
        base = rows["eager"]["tokens_per_s"]
        for variant, r in rows.items():
            lines.append(f"| {method} | {variant} | {r['threads']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base:.2f} | "
                         f"{r['loss_delta']:.2e} | {r.get('warmup_s', 0):.1f} |")  # fmt: skip
    if data.get("note"):
        lines += ["", data["note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/bible12-lslo.yaml")
    ap.add_argument("--data", default="data/bible12-v100", help="the regime subset (run.py --family regime builds it)")
    ap.add_argument("--base", default="base/bible12-small")
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile-rounds", type=int, default=1, help="rounds that include `compile` (default: %(default)s)")
    ap.add_argument("--methods", nargs="+", default=["lslo", "full"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--note", default="", help="a line for RESULTS.md (e.g. what else ran on the machine)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    opts.forward = ["--config", opts.config, "--data", opts.data, "--base", opts.base, "--max-tokens", str(opts.max_tokens),
                    "--steps", str(opts.steps), "--warmup", str(opts.warmup)]  # fmt: skip
    if opts.child:
        print(json.dumps(run_variant(opts.child, opts.variant, opts)))
        return 0
    if not Path(opts.data).is_dir():
        print(f"train_throughput.py: error: --data {opts.data}: no such folder; build it with "
              "`python benchmarks/bible12/run.py --family regime --list`", file=sys.stderr)  # fmt: skip
        return 2
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {v: [] for v in opts.variants} for m in opts.methods}
    for r in range(opts.rounds):
        for method in opts.methods:
            for variant in opts.variants:
                if variant == "compile" and r >= opts.compile_rounds:
                    continue  # its compile time dominates: measured in the first rounds only
                res = run_pair(method, opts) if variant == "pair-1t" else run_variant(method, variant, opts)
                runs[method][variant].append(res)
                print(f"round {r + 1}: {method} {variant}: {res['tokens_per_s']:.0f} tokens/s", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for method, by in runs.items():
        ref = by["eager"][0]["losses"]
        results[method] = {}
        for variant, rs in by.items():
            results[method][variant] = {
                "threads": rs[0]["threads"], "tokens_per_s": statistics.median(x["tokens_per_s"] for x in rs),
                "rounds": [x["tokens_per_s"] for x in rs], "warmup_s": statistics.median(x.get("warmup_s", 0.0) for x in rs),
                "loss_delta": max(abs(a - b) for x in rs for a, b in zip(x["losses"], ref, strict=True)),
                "final_loss": rs[0]["losses"][-1],
            }  # fmt: skip
    padding = statistics.fmean(x["padding_share"] for by in runs.values() for rs in by.values() for x in rs)
    data = {"command": "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": results_md.machine(), "steps": opts.steps, "warmup": opts.warmup, "rounds": opts.rounds,
            "data": opts.data, "max_tokens": opts.max_tokens, "padding_share": padding, "results": results, "note": opts.note}  # fmt: skip
    from lslo.io import write_json

    write_json(OUT, data)
    results_md.update_section("train_throughput", render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
