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


def train_step(model: Any, optimizer: Any, batch: Any, eps: float, precision: str, rank: int = 0,
               world: int = 1) -> tuple[float, float]:  # fmt: skip
    """One `lslo train` step on `batch` (this process's shard of it under DDP): (seconds, the global batch's loss
    per target token)."""
    from lslo.data.batching import batch_slice, shard
    from lslo.loss import batch_loss
    from lslo.precision import autocast

    start = time.perf_counter()
    local, weight = (shard(batch, rank, world), 1.0) if world > 1 else (batch, 1.0)
    if len(local) == 0:  # fewer samples than processes: run one, count nothing (as `lslo train` does)
        local, weight = batch_slice(batch, [0]), 0.0
    loss, _, _ = batch_loss(model, local.model_inputs(), local.labels, eps, lambda: autocast(precision, "cpu"))
    loss = loss * weight
    (loss * (world / batch.num_tokens)).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    total = loss.detach().reshape(1)
    if world > 1:
        torch.distributed.all_reduce(total)
    return time.perf_counter() - start, total.item() / batch.num_tokens


def run_variant(method: str, variant: str, opts: argparse.Namespace, rank: int = 0, world: int = 1,
                profiler: Any = None) -> dict[str, Any]:  # fmt: skip
    """Train `--warmup` + `--steps` steps; tokens/s of the timed steps, every step's loss, the warm-up time.

    With `world` > 1 (a `ddp-*` child), this process is rank `rank` of a gloo group and trains its shard of every
    global batch; tokens and losses are the global batch's. A `profiler` (torch.profiler) records the timed steps."""
    from lslo import loss as loss_module

    torch.set_num_threads(1 if variant.endswith("1t") else opts.threads)
    model, sampler, optimizer, eps = build(method, opts)
    if "compile" in variant:
        from lslo.compiling import apply

        apply(model, True)  # what `compile: true` does in `lslo train`: each encoder/decoder layer, dynamic shapes
    else:  # the compiled loss is process state: a compiled variant before this one must not speed up an eager one
        loss_module.use_compiled_loss(None)
    step_model = model
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{opts.port}", rank=rank, world_size=world)
        step_model = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)  # as lslo train
    losses, times, tokens, padded, positions = [], [], 0, 0, 0
    for i in range(opts.warmup + opts.steps):
        if profiler is not None and i == opts.warmup:
            profiler.start()
        batch = sampler.next_batch()
        elapsed, loss = train_step(step_model, optimizer, batch, eps, opts.precision, rank, world)
        losses.append(loss)
        times.append(elapsed)
        if i >= opts.warmup:
            tokens += batch.num_tokens
            padded += batch.labels.numel() - batch.num_tokens
            positions += batch.labels.numel()
    if profiler is not None:
        profiler.stop()
    if world > 1:
        torch.distributed.destroy_process_group()
    timed = sum(times[opts.warmup:])
    return {"method": method, "variant": variant, "threads": torch.get_num_threads(), "tokens_per_s": tokens / timed,
            "timed_s": timed, "warmup_s": sum(times[: opts.warmup]), "losses": losses,
            "padding_share": padded / positions, "processes": world}  # fmt: skip


# Compiled against eager, step by step: this CPU's speed drifts 15-40% within a day, and by 10-20% between two
# variants run a minute apart, which is as large as the ratio measured. Paired steps in one process see the same drift.
PAIRED_RNG = ("eager", "inductor")  # dropout masks from eager's generator (`lslo.compiling`'s default) / Inductor's own


