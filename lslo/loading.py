"""Load whatever a user points at as a `TranslationModel` + tokenizer.

- a base checkpoint: a local Hugging Face directory or a hub id (`facebook/m2m100_418M`), M2M-100/NLLB only;
- a training run folder written by `lslo train` (`run.json` + `model/`);
- a saved model folder: an LSLo adapter (also a compact one, `lslo export --compact`), a shared-LoRA adapter,
  a fully fine-tuned model or a merged direction (`lslo export --merge`, a plain checkpoint).

The tokenizer follows one rule everywhere (`tokenizer_location`): the one asked for, else the folder's own
(exports and full fine-tuning runs save one), else the run's recorded tokenizer, else the base's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lslo.errors import LsloError
from lslo.translation import TranslationModel

SUPPORTED = ("m2m_100",)  # model_type of M2M100ForConditionalGeneration (M2M-100 and NLLB checkpoints)


def load_base(name_or_path: str, dtype: torch.dtype = torch.float32, **kwargs: Any) -> nn.Module:
    """An M2M-100/NLLB `M2M100ForConditionalGeneration` from a directory or hub id; other architectures fail."""
    from transformers import AutoConfig, M2M100ForConditionalGeneration

    from lslo.tokenizer import looks_like_path

    where = f"base model {name_or_path}"
    local = Path(name_or_path).is_dir()
    if not local and looks_like_path(name_or_path):
        raise LsloError(f"{where}: no such model directory; give a Hugging Face model directory or hub id")
    try:
        config = AutoConfig.from_pretrained(name_or_path, local_files_only=local)
    except (OSError, ValueError) as err:
        fix = "give a Hugging Face model directory or hub id"
        raise LsloError(f"{where}: cannot read its config ({str(err).splitlines()[0]}); {fix}") from None
    if config.model_type not in SUPPORTED:
        raise LsloError(
            f"{where}: architecture {config.model_type!r} is not supported; give an M2M-100 or NLLB checkpoint (model_type m2m_100)"
        )
    try:
        return M2M100ForConditionalGeneration.from_pretrained(name_or_path, dtype=dtype, local_files_only=local, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise LsloError(f"{where}: cannot load its weights ({str(err).splitlines()[0]})") from None


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer of a folder or hub id (`lslo.tokenizer.load_tokenizer`)."""
    from lslo.tokenizer import load_tokenizer as load

    return load(name_or_path)


def tokenizer_location(asked: str | None, folder: str | os.PathLike | None, recorded: str | None, base: str | None) -> str:
    """Where the tokenizer comes from: `asked`, else `folder` when it holds one, else `recorded`, else `base`."""
    from lslo.tokenizer import has_tokenizer, looks_like_path

    if asked:
        return asked
    if folder is not None and has_tokenizer(folder):
        return str(folder)
    if recorded and (not looks_like_path(recorded) or has_tokenizer(recorded) or not base):
        return recorded
    if base:
        return base
    raise LsloError(f"{folder}: holds no tokenizer and records no base model; pass --base")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise LsloError(f"{path}: unreadable ({err})") from None


