"""Evaluation speed of an LSLo model: mixed-direction batches vs per-direction merged batches vs the base.

    python benchmarks/eval_merge.py                     # the shipped base, bible12 test, 12 directions
    python benchmarks/eval_merge.py --per-direction 10 32 100

`lslo eval` translates with beam 5. An LSLo model can run its batches two ways (`translate_items`):
batches that mix directions (every adapted linear adds the routed LoRA term), or one direction per batch
with that direction's LoRAs folded into the weights (`LSLoModel.merged`: the base model's cost, but
batches no larger than one direction's sentences). This times both against the plain base on the same
sentences, for several sentences-per-direction counts (`lslo eval --merge` is off by default).
The LSLo model is the shipped base with LSLo 2/2/8 on it and random B matrices (speed does not depend on
the values). Writes `benchmarks/results/eval_merge.json` and the `eval-merge` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from benchmarks.results_md import HERE, machine, update_section  # noqa: E402
from lslo.config import LSLoConfig  # noqa: E402
from lslo.data.corpus import load_multiway  # noqa: E402
from lslo.evaluate import translate_items  # noqa: E402
from lslo.io import write_json  # noqa: E402
from lslo.loading import load_base  # noqa: E402
from lslo.model import add_lslo  # noqa: E402

TIERS = {"en": "high", "fr": "high", "zh": "medium", "ru": "medium", "sw": "low", "vi": "low"}
DIRECTIONS = [("en", "fr"), ("fr", "en"), ("en", "zh"), ("zh", "en"), ("en", "sw"), ("sw", "en"),
              ("ru", "vi"), ("vi", "ru"), ("fr", "sw"), ("zh", "ru"), ("sw", "vi"), ("vi", "fr")]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="base/bible12-small")
    ap.add_argument("--data", default="data/bible12")
    ap.add_argument("--per-direction", type=int, nargs="+", default=[10, 32, 100])
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    base = load_base(args.base).eval()  # fp32, as `lslo eval` loads it (the shipped weights are fp16)
    corpus = load_multiway(args.data, languages=list(TIERS), split="test")
    config = LSLoConfig(languages=TIERS, ranks={"high": 2, "medium": 2, "low": 8})
    model = add_lslo(load_base(args.base), config, tokenizer).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in model.lslo_layers().values():
            layer.lora_B.normal_(0, 0.02)

    rows = []
    for n in args.per_direction:
        items = [(s, t, src) for s, t in DIRECTIONS for src, _ in corpus.pairs(s, t)[:n]]
        row = {"per_direction": n, "sentences": len(items)}
        outputs = {}
        for name, m, merge in (("base", base, False), ("lslo mixed", model, False), ("lslo merged", model, True)):
            started = time.perf_counter()
            outputs[name] = translate_items(m, tokenizer, items, args.beams, progress=False, merge=merge)
            row[name] = round(time.perf_counter() - started, 2)
            print(f"{n} per direction, {name}: {row[name]} s", flush=True)
        row["merged / mixed"] = round(row["lslo merged"] / row["lslo mixed"], 3)
        row["merged / base"] = round(row["lslo merged"] / row["base"], 3)
        row["same hypotheses, merged vs mixed"] = sum(a == b for a, b in zip(outputs["lslo mixed"], outputs["lslo merged"], strict=True))
        rows.append(row)
    result = {"benchmark": "eval_merge", "command": "python benchmarks/eval_merge.py " + " ".join(sys.argv[1:]),
              "machine": machine(), "base": args.base, "directions": ["-".join(d) for d in DIRECTIONS],
              "beams": args.beams, "rows": rows}  # fmt: skip
    print(json.dumps(rows, indent=2))
    if args.no_write:
        return
    out = HERE / "results" / "eval_merge.json"
    write_json(out, result)
    update_section("eval-merge", render(result))
    print(f"wrote {out} and benchmarks/RESULTS.md")


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "## Evaluation speed: LSLo mixed-direction batches vs per-direction merged batches",
        "",
        f"Command: `{r['command'].strip()}` · machine: {m.get('gpu', m['cpu'])}, {m['cpu_cores']} cores, "
        f"torch {m['torch']} · {m['date']} · commit {m['git_commit']} · JSON: `benchmarks/results/eval_merge.json`",
        "",
        f"Beam {r['beams']}, {len(r['directions'])} directions of bible12 test, base `{r['base']}` with LSLo 2/2/8 "
        "(random B), loaded in fp32 as `lslo eval` does.",
        "",
        "| sentences / direction | base (s) | LSLo mixed (s) | LSLo merged (s) | merged / mixed | merged / base | same hypotheses |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {x['per_direction']} | {x['base']:.1f} | {x['lslo mixed']:.1f} | {x['lslo merged']:.1f} | "
        f"{x['merged / mixed']:.2f} | {x['merged / base']:.2f} | {x['same hypotheses, merged vs mixed']}/{x['sentences']} |"
        for x in r["rows"]
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
