"""Training throughput on CPU: what makes `lslo train` faster on the regime's runs, measured in one run.

    python benchmarks/train_throughput.py                       # the regime's set-up (bible12-v100, bf16)
    python benchmarks/train_throughput.py --steps 20 --rounds 1 # quicker

Every variant trains the same model from the same seed on the same batches (the sampler of `lslo train`, the
bible12 regime subset), with `lslo train`'s step: bf16 autocast forward, label-smoothed loss over the batch's
target tokens, backward, AdamW. Variants (methods: `lslo`, `lora` = shared LoRA, `full` = full fine-tuning):

- `eager`: today's `lslo train` step, both threads (the baseline of every ratio);
- `eager-1t`: the same on one thread;
- `compile`, `compile-1t`: each encoder/decoder layer compiled (`compile: true`, `lslo.compiling`: Inductor, C++
  kernels on CPU, dynamic shapes), on two threads / one thread;
- `ddp-1t`, `ddp-compile-1t`: `lslo train` on two one-thread processes (DDP over gloo, as `accelerate launch
  --num_processes 2` runs it): each process takes half of every global batch, gradients are averaged, so the
  run computes the same steps as one process; tokens/s of the global batches;
- `pair-1t`: two independent `eager-1t` processes side by side (two runs at once, one per core): their summed
  tokens/s (not one run's speed: what a machine doing two jobs gets).

Rounds are interleaved (every variant once per round, compiled ones only in the first `--compile-rounds`; median
over rounds). Each timed window follows `--warmup` untimed steps (for compiled variants, that is where they
compile: the warm-up time is reported apart). Exactness: the per-step losses of every variant against `eager`'s
(max |difference|). The padding share of the batches (padded positions / all positions of the target side) says
how much packing could gain at most. The load average before and after each variant is recorded.
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
VARIANTS = ("eager", "eager-1t", "compile", "compile-1t", "ddp-1t", "ddp-compile-1t", "pair-1t")
ONE_RUN = tuple(v for v in VARIANTS if v != "pair-1t")  # set-ups of one training run: the "best set-up"


def build(method: str, opts: argparse.Namespace) -> tuple[Any, Any, Any, float]:
    """(model, sampler, optimizer, label smoothing) exactly as `lslo train` builds them for the regime's runs."""
    from lslo.run_config import TrainConfig
    from lslo.run_setup import setup_model, training_data

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


