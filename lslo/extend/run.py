"""`lslo train` with `new_languages`: the config block, the tokenizer extension of a run, the model.

    new_languages:                  # code -> tier, or code -> {tier, related}
      tyv_Cyrl: {tier: low, related: rus_Cyrl}
      es: medium                    # M2M-100's existing (untrained) __es__ token
    new_language_vocab: 8000        # SentencePiece vocabulary trained on each new language's text
    start_from: runs/lslo12         # optional: an LSLo run/adapter whose (frozen) languages are the old ones

The run's `languages` are the old languages (default: every language of the data that is not new); the
directions trained are those with a new language on one side (unless `pairs` says otherwise). The tokenizer
extension and its report (changed old lines, tokens per word before/after) are written to
`out_dir/new_languages.json` at the first start and reused on resume.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lslo.errors import LsloError
from lslo.io import write_json

REPORT_FILE = "new_languages.json"


def parse_new_languages(value: Any, where: str = "config") -> dict[str, dict[str, str | None]]:
    """{code: {"tier", "related"}} from the config's `new_languages` (code -> tier or {tier, related})."""
    from lslo.config import TIERS

    if value is None:
        return {}
    if not isinstance(value, Mapping) or not value:
        raise LsloError(f"{where}: new_languages must map each new code to a tier or {{tier, related}}, e.g. {{tyv_Cyrl: low}}")
    out: dict[str, dict[str, str | None]] = {}
    for code, spec in value.items():
        spec = {"tier": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, Mapping) or set(spec) - {"tier", "related"}:
            raise LsloError(f"{where}: new_languages.{code}: give a tier or {{tier: low, related: rus_Cyrl}}")
        if spec.get("tier") not in TIERS:
            raise LsloError(f"{where}: new_languages.{code}: tier {spec.get('tier')!r}; use one of {', '.join(TIERS)}")
        out[str(code)] = {"tier": spec["tier"], "related": spec.get("related")}
    return out


def check_config(cfg: Any, where: str) -> None:
    """One-line errors for `new_languages` / `start_from` values a run cannot use."""
    if cfg.method not in ("lslo", "lora", "full") or not parse_new_languages(cfg.new_languages, where) or (
            cfg.start_from and cfg.method != "lslo"):  # fmt: skip
        raise LsloError(f"{where}: new_languages adds languages to an LSLo model (start_from: an LSLo run) or, with "
                        "method full or lora, to a base; use method lslo, lora or full and name them")  # fmt: skip


def register(cfg: Any) -> dict[str, dict[str, str | None]]:
    """Make the run's new codes known (codes no registry has, e.g. tyv_Cyrl) and return the parsed block."""
    from lslo.languages import register_language

    new = parse_new_languages(cfg.new_languages)
    for code in new:
        register_language(code)
    return new


def old_languages(cfg: Any) -> list[str] | None:
    """The old languages of a `start_from` model (None without one)."""
    if not cfg.start_from:
        return None
    meta = _adapter_meta(cfg.start_from)
    return list(meta["config"]["languages"])


def _adapter_dir(path: str) -> Path:
    root = Path(path)
    return root / "model" if (root / "run.json").is_file() else root


def _adapter_meta(path: str) -> dict[str, Any]:
    from lslo.model import CONFIG_NAME

    file = _adapter_dir(path) / CONFIG_NAME
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise LsloError(f"start_from {path}: no LSLo adapter there ({file} unreadable); give a finished lslo run or adapter") from None
    if meta.get("format") != "lslo":
        raise LsloError(f"start_from {path}: not an LSLo adapter (format {meta.get('format')!r}); give an lslo run or adapter")
    return meta


def new_pairs(languages: Sequence[str], new: Sequence[str]) -> list[str]:
    """Every direction with a new language on one side, as 'src-tgt' items."""
    return [f"{s}-{t}" for s in languages for t in languages if s != t and (s in new or t in new)]


