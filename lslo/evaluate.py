"""Translate and score: spBLEU and chrF++ for every direction of a multi-way test set.

`translate_items` translates (src_lang, tgt_lang, text) items in length-sorted batches that may mix
directions; `evaluate` runs it over all (or chosen) directions of a `MultiwayCorpus`, scores each
direction with sacrebleu and writes, atomically, everything needed to recompute each score with
sacrebleu alone (the files and the scores are `lslo.scoring`'s: `write_results`, `score_direction`,
`piece_tokenizer`).

An interrupted `evaluate` continues where it stopped: each translated batch is appended to
`<out>/.translations.partial.jsonl` under a fingerprint of the model's weights, the items and the decoding
settings, and a rerun with the same fingerprint skips the batches already there (removed once done).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lslo import languages as langs
from lslo.config import TIERS
from lslo.encoding import decode_hypotheses, decoder_prompt, source_ids
from lslo.encoding import pad as pad_rows
from lslo.errors import LsloError
from lslo.model import weight_fingerprint
from lslo.precision import autocast, effective_precision
from lslo.scoring import (
    CHRF_NAME,
    FORMAT,
    PieceTokenizer,
    _clean,
    piece_tokenizer,
    score_direction,
    write_results,
)

# Also the names `lslo.scoring` took over (`from lslo.evaluate import write_results` still works).
__all__ = ["CHRF_NAME", "FORMAT", "PARTIAL", "PieceTokenizer", "evaluate", "parse_directions", "parse_tiers",
           "piece_tokenizer", "resolve_tiers", "score_direction", "translate", "translate_items", "write_results"]  # fmt: skip

PARTIAL = ".translations.partial.jsonl"  # translated batches of an unfinished `evaluate`



# ----------------------------------------------------------------------------- translation


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _is_plain_hf(model: Any) -> bool:
    """A bare transformers model (no src_lang/tgt_lang routing): steer it with decoder_input_ids."""
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def _batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with batch size x longest source <= max_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class _BatchCache:
    """Translated batches appended as JSON lines after a fingerprint line; a torn last line is ignored."""

    def __init__(self, path: str | os.PathLike, fingerprint: str) -> None:
        self.path, self.done = Path(path), {}
        lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.is_file() else []
        if lines and lines[0] == json.dumps({"fingerprint": fingerprint}):
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break
                self.done[row["batch"]] = row["hyps"]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        head = json.dumps({"fingerprint": fingerprint}) + "\n"
        self.path.write_text(
            head + "".join(self._line(k, v) for k, v in self.done.items()),
            encoding="utf-8",
        )

    @staticmethod
    def _line(k: int, hyps: list[str]) -> str:
        return json.dumps({"batch": k, "hyps": hyps}, ensure_ascii=False) + "\n"

    def add(self, k: int, hyps: list[str]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(self._line(k, hyps))
            f.flush()
            os.fsync(f.fileno())


def translate_items(
    model: Any,
    tokenizer: Any,
    items: Sequence[tuple[str, str, str]],
    num_beams: int = 5,
    max_tokens: int = 4096,
    max_new_tokens: int = 256,
    max_source_tokens: int = 256,
    progress: bool = True,
    early_stopping: bool = True,
    cache: str | os.PathLike | None = None,
    merge: bool = False,
    precision: str = "fp32",
) -> list[str]:
    """Translate `(src_lang, tgt_lang, text)` items in input order.

    Each source is `[src language token] pieces [eos]` (truncated to `max_source_tokens`); each decoder
    starts with `[decoder_start, target language token]`. A batch holds as many sources as fit
    `batch size x longest source <= max_tokens` (sources sorted by length, so padding stays small).
    `model` is an LSLoModel / FullFineTune / SharedLoRA (given per-sample src_lang/tgt_lang) or a bare
    transformers M2M100ForConditionalGeneration (given decoder_input_ids). With `early_stopping` (the
    default, as fairseq's beam search that the paper used, and M2M-100's own generation config), a
    sentence is done once it has `num_beams` finished hypotheses. With `cache` (a file), each translated
    batch is appended there and a later call with the same model weights, items and settings skips it.

    Batches mix directions, except with `merge` (a `mergeable` model, i.e. LSLo): then each batch
    holds one direction and runs with that direction's LoRAs folded into the weights, at the base model's
    cost per token (worth it where the LoRA term costs, e.g. a large model on a GPU; batches are no larger
    than one direction's items, and float rounding of the merged weights can flip near-tied beams).
    `precision` ("fp32", "bf16", "fp16" on a GPU, "auto"): the autocast of generation (`lslo.precision`).
    """
    if max_tokens < 1 or max_new_tokens < 1 or num_beams < 1 or max_source_tokens < 3:
        raise ValueError("max_tokens, max_new_tokens and num_beams must be >= 1, max_source_tokens >= 3")
    if hasattr(model, "translate_items"):  # a model with its own decoder, e.g. lslo.deploy.CT2Model
        return model.translate_items(tokenizer, items, num_beams, max_tokens, max_new_tokens, max_source_tokens)
    if not items:
        return []
    if merge and not getattr(model, "mergeable", False):
        raise ValueError(f"merge=True: {type(model).__name__} has no per-direction merge (LSLo models do)")
    sources = source_ids(tokenizer, [text for _, _, text in items], [src for src, _, _ in items], max_source_tokens)
    gen = _Generator(model, tokenizer, items, sources, num_beams, max_new_tokens, early_stopping, effective_precision(precision))
    batches = _plan(items, [len(s) for s in sources], max_tokens, merge)
    store = None
    if cache is not None:
        settings = [num_beams, max_tokens, max_new_tokens, max_source_tokens, early_stopping, merge,
                    *([gen.cast] if gen.cast != "fp32" else [])]  # fmt: skip
        store = _BatchCache(cache, _cache_key(model, items, settings))
    was_training = model.training
    model.eval()
    try:
        return _translate_batches(model, batches, gen, store, len(items), progress)
    finally:
        model.train(was_training)


def _cache_key(model: Any, items: Sequence[tuple[str, str, str]], settings: Sequence[Any]) -> str:
    """What a partial translation is valid for: every weight exactly, the items and the settings."""
    key = json.dumps([weight_fingerprint(model, samples=None), items, *settings])
    return hashlib.sha256(key.encode()).hexdigest()


def _translate_batches(model: Any, batches: Sequence[tuple[tuple[str, str] | None, list[int]]], gen: _Generator,
                       store: _BatchCache | None, count: int, progress: bool) -> list[str]:  # fmt: skip
    """The hypotheses of `count` items, batch by batch (those in `store` taken from it, the others generated and
    added to it); a batch of one direction runs with that direction's LoRAs folded in."""
    out: list[str] = [""] * count
    current = None  # the direction whose LoRAs `merged` holds folded in
    with (
        torch.inference_mode(),
        tqdm(total=count, unit="sent", desc="translate", disable=not progress) as bar,
        contextlib.ExitStack() as merged,
    ):
        for k, (direction, batch) in enumerate(batches):
            done = store is not None and k in store.done and len(store.done[k]) == len(batch)
            if not done and direction != current:
                merged.close()
                merged.enter_context(model.merged(*direction))
                current = direction
            for i, text in zip(batch, store.done[k] if done else gen(batch), strict=True):
                out[i] = text
            if store is not None and not done:
                store.add(k, [out[i] for i in batch])
            bar.update(len(batch))
    return out


def _plan(items: Sequence[tuple[str, str, str]], lengths: Sequence[int], max_tokens: int,
          merge: bool) -> list[tuple[tuple[str, str] | None, list[int]]]:  # fmt: skip
    """The batches to translate, as (direction or None, item indices): mixed directions, or with `merge` one
    direction per batch, in direction order (so each direction's LoRAs are folded in once)."""
    if not merge:
        return [(None, b) for b in _batches(lengths, max_tokens)]
    by_direction: dict[tuple[str, str], list[int]] = {}
    for i, (src, tgt, _) in enumerate(items):
        by_direction.setdefault((src, tgt), []).append(i)
    return [(d, [idx[j] for j in b]) for d, idx in by_direction.items() for b in _batches([lengths[i] for i in idx], max_tokens)]


class _Generator:
    """Translates one batch of items: pads its sources, starts each decoder at its target language, decodes."""

    def __init__(self, model: Any, tokenizer: Any, items: Sequence[tuple[str, str, str]], sources: list[list[int]],
                 num_beams: int, max_new_tokens: int, early_stopping: bool, cast: str) -> None:  # fmt: skip
        self.model, self.tokenizer, self.items, self.sources = model, tokenizer, items, sources
        self.num_beams, self.max_new_tokens, self.early_stopping, self.cast = num_beams, max_new_tokens, early_stopping, cast
        self.plain = _is_plain_hf(model)
        base = model if self.plain else getattr(model, "base_model", model)
        start = base.config.decoder_start_token_id
        self.start = tokenizer.eos_token_id if start is None else start
        self.lang_ids = langs.lang_token_ids(tokenizer, sorted({c for src, tgt, _ in items for c in (src, tgt)}))
        self.device = _model_device(model)

    def __call__(self, batch: list[int]) -> list[str]:
        width = max(len(self.sources[i]) for i in batch)
        input_ids, mask = pad_rows([self.sources[i] for i in batch], self.tokenizer.pad_token_id)
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
            # Cap the output at 2 x the longest source + 10 tokens (fairseq's max_len_a/b idea):
            # a weak model that never emits </s> must not decode to max_new_tokens.
            num_beams=self.num_beams, max_new_tokens=min(self.max_new_tokens, 2 * width + 10),
            early_stopping=self.early_stopping if self.num_beams > 1 else False,
        )  # fmt: skip
        if self.plain:
            kwargs["decoder_input_ids"] = decoder_prompt(self.start, [self.lang_ids[self.items[i][1]] for i in batch], self.device)
        else:
            kwargs["src_lang"] = [self.items[i][0] for i in batch]
            kwargs["tgt_lang"] = [self.items[i][1] for i in batch]
        with autocast(self.cast, self.device):
            seqs = self.model.generate(**kwargs)
        return [_clean(text) for text in decode_hypotheses(self.tokenizer, seqs)]


