"""Eager vs compiled training steps of LSLo, shared LoRA and full fine-tuning on one shape (made for a GPU).

    python benchmarks/compile_speed.py --shape 418m --batch 128 --seq 32   # on a GPU: 4k-token batches
    python benchmarks/compile_speed.py --shape 418m --batch 256 --seq 64   # 16k-token batches
    python benchmarks/compile_speed.py --shape tiny --rounds 1 --backend aot_eager  # a CPU smoke test

Modes: `eager`; `compile` (`lslo.compiling`: each encoder/decoder layer compiled by Inductor, dynamic shapes, what
`compile: true` does in `lslo train`); `cudagraphs` (the same with `mode="reduce-overhead"` and static shapes:
CUDA graphs replay each layer's kernels; GPU only, the batch's shapes are fixed here). Each variant takes
`--warmup` untimed steps (compiling happens there; reported as `warmup_s`), then rounds are interleaved over
all variants (median step time). The step is `benchmarks/lslo_speed.py`'s: bf16 autocast forward, label-smoothed
loss, backward, `lslo train`'s optimizer (LanguageAdamW for LSLo, AdamW otherwise), 12 languages, mixed batch.
Writes `benchmarks/results/compile_speed_<device>_<batch>x<seq>.json`; ratios are within this run only.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys

import torch

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from benchmarks.results_md import HERE, machine  # noqa: E402
from benchmarks.speed_kit import (  # noqa: E402
    BIBLE12,
    SHAPES,
    Variant,
    build_base,
    lang_ids,
    make_batch,
    randomize_lora,
    timed,
)
from lslo import LSLoConfig, add_lslo  # noqa: E402
from lslo.baselines import FullFineTune, SharedLoRA  # noqa: E402
from lslo.compiling import compile_layers  # noqa: E402
from lslo.io import write_json  # noqa: E402

SHAPES = {**SHAPES, "tiny": dict(d_model=32, layers=2, ffn=64, heads=2, vocab=1000, batch=4, seq=8)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="418m")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=["lslo", "lora", "full"])
    ap.add_argument("--no-cudagraphs", action="store_true", help="skip the CUDA-graphs mode")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend of `compile` (aot_eager: a quick smoke test)")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = dict(SHAPES[args.shape])
    shape.update({k: v for k, v in (("batch", args.batch), ("seq", args.seq)) if v})
    langs = list(BIBLE12)
    ids = lang_ids(shape, langs)
    base = build_base(shape, torch.float32, device)
    batch = make_batch(shape, langs, True, device)

    def model(method: str) -> torch.nn.Module:
        m = copy.deepcopy(base).train()
        if method == "lslo":
            m = add_lslo(m, LSLoConfig(languages=dict(BIBLE12), lang_token_ids=ids))
        elif method == "lora":
            m = SharedLoRA(m, ids, r=8, placement=LSLoConfig(languages=dict(BIBLE12)))
        else:
            return FullFineTune(m, ids)
        randomize_lora(m)
        return m

    modes = ["eager", "compile"] + (["cudagraphs"] if device == "cuda" and not args.no_cudagraphs else [])
    variants, warmup, errors = {}, {}, {}
    for method in args.methods:
        for mode in modes:
            name = f"{method} {mode}"
            v = Variant(name, model(method), batch, device, autocast=True)
            try:
                if mode == "compile":
                    compile_layers(v.model, backend=args.backend)
                elif mode == "cudagraphs":
                    compile_layers(v.model, dynamic=False, mode="reduce-overhead")
                warmup[name] = sum(timed(v.step, device) for _ in range(args.warmup))
                variants[name] = v
            except Exception as err:  # a mode this machine cannot run: recorded, the rest goes on
                errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"{name}: warm-up {warmup.get(name, float('nan')):.1f} s {errors.get(name, '')}", flush=True)
    for r in range(args.rounds):
        for v in variants.values():
            v.times += [timed(v.step, device) for _ in range(args.steps)]
        print(f"round {r + 1}: " + ", ".join(f"{n} {statistics.median(v.times):.4f}s" for n, v in variants.items()), flush=True)
    tokens = shape["batch"] * shape["seq"]
    med = {n: statistics.median(v.times) for n, v in variants.items()}
    rows = {n: {"step_s": med[n], "target_tokens_per_s": tokens / med[n], "warmup_s": warmup[n],
                "vs_eager_same_method": med[f"{n.split()[0]} eager"] / med[n] if f"{n.split()[0]} eager" in med else None,
                "vs_full_eager_time": med[n] / med["full eager"] if "full eager" in med else None}
            for n in variants}  # fmt: skip
    out = HERE / "results" / f"compile_speed_{device}_{shape['batch']}x{shape['seq']}.json"
    data = {"benchmark": "compile_speed", "command": "python benchmarks/compile_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine(), "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "shape": shape,
            "rounds": args.rounds, "steps": args.steps, "results": rows, "errors": errors}  # fmt: skip
    write_json(out, data)
    for n, row in rows.items():
        print(f"{n:>16}: {row['step_s']:.4f} s/step, {row['vs_eager_same_method']:.2f}x its eager, "
              f"{row['vs_full_eager_time'] or float('nan'):.2f} of full eager's time, warm-up {row['warmup_s']:.1f} s")  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
