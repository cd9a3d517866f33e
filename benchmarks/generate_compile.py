"""Compiled generation on CPU: `lslo eval`'s decoding with every encoder/decoder layer compiled, against eager.

    python benchmarks/generate_compile.py runs/demo/lslo                 # the demo's LSLo model, greedy
    python benchmarks/generate_compile.py runs/demo/lslo --beams 5

The model is loaded twice: one copy stays eager, the other gets `lslo.compiling.compile_layers` (what `compile:
true` does in training: Inductor, dynamic shapes; LSLo's routing as tensor data, so batches that mix directions
and beams reuse the graphs). Test verses of every direction among `--languages` are split into `--chunks` chunks
that each mix all directions; each chunk is translated by both models in turn (which goes first alternates), so the
machine's drift hits both alike. Reported: the warm-up (compiling) time, both models' seconds over the timed
chunks, their ratio, and how many translations are identical. Writes `benchmarks/results/generate_compile.json`
and the `generate_compile` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from benchmarks import results_md  # noqa: E402

OUT = results_md.HERE / "results" / "generate_compile.json"


def measure(opts: argparse.Namespace) -> dict[str, Any]:
    from lslo.compiling import compile_layers
    from lslo.data.readers import read_corpus
    from lslo.evaluate import translate_items
    from lslo.loading import load_model

    torch.set_num_threads(opts.threads)
    eager, tokenizer, _ = load_model(opts.model)
    compiled, _, _ = load_model(opts.model)
    layers = compile_layers(compiled, backend=opts.backend)
    corpus = read_corpus(opts.data, split=opts.split, languages=opts.languages)
    items = [(s, t, text) for s in corpus.languages for t in corpus.languages if s != t
             for text in corpus.sentences(s)[: opts.per_direction]]  # fmt: skip
    chunks = [items[i :: opts.chunks] for i in range(opts.chunks)]  # every chunk mixes every direction

    def run(model: torch.nn.Module, chunk: list[tuple[str, str, str]]) -> list[str]:
        return translate_items(model, tokenizer, chunk, num_beams=opts.beams, progress=False)

    start = time.perf_counter()
    run(compiled, chunks[0])  # warm-up: the compiled copy compiles here (and the eager one is not timed cold either)
    warmup_s = time.perf_counter() - start
    run(eager, chunks[0])
    seconds = {"eager": 0.0, "compiled": 0.0}
    identical = 0
    for i, chunk in enumerate(chunks):
        out = {}
        for name in ("eager", "compiled") if i % 2 else ("compiled", "eager"):
            start = time.perf_counter()
            out[name] = run(eager if name == "eager" else compiled, chunk)
            seconds[name] += time.perf_counter() - start
        identical += sum(a == b for a, b in zip(out["eager"], out["compiled"], strict=True))
        print(f"chunk {i + 1}/{len(chunks)}: eager {seconds['eager']:.1f} s, compiled {seconds['compiled']:.1f} s so far", flush=True)
    return {"items": len(items), "layers_compiled": layers, "directions": len(corpus.languages) * (len(corpus.languages) - 1), "warmup_s": warmup_s,
            "seconds": seconds, "ratio": seconds["eager"] / seconds["compiled"], "identical": identical}  # fmt: skip


def render(data: dict[str, Any]) -> str:
    m, r = data["machine"], data["result"]
    return "\n".join([
        "## generate_compile: compiled generation on CPU", "",
        f"Command: `{data['command']}` · {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} · {m['date']} · commit {m['git_commit']}", "",
        f"`{data['model']}`, {r['directions']} directions x {data['per_direction']} test verses ({r['items']} translations), "
        f"beam {data['beams']}, {data['threads']} threads, backend `{data['backend']}`; {data['chunks']} chunks that each mix every "
        "direction, translated by an eager and a compiled copy of the model in turn (which goes first alternates).", "",
        "| eager (s) | compiled (s) | compiled speed over eager | warm-up incl. compiling (s) | identical translations |",
        "|---:|---:|---:|---:|---:|",
        f"| {r['seconds']['eager']:.1f} | {r['seconds']['compiled']:.1f} | {r['ratio']:.2f}x | {r['warmup_s']:.0f} | "
        f"{r['identical']} of {r['items']} |",
        *(["", data["note"]] if data.get("note") else []),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a run folder or saved model (e.g. runs/demo/lslo after `make demo`)")
    ap.add_argument("--data", default="data/bible12")
    ap.add_argument("--split", default="test")
    ap.add_argument("--languages", nargs="+", default=["en", "ru", "sw", "tl"])
    ap.add_argument("--per-direction", type=int, default=10)
    ap.add_argument("--chunks", type=int, default=6)
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--note", default="")
    opts = ap.parse_args(argv)
    from lslo.errors import LsloError

    try:
        result = measure(opts)
    except LsloError as err:
        print(f"generate_compile.py: error: {err}", file=sys.stderr)
        return 2
    data = {"command": "python benchmarks/generate_compile.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": results_md.machine(), "model": opts.model, "per_direction": opts.per_direction, "chunks": opts.chunks,
            "beams": opts.beams, "threads": opts.threads, "backend": opts.backend, "result": result, "note": opts.note}  # fmt: skip
    from lslo.io import write_json

    write_json(OUT, data)
    results_md.update_section("generate_compile", render(data))
    print(render(data))
    print(json.dumps(result["seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