def run_paired(method: str, rng: str, opts: argparse.Namespace) -> dict[str, Any]:
    """An eager and a compiled model (same seed) in one process, trained on each batch in turn (which goes first
    alternates): tokens/s of each over the `--paired-steps` timed steps, and the per-step time ratios.

    `rng`: whose generator draws the compiled layers' dropout masks: "eager" (`fallback_random`, what `compile:
    true` does: the eager run's losses) or "inductor" (drawn inside the fused kernels: other masks, other losses)."""
    import torch._dynamo
    import torch._inductor.config

    from lslo import loss as loss_module
    from lslo.compiling import apply

    torch._dynamo.reset()  # graphs compiled before (another RNG setting) would be reused: compile afresh
    torch.set_num_threads(opts.threads)
    eager, sampler, eager_opt, eps = build(method, opts)
    compiled, _, compiled_opt, _ = build(method, opts)
    apply(compiled, opts.paired_backend if rng == "eager" else True)
    compiled_loss = loss_module.use_compiled_loss(None)
    times: dict[str, list[float]] = {"eager": [], "compile": []}
    losses: dict[str, list[float]] = {"eager": [], "compile": []}
    tokens, warmup_s = 0, 0.0
    try:
        for i in range(opts.warmup + opts.paired_steps):
            batch = sampler.next_batch()
            rng_state = torch.get_rng_state()  # both models draw the same dropout masks from eager's generator
            for name in ("eager", "compile") if i % 2 else ("compile", "eager"):
                torch.set_rng_state(rng_state)
                model, optimizer = (compiled, compiled_opt) if name == "compile" else (eager, eager_opt)
                loss_module.use_compiled_loss(compiled_loss if name == "compile" else None)
                with torch._inductor.config.patch(fallback_random=rng == "eager"):
                    elapsed, loss = train_step(model, optimizer, batch, eps, opts.precision)
                losses[name].append(loss)
                if i >= opts.warmup:
                    times[name].append(elapsed)
                elif name == "compile":
                    warmup_s += elapsed
            tokens += batch.num_tokens if i >= opts.warmup else 0
    finally:
        loss_module.use_compiled_loss(None)
    per_step = sorted(e / c for e, c in zip(times["eager"], times["compile"], strict=True))
    quartiles = statistics.quantiles(per_step, n=4) if len(per_step) > 1 else per_step * 3
    return {"method": method, "rng": rng, "steps": opts.paired_steps, "threads": opts.threads,
            "eager_tokens_per_s": tokens / sum(times["eager"]), "compiled_tokens_per_s": tokens / sum(times["compile"]),
            "ratio": sum(times["eager"]) / sum(times["compile"]), "step_ratio_quartiles": quartiles,
            "loss_delta": max(abs(a - b) for a, b in zip(losses["eager"], losses["compile"], strict=True)),
            "compile_s": warmup_s}  # fmt: skip


# Where an eager step's time goes (op self time under torch.profiler), by what compiling can do about it on CPU:
# Inductor leaves matrix products and attention to the same aten/oneDNN kernels (no max-autotune here), so only
# the rest (elementwise ops, dropout, layer norm, softmax, copies, the Python between kernels) can get faster.
KERNEL_OPS = {"products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"),
              "attention": ("aten::_scaled_dot_product",)}  # fmt: skip