def extend_for_run(cfg: Any, tokenizer: Any, corpus: Any, languages: Sequence[str], out: str | Path | None) -> Any:
    """The run's extended tokenizer: read from `out`/new_languages.json when a first start wrote it, else made
    from the corpus (train split) and written there."""
    from lslo.extend.tokenizer import TokenizerExtension, apply_extension, extend_tokenizer

    new = parse_new_languages(cfg.new_languages)
    report_file = Path(out) / REPORT_FILE if out is not None else None
    if report_file is not None and report_file.is_file():
        saved = json.loads(report_file.read_text(encoding="utf-8"))
        return apply_extension(tokenizer, TokenizerExtension.from_dict(saved["extension"]))
    base_rows = load_base_rows(cfg.base_model)
    old = [c for c in languages if c not in new]
    extended, report = extend_tokenizer(
        tokenizer, {c: corpus.sentences(c) for c in new}, {c: corpus.sentences(c) for c in old if c in corpus},
        base_rows=base_rows, existing=old, related={c: s["related"] for c, s in new.items() if s["related"]},
        vocab_size=cfg.new_language_vocab, seed=cfg.seed,
    )  # fmt: skip
    if report_file is not None:
        write_json(report_file, {"report": report, "extension": extended.lslo_extension.to_dict()})
    print(summary_line(report), flush=True)
    return extended


def summary_line(report: Mapping[str, Any]) -> str:
    """One line on what the tokenizer extension did (the full report is out_dir/new_languages.json)."""
    langs = "; ".join(
        f"{code}: {'new token' if x['new_token'] else 'existing token'} {x['token']}, tokens/word "
        f"{x['tokens_per_word_before']:.2f} -> {x['tokens_per_word_after']:.2f}" for code, x in report["languages"].items()
    )
    return (f"new languages: {langs}; {report['pieces_added']} pieces added ({report['pieces_dropped']} dropped that "
            f"changed old text); old-language lines changed: {report['old_lines_changed']} of {report['old_lines_checked']}")


def load_base_rows(base_model: str) -> int:
    """The embedding rows of a base checkpoint (its config's vocab_size)."""
    from transformers import AutoConfig

    local = Path(base_model).is_dir()
    try:
        return int(AutoConfig.from_pretrained(base_model, local_files_only=local).vocab_size)
    except (OSError, ValueError) as err:
        raise LsloError(f"base model {base_model}: cannot read its config ({str(err).splitlines()[0]})") from None


def build_model(cfg: Any, base: Any, tokenizer: Any, languages: Mapping[str, str | None]) -> Any:
    """The run's LSLo model: `start_from`'s adapter (or LSLo on the old languages), then the new languages added."""
    from lslo.config import LSLoConfig
    from lslo.extend.model import add_languages
    from lslo.extend.tokenizer import base_of
    from lslo.languages import lang_token_ids
    from lslo.model import add_lslo, load_lslo

    new = parse_new_languages(cfg.new_languages)
    related = {c: s["related"] for c, s in new.items() if s["related"]}
    if cfg.method == "full":
        return full_model(base, tokenizer, languages, related)
    if cfg.method == "lora":
        return lora_model(cfg, base, tokenizer, languages, related)
    if cfg.method != "lslo":
        raise LsloError(f"new_languages: method {cfg.method!r}; adding languages works with method lslo, lora or full")
    if cfg.start_from:
        model = load_lslo(base, _adapter_dir(cfg.start_from))
    else:
        old = {c: t or "high" for c, t in languages.items() if c not in new}
        lslo_cfg = LSLoConfig(languages=old, lang_token_ids=lang_token_ids(base_of(tokenizer), list(old)), **cfg.lslo)
        model = add_lslo(base, lslo_cfg)
    return add_languages(model, tokenizer, {c: s["tier"] for c, s in new.items()},
                         related={c: s["related"] for c, s in new.items() if s["related"]})  # fmt: skip