def translate(
    model: Any,
    tokenizer: Any,
    sentences: Sequence[str],
    src_lang: str,
    tgt_lang: str,
    num_beams: int = 5,
    max_tokens: int = 4096,
    max_new_tokens: int = 256,
    progress: bool = True,
    precision: str = "fp32",
) -> list[str]:
    """Translate `sentences` from `src_lang` to `tgt_lang` (see `translate_items`)."""
    items = [(src_lang, tgt_lang, s) for s in sentences]
    return translate_items(model, tokenizer, items, num_beams, max_tokens, max_new_tokens, progress=progress,
                           precision=precision)  # fmt: skip



# ----------------------------------------------------------------------------- evaluation


def _model_tiers(model: Any) -> Mapping[str, str] | None:
    """The language -> tier mapping of an LSLo model's config, if it has one."""
    for holder in (model, getattr(model, "base_model", None)):
        for attr in ("lslo_config", "cfg", "config"):
            table = getattr(getattr(holder, attr, None), "languages", None)
            if isinstance(table, Mapping) and table:
                return table
    return None


def resolve_tiers(
    languages: Sequence[str], tiers: Mapping[str, str] | None = None, model: Any = None,
    run_tiers: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Tier of each language: from `tiers` (the command line), which must name every language; else from the
    first that has it of `run_tiers` (the run's config), the model's LSLoConfig, the built-in tables.

    When some language has no tier anywhere, every tier is None: the results then hold one overall table.
    """
    for table in (tiers, run_tiers):
        for code, tier in (table or {}).items():
            if tier not in TIERS:
                raise LsloError(f"tiers: {code}={tier!r}; use one of {', '.join(TIERS)}")
    builtin = {**langs.LANG12_TIERS, **langs.BIBLE12_TIERS}
    tables = [tiers] if tiers else [t for t in (run_tiers, _model_tiers(model), builtin) if t]
    out: dict[str, str | None] = {}
    for lang in languages:
        for table in tables:
            try:
                out[lang] = langs.tier_of(lang, table)
                break
            except LsloError:
                continue
        else:
            if tiers:
                raise LsloError(
                    f"tiers: language {lang!r} has no resource tier; give one for every evaluated language "
                    f"(e.g. --tiers {lang}=low, or a tiers file)"
                )
            return dict.fromkeys(languages)
    return out


def parse_tiers(items: Sequence[str] | None) -> dict[str, str] | None:
    """`--tiers`: `code=tier` items, or one JSON/YAML file mapping code -> tier."""
    import yaml

    from lslo.io import load_yaml

    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        path = Path(items[0])
        try:
            table = load_yaml(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise LsloError(f"--tiers {path}: cannot read ({err.strerror}); give a file or code=tier items") from None
        except yaml.YAMLError as err:
            raise LsloError(f"--tiers {path}: not JSON/YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(table, dict):
            raise LsloError(f"--tiers {path}: expected a mapping of language code -> tier (high | medium | low)")
        return {str(k): str(v) for k, v in table.items()}
    out = {}
    for item in items:
        code, sep, tier = item.partition("=")
        if not sep or not code or not tier:
            raise LsloError(f"--tiers {item!r}: write code=tier, e.g. --tiers pol_Latn=high tur_Latn=low")
        out[code.strip()] = tier.strip()
    return out


def _corpus_code(code: str, held: Sequence[str]) -> str | None:
    """The code under which `held` (the corpus languages) holds language `code` (any style), else None."""
    lang = langs.lookup(code)
    for c in held:
        if c == code or (lang is not None and langs.lookup(c) is lang):
            return c
    return None


def parse_directions(
    directions: Sequence[str | tuple[str, str]] | None, corpus: Any
) -> list[tuple[str, str]]:
    """Directions as (src, tgt) codes of `corpus`; strings "src-tgt" are accepted; None = all directions."""
    available = corpus.directions()
    if directions is None:
        return list(available)
    out: list[tuple[str, str]] = []
    for item in directions:
        parts = item.split("-", 1) if isinstance(item, str) else list(item)
        if len(parts) != 2 or not all(parts):
            raise LsloError(f"--directions: {item!r} is not a direction; write source-target, e.g. en-fr")
        src, tgt = (p.strip() for p in parts)
        pair = (_corpus_code(src, corpus.languages), _corpus_code(tgt, corpus.languages))
        for code, found in zip((src, tgt), pair, strict=True):
            if found is None:
                raise LsloError(
                    f"--directions: language {code!r} of direction {src}-{tgt} is not in the test set "
                    f"(it has {', '.join(corpus.languages)})"
                )
        if pair not in available:
            raise LsloError(
                f"--directions: {src}-{tgt} is not a direction of the test set (no shared sentences)"
            )
        if pair not in out:
            out.append(pair)  # type: ignore[arg-type]
    return out


def evaluate(
    model: Any,
    tokenizer: Any,
    corpus: Any,
    out_dir: str | os.PathLike,
    directions: Sequence[str | tuple[str, str]] | None = None,
    max_sentences: int | None = None,
    num_beams: int = 5,
    spm: str | os.PathLike | None = None,
    tiers: Mapping[str, str] | None = None,
    max_tokens: int = 4096,
    max_new_tokens: int = 256,
    progress: bool = True,
    meta: Mapping[str, Any] | None = None,
    merge: bool = False,
    precision: str = "fp32",
    run_tiers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Translate and score every direction (or `directions`) of `corpus`; write results to `out_dir`.

    Returns the results.json content. `max_sentences` keeps the first n sentence pairs per direction.
    Tiers: see `resolve_tiers` (`tiers`, `run_tiers`, the model's LSLoConfig, the built-in tables; all None,
    an overall table only, when some language has none). `meta`
    (e.g. the model and checkpoint paths) is stored as is under "meta" in results.json. `merge`: see
    `translate_items`; so is `precision`.
    """
    if max_sentences is not None and max_sentences < 1:
        raise LsloError(
            f"--max-sentences: {max_sentences} is not a positive number; give e.g. 200 or leave it out"
        )
    pieces = piece_tokenizer(tokenizer, spm)
    chosen = parse_directions(directions, corpus)
    if not chosen:
        raise LsloError(
            "the test set has no direction to evaluate; it needs at least two languages sharing ids"
        )
    used = [lang for lang in corpus.languages if any(lang in d for d in chosen)]
    tier = resolve_tiers(used, tiers, model, run_tiers)
    langs.lang_token_ids(tokenizer, used)  # fail before translating when the model lacks a language

    pairs = {d: corpus.pairs(*d)[:max_sentences] for d in chosen}
    items = [(s, t, src) for (s, t), ps in pairs.items() for src, _ in ps]
    partial = Path(out_dir) / PARTIAL
    hyps = translate_items(model, tokenizer, items, num_beams, max_tokens, max_new_tokens, progress=progress,
                           cache=partial, merge=merge, precision=precision)  # fmt: skip
    settings = {
        "num_beams": num_beams, "max_sentences": max_sentences, "max_tokens": max_tokens,
        "max_new_tokens": max_new_tokens,
        "max_new_tokens_rule": "min(max_new_tokens, 2 x longest source in batch + 10)",
        "early_stopping": num_beams > 1,  # a sentence is done at num_beams finished hypotheses
        "merged_per_direction": merge, "precision": effective_precision(precision),
    }  # fmt: skip
    results = write_results(
        out_dir, _by_direction(pairs, hyps), tier, pieces, settings, languages=used, progress=progress, meta=meta
    )
    partial.unlink(missing_ok=True)
    return results


def _by_direction(
    pairs: Mapping[tuple[str, str], Sequence[tuple[str, str]]], hyps: Sequence[str]
) -> dict[tuple[str, str], tuple[list[str], Sequence[str], list[str]]]:
    """`outputs[(src, tgt)] = (sources, hypotheses, references)` of `write_results`, from each direction's
    (source, reference) pairs and the hypotheses of all of them in that order."""
    outputs, pos = {}, 0
    for d, ps in pairs.items():
        outputs[d] = ([x for x, _ in ps], hyps[pos : pos + len(ps)], [r for _, r in ps])
        pos += len(ps)
    return outputs
