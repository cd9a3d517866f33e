"""CPU translation speed of a CTranslate2 export (int8, float32) against transformers `generate`, same sentences.

    python benchmarks/ct2_speed.py                        # shipped base, a short LSLo run, en->sw, bible12 test
    python benchmarks/ct2_speed.py --train-steps 0        # the base itself (no LSLo run)

What a deployment does: train LSLo (here a short run, `--train-steps` steps of configs/bible12-lslo.yaml on the
shipped base; resumable), fold one direction's LoRAs into the weights (`lslo export --merge`), convert that to
CTranslate2 (`lslo export --merge ... --format ctranslate2`) and translate with it. Times `lslo.evaluate.translate_items`
on the merged transformers model (fp32 `generate`) and the CTranslate2 model at compute types float32 and int8 on the
same sentences, with the same batching (<= `--max-tokens` source tokens a batch), the same output length cap and
the same thread count. The engines run interleaved, round after round (the CPU is shared: each round's ratios
compare times measured seconds apart), and the table reports medians over rounds: seconds, sentences per second
and the speed-up against transformers within each round. Agreement: the share of sentences whose output is
exactly transformers' output, and chrF++ against the references for each engine. Writes
`benchmarks/results/ct2_speed.json` and the `ct2-speed` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from benchmarks.results_md import HERE, machine, update_section  # noqa: E402
from lslo.io import write_json  # noqa: E402

ROOT = HERE.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="base/bible12-small")
    ap.add_argument("--data", default="data/bible12")
    ap.add_argument("--config", default=str(ROOT / "configs" / "bible12-lslo.yaml"))
    ap.add_argument("--work", default="runs/ct2-bench", help="the LSLo run and the exports go here")
    ap.add_argument("--train-steps", type=int, default=60, help="LSLo steps before merging (0: the base itself)")
    ap.add_argument("--direction", default="en-sw")
    ap.add_argument("--sentences", type=int, default=100, help="first N test sentences of the direction")
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import sacrebleu

    from lslo.data.corpus import load_multiway
    from lslo.deploy import CT2Model, export_ctranslate2
    from lslo.evaluate import translate_items
    from lslo.loading import load_base, load_model, load_tokenizer
    from lslo.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    src, tgt = args.direction.split("-")
    work = Path(args.work)
    if args.train_steps > 0:
        run = work / f"lslo-{args.train_steps}"
        cfg = TrainConfig.from_yaml(args.config, base_model=args.base, data=args.data, out_dir=str(run), max_epochs=None,
                                    max_steps=args.train_steps, max_tokens=1024, valid_split=None, resume=True,
                                    progress=False)  # fmt: skip
        if not (run / "model").is_dir():
            train(cfg)
        model, tokenizer, _ = load_model(str(run))
        merged = model.merge_direction(src, tgt).eval()
        what = f"the shipped base after {args.train_steps} LSLo steps (configs/bible12-lslo.yaml, <= 1024 tokens a step), {src}->{tgt} merged"
    else:
        tokenizer, merged = load_tokenizer(args.base), load_base(args.base).eval()
        what = "the shipped base itself (no LSLo run)"
    ct2_dir = work / f"ct2-{args.train_steps}-{src}-{tgt}"
    export_ctranslate2(merged, tokenizer, ct2_dir, src, tgt)

    pairs = load_multiway(args.data, languages=[src, tgt], split="test").pairs(src, tgt)[: args.sentences]
    items = [(src, tgt, s) for s, _ in pairs]
    refs = [r for _, r in pairs]
    engines = {
        "transformers fp32": merged,
        "ctranslate2 float32": CT2Model(ct2_dir, "float32", threads=args.threads),
        "ctranslate2 int8": CT2Model(ct2_dir, "int8", threads=args.threads),
    }
    rows = []
    for beams in args.beams:
        times: dict[str, list[float]] = {name: [] for name in engines}
        outputs: dict[str, list[str]] = {}
        for engine in engines.values():  # warm-up
            translate_items(engine, tokenizer, items[:8], beams, args.max_tokens, progress=False)
        for r in range(args.rounds):
            for name, engine in engines.items():
                started = time.perf_counter()
                outputs[name] = translate_items(engine, tokenizer, items, beams, args.max_tokens, progress=False)
                times[name].append(time.perf_counter() - started)
                print(f"beam {beams} round {r + 1}: {name} {times[name][-1]:.2f} s", flush=True)
        base_name = "transformers fp32"
        for name in engines:
            rows.append({
                "beams": beams, "engine": name, "seconds": [round(t, 3) for t in times[name]],
                "median_seconds": round(statistics.median(times[name]), 3),
                "sentences_per_second": round(len(items) / statistics.median(times[name]), 2),
                "speedup_vs_transformers": round(statistics.median(
                    [b / t for b, t in zip(times[base_name], times[name], strict=True)]), 3),
                "same_output_as_transformers": sum(a == b for a, b in zip(outputs[name], outputs[base_name], strict=True)),
                "sentences": len(items),
                "chrf": round(sacrebleu.corpus_chrf(outputs[name], [refs], word_order=2).score, 2),
            })  # fmt: skip
    import ctranslate2

    result = {"benchmark": "ct2_speed", "command": "python benchmarks/ct2_speed.py " + " ".join(sys.argv[1:]),
              "machine": {**machine(), "ctranslate2": ctranslate2.__version__, "threads": args.threads},
              "model": what, "base": args.base, "direction": args.direction, "sentences": len(items),
              "max_tokens": args.max_tokens, "rounds": args.rounds, "rows": rows}  # fmt: skip
    print(json.dumps(rows, indent=2))
    if args.no_write:
        return
    out = HERE / "results" / "ct2_speed.json"
    write_json(out, result)
    update_section("ct2-speed", render(result))
    print(f"wrote {out} and benchmarks/RESULTS.md")


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "## Deployment: CTranslate2 export vs transformers `generate` (CPU)",
        "",
        f"Command: `{r['command'].strip()}` · machine: {m['cpu']}, {m['cpu_cores']} cores ({m['threads']} threads for "
        f"both engines), torch {m['torch']}, CTranslate2 {m['ctranslate2']} · {m['date']} · commit {m['git_commit']} · "
        "JSON: `benchmarks/results/ct2_speed.json`",
        "",
        f"Model: {r['model']}. The first {r['sentences']} bible12 test sentences of {r['direction']}, batches of <= "
        f"{r['max_tokens']} source tokens, the same output cap (2 x longest source + 10). Medians over {r['rounds']} "
        "interleaved rounds; the speed-up is the median of the per-round ratios (transformers time / engine time). "
        "Same output: sentences whose translation equals transformers' exactly.",
        "",
        "| beams | engine | median s | sentences/s | speed-up vs transformers | same output | chrF++ |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {x['beams']} | {x['engine']} | {x['median_seconds']:.2f} | {x['sentences_per_second']:.1f} | "
        f"{x['speedup_vs_transformers']:.2f}x | {x['same_output_as_transformers']}/{x['sentences']} | {x['chrf']:.2f} |"
        for x in r["rows"]
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
