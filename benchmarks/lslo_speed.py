"""Speed and memory of one training step and of beam-5 generation: LSLo against its baselines.

    python benchmarks/lslo_speed.py                 # CPU shape: d_model 512, 6+6 layers, FFN 2048, vocab 16k, 16 x 32 tokens
    python benchmarks/lslo_speed.py --shape 418m    # on a GPU: the M2M-100 418M shape, bf16 autocast, 4,096-token batches
    python benchmarks/lslo_speed.py --shape 1.2b --weights bf16   # the 1.2B shape with bf16 weights too

On a GPU the default is what `lslo train` does there: fp32 weights and optimizer state, bf16 autocast
(`--weights bf16` stores the weights in bf16 as well, as pure-bf16 trainers do).

Every variant starts from the same random base. Timings are interleaved round-robin over the variants
(so drift on a shared machine hits them alike) and reported as medians with ratios to baselines measured
in the same run. Memory: on CUDA the peak allocated bytes of a step; on CPU, where no allocator reports a
peak, the bytes a step must hold: parameters + gradients + optimizer state + tensors saved for backward
(counted with `torch.autograd.graph.saved_tensors_hooks`, each storage once). All variants stay resident
for the interleaving, so a variant's CUDA peak is the step's peak minus what the other variants hold.
Writes `benchmarks/results/lslo_speed_<device>.json` and a section of `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from pathlib import Path

import torch

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from benchmarks.results_md import HERE, machine, update_section  # noqa: E402
from benchmarks.speed_kit import (  # noqa: E402
    BIBLE12,
    SHAPES,
    Variant,
    build_base,
    lang30,
    lang_ids,
    make_batch,
    randomize_lora,
    step_memory,
    time_generations,
    timed,
)
from lslo import LSLoConfig, add_lslo  # noqa: E402
from lslo.baselines import FullFineTune, SharedLoRA  # noqa: E402
from lslo.io import write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="cpu")
    ap.add_argument("--rounds", type=int, default=5, help="round-robin rounds; each times --steps steps per variant")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--gen-reps", type=int, default=3)
    ap.add_argument("--batch", type=int, help="sentences per batch (default: the shape's)")
    ap.add_argument("--seq", type=int, help="tokens per sentence, source and target (default: the shape's)")
    ap.add_argument("--weights", choices=["fp32", "bf16"], default="fp32",
                    help="GPU only: dtype of the stored weights (bf16 autocast either way); CPU runs fp32 without autocast")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write JSON or RESULTS.md")
    ap.add_argument("--render", action="store_true", help="only re-render RESULTS.md sections from results/lslo_speed_*.json")
    ap.add_argument("--languages-sweep", action="store_true",
                    help="LSLo at 12/50/100/200 NLLB languages vs peft LoRA (CPU shape): results/lslo_speed_languages_<device>.json")
    ap.add_argument("--gen-tokens", type=int, help="languages sweep: new tokens per generated sentence (default: --seq)")
    args = ap.parse_args()
    if args.languages_sweep:
        from benchmarks.languages_sweep import run_sweep

        run_sweep(args)
        return
    if args.render:
        paths = sorted((HERE / "results").glob("lslo_speed_*.json"))
        for path in paths:
            r = json.loads(path.read_text(encoding="utf-8"))
            if r.get("benchmark") == "lslo_speed_languages":
                from benchmarks.languages_sweep import render_sweep

                update_section(path.stem, render_sweep(r, path))
            else:
                update_section(path.stem, render(r, path))
        gpu = [(path, json.loads(path.read_text(encoding="utf-8"))) for path in paths if "cuda" in path.stem and "languages" not in path.stem]
        if gpu:
            update_section("lslo_speed_gpu_summary", render_gpu_summary(gpu))
        return

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = dict(SHAPES[args.shape], batch=args.batch or SHAPES[args.shape]["batch"], seq=args.seq or SHAPES[args.shape]["seq"])
    resized = (shape["batch"], shape["seq"]) != (SHAPES[args.shape]["batch"], SHAPES[args.shape]["seq"])
    dtype = torch.bfloat16 if device == "cuda" and args.weights == "bf16" else torch.float32
    autocast = device == "cuda"
    langs12, langs30 = list(BIBLE12), list(lang30())
    ids30 = lang_ids(shape, langs30)
    ids12 = {k: ids30[k] for k in langs12}
    base = build_base(shape, dtype, device)
    placement = LSLoConfig(languages=dict(BIBLE12))

    def fresh():
        return copy.deepcopy(base).train()

    def lslo(languages):
        m = add_lslo(fresh(), LSLoConfig(languages=languages, lang_token_ids={k: ids30[k] for k in languages}))
        randomize_lora(m)
        return m

    mixed12 = make_batch(shape, langs12, True, device)
    one12 = make_batch(shape, langs12, False, device)
    mixed30 = make_batch(shape, langs30, True, device)
    frozen = fresh().requires_grad_(False)
    frozen.enable_input_require_grads()
    lora = SharedLoRA(fresh(), ids12, r=8, placement=placement)
    randomize_lora(lora)
    lslo12 = lslo(dict(BIBLE12))
    variants = [
        Variant("frozen base (activation grads only)", frozen, mixed12, device, autocast, optimize=False),
        Variant("peft shared LoRA r=8", lora, mixed12, device, autocast),
        Variant("LSLo-12 mixed batch", lslo12, mixed12, device, autocast),
        Variant("LSLo-12 one-language batch", lslo12, one12, device, autocast),
        Variant("LSLo-30 mixed batch", lslo(lang30()), mixed30, device, autocast),
        Variant("full fine-tuning", FullFineTune(fresh(), ids12), mixed12, device, autocast),
    ]
    print(f"device={device} shape={args.shape} {shape}", flush=True)
    for v in variants:  # warm-up, then memory (one extra step each)
        v.step()
        v.memory = step_memory(v)
    for r in range(args.rounds):
        for v in variants:
            for _ in range(args.steps):
                v.times.append(timed(v.step, device))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v.name.split(' (')[0]} {statistics.median(v.times):.3f}s" for v in variants), flush=True)

    # Generation: beam 5, a fixed number of new tokens (min = max) so every variant decodes the same length.
    gen = dict(num_beams=5, max_new_tokens=shape["seq"], min_new_tokens=shape["seq"], do_sample=False)
    lslo12.eval()
    merged = lslo12.merge_direction("en", "fr").eval()
    gen_base = fresh().eval()
    src_ids, mask = mixed12["input_ids"], mixed12["attention_mask"]
    prompt = torch.tensor([[2, ids12["fr"]]] * src_ids.shape[0], device=device)
    gens = {
        "base": lambda: gen_base.generate(input_ids=src_ids, attention_mask=mask, decoder_input_ids=prompt, **gen),
        "LSLo-12 unmerged, mixed batch": lambda: lslo12.generate(src_ids, mask, src_lang=mixed12["src_lang"], tgt_lang=mixed12["tgt_lang"], **gen),
        "LSLo merged (one direction)": lambda: merged.generate(input_ids=src_ids, attention_mask=mask, decoder_input_ids=prompt, **gen),
    }  # fmt: skip
    gen_times = time_generations(gens, args.gen_reps, device)

    tokens = shape["batch"] * shape["seq"]
    by_name = {v.name: v for v in variants}
    med = {v.name: statistics.median(v.times) for v in variants}
    rows = [
        {"variant": v.name, "step_s": med[v.name], "target_tokens_per_s": tokens / med[v.name], "trainable_params": v.trainable,
         "memory_bytes": v.memory, "steps_timed": len(v.times)}
        for v in variants
    ]  # fmt: skip
    gmed = {k: statistics.median(t) for k, t in gen_times.items()}
    lora_t, full = med["peft shared LoRA r=8"], by_name["full fine-tuning"]
    ratios = {
        "LSLo-12 mixed / peft LoRA (target <= 1.10)": med["LSLo-12 mixed batch"] / lora_t,
        "LSLo-12 one-language / peft LoRA (target <= 1.03)": med["LSLo-12 one-language batch"] / lora_t,
        "LSLo-30 mixed / peft LoRA (target <= 1.20)": med["LSLo-30 mixed batch"] / lora_t,
        "LSLo-12 mixed / full FT, time (target <= 0.75)": med["LSLo-12 mixed batch"] / med[full.name],
        "LSLo-12 mixed / full FT, memory (target <= 0.6)": by_name["LSLo-12 mixed batch"].memory / full.memory,
        "merged generation / base (target <= 1.02)": gmed["LSLo merged (one direction)"] / gmed["base"],
        "unmerged mixed generation / base": gmed["LSLo-12 unmerged, mixed batch"] / gmed["base"],
    }
    memory_kind = "peak CUDA allocated" if device == "cuda" else "params + grads + optimizer state + saved activations"
    result = {
        "benchmark": "lslo_speed",
        "command": "python benchmarks/lslo_speed.py" + (f" --shape {args.shape}" if args.shape != "cpu" else "")
        + (" --weights bf16" if args.weights == "bf16" and device == "cuda" else "")
        + (f" --batch {shape['batch']} --seq {shape['seq']}" if resized else ""),
        "machine": machine(), "device": device, "dtype": str(dtype).removeprefix("torch."), "shape": shape,
        "autocast": "bf16" if autocast else None,
        "memory_kind": memory_kind, "train_step": rows,
        "generation_beam5": [{"variant": k, "seconds": v, "reps": args.gen_reps} for k, v in gmed.items()], "ratios": ratios,
    }  # fmt: skip
    print(json.dumps(ratios, indent=2))
    if args.no_write:
        return
    tag = device if args.shape == "cpu" else f"{device}_{args.shape}" + ("_bf16" if dtype == torch.bfloat16 else "")
    tag += f"_{shape['batch']}x{shape['seq']}" if resized else ""
    out = HERE / "results" / f"lslo_speed_{tag}.json"
    write_json(out, result)
    update_section(f"lslo_speed_{tag}", render(result, out))
    print(f"wrote {out} and benchmarks/RESULTS.md")


def render_gpu_summary(runs: list[tuple[Path, dict]]) -> str:
    """One row per GPU run: target tokens/s and peak memory of LSLo-12, shared LoRA and full fine-tuning."""
    lines = [
        "## GPU summary: M2M-100 shapes, one training step",
        "",
        "From the JSON of the GPU sections below (`python benchmarks/lslo_speed.py --render`). Random-init models"
        " with the real shapes; LSLo-12 = bible12's 12 languages at ranks 2/2/8, mixed-language batch; shared"
        " LoRA = peft, rank 8; memory = the step's peak CUDA allocation for that variant alone.",
        "",
        "| shape | weights | batch (target tokens) | LSLo-12 tok/s | shared LoRA tok/s | full FT tok/s | LSLo / full FT time"
        " | LSLo GiB | shared LoRA GiB | full FT GiB | LSLo / full FT memory | JSON |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    def variants(r: dict) -> tuple[dict, dict, dict]:
        rows = {row["variant"]: row for row in r["train_step"]}
        return rows["LSLo-12 mixed batch"], rows["peft shared LoRA r=8"], rows["full fine-tuning"]

    for path, r in sorted(runs, key=lambda pr: (pr[1]["shape"]["layers"], pr[1]["dtype"], pr[1]["shape"]["batch"])):
        lslo, lora, full = variants(r)
        s = r["shape"]
        name = "1.2B" if s["layers"] == 24 else "418M"
        lines.append(
            f"| {name} | {r['dtype']}{' + ' + r['autocast'] + ' autocast' if r.get('autocast') else ''} "
            f"| {s['batch']} x {s['seq']} ({s['batch'] * s['seq']:,}) | {lslo['target_tokens_per_s']:,.0f} "
            f"| {lora['target_tokens_per_s']:,.0f} | {full['target_tokens_per_s']:,.0f} | {lslo['step_s'] / full['step_s']:.2f} "
            f"| {lslo['memory_bytes'] / 2**30:.1f} | {lora['memory_bytes'] / 2**30:.1f} | {full['memory_bytes'] / 2**30:.1f} "
            f"| {lslo['memory_bytes'] / full['memory_bytes']:.2f} | `{path.name}` |"
        )
    trios = [variants(r) for _, r in runs]
    time_full = [lslo["step_s"] / full["step_s"] for lslo, _, full in trios]
    time_lora = [lslo["step_s"] / lora["step_s"] for lslo, lora, _ in trios]
    mem_full = [lslo["memory_bytes"] / full["memory_bytes"] for lslo, _, full in trios]
    m = runs[0][1]["machine"]
    lines += [
        "",
        f"Reading: LSLo-12's step takes {min(time_full):.2f}-{max(time_full):.2f}x full fine-tuning's time and"
        f" {min(time_lora):.2f}-{max(time_lora):.2f}x peft shared LoRA's, with {min(mem_full):.2f}-{max(mem_full):.2f}x"
        " full fine-tuning's peak memory. On a GPU the adapters' many small matrix products are likely launch-bound"
        " (not profiled), so"
        " LSLo (like any LoRA) only matches full fine-tuning's speed at large batches; its peak memory is close to"
        " full fine-tuning's because the activations (the 128k-vocabulary logits above all) dominate, not the"
        " gradients and Adam state it saves. What LSLo buys on a GPU is those saved states, a checkpoint per run"
        " of adapters only, and language-specific capacity, not step speed.",
        "",
        f"Machine: {m.get('gpu')}, torch {m['torch']}, {m['date']} (each section below names its own).",
    ]
    return "\n".join(lines)


def render(r: dict, path: Path) -> str:
    m, s = r["machine"], r["shape"]
    lines = [
        f"## Training-step speed and memory ({r['device']}, {r['dtype']} weights"
        + (f", {r['autocast']} autocast)" if r.get("autocast") else ")"),
        "",
        f"Command: `{r['command']}` · machine: {m.get('gpu', m['cpu'])}, {m['cpu_cores']} cores, torch {m['torch']} "
        f"· {m['date']} · commit {m['git_commit']} · JSON: `{path.relative_to(HERE.parent)}`",
        "",
        f"Shape: d_model {s['d_model']}, {s['layers']}+{s['layers']} layers, FFN {s['ffn']}, vocab {s['vocab']}, "
        f"batches of {s['batch']} x {s['seq']} tokens. Memory = {r['memory_kind']}.",
        "",
        "| variant | step (s, median) | target tok/s | trainable params | memory (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row['variant']} | {row['step_s']:.3f} | {row['target_tokens_per_s']:.0f} | {row['trainable_params']:,} | {row['memory_bytes'] / 2**20:.0f} |"
        for row in r["train_step"]
    ]
    lines += ["", "| beam-5 generation | seconds (median) |", "|---|---:|"]
    lines += [f"| {g['variant']} | {g['seconds']:.2f} |" for g in r["generation_beam5"]]
    lines += ["", "| ratio (same run) | measured |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in r["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