def run_variant(method: str, variant: str, opts: argparse.Namespace, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Train `--warmup` + `--steps` steps; tokens/s of the timed steps, every step's loss, the warm-up time.

    With `world` > 1 (a `ddp-*` child), this process is rank `rank` of a gloo group and trains its shard of every
    global batch; tokens and losses are the global batch's."""
    from lslo.data.batching import batch_slice, shard
    from lslo.loss import batch_loss
    from lslo.precision import autocast

    torch.set_num_threads(1 if variant.endswith("1t") else opts.threads)
    model, sampler, optimizer, eps = build(method, opts)
    if "compile" in variant:
        from lslo.compiling import apply

        apply(model, True)  # what `compile: true` does in `lslo train`: each encoder/decoder layer, dynamic shapes
    step_model = model
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{opts.port}", rank=rank, world_size=world)
        step_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)  # as lslo train
    losses, times, tokens, padded, positions = [], [], 0, 0, 0
    for i in range(opts.warmup + opts.steps):
        batch = sampler.next_batch()
        start = time.perf_counter()
        local, weight = (shard(batch, rank, world), 1.0) if world > 1 else (batch, 1.0)
        if len(local) == 0:  # fewer samples than processes: run one, count nothing (as `lslo train` does)
            local, weight = batch_slice(batch, [0]), 0.0
        loss, _, n = batch_loss(step_model, local.model_inputs(), local.labels, eps, lambda: autocast(opts.precision, "cpu"))
        loss = loss * weight
        (loss * (world / batch.num_tokens)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total = loss.detach().reshape(1)
        if world > 1:
            torch.distributed.all_reduce(total)
        elapsed = time.perf_counter() - start
        losses.append(total.item() / batch.num_tokens)
        times.append(elapsed)
        if i >= opts.warmup:
            tokens += batch.num_tokens
            padded += batch.labels.numel() - batch.num_tokens
            positions += batch.labels.numel()
    if world > 1:
        torch.distributed.destroy_process_group()
    timed = sum(times[opts.warmup:])
    return {"method": method, "variant": variant, "threads": torch.get_num_threads(), "tokens_per_s": tokens / timed,
            "timed_s": timed, "warmup_s": sum(times[: opts.warmup]), "losses": losses,
            "padding_share": padded / positions, "processes": world}  # fmt: skip


DDP_TIMEOUT_S = 1800  # a DDP pair that takes longer is stuck (seen on a 2-core AVX2 machine in the tiny test)


def run_ddp(method: str, variant: str, opts: argparse.Namespace) -> dict[str, Any]:
    """`variant` (ddp-1t, ddp-compile-1t) as two one-thread processes of one DDP run; rank 0's report."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--child", method, "--variant", variant, "--rank", str(r),
                               "--port", str(port), *opts.forward], stdout=subprocess.PIPE, env=env, text=True)
             for r in range(2)]  # fmt: skip
    try:
        outs = [p.communicate(timeout=DDP_TIMEOUT_S)[0] for p in procs]
    except subprocess.TimeoutExpired:  # one process gone and the other waiting in a collective: never hang
        for p in procs:
            p.kill()
        raise RuntimeError(f"{method} {variant}: the DDP processes did not finish in {DDP_TIMEOUT_S} s") from None
    if any(p.returncode for p in procs):
        raise RuntimeError(f"{method} {variant}: a DDP process failed")
    return json.loads(outs[0].strip().splitlines()[-1])


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
            "wall_s": wall, "losses": outs[0]["losses"], "padding_share": outs[0]["padding_share"], "processes": 2}  # fmt: skip


def summary(results: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's two ratios, from this run: compiled LSLo over eager LSLo, and the fastest one-run set-up of
    LSLo over today's `lslo train` (eager, two threads); full fine-tuning's and shared LoRA's compiled ratios."""
    out = []
    for method, rows in results.items():
        base = rows["eager"]["tokens_per_s"]
        compiled = [f"`{v}` {rows[v]['tokens_per_s'] / base:.2f}x" for v in ("compile", "compile-1t") if v in rows]
        one_run = {v: r["tokens_per_s"] for v, r in rows.items() if v in ONE_RUN}
        best = max(one_run, key=one_run.__getitem__)
        out.append(f"**{method}**: compiled over eager: {', '.join(compiled) or 'not measured'}; fastest set-up of one "
                   f"run: `{best}`, {one_run[best] / base:.2f}x today's eager step.")  # fmt: skip
    return out


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = ["## train_throughput: CPU training speed of the regime's runs", "",
             f"Command: `{data['command']}` · {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} · {m['date']} · commit {m['git_commit']}", "",
             f"{data['steps']} timed steps after {data['warmup']} untimed ones, the same batches for every variant (`{data['data']}`, "
             f"<= {data['max_tokens']} tokens, {data.get('precision', 'bf16')} autocast); median over {data['rounds']} interleaved rounds. Ratio: tokens/s over `eager` "
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
    lines += ["", "Load average (1 min) before each variant: " + ", ".join(
        f"{method} {variant} {'/'.join(f'{x[0]:.1f}' for x in r.get('load', []))}" for method, rows in data["results"].items()
        for variant, r in rows.items()) + "."]  # fmt: skip
    for line in summary(data["results"]):
        lines += ["", line]
    if data.get("note"):
        lines += ["", data["note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/bible12-lslo.yaml")
    ap.add_argument("--data", default="data/bible12-v100", help="the regime subset (run.py --family regime builds it)")
    ap.add_argument("--base", default="base/bible12-small")
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--precision", default="fast", choices=["fast", "bf16", "fp32"],
                    help="autocast of the forward (bf16: the regime's; fp32 on CPUs without bf16 instructions, e.g. AVX2 only)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile-rounds", type=int, default=1, help="rounds that include `compile` (default: %(default)s)")
    ap.add_argument("--methods", nargs="+", default=["lslo", "lora", "full"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--note", default="", help="a line for RESULTS.md (e.g. what else ran on the machine)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    opts.forward = ["--config", opts.config, "--data", opts.data, "--base", opts.base, "--max-tokens", str(opts.max_tokens),
                    "--steps", str(opts.steps), "--warmup", str(opts.warmup), "--precision", opts.precision]  # fmt: skip
    if opts.child:
        ddp = opts.rank is not None
        print(json.dumps(run_variant(opts.child, opts.variant, opts, opts.rank or 0, 2 if ddp else 1)))
        return 0
    if not Path(opts.data).is_dir():
        print(f"train_throughput.py: error: --data {opts.data}: no such folder; build it with "
              "`python benchmarks/bible12/run.py --family regime --list`", file=sys.stderr)  # fmt: skip
        return 2
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {v: [] for v in opts.variants} for m in opts.methods}
    # The first run in a process is slower (allocator, oneDNN primitives for new shapes): one discarded run first.
    run_variant(opts.methods[0], "eager", argparse.Namespace(**{**vars(opts), "steps": 2, "warmup": 1}))
    for r in range(opts.rounds):
        for method in opts.methods:
            for variant in opts.variants:
                if "compile" in variant and r >= opts.compile_rounds:
                    continue  # its compile time dominates: measured in the first rounds only
                load = os.getloadavg()[0]
                if variant == "pair-1t":
                    res = run_pair(method, opts)
                elif variant.startswith("ddp"):
                    res = run_ddp(method, variant, opts)
                else:
                    res = run_variant(method, variant, opts)
                res["load"] = [load, os.getloadavg()[0]]
                runs[method][variant].append(res)
                print(f"round {r + 1}: {method} {variant}: {res['tokens_per_s']:.0f} tokens/s "
                      f"(warm-up {res.get('warmup_s', 0):.0f} s, load {load:.1f})", flush=True)  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    for method, by in runs.items():
        ref = by["eager"][0]["losses"]
        results[method] = {}
        for variant, rs in by.items():
            results[method][variant] = {
                "threads": rs[0]["threads"], "tokens_per_s": statistics.median(x["tokens_per_s"] for x in rs),
                "rounds": [x["tokens_per_s"] for x in rs], "warmup_s": statistics.median(x.get("warmup_s", 0.0) for x in rs),
                "loss_delta": max(abs(a - b) for x in rs for a, b in zip(x["losses"], ref, strict=True)),
                "final_loss": rs[0]["losses"][-1], "processes": rs[0].get("processes", 1),
                "load": [x["load"] for x in rs],
            }  # fmt: skip
    padding = statistics.fmean(x["padding_share"] for by in runs.values() for rs in by.values() for x in rs)
    from lslo.precision import effective_precision

    data = {"command": "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": results_md.machine(), "steps": opts.steps, "warmup": opts.warmup, "rounds": opts.rounds,
            "data": opts.data, "max_tokens": opts.max_tokens, "precision": effective_precision(opts.precision), "padding_share": padding, "results": results, "note": opts.note}  # fmt: skip
    from lslo.io import write_json

    write_json(OUT, data)
    results_md.update_section("train_throughput", render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
