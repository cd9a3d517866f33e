"""The languages sweep of `benchmarks/lslo_speed.py --languages-sweep`: does an LSLo step cost the languages in
the batch or the languages in the model?

LSLo with 12, 50, 100 and 200 NLLB languages (the first N FLORES-200 codes, tiers high/medium/low in turn, ranks
2/2/8: the ranks of 200 languages sum to 800) against peft shared LoRA r=8, all on one random base of the
shape, one training step each (forward, backward, Adam), interleaved rounds, medians. Batches mix languages
(random source and target per sample) or hold one direction. Each step is timed in two parts (forward +
backward, optimizer) and its memory split into parameters, gradients, optimizer state and saved activations.
Also: the mixed-batch paths of one `LSLoLinear` against each other and against a rank-8 LoRA term (the
measurements behind the cost rule), and beam-5 generation of mixed directions, unmerged, against the base.
Writes `results/lslo_speed_languages_<device>.json` and its RESULTS.md section.
"""

from __future__ import annotations

import copy
import os
import statistics
import subprocess
from argparse import Namespace
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

from benchmarks.results_md import HERE, machine, update_section
from benchmarks.speed_kit import (
    SHAPES,
    Variant,
    build_base,
    make_batch,
    randomize_lora,
    step_memory_parts,
    time_generations,
    timed,
)
from lslo import LSLoConfig, add_lslo
from lslo.baselines import SharedLoRA
from lslo.io import write_json
from lslo.layer import MIXED_PATHS, LSLoLinear
from lslo.routing import Routing

SIZES = (12, 50, 100, 200)
TIERS = ("high", "medium", "low")
RANKS = {"high": 2, "medium": 2, "low": 8}
TARGETS = {  # ratio name -> target (the CPU targets)
    "LSLo-200 mixed / peft": 1.15, "LSLo-12 mixed / peft": 1.05, "LSLo-12 one-language / peft": 1.03,
    "LSLo-200 one-language / peft": 1.03, "saved activations, LSLo-200 mixed / LSLo-12 mixed": 1.10,
    "unmerged mixed generation, LSLo-200 / base": 1.10,
}  # fmt: skip


def nllb_languages(n: int) -> dict[str, str]:
    return {code: TIERS[i % 3] for i, code in enumerate(FAIRSEQ_LANGUAGE_CODES[:n])}


