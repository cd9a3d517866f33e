"""Step 4 of `lslo.pretrain`: export the newest checkpoint as a Hugging Face directory (fp16 safetensors, tokenizer
and the `lslo_base.json` manifest: shape, data, training facts, the stages chained, the command that rebuilds it),
with the quick quality checks an export may record (`quick_chrf`, `source_dependence`)."""

from __future__ import annotations

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
from lslo.io import atomic_dir
from lslo.pretrain_prepare import MANIFEST, MODEL_SIZES, PRETRAIN_DEFAULTS, data_fingerprint


def _latest_weights(out: Path) -> tuple[dict[str, Any], Any, torch.nn.Module, dict[str, Any]]:
    """(run config, tokenizer, model with the newest checkpoint's weights, that checkpoint's state) of a run."""
    from lslo.checkpoint import read_checkpoint
    from lslo.run_folder import checkpoints
    from lslo.run_setup import load_base_model
    from lslo.tokenizer import load_tokenizer

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
