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
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lslo.errors import LsloError
from lslo.io import atomic_dir, sha256_file
from lslo.precision import PRECISIONS

# Model shapes (M2M100Config fields). "base" is the demo model; "tiny" is for tests.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64),
    "small": dict(d_model=192, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=768, decoder_ffn_dim=768),
    "base": dict(d_model=256, encoder_layers=4, decoder_layers=4, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024),
}  # fmt: skip

# Trainer settings for pretraining from scratch (TrainConfig fields); callers may override any.
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "method": "full",
    "train_split": "pretrain",
    "valid_split": "valid",
    "max_tokens": 4096,
    "max_len": 128,
    "temperature": 5.0,
    "lr": 1e-3,
    "warmup_steps": 1000,
    "label_smoothing": 0.1,
    "dropout": 0.1,
    "clip_norm": 1.0,
    "log_every": 20,
    "save_every": 100,
    "eval_every": 1000,
    "valid_max_per_direction": 10,
}

MANIFEST = "lslo_base.json"


def build_base_model(
    tokenizer: Any, size: str = "base", max_len: int = 256, seed: int = 1
) -> torch.nn.Module:
    """A random-init M2M-100 model of shape `MODEL_SIZES[size]` with the tokenizer's vocabulary."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    from lslo.tokenizer import model_vocab_size

    if size not in MODEL_SIZES:
        raise LsloError(f"model_size {size!r}: use one of {', '.join(MODEL_SIZES)}")
    config = M2M100Config(
        vocab_size=model_vocab_size(tokenizer),
        max_position_embeddings=max(max_len, 128),
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **MODEL_SIZES[size],
    )
    torch.manual_seed(seed)
    return M2M100ForConditionalGeneration(config)


def data_fingerprint(data_dir: str | os.PathLike) -> str:
    """sha256 of the data manifest (`manifest.json`), else of every split file."""
    root = Path(data_dir)
    manifest = root / "manifest.json"
    if manifest.is_file():
        return sha256_file(manifest)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(str(p.relative_to(root)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def prepare(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    languages: Sequence[str] | None = None,
    model_size: str = "base",
    vocab_size: int = 8000,
    seed: int = 1,
) -> tuple[Path, Path]:
    """Steps 1 and 2 (skipped when already done): the tokenizer and the random-init model directories."""
    from lslo.data.corpus import load_multiway
    from lslo.tokenizer import load_tokenizer, train_tokenizer

    out = Path(out_dir)
    tok_dir, init_dir = out / "tokenizer", out / "init"
    if not (tok_dir / "tokenizer_config.json").is_file():
        corpus = load_multiway(data_dir, languages=languages, split="pretrain")
        train_tokenizer(
            {lang: corpus.sentences(lang) for lang in corpus.languages}, tok_dir, vocab_size, seed=seed
        )
    tokenizer = load_tokenizer(tok_dir)
    if not (init_dir / "config.json").is_file():
        model = build_base_model(tokenizer, model_size, seed=seed)
        with atomic_dir(init_dir) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(str(tmp))
    return tok_dir, init_dir


def continue_from(init_from: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Steps 1 and 2 of a later stage: copy the earlier stage's export (model, tokenizer, manifest) into
    <out>/tokenizer and <out>/init. Returns the init directory; refuses an <out> started from other weights."""
    import shutil

    src, out = Path(init_from), Path(out_dir)
    if not (src / MANIFEST).is_file() or not (src / "model.safetensors").is_file():
        raise LsloError(f"--init-from {src}: not a `lslo pretrain` export (no {MANIFEST}); give an export directory")
    tok_dir, init_dir = out / "tokenizer", out / "init"
    digest = sha256_file(src / "model.safetensors")
    if (init_dir / MANIFEST).is_file():
        if json.loads((init_dir / MANIFEST).read_text(encoding="utf-8")).get("weights_sha256") != digest:
            raise LsloError(f"--init-from {src}: {out} was started from other weights; choose a new --out")
        return init_dir
    if init_dir.exists() or tok_dir.exists():
        raise LsloError(f"--init-from {src}: {out} holds a run started from scratch; choose a new --out")
    previous = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    for target in (tok_dir, init_dir):
        with atomic_dir(target) as tmp:
            for f in src.iterdir():
                if f.is_file() and f.name != MANIFEST and (target == init_dir or f.suffix != ".safetensors"):
                    shutil.copy2(f, tmp / f.name)
            if target == init_dir:  # the earlier stage, and where it was exported (its rebuild writes there)
                record = {**previous, "export_dir": str(src), "weights_sha256": digest}
                (tmp / MANIFEST).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return init_dir


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