def op_shares(method: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Shares of the wall time of `--profile-steps` eager steps (two threads, after the warm-up) spent in matrix
    products and attention (op self time) and in the rest; and the bound on a speed-up that leaves the first two
    as they are."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    res = run_variant(method, "eager", argparse.Namespace(**{**vars(opts), "steps": opts.profile_steps}), profiler=prof)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    wall_us = 1e6 * res["timed_s"]  # the profiled steps' wall time (with the profiler's own overhead: a looser bound)
    shares = {group: sum(e.self_cpu_time_total for e in events if e.key.startswith(names)) / wall_us
              for group, names in KERNEL_OPS.items()}  # fmt: skip
    shares["rest"] = 1.0 - sum(shares.values())
    return {"shares": shares, "bound": 1.0 / (1.0 - shares["rest"]), "steps": opts.profile_steps}


DDP_TIMEOUT_S = 1800  # default of --ddp-timeout: a DDP pair that takes longer is stuck (seen on a 2-core AVX2 machine)


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
        outs = [p.communicate(timeout=opts.ddp_timeout)[0] for p in procs]
    except subprocess.TimeoutExpired:  # one process gone and the other waiting in a collective: never hang
        for p in procs:
            p.kill()
        raise RuntimeError(f"did not finish in {opts.ddp_timeout:g} s") from None
    if any(p.returncode for p in procs):
        raise RuntimeError("a process failed")
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
    for method, variants in data.get("failed", {}).items():
        lines += ["", f"**{method}**: " + "; ".join(
            f"`{v}` {why} " + ("in a later round (the table has the rounds that finished)" if v in data["results"][method] else "(not in the table)")
            for v, why in variants.items()) + "."]  # fmt: skip
    if data.get("paired"):
        lines += ["", f"**Compiled against eager, step by step** (`--paired-steps {data['paired'][0]['steps']}`): one process holds an "
                  "eager and a compiled model (same seed) and trains both on every batch, one after the other (which goes first "
                  "alternates; both from the same random state), so the machine's drift (10-20% between variants run minutes apart) "
                  "hits both alike. *Dropout RNG*: `eager` draws the compiled layers' masks from eager's generator "
                  "(`compile: true`: the eager run's losses), `inductor` inside the fused kernels (other masks: other losses, "
                  "as in any compiled run elsewhere). Ratio: eager time over compiled time, all timed steps; quartiles of the "
                  "per-step ratios.", "",
                  "| method | dropout RNG | eager tokens/s | compiled tokens/s | ratio | per-step ratio (quartiles) | loss Δ (max) | compile (s) |",
                  "|---|---|---:|---:|---:|---|---:|---:|"]  # fmt: skip
        for r in data["paired"]:
            q = r["step_ratio_quartiles"]
            lines.append(f"| {r['method']} | {r['rng']} | {r['eager_tokens_per_s']:.0f} | {r['compiled_tokens_per_s']:.0f} | "
                         f"{r['ratio']:.2f}x | {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} | {r['loss_delta']:.2e} | {r['compile_s']:.0f} |")  # fmt: skip
    profiles = {method: rows["eager"]["profile"] for method, rows in data["results"].items() if "profile" in rows["eager"]}
    if profiles:
        lines += ["", "Where an eager step's time goes (aten op self time under `torch.profiler` over the steps' wall time, two threads): matrix products "
                  "and attention run the same aten/oneDNN kernels compiled or not on CPU, so compiling can only speed up the rest "
                  "(elementwise ops, dropout, norms, softmax, copies); *bound*: the speed-up if the rest took no time at all.", "",
                  "| method | products | attention | rest | bound on a compiled speed-up |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        for method, pr in profiles.items():
            sh = pr["shares"]
            lines.append(f"| {method} | {100 * sh['products']:.0f}% | {100 * sh['attention']:.0f}% | {100 * sh['rest']:.0f}% | "
                         f"{pr['bound']:.2f}x |")  # fmt: skip
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
    ap.add_argument("--ddp-timeout", type=float, default=DDP_TIMEOUT_S,
                    help="seconds a ddp-* pair may take before it counts as stuck: killed, reported, not fatal")
    ap.add_argument("--paired-steps", type=int, default=20,
                    help="timed steps of the paired compiled-vs-eager measurement per method and RNG (0: none)")
    ap.add_argument("--paired-rng", nargs="+", default=list(PAIRED_RNG), choices=PAIRED_RNG,
                    help="whose generator draws the compiled dropout masks in the paired measurement")
    ap.add_argument("--paired-backend", default="inductor", help=argparse.SUPPRESS)  # tests: aot_eager (quick)
    ap.add_argument("--profile-steps", type=int, default=4, help="eager steps profiled per method for the op shares (0: none)")
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
    failed: dict[str, dict[str, str]] = {}
    # The first run in a process is slower (allocator, oneDNN primitives for new shapes): one discarded run first.
    run_variant(opts.methods[0], "eager", argparse.Namespace(**{**vars(opts), "steps": 2, "warmup": 1}))
    for r in range(opts.rounds):
        for method in opts.methods:
            for variant in opts.variants:
                if "compile" in variant and r >= opts.compile_rounds:
                    continue  # its compile time dominates: measured in the first rounds only
                if variant in failed.get(method, {}):
                    continue  # stuck once: not waited for again
                load = os.getloadavg()[0]
                if variant == "pair-1t":
                    res = run_pair(method, opts)
                elif variant.startswith("ddp"):
                    try:
                        res = run_ddp(method, variant, opts)
                    except RuntimeError as e:  # a stuck or failed pair: reported in the section, the others go on
                        failed.setdefault(method, {})[variant] = str(e)
                        print(f"round {r + 1}: {method} {variant}: {e}", flush=True)
                        continue
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
            if not rs:  # every round of it failed
                continue
            results[method][variant] = {
                "threads": rs[0]["threads"], "tokens_per_s": statistics.median(x["tokens_per_s"] for x in rs),
                "rounds": [x["tokens_per_s"] for x in rs], "warmup_s": statistics.median(x.get("warmup_s", 0.0) for x in rs),
                "loss_delta": max(abs(a - b) for x in rs for a, b in zip(x["losses"], ref, strict=True)),
                "final_loss": rs[0]["losses"][-1], "processes": rs[0].get("processes", 1),
                "load": [x["load"] for x in rs],
            }  # fmt: skip
    for method in opts.methods if opts.profile_steps > 0 else []:
        results[method]["eager"]["profile"] = op_shares(method, opts)
    paired = []
    for method in opts.methods if opts.paired_steps > 0 else []:
        for rng in opts.paired_rng:
            paired.append(run_paired(method, rng, opts))
            print(f"paired: {method} ({rng} RNG): compiled {paired[-1]['ratio']:.2f}x eager", flush=True)
    padding = statistics.fmean(x["padding_share"] for by in runs.values() for rs in by.values() for x in rs)
    from lslo.precision import effective_precision

    data = {"command": "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": results_md.machine(), "steps": opts.steps, "warmup": opts.warmup, "rounds": opts.rounds,
            "data": opts.data, "max_tokens": opts.max_tokens, "precision": effective_precision(opts.precision), "padding_share": padding, "results": results, "failed": failed, "paired": paired, "note": opts.note}  # fmt: skip
    from lslo.io import write_json

    write_json(OUT, data)
    results_md.update_section("train_throughput", render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