def path_costs(reps: int = 30) -> list[dict]:
    """Forward + backward of one LSLoLinear's LoRA term per mixed path (16 samples x 32 tokens), minus the
    frozen linear alone, next to a peft-style rank-8 term; interleaved, medians, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    for n in (12, 200):
        langs = nllb_languages(n)
        for din, dout in ((512, 512), (512, 2048)):
            torch.manual_seed(0)
            linear = nn.Linear(din, dout).requires_grad_(False)
            x = torch.randn(16, 32, din, requires_grad=True)
            routing = Routing()
            routing.set("src", torch.randint(n, (16,)).tolist(), "cpu")
            layer = LSLoLinear(linear, [RANKS[t] for t in langs.values()], [1.0] * n, "src", routing)
            a, b = nn.Parameter(torch.randn(8, din)), nn.Parameter(torch.randn(dout, 8))

            def run(fn, layer=layer, x=x, a=a, b=b):
                fn().sum().backward()
                x.grad = layer.lora_A.grad = layer.lora_B.grad = a.grad = b.grad = None

            def with_path(path, layer=layer, x=x):
                layer.path = path
                return layer(x)

            fns = {"frozen linear": lambda linear=linear, x=x: linear(x),
                   "rank-8 LoRA (peft-style)": lambda linear=linear, x=x, a=a, b=b: linear(x) + F.linear(F.linear(x, a), b)}  # fmt: skip
            fns.update({path: lambda path=path: with_path(path) for path in MIXED_PATHS})
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(reps):
                for k, fn in fns.items():
                    times[k].append(timed(lambda fn=fn: run(fn), "cpu"))
            med = {k: statistics.median(v[3:]) for k, v in times.items()}
            layer.path = "auto"
            rows.append({"languages": n, "sum_of_ranks": layer.offsets[-1], "in": din, "out": dout,
                         "frozen_linear_ms": 1e3 * med["frozen linear"], "auto_picks": layer.mixed_path(),
                         "extra_ms": {k: 1e3 * (v - med["frozen linear"]) for k, v in med.items() if k != "frozen linear"}})  # fmt: skip
    torch.set_num_threads(threads)
    return rows


PROFILED = ("peft shared LoRA r=8", "LSLo-12 mixed", "LSLo-200 mixed")


def paired(times: dict[str, list[float]], a: str, b: str) -> float:
    """The median over interleaved rounds of a's time / b's time in the same round."""
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))


def profile_step(v: Variant) -> dict[str, float]:
    """Self CPU seconds per operator of one whole training step (forward, backward, optimizer), torch.profiler."""
    from torch.profiler import profile

    with profile() as prof:
        v.step()
    return {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}


def render_profile(r: dict, top: int = 8) -> list[str]:
    """The operators where a 200-language mixed step spends the most more than a 12-language one."""
    prof = r.get("profile_self_cpu_s")
    if not prof:
        return []
    p12, p200, peft = prof["LSLo-12 mixed"], prof["LSLo-200 mixed"], prof["peft shared LoRA r=8"]
    extra = sorted(p200, key=lambda op: p200[op] - p12.get(op, 0.0), reverse=True)[:top]
    lines = ["", "What a 200-language mixed step spends that a 12-language one does not: self CPU seconds per operator"
             " of one profiled step each (torch.profiler; forward, backward and optimizer; the profiler adds overhead,"
             " read the differences).", "", "| operator | peft | LSLo-12 mixed | LSLo-200 mixed | 200 - 12 |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| `{op}` | {peft.get(op, 0.0):.3f} | {p12.get(op, 0.0):.3f} | {p200[op]:.3f} | {p200[op] - p12.get(op, 0.0):+.3f} |"
              for op in extra]  # fmt: skip
    lines.append(f"| all operators | {sum(peft.values()):.3f} | {sum(p12.values()):.3f} | {sum(p200.values()):.3f} |"
                 f" {sum(p200.values()) - sum(p12.values()):+.3f} |")  # fmt: skip
    return lines


def busy_processes() -> list[str]:
    """What else is running: `ps` lines (CPU %, command, cut) of the processes above 10% CPU (ps's lifetime
    average), this one and stopped ones (state T, e.g. paused with SIGSTOP) excluded."""
    try:
        ps = subprocess.run(["ps", "-eo", "pid,stat,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    except OSError:
        return []
    rows = [line.split(None, 3) for line in ps.splitlines()[1:]]
    return [f"{cpu}% {cmd[:90]}" for pid, stat, cpu, cmd in rows
            if float(cpu) > 10 and int(pid) != os.getpid() and not stat.startswith("T")]  # fmt: skip


def run_sweep(args: Namespace) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = dict(SHAPES[args.shape], batch=args.batch or SHAPES[args.shape]["batch"], seq=args.seq or SHAPES[args.shape]["seq"])
    load_before, busy = os.getloadavg(), busy_processes()
    print("paths of one layer ...", flush=True)
    paths = path_costs()
    base = build_base(shape, torch.float32, device)
    ids = {code: shape["vocab"] - 1 - i for i, code in enumerate(FAIRSEQ_LANGUAGE_CODES)}
    placement = LSLoConfig(languages=nllb_languages(12))

    def lslo(n: int, path: str = "auto", on: nn.Module = base):
        langs = nllb_languages(n)
        model = add_lslo(copy.deepcopy(on).train(), LSLoConfig(languages=langs, ranks=dict(RANKS), lang_token_ids={k: ids[k] for k in langs}))
        randomize_lora(model)
        for layer in model.lslo_layers().values():
            layer.path = path
        return model

    batches = {n: make_batch(shape, list(nllb_languages(n)), True, device) for n in SIZES}
    one = make_batch(shape, list(nllb_languages(12)), False, device)
    lora = SharedLoRA(copy.deepcopy(base).train(), {k: ids[k] for k in placement.languages}, r=8, placement=placement)
    randomize_lora(lora)
    models = {n: lslo(n) for n in SIZES}
    # The baseline is not slowed by lslo's wrapper: plain peft on a fresh copy of the base, the same targets.
    targets = [name for name, _ in placement.targets(shape["layers"], shape["layers"])]
    plain = get_peft_model(copy.deepcopy(base).train(), LoraConfig(r=8, lora_alpha=8, target_modules=targets))
    randomize_lora(plain)
    variants = [Variant("peft shared LoRA r=8", lora, batches[200], device, False),
                Variant("plain peft get_peft_model r=8, same targets", plain, batches[200], device, False)]  # fmt: skip
    variants += [Variant(f"LSLo-{n} mixed", models[n], batches[n], device, False) for n in SIZES]
    variants += [Variant(f"LSLo-{n} one-language", models[n], one, device, False) for n in (12, 200)]
    variants.append(Variant("LSLo-200 mixed, AdamW over every language", models[200], batches[200], device, False,
                            optimizer="adamw"))  # fmt: skip
    variants.append(Variant("LSLo-200 mixed, dense path (before)", lslo(200, "dense"), batches[200], device, False,
                            optimizer="adamw"))  # fmt: skip
    print(f"device={device} shape={shape}; {len(variants)} variants", flush=True)
    memory = {}
    for v in variants:
        v.step()
        memory[v.name] = step_memory_parts(v)
    split: dict[str, list[tuple[float, float]]] = {v.name: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            for _ in range(args.steps):
                split[v.name].append(v.step_split())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {statistics.median(sum(t) for t in ts):.2f}s" for k, ts in split.items()), flush=True)

    print("profiling one step of peft, LSLo-12 and LSLo-200 (mixed) ...", flush=True)
    profiled = {v.name: profile_step(v) for v in variants if v.name in PROFILED}

    gen_tokens = args.gen_tokens or shape["seq"]
    gen = dict(num_beams=5, max_new_tokens=gen_tokens, min_new_tokens=gen_tokens, do_sample=False)
    src_ids, mask = batches[200]["input_ids"], batches[200]["attention_mask"]
    prompt = torch.tensor([[2, ids["fra_Latn"]]] * src_ids.shape[0], device=device)
    plain = copy.deepcopy(base).eval()
    for m in models.values():
        m.eval()

    def unmerged(model: nn.Module, n: int = 200):
        """Beam search of `model` on the mixed directions of the `n`-language batch."""
        b = batches[n]
        return lambda: model.generate(src_ids, mask, src_lang=b["src_lang"], tgt_lang=b["tgt_lang"], **gen)

    # control: LSLo-200's routing and wrappers without the LoRA math (every LSLo layer calls its base layer only)
    control = copy.deepcopy(models[200])
    for layer in control.lslo_layers().values():
        layer.forward = layer.base_layer.forward
    gens = {"base": lambda: plain.generate(input_ids=src_ids, attention_mask=mask, decoder_input_ids=prompt, **gen),
            "LSLo-12 unmerged, mixed directions": unmerged(models[12], 12), "LSLo-200 unmerged, mixed directions": unmerged(models[200]),
            "LSLo-200 without the LoRA math (control)": unmerged(control)}  # fmt: skip
    gen_times = time_generations(gens, args.gen_reps, device)
    # bf16 weights under bf16 autocast (where the GPU measured unmerged generation at 1.8x the base): the base,
    # LSLo-200 unmerged, and LSLo-200 gathering and casting each sample's LoRA rows at every decoding step, as it
    # did before `Routing.memo` (the likely cause of the 1.8x)
    bf16 = build_base(shape, torch.bfloat16, device).eval()
    fresh, stale = lslo(200, on=bf16).eval(), lslo(200, on=bf16).eval()
    stale.routing.memo = lambda key, make: make()
    with torch.autocast(device, dtype=torch.bfloat16):
        gen_bf16 = time_generations({
            "base, bf16 weights": lambda: bf16.generate(input_ids=src_ids, attention_mask=mask, decoder_input_ids=prompt, **gen),
            "LSLo-200 unmerged, bf16 weights": unmerged(fresh),
            "LSLo-200 unmerged, bf16 weights, rows gathered every decoding step (before)": unmerged(stale),
        }, args.gen_reps, device)  # fmt: skip
    gen_times.update(gen_bf16)
    load_after = os.getloadavg()

    rows = []
    for v in variants:
        fb = statistics.median(t[0] for t in split[v.name])
        opt = statistics.median(t[1] for t in split[v.name])
        total = statistics.median(sum(t) for t in split[v.name])
        rows.append({"variant": v.name, "step_s": total, "forward_backward_s": fb, "optimizer_s": opt,
                     "trainable_params": v.trainable, "memory_bytes": memory[v.name], "steps_timed": len(split[v.name])})  # fmt: skip
    by = {row["variant"]: row for row in rows}
    gmed = {k: statistics.median(t) for k, t in gen_times.items()}
    peft = by["peft shared LoRA r=8"]
    ratios = {
        "LSLo-200 mixed / peft": by["LSLo-200 mixed"]["step_s"] / peft["step_s"],
        "LSLo-12 mixed / peft": by["LSLo-12 mixed"]["step_s"] / peft["step_s"],
        "LSLo-12 one-language / peft": by["LSLo-12 one-language"]["step_s"] / peft["step_s"],
        "LSLo-200 one-language / peft": by["LSLo-200 one-language"]["step_s"] / peft["step_s"],
        "saved activations, LSLo-200 mixed / LSLo-12 mixed":
            by["LSLo-200 mixed"]["memory_bytes"]["activations"] / by["LSLo-12 mixed"]["memory_bytes"]["activations"],
        # paired: the median of each round's ratio (a round times both back to back), so drift of the machine's
        # speed during the run cancels; the ratio of medians is kept beside it
        "unmerged mixed generation, LSLo-200 / base": paired(gen_times, "LSLo-200 unmerged, mixed directions", "base"),
        "unmerged mixed generation, LSLo-200 / base, ratio of medians": gmed["LSLo-200 unmerged, mixed directions"] / gmed["base"],
        "generation, LSLo-200 without the LoRA math (control) / base": paired(gen_times, "LSLo-200 without the LoRA math (control)", "base"),
        "unmerged mixed generation, bf16 weights, LSLo-200 / base": paired(gen_times, "LSLo-200 unmerged, bf16 weights", "base, bf16 weights"),
        "unmerged mixed generation, bf16 weights, rows gathered every step (before) / base":
            paired(gen_times, "LSLo-200 unmerged, bf16 weights, rows gathered every decoding step (before)", "base, bf16 weights"),
        "plain peft (same targets) / lslo's peft baseline": by["plain peft get_peft_model r=8, same targets"]["step_s"] / peft["step_s"],
        "LSLo-200 mixed / peft, forward + backward only": by["LSLo-200 mixed"]["forward_backward_s"] / peft["forward_backward_s"],
        "LSLo-200 mixed, AdamW over every language / peft": by["LSLo-200 mixed, AdamW over every language"]["step_s"] / peft["step_s"],
        "LSLo-200 mixed, dense path (before) / peft": by["LSLo-200 mixed, dense path (before)"]["step_s"] / peft["step_s"],
    }  # fmt: skip
    result = {
        "benchmark": "lslo_speed_languages",
        "command": "python benchmarks/lslo_speed.py --languages-sweep"
        + "".join(f" --{k.replace('_', '-')} {getattr(args, k)}" for k in ("rounds", "steps", "gen_reps", "gen_tokens") if getattr(args, k) is not None),
        "machine": machine(), "device": device, "shape": shape, "load_average_before": load_before,
        "load_average_after": load_after,
        "note": "shared machine: other jobs ran during the measurement (load averages; busy_processes at the start)"
        if busy else "no other process running at the start (busy_processes: none above 10% CPU, stopped ones excluded)",
        "busy_processes": busy,
        "languages": {n: {"sum_of_ranks": models[n].lslo_layers()[next(iter(models[n].lslo_layers()))].offsets[-1],
                          "tiers": "high/medium/low in turn, ranks 2/2/8"} for n in SIZES},
        "train_step": rows, "generation_beam5": [{"variant": k, "seconds": v, "reps": args.gen_reps, "new_tokens": gen_tokens,
                                                       "rounds_s": gen_times[k]} for k, v in gmed.items()],
        "paths_one_layer": paths, "ratios": ratios, "targets": TARGETS, "profile_self_cpu_s": profiled,
    }  # fmt: skip
    print(result["ratios"])
    if args.no_write:
        return
    out = HERE / "results" / f"lslo_speed_languages_{device}.json"
    write_json(out, result)
    update_section(out.stem, render_sweep(result, out))
    print(f"wrote {out} and benchmarks/RESULTS.md")


def render_sweep(r: dict, path: Path) -> str:
    m, s = r["machine"], r["shape"]
    mib = 2**20
    lines = [
        f"## Languages sweep: LSLo at 12-200 NLLB languages vs peft shared LoRA ({r['device']}, fp32)",
        "",
        f"Command: `{r['command']}` · machine: {m.get('gpu', m['cpu'])}, {m['cpu_cores']} cores, {m['torch_threads']} torch"
        f" threads, torch {m['torch']} · {m['date']} · commit {m['git_commit']} · JSON: `{path.relative_to(HERE.parent)}`",
        "",
        f"Shape: d_model {s['d_model']}, {s['layers']}+{s['layers']} layers, FFN {s['ffn']}, vocab {s['vocab']}, batches of"
        f" {s['batch']} x {s['seq']} tokens. Languages: the first N NLLB codes, tiers high/medium/low in turn, ranks 2/2/8"
        " (sums of ranks: " + ", ".join(f"{n}: {v['sum_of_ranks']}" for n, v in r["languages"].items()) + "). Mixed ="
        " random source and target per sample; one-language = one direction. One step = forward, backward, Adam"
        f" (timed in two parts). Load average during the run: {r['load_average_before'][0]:.1f} before,"
        f" {r['load_average_after'][0]:.1f} after ({r['note']}).",
        "",
        "| variant | step (s, median) | step / peft | forward+backward (s) | optimizer (s) | trainable params |"
        " params + grads + Adam (MiB) | saved activations (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    peft = next(row for row in r["train_step"] if row["variant"].startswith("peft"))
    for row in r["train_step"]:
        mem = row["memory_bytes"]
        lines.append(
            f"| {row['variant']} | {row['step_s']:.3f} | {row['step_s'] / peft['step_s']:.2f} | {row['forward_backward_s']:.3f}"
            f" | {row['optimizer_s']:.3f} | {row['trainable_params']:,} | {(mem['params'] + mem['grads'] + mem['optimizer']) / mib:.0f}"
            f" | {mem['activations'] / mib:.1f} |"
        )
    by = {row["variant"]: row for row in r["train_step"]}
    l12, l200 = by["LSLo-12 mixed"], by["LSLo-200 mixed"]
    held = {k: sum(v for n, v in by[k]["memory_bytes"].items() if n != "activations") for k in by}
    adamw = by.get("LSLo-200 mixed, AdamW over every language", l200)
    lines += [
        "",
        f"Reading (from the JSON): from 12 to 200 languages the saved activations of a mixed step go from"
        f" {l12['memory_bytes']['activations'] / mib:.1f} to {l200['memory_bytes']['activations'] / mib:.1f} MiB"
        f" (the dense path, before: {by['LSLo-200 mixed, dense path (before)']['memory_bytes']['activations'] / mib:.1f} MiB),"
        f" the forward + backward time from {l12['forward_backward_s']:.2f} to {l200['forward_backward_s']:.2f} s"
        f" (peft: {peft['forward_backward_s']:.2f} s), the optimizer step (LanguageAdamW, what `lslo train` uses) from"
        f" {l12['optimizer_s']:.2f} to {l200['optimizer_s']:.2f} s (AdamW over every language at 200:"
        f" {adamw['optimizer_s']:.2f} s; peft: {peft['optimizer_s']:.2f} s), and the parameters + gradients + Adam"
        f" state from {held['LSLo-12 mixed'] / mib:.0f} to {held['LSLo-200 mixed'] / mib:.0f} MiB (they grow with the"
        " languages held: every language's matrices, gradients and moments are stored)."
        + (" Timings on this shared machine vary by more than the differences between variants (see the load"
           " averages): read the memory columns and the path table as the firm figures, the step times as"
           " indications." if r.get("busy_processes") else ""),
    ]
    lines += render_profile(r)
    lines += ["", "| beam-5 generation, mixed directions (interleaved rounds; the ratio below is the median of each"
              " round's LSLo / base) | seconds (median) |", "|---|---:|"]
    lines += [f"| {g['variant']} | {g['seconds']:.2f} |" for g in r["generation_beam5"]]
    if any(g["variant"].endswith("(control)") for g in r["generation_beam5"]):
        lines += ["", "The control is LSLo-200 with every LSLo layer calling only its base layer: the routing and the"
                  " wrappers; what LSLo-200 costs beyond it is the LoRA math, two batched products per adapted linear and"
                  " decoding step. bf16 rows:"
                  " bf16 weights under bf16 autocast, with and without the per-decoding-step gather and cast of each"
                  " sample's rows that unmerged generation did before `Routing.memo`."]  # fmt: skip
    lines += ["", "| ratio (same run) | measured | target |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.3f} | {'<= ' + format(r['targets'][k], '.2f') if k in r['targets'] else ''} |" for k, v in r["ratios"].items()]
    paths = r["paths_one_layer"]
    names = list(paths[0]["extra_ms"])
    lines += [
        "",
        "Mixed-batch paths of one LSLo linear (16 x 32 tokens, one thread): milliseconds of forward + backward added"
        " to the frozen linear's, medians of interleaved repetitions; `auto` is what the cost rule picks.",
        "",
        "| languages (sum of ranks) | in x out | frozen linear (ms) | " + " | ".join(names) + " | auto picks |",
        "|---|---|---:|" + "---:|" * len(names) + "---|",
    ]
    lines += [
        f"| {p['languages']} ({p['sum_of_ranks']}) | {p['in']} x {p['out']} | {p['frozen_linear_ms']:.2f} | "
        + " | ".join(f"+{p['extra_ms'][k]:.2f}" for k in names) + f" | {p['auto_picks']} |"
        for p in paths
    ]
    return "\n".join(lines)
