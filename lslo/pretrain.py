"""Pretrain a small many-to-many base model from scratch: the demo's stand-in for M2M-100.

`pretrain(data_dir, out_dir)` does, each step only once (so a killed run picks up where it stopped):

1. train a SentencePiece tokenizer on the `pretrain` split  -> <out>/tokenizer
2. build a random-init `M2M100ForConditionalGeneration`      -> <out>/init
3. train every direction of the `pretrain` split with the same trainer as fine-tuning (method `full`,
   checkpointed, resumable)                                   -> <out>/train
4. export a standard Hugging Face directory (fp16 safetensors + tokenizer + `lslo_base.json` manifest)
                                                               -> <out>/export (or `export_dir`)

A later stage may start from an earlier stage's export (`init_from`, e.g. with other sampling settings):
steps 1 and 2 then copy that export, and the new export's manifest chains both stages (hours, tokens,
and a `rebuild` command line that runs them all from scratch).

Run it in the background and resume it as often as needed:

    python -m lslo.pretrain --data data/bible12 --out runs/base --hours 6
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lslo.errors import LsloError
from lslo.precision import PRECISIONS
from lslo.pretrain_export import STAGE_FLAGS, export, quick_chrf, source_dependence
from lslo.pretrain_prepare import (
    MANIFEST,
    MODEL_SIZES,
    PRETRAIN_DEFAULTS,
    build_base_model,
    continue_from,
    prepare,
)

# The run, and (so `from lslo.pretrain import ...` still works) the names of steps 1, 2 and 4.
__all__ = ["MANIFEST", "MODEL_SIZES", "PRETRAIN_DEFAULTS", "add_arguments", "build_base_model", "continue_from",
           "export", "main", "prepare", "pretrain", "quick_chrf", "run", "source_dependence"]  # fmt: skip


def pretrain(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    languages: Sequence[str] | None = None,
    model_size: str = "base",
    max_steps: int | None = None,
    max_hours: float | None = None,
    vocab_size: int = 8000,
    seed: int = 1,
    export_dir: str | os.PathLike | None = None,
    chrf_sentences: int = 0,
    progress: bool = True,
    init_from: str | os.PathLike | None = None,
    **train_overrides: Any,
) -> dict[str, Any]:
    """Pretrain (or resume pretraining) a base model; export it when the budget is spent.

    `max_hours` counts training time over all sessions; calling again with a larger budget continues.
    `init_from`: start from an earlier stage's export instead of random weights (a new stage).
    `train_overrides` are TrainConfig fields (e.g. max_tokens, lr). Returns the export manifest, or the
    training summary when the run was interrupted (SIGTERM / SIGINT).
    """
    from lslo.train import TrainConfig, train

    if max_steps is None and max_hours is None:
        raise LsloError("pretrain: no budget; give --steps or --hours")
    out = Path(out_dir)
    if init_from is not None:
        init_dir = continue_from(init_from, out)
    else:
        _, init_dir = prepare(data_dir, out, languages, model_size, vocab_size, seed)
    settings = {**PRETRAIN_DEFAULTS, **train_overrides}
    cfg = TrainConfig(
        data=str(Path(data_dir).resolve()),
        base_model=str(init_dir.resolve()),
        out_dir=str((out / "train").resolve()),
        languages=list(languages) if languages is not None else None,
        max_steps=max_steps,
        max_hours=max_hours,
        seed=seed,
        resume=True,
        progress=progress,
        **settings,
    )
    summary = train(cfg)
    if summary["interrupted"]:
        return summary
    return export(out, export_dir, data_dir=data_dir, model_size=model_size, chrf_sentences=chrf_sentences)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The pretraining options (shared by `python -m lslo.pretrain` and `lslo pretrain`)."""
    parser.add_argument("--data", required=True, help="multi-way data folder with a `pretrain` split")
    parser.add_argument("--out", required=True, help="run folder (resumed when it exists)")
    parser.add_argument("--languages", nargs="+", default=None, help="language codes (default: all)")
    parser.add_argument("--model-size", default="base", choices=sorted(MODEL_SIZES))
    parser.add_argument("--steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument(
        "--hours", type=float, default=None, help="stop after this much training time in total"
    )
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--export-dir", default=None, help="where to export (default: <out>/export)")
    parser.add_argument("--export-only", action="store_true", help="export the newest checkpoint and stop")
    parser.add_argument(
        "--chrf-sentences", type=int, default=0, help="score chrF++ on this many valid sentences"
    )
    parser.add_argument(
        "--precision", default=None, choices=list(PRECISIONS),
        help="autocast (default auto: bf16 on a GPU that has it, else fp32; fast: bf16 also on a CPU with bf16 "
             "instructions)",
    )  # fmt: skip
    parser.add_argument(
        "--init-from", default=None,
        help="start from an earlier stage's export (a new stage, e.g. with another --temperature) in a new --out",
    )  # fmt: skip
    parser.add_argument("--temperature", type=float, default=None, help="direction sampling temperature (default 5)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="warm-up steps (default 1000)")
    parser.add_argument("--dropout", type=float, default=None, help="dropout (default 0.1)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--compile", action="store_const", const=True, default=None,
                        help="torch.compile each encoder/decoder layer (lslo.compiling; the run config's compile: true)")


def run(args: argparse.Namespace) -> int:
    """Pretrain or export as `args` says; print the manifest or summary. LsloError propagates."""
    if args.export_only:
        result = export(args.out, args.export_dir, args.data, None, args.chrf_sentences)
    else:
        overrides = {k: getattr(args, k) for k in ("max_tokens", "precision", "compile", *STAGE_FLAGS)
                     if getattr(args, k) is not None}  # fmt: skip
        result = pretrain(args.data, args.out, args.languages, args.model_size, args.steps, args.hours,
                          args.vocab_size, args.seed, args.export_dir, args.chrf_sentences,
                          progress=not args.no_progress, init_from=args.init_from, **overrides)  # fmt: skip
    if isinstance(result.get("chrf"), dict):
        result["chrf"] = {k: v for k, v in result["chrf"].items() if k != "directions"}
    print(json.dumps({k: v for k, v in result.items() if k != "train_config"}, indent=2, default=str))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lslo.pretrain", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except LsloError as err:
        print(f"lslo: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
