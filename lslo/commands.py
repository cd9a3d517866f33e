"""What each `lslo` subcommand does, given its parsed arguments (`lslo.cli` builds the parser and calls these):
a thin shell over library functions, each returning the exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lslo.errors import LsloError


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
    from lslo.config import lslo_config
    from lslo.run_config import TrainConfig
    from lslo.run_setup import load_base_model, setup_data
    from lslo.search import search_placement, search_routing, token_loss

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
    if args.languages is None:
        corpus = _languages_it_knows(model, corpus, args)
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
    for warning in results.get("warnings", []):
        print(f"lslo: warning: {warning}", file=sys.stderr)
    overall = results.get("overall", {})
    if overall:
        print(json.dumps(overall, indent=2))
    print(f"wrote {args.out}/results.json, results.csv, tiers.md, heatmap.png")
    return 0


def _languages_it_knows(model: Any, corpus: Any, args: argparse.Namespace) -> Any:
    """Without --languages, the data's languages that `model` was trained for (an LSLo model fine-tuned on some of
    them), said on stderr when that leaves some out; all of them for a model that translates any."""
    held = getattr(model, "languages", None)
    if not held:
        return corpus
    known = [c for c in corpus.languages if any(_same(c, h) for h in held)]
    if len(known) == len(corpus.languages):
        return corpus
    if len(known) < 2:
        raise LsloError(f"--data {args.data}: {args.model} was trained for {', '.join(held)}, and the data holds "
                        f"{len(known)} of those; give data in its languages, or --languages")  # fmt: skip
    left = [c for c in corpus.languages if c not in known]
    print(f"lslo: note: {args.model} was trained for {len(known)} of the data's {len(corpus.languages)} languages: "
          f"evaluating their {len(known) * (len(known) - 1)} directions (not {' '.join(left)}; --languages chooses)",
          file=sys.stderr)  # fmt: skip
    return corpus.subset(known)


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