def _latest_weights(out: Path) -> tuple[dict[str, Any], Any, torch.nn.Module, dict[str, Any]]:
    """(run config, tokenizer, model with the newest checkpoint's weights, that checkpoint's state) of a run."""
    from lslo.checkpoint import read_checkpoint
    from lslo.tokenizer import load_tokenizer
    from lslo.train import checkpoints, load_base_model

    run_file = out / "train" / "run.json"
    if not run_file.is_file():
        raise LsloError(f"{out}: no pretraining run here; run `python -m lslo.pretrain --out {out}` first")
    run = json.loads(run_file.read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(out / "tokenizer")
    model = load_base_model(str(out / "init"))
    ckpts = checkpoints(out / "train")
    if not ckpts:
        raise LsloError(f"{out}/train: no checkpoint yet; let the pretraining run for a while")
    state = read_checkpoint(ckpts[-1])
    weights = {k.removeprefix("base_model."): v for k, v in state["model"].items()}
    _, unexpected = model.load_state_dict(weights, strict=False)
    unloaded = [name for name, _ in model.named_parameters() if name not in weights]  # tied weights count once
    if unexpected or unloaded:
        raise LsloError(f"{ckpts[-1]}: weights do not fit {out}/init ({(unexpected or unloaded)[0]})")
    return run, tokenizer, model, state


def _manifest(out: Path, run: dict[str, Any], model: torch.nn.Module, state: dict[str, Any], data_dir: str | os.PathLike,
              model_size: str | None) -> dict[str, Any]:  # fmt: skip
    """The exported base's card: shape, data, training facts and the command that rebuilds it."""
    log = state["log"]
    valid = next((r for r in reversed(log) if "valid_loss" in r), None)
    if model_size is None:
        shapes = {name: all(getattr(model.config, k) == v for k, v in dims.items()) for name, dims in MODEL_SIZES.items()}
        model_size = next((name for name, same in shapes.items() if same), "custom")
    shape_keys = ("d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim", "encoder_attention_heads", "vocab_size")
    return {
        "kind": "lslo-base",
        "model_size": model_size,
        "shape": {k: getattr(model.config, k) for k in shape_keys},
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": str(data_dir),
        "data_sha256": data_fingerprint(data_dir),
        # Paths as given (relative to the work tree), not the machine's absolute ones.
        "train_config": {**run, "data": str(data_dir), "base_model": str(out / "init"), "out_dir": str(out / "train")},
        "command": _command_line(),
        # Which steps ran in which autocast precision (None: before lslo recorded it; on CPU that was fp32).
        "precision_history": state.get("precision_history"),
        # What rebuilds these weights from scratch (`make base` runs it): the same run, stopped at this step,
        # one command per precision segment.
        "rebuild": _rebuild_command(data_dir, out, run, state, model_size),
        "steps": state["step"],
        "tokens": state["tokens"],
        "hours": round(state["elapsed"] / 3600, 3),
        "valid": {k: v for k, v in valid.items()} if valid else None,
        "valid_curve": [{k: r[k] for k in ("step", "valid_loss", "valid_ppl") if k in r} for r in log if "valid_loss" in r],
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip


def export(
    out_dir: str | os.PathLike,
    export_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    model_size: str | None = None,
    chrf_sentences: int = 0,
) -> dict[str, Any]:
    """Write the latest pretrained weights as a Hugging Face directory in fp16 with the tokenizer.

    The weights are those of the newest checkpoint (the final one once training has finished), so this
    also exports a run that is still going.
    With `chrf_sentences` > 0, the first that many `valid` sentences of every direction are translated
    greedily and the mean chrF++ is recorded. Returns the manifest (also written as `lslo_base.json`).
    """
    out = Path(out_dir)
    run, tokenizer, model, state = _latest_weights(out)
    data_dir = data_dir or run["data"]
    manifest = _manifest(out, run, model, state, data_dir, model_size)
    previous_file = out / "init" / MANIFEST
    if previous_file.is_file():  # a later stage: chain the earlier ones
        _chain(manifest, json.loads(previous_file.read_text(encoding="utf-8")))
    if chrf_sentences > 0:
        manifest["chrf"] = quick_chrf(model, tokenizer, data_dir, run.get("languages"), chrf_sentences)
        manifest["source_dependence"] = source_dependence(
            model, tokenizer, data_dir, run.get("languages"), chrf_sentences
        )
    target = Path(export_dir) if export_dir is not None else out / "export"
    with atomic_dir(target) as tmp:
        model.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
        _load_as_float32(tmp / "config.json")
        tokenizer.save_pretrained(str(tmp))
        (tmp / MANIFEST).write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    manifest["export_dir"] = str(target)
    manifest["size_mb"] = round((target / "model.safetensors").stat().st_size / 2**20, 2)
    return manifest


def _load_as_float32(config_file: Path) -> None:
    """fp16 on disk (half the size), float32 when loaded: `from_pretrained` follows the config's `dtype`
    (transformers 5), and a plain load of fp16 weights would train at fp16 speed on a CPU (5.5 s instead
    of 0.19 s for a 16 x 32-token LSLo step of the shipped base, measured) with fp16 rounding besides."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["dtype"] = "float32"
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# Settings a stage may change, as `lslo pretrain` flags (written into `rebuild` when not the default).
STAGE_FLAGS = {"temperature": "--temperature", "lr": "--lr", "warmup_steps": "--warmup-steps", "dropout": "--dropout"}


def _stage(manifest: dict[str, Any]) -> dict[str, Any]:
    """One stage's summary: its budget, its sampling/optimizer settings and where it ended."""
    run = manifest["train_config"]
    return {"steps": manifest["steps"], "tokens": manifest["tokens"], "hours": manifest["hours"],
            "settings": {k: run.get(k) for k in ("temperature", "lr", "warmup_steps", "dropout", "label_smoothing",
                                                 "max_tokens")},
            "precision_history": manifest.get("precision_history"), "valid": manifest.get("valid"),
            "valid_curve": manifest.get("valid_curve"),
            **({"export_dir": manifest["export_dir"]} if "export_dir" in manifest else {})}  # fmt: skip


def _chain(manifest: dict[str, Any], previous: dict[str, Any]) -> None:
    """Fold the earlier stages' record into a later stage's manifest: `stages`, `total` and `rebuild`."""
    manifest["stages"] = [*previous.get("stages", [_stage(previous)]), _stage(manifest)]
    manifest["total"] = {k: round(sum(st[k] for st in manifest["stages"]), 3) for k in ("steps", "tokens", "hours")}
    # The earlier stage's last command writes the export this stage starts from.
    init = f" --init-from {previous['export_dir']}"
    first = f"{previous['rebuild']} --export-dir {previous['export_dir']}"
    manifest["rebuild"] = first + " && " + " && ".join(c + init for c in manifest["rebuild"].split(" && "))


def _rebuild_command(
    data_dir: Any, out: Path, run: dict[str, Any], state: dict[str, Any], model_size: str = "base"
) -> str:
    base = f"lslo pretrain --data {data_dir} --out {out}"
    tail = f" --max-tokens {run['max_tokens']}" + (
        f" --languages {' '.join(run['languages'])}" if run.get("languages") else ""
    )
    tail += f" --model-size {model_size}" if model_size != "base" else ""
    tail += "".join(f" {flag} {run[k]}" for k, flag in STAGE_FLAGS.items() if run.get(k) != PRETRAIN_DEFAULTS[k])
    history = state.get("precision_history") or [[0, None]]
    commands = []
    for i, (start, precision) in enumerate(history):
        end = history[i + 1][0] if i + 1 < len(history) else state["step"]
        if end > start or i == len(history) - 1:
            flag = f" --precision {precision}" if precision is not None else ""
            commands.append(f"{base} --steps {end}{tail}{flag}")
    return " && ".join(commands)


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("lslo", "pretrain.py")):
        argv = ["python", "-m", "lslo.pretrain", *argv[1:]]
    return " ".join(shlex.quote(a) for a in argv)


def quick_chrf(
    model: torch.nn.Module,
    tokenizer: Any,
    data_dir: str | os.PathLike,
    languages: Sequence[str] | None,
    n: int,
) -> dict[str, Any]:
    """Mean chrF++ over all directions of the `valid` split on its first `n` sentences (greedy decoding)."""
    from sacrebleu.metrics import CHRF

    from lslo.data.corpus import load_multiway
    from lslo.evaluate import translate_items

    corpus = load_multiway(data_dir, languages=languages, split="valid")
    dirs = corpus.directions()
    items, refs = [], []
    for src, tgt in dirs:
        for s, t in corpus.pairs(src, tgt)[:n]:
            items.append((src, tgt, s))
            refs.append(t)
    hyps = translate_items(model.float(), tokenizer, items, num_beams=1, max_new_tokens=128, progress=False)
    chrf = CHRF(word_order=2)
    scores: dict[str, float] = {}
    for k, (src, tgt) in enumerate(dirs):
        sl = slice(k * n, k * n + n)
        scores[f"{src}-{tgt}"] = round(chrf.corpus_score(hyps[sl], [refs[sl]]).score, 2)
    return {"sentences_per_direction": n, "decoding": "greedy", "mean": round(sum(scores.values()) / len(scores), 2),
            "directions": scores}  # fmt: skip


@torch.no_grad()
def source_dependence(
    model: torch.nn.Module,
    tokenizer: Any,
    data_dir: str | os.PathLike,
    languages: Sequence[str] | None,
    n: int,
) -> dict[str, Any]:
    """How much the model reads its source: target NLL per token on the first `n` `valid` verses of every
    direction with the true sources, and with each source swapped for the next verse's. A model that
    translates shows a gap of several nats; a language model of the target side, a gap near 0. When the
    data manifest names tiers, `groups` gives the same per tier pair (e.g. "H->L")."""
    from dataclasses import replace

    import numpy as np

    from lslo.data.batching import directions, encode_corpus, fixed_batches
    from lslo.data.corpus import load_multiway
    from lslo.languages import lang_token_ids
    from lslo.loss import IGNORE_INDEX
    from lslo.report import SHORT

    corpus = load_multiway(data_dir, languages=languages, split="valid")
    enc = encode_corpus(corpus, tokenizer)
    dirs = [replace(d, src_idx=d.src_idx[:n], tgt_idx=d.tgt_idx[:n]) for d in directions(enc)]
    ids = lang_token_ids(tokenizer, enc.languages)
    special = {"pad_id": tokenizer.pad_token_id, "eos_id": tokenizer.eos_token_id}
    tiers = _data_tiers(data_dir)

    def group(src: str, tgt: str) -> str:
        return f"{SHORT.get(tiers.get(src, ''), '?')}->{SHORT.get(tiers.get(tgt, ''), '?')}"

    was_training = model.training
    model.eval()
    sums: dict[tuple[str, str], list[float]] = {}  # (sources, group) -> [summed NLL, tokens]
    for name, ds in (("true", dirs), ("shifted", [replace(d, src_idx=np.roll(d.src_idx, -1)) for d in dirs])):
        for b in fixed_batches(enc, ds, ids, **special):
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                           decoder_input_ids=b.decoder_input_ids).logits.float()  # fmt: skip
            mask = b.labels != IGNORE_INDEX
            nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), b.labels.masked_fill(~mask, 0), reduction="none"
            )
            per_row, counts = (nll * mask).sum(1).tolist(), mask.sum(1).tolist()
            for src, tgt, total, count in zip(b.src_lang, b.tgt_lang, per_row, counts, strict=True):
                for key in ((name, "all"), (name, group(src, tgt))):
                    acc = sums.setdefault(key, [0.0, 0])
                    acc[0], acc[1] = acc[0] + total, acc[1] + count
    model.train(was_training)

    def result(g: str) -> dict[str, float]:
        true, shifted = (sums[(k, g)][0] / sums[(k, g)][1] for k in ("true", "shifted"))
        return {"nll": true, "nll_shifted_sources": shifted, "gap": shifted - true, "tokens": sums[("true", g)][1]}

    groups = sorted({g for _, g in sums if g != "all"}) if tiers else []
    return {"sentences_per_direction": n, "directions": len(dirs), **result("all"),
            "groups": {g: {k: round(v, 4) for k, v in result(g).items()} for g in groups}}  # fmt: skip


def _data_tiers(data_dir: str | os.PathLike) -> dict[str, str]:
    """Language -> resource tier from the data manifest (`lslo data bible` writes one), else {}."""
    manifest = Path(data_dir) / "manifest.json"
    if not manifest.is_file():
        return {}
    tiers = json.loads(manifest.read_text(encoding="utf-8")).get("tiers")
    return dict(tiers) if isinstance(tiers, dict) else {}


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