def full_model(base: Any, tokenizer: Any, languages: Mapping[str, str | None], related: Mapping[str, str]) -> Any:
    """The practitioners' recipe: the base's vocabulary resized to the extended tokenizer's, new rows started by the
    same rule as LSLo's (an existing untrained language token takes its related language's row), everything
    trained (`FullFineTune`); nothing is masked, so old directions may change."""
    from lslo.baselines import FullFineTune
    from lslo.languages import lang_token_ids

    extend_base(base, tokenizer, related)
    return FullFineTune(base, lang_token_ids(tokenizer, known_codes(tokenizer, list(languages))))


def known_codes(tokenizer: Any, languages: Sequence[str]) -> list[str]:
    """The run's languages and, after them, those an earlier run added to the base (its tokenizer extension's
    earlier stages): a base fully fine-tuned with es added and then given hi still translates es. They are not
    trained with the new language unless `languages` lists them (under LSLo, `start_from`'s adapter knows them)."""
    from lslo.extend.tokenizer import extension_of
    from lslo.languages import canonical

    ext = extension_of(tokenizer)
    listed = {canonical(c) for c in languages}
    return [*languages, *(x["code"] for x in (ext.languages if ext is not None else []) if canonical(x["code"]) not in listed)]


def lora_model(cfg: Any, base: Any, tokenizer: Any, languages: Mapping[str, str | None], related: Mapping[str, str]) -> Any:
    """The shared-LoRA baseline of adding a language: the base resized and started as for full fine-tuning, one
    peft LoRA on LSLo's linears, and only the new rows (and a reused language token's row) trainable, through peft's
    `trainable_token_indices`; nothing is masked, so old directions may change."""
    from lslo.baselines import SharedLoRA
    from lslo.config import LSLoConfig
    from lslo.languages import lang_token_ids

    trainable = extend_base(base, tokenizer, related)
    ids = lang_token_ids(tokenizer, list(languages))
    try:  # the linears LSLo would adapt (`cfg.lslo`); its languages only name the tiers
        placement = LSLoConfig(languages={c: t or "high" for c, t in languages.items()}, lang_token_ids=ids, **cfg.lslo)
    except (TypeError, ValueError) as err:
        raise LsloError(f"lslo: {err}") from None
    return SharedLoRA(base, ids, r=cfg.lora_rank, placement=placement, alpha=placement.alpha, dropout=placement.dropout,
                      trainable_tokens=trainable)  # fmt: skip


def extend_base(base: Any, tokenizer: Any, related: Mapping[str, str]) -> list[int]:
    """Resize `base` to the extended tokenizer's vocabulary in place, its new rows started by LSLo's rule (an existing
    untrained language token takes its related language's row); the ids of the rows so written."""
    import torch

    from lslo.extend.model import _init_rows
    from lslo.extend.tokenizer import extension_of, upto_stage

    ext = extension_of(tokenizer)
    previous = upto_stage(tokenizer, ext.stages - 1)
    before = extension_of(previous).rows if extension_of(previous) is not None else ext.base_rows
    if base.config.vocab_size != before:  # a model fully fine-tuned with earlier stages has their rows already
        raise LsloError(f"new_languages: the tokenizer's earlier stages need {before} embedding rows, the base has "
                        f"{base.config.vocab_size}; start from the model the tokenizer's earlier stages were made for")  # fmt: skip
    rows, over_ids, over_rows = _init_rows(base, tokenizer, previous, ext.stages, related, None)
    base.resize_token_embeddings(ext.rows, mean_resizing=False)
    with torch.no_grad():
        weight = base.get_input_embeddings().weight
        weight[before:] = rows.to(weight.dtype)
        for token, row in zip(over_ids, over_rows, strict=True):
            weight[token] = row.to(weight.dtype)
    return sorted({*range(before, ext.rows), *(int(t) for t in over_ids)})