def load_model(
    path: str, base: str | None = None, tokenizer: str | None = None, compute_type: str = "default"
) -> tuple[TranslationModel, Any, dict]:
    """(model, tokenizer, info) for a run folder, a saved model folder or a base checkpoint.

    `base` overrides the base checkpoint recorded in a run or adapter; `tokenizer` the tokenizer location.
    `info` says what was loaded: {"kind": "run"|"lslo"|"lora"|"full"|"base"|"ctranslate2", "method", "base_model"}.
    `compute_type` applies to a CTranslate2 export (`lslo.deploy`).
    """
    from lslo.baselines import METHOD_FILE, FullFineTune, SharedLoRA
    from lslo.deploy import CT2Model, is_ctranslate2
    from lslo.languages import lang_token_ids
    from lslo.model import CONFIG_NAME, load_lslo

    root = Path(path)
    run = root / "run.json"
    if is_ctranslate2(root):  # `compute_type`: CTranslate2's (int8, float32, ...)
        model = CT2Model(root, compute_type)
        tok = load_tokenizer(tokenizer_location(tokenizer, root, None, None))
        return model, tok, {"kind": "ctranslate2", "method": "ctranslate2", "base_model": model.meta.get("base_model"),
                            "direction": f"{model.src}-{model.tgt}", "compute_type": compute_type}  # type: ignore[return-value]  # fmt: skip
    if run.is_file():
        cfg = _read_json(run)
        model_dir = root / "model"
        if not model_dir.is_dir():
            raise LsloError(f"{root}: the run has no final model yet (model/ missing); finish it with `lslo train --resume`")
        recorded = cfg.get("tokenizer") or (None if base else cfg.get("base_model"))
        model, tok, info = load_model(str(model_dir), base or cfg.get("base_model"),
                                      tokenizer_location(tokenizer, model_dir, recorded, base or cfg.get("base_model")))  # fmt: skip
        run_tiers = cfg.get("languages") if isinstance(cfg.get("languages"), dict) else None
        return model, tok, {**info, "kind": "run", "run": str(root), **({"tiers": run_tiers} if run_tiers else {})}
    meta = _read_json(root / CONFIG_NAME) if (root / CONFIG_NAME).is_file() else {}
    if meta.get("format") in ("lslo", "lslo-compact"):
        base = base or meta.get("base_model", {}).get("name_or_path")
        if not base:
            raise LsloError(f"{root}: the adapter does not record its base model; pass --base")
        if meta["format"] == "lslo-compact":
            from lslo.subspace import load_compact

            model = load_compact(load_base(base), root)
        else:
            model = load_lslo(load_base(base), root)
        tok = load_tokenizer(tokenizer_location(tokenizer, root, None, base))
        return model, tok, {"kind": "lslo", "method": "lslo", "base_model": base, "format": meta["format"]}
    if (root / METHOD_FILE).is_file():
        meta = _read_json(root / METHOD_FILE)
        if meta.get("method") == "lora":
            base = base or meta.get("base_model") or _read_json(root / "adapter_config.json").get("base_model_name_or_path")
            model = SharedLoRA.from_pretrained(load_base(base), root)
            tok = load_tokenizer(tokenizer_location(tokenizer, root, None, base))
            return model, tok, {"kind": "lora", "method": "lora", "base_model": base}
        model = FullFineTune(load_base(str(root)), meta["lang_token_ids"])
        tok = load_tokenizer(tokenizer_location(tokenizer, root, None, base))
        return model, tok, {"kind": "full", "method": "full", "base_model": base}
    if root.exists() and not root.is_dir():
        raise LsloError(f"{path}: is a file; give a run folder, a model/adapter folder or a base checkpoint")
    hf = load_base(path)
    tok = load_tokenizer(tokenizer_location(tokenizer, root if root.is_dir() else None, None, path))
    return _plain(hf, tok, lang_token_ids), tok, {"kind": "base", "method": "base", "base_model": path}


def _plain(model: nn.Module, tokenizer: Any, lang_token_ids: Any) -> TranslationModel:
    """A base checkpoint behind the TranslationModel interface (nothing trainable is added)."""
    from lslo.languages import detect_style

    vocab_langs = _tokenizer_languages(tokenizer, detect_style(tokenizer))
    ext = getattr(tokenizer, "lslo_extension", None)  # languages added to the base (lslo.extend.tokenizer)
    vocab_langs += [x["code"] for x in (ext.languages if ext else []) if x["code"] not in vocab_langs]
    wrapper = TranslationModel(model, vocab_langs, lang_token_ids(tokenizer, vocab_langs))
    return wrapper.eval()


def _tokenizer_languages(tokenizer: Any, style: str) -> list[str]:
    """Codes of the languages whose tokens the tokenizer has."""
    from lslo.languages import LANGUAGES, lang_token

    unk = getattr(tokenizer, "unk_token_id", None)
    out = []
    for lang in LANGUAGES:
        code = lang.m2m if style == "m2m100" else lang.flores200
        if not code:
            continue
        tid = tokenizer.convert_tokens_to_ids(lang_token(code, style))
        if tid is not None and tid != unk:
            out.append(code)
    return out
