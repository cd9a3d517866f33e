"""Setting a training run up: its languages and directions, data (`setup_data`), model (`setup_model`), optimizer,
schedule and accelerator, all built once into a `Run` by `setup(cfg)` (reused by search and the benchmarks).
Nothing here writes to the output folder but the encoded-corpus cache."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from lslo import compiling
from lslo.config import lslo_config
from lslo.data.batching import Batch, BatchSampler, directions, encode_corpus, fixed_batches
from lslo.errors import LsloError
from lslo.optim import LanguageAdamW
from lslo.precision import autocast as precision_autocast
from lslo.precision import effective_precision
from lslo.run_config import TrainConfig

Callback = Callable[[int, nn.Module], None]


# -- schedule --------------------------------------------------------------------------------


def inverse_sqrt(warmup_steps: int) -> Callable[[int], float]:
    """LR factor at optimizer step s (0-based): linear warm-up to 1, then sqrt(warmup / step)."""

    def factor(s: int) -> float:
        step = s + 1
        if warmup_steps and step < warmup_steps:
            return step / warmup_steps
        return math.sqrt(max(warmup_steps, 1) / step)

    return factor


# -- building blocks -----------------------------------------------------------------------------


def resolve_languages(cfg: TrainConfig, available: Sequence[str]) -> dict[str, str | None]:
    """Code -> tier (None where no tier is needed or known) for the run's languages, codes as the user wrote them."""
    from lslo.data.corpus import display_code
    from lslo.extend.run import old_languages, register
    from lslo.languages import BIBLE12_TIERS, LANG12_TIERS, resolve, tier_of

    new = register(cfg)  # languages being added: known from here on (lslo.extend.run)
    available = [c for c in available if c not in new]
    if cfg.languages is None and old_languages(cfg) is not None:
        codes: dict[str, str | None] = dict.fromkeys(old_languages(cfg) or [])
    elif cfg.languages is None:
        codes = dict.fromkeys(available)
    elif isinstance(cfg.languages, dict):
        codes = {display_code(code): tier for code, tier in cfg.languages.items()}
    else:
        codes = dict.fromkeys(display_code(code) for code in cfg.languages)
    for code in codes:
        resolve(code, "languages")
    tiers = {**LANG12_TIERS, **BIBLE12_TIERS}
    for code, tier in codes.items():
        if tier is None and cfg.method == "lslo":
            try:
                codes[code] = tier_of(code, tiers)
            except LsloError:
                raise LsloError(
                    f"languages: {code!r} has no known resource tier; give languages as a mapping "
                    "code -> tier (high | medium | low)"
                ) from None
    return {**codes, **{code: spec["tier"] for code, spec in new.items()}}


def parse_pairs(pairs: Sequence[str] | None, languages: Sequence[str] = ()) -> list[tuple[str, str]] | None:
    """`["en-sw"]` -> [("en", "sw")], each code spelt as in `languages` when it names one of them."""
    from lslo.languages import canonical

    if pairs is None:
        return None
    spelling = {canonical(code): code for code in languages}
    return [tuple(spelling.get(canonical(c), canonical(c)) for c in p.split("-")) for p in pairs]  # type: ignore[misc]


def load_base_model(path: str, dropout: float | None = None) -> nn.Module:
    """An `M2M100ForConditionalGeneration` (M2M-100 / NLLB) from a local directory or hub id, in fp32."""
    from lslo.loading import load_base

    return load_base(path, **({"dropout": dropout} if dropout is not None else {}))


def build_model(
    cfg: TrainConfig, base: nn.Module, languages: Mapping[str, str | None], lang_ids: dict[str, int]
) -> nn.Module:
    """Wrap `base` for the run's method: LSLo, a shared LoRA or full fine-tuning."""
    from lslo.baselines import FullFineTune, SharedLoRA
    from lslo.model import add_lslo

    if cfg.method == "full":
        return FullFineTune(base, lang_ids)
    lslo_cfg = lslo_config(cfg, languages, lang_ids)
    if cfg.method == "lora":
        return SharedLoRA(base, lang_ids, r=cfg.lora_rank, placement=lslo_cfg, alpha=lslo_cfg.alpha,
                          dropout=lslo_cfg.dropout)  # fmt: skip
    return add_lslo(base, lslo_cfg)


# -- data and model -------------------------------------------------------------------------------


def _start_tokenizer(cfg: TrainConfig) -> str | None:
    """The tokenizer of a `start_from` run/adapter when it saved one (a model that already has added languages)."""
    from lslo.extend.run import _adapter_dir
    from lslo.tokenizer import has_tokenizer

    folder = _adapter_dir(cfg.start_from)
    return str(folder) if has_tokenizer(folder) else None


def training_data(cfg: TrainConfig, cache_dir: str | os.PathLike | None = None) -> tuple[Any, dict[str, str | None], dict[str, int], BatchSampler]:
    """(tokenizer, languages -> tier, language token ids, batch sampler) of the run's training split."""
    from lslo.data.readers import read_corpus
    from lslo.extend.run import register
    from lslo.languages import lang_token_ids
    from lslo.tokenizer import check_coverage, load_tokenizer

    register(cfg)  # codes being added (e.g. tyv_Cyrl) are known from here on
    tokenizer = load_tokenizer(cfg.tokenizer or (cfg.start_from and _start_tokenizer(cfg)) or cfg.base_model)
    if cfg.languages is None and not cfg.new_languages:
        corpus = read_corpus(cfg.data, split=cfg.train_split)
        languages = resolve_languages(cfg, corpus.languages)
    else:
        languages = resolve_languages(cfg, [] if cfg.languages is not None else read_corpus(cfg.data, split=cfg.train_split).languages)
        corpus = read_corpus(cfg.data, languages=list(languages), split=cfg.train_split)
    if cfg.new_languages:  # extend the tokenizer; train the directions that involve a new language
        from lslo.extend.run import extend_for_run, new_pairs

        tokenizer = extend_for_run(cfg, tokenizer, corpus, list(languages), None if cache_dir is None else Path(cache_dir).parent)
        cfg = dataclasses.replace(cfg, pairs=cfg.pairs or new_pairs(list(languages), list(cfg.new_languages)))
    enc = encode_corpus(corpus, tokenizer, cache_dir=cache_dir)
    check_coverage(enc.flat, tokenizer, cfg.tokenizer or cfg.base_model)
    lang_ids = lang_token_ids(tokenizer, list(languages))
    sampler = BatchSampler(enc, directions(enc, list(languages), parse_pairs(cfg.pairs, list(languages))), lang_ids,
                           max_tokens=cfg.max_tokens, max_len=cfg.max_len, temperature=cfg.temperature,
                           seed=cfg.seed, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id)  # fmt: skip
    return tokenizer, languages, lang_ids, sampler


class RunData(NamedTuple):
    """What `setup_data` reads for a run."""

    tokenizer: Any
    languages: dict[str, str | None]  # code -> tier, codes as the user wrote them
    lang_ids: dict[str, int]  # code -> language token id
    sampler: BatchSampler  # the training split's batches
    valid_batches: list[Batch]  # empty without a validation split


def setup_data(cfg: TrainConfig, out: str | os.PathLike | None = None, accelerator: Any = None) -> RunData:
    """The run's tokenizer, languages, language ids, training sampler and validation batches, checked against each
    other. With `out`, encoded corpora are cached in `out`/cache; with `accelerator`, the main process reads first."""
    from lslo.data.readers import read_corpus

    first = accelerator.main_process_first if accelerator is not None else contextlib.nullcontext
    cache = None if out is None else Path(out) / "cache"
    with first():
        tokenizer, languages, lang_ids, sampler = training_data(cfg, cache)
    if cfg.new_languages and not cfg.pairs:  # validate on the directions trained: those with a new language
        from lslo.extend.run import new_pairs

        cfg = dataclasses.replace(cfg, pairs=new_pairs(list(languages), list(cfg.new_languages)))
    valid_batches: list[Batch] = []
    if cfg.valid_split:
        with first():
            vcorpus = read_corpus(cfg.data, languages=list(languages), split=cfg.valid_split)
            venc = encode_corpus(vcorpus, tokenizer, cache_dir=cache)
        valid_batches = fixed_batches(venc, directions(venc, list(languages), parse_pairs(cfg.pairs, list(languages))),
                                      lang_ids, max_tokens=cfg.max_tokens, max_len=cfg.max_len,
                                      max_per_direction=cfg.valid_max_per_direction, pad_id=tokenizer.pad_token_id,
                                      eos_id=tokenizer.eos_token_id)  # fmt: skip
    return RunData(tokenizer, languages, lang_ids, sampler, valid_batches)


def setup_model(cfg: TrainConfig, tokenizer: Any, languages: Mapping[str, str | None]) -> nn.Module:
    """The run's model, seeded as `train` seeds it (the same initial weights every time), checked against the
    tokenizer's vocabulary."""
    from lslo.languages import lang_token_ids

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.new_languages:  # the old languages' LSLo (or start_from's), then the new ones added (lslo.extend)
        from lslo.extend.run import build_model as build_extended

        return build_extended(cfg, load_base_model(cfg.base_model, cfg.dropout), tokenizer, languages)
    model = build_model(cfg, load_base_model(cfg.base_model, cfg.dropout), languages, lang_token_ids(tokenizer, list(languages)))
    vocab_needed = max(tokenizer.get_vocab().values()) + 1
    if model.config.vocab_size < vocab_needed:
        raise LsloError(
            f"base_model {cfg.base_model}: vocabulary of {model.config.vocab_size} is smaller than the "
            f"tokenizer's ({vocab_needed}); use the model's own tokenizer"
        )
    return model


# -- the accelerator -------------------------------------------------------------------------------


def _make_accelerator(cfg: TrainConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    precision = effective_precision(cfg.precision)
    if precision == "bf16" and not torch.cuda.is_available():
        # On CPU, bf16 autocast is lslo's own (`autocast`): accelerate fixes it once per process.
        precision = "fp32"
    # LayerDrop (on in M2M-100's own config) and single-language batches can leave weights unused.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(
        cpu=not torch.cuda.is_available(),  # without it, processes on CPU would not form a group
        mixed_precision="no" if precision == "fp32" else precision,
        kwargs_handlers=[ddp],
    )


def autocast(cfg: TrainConfig, accelerator: Any) -> Callable[[], Any]:
    """The forward pass's autocast context: accelerate's on GPUs, torch's bf16 on CPU when asked for."""
    if effective_precision(cfg.precision) == "bf16" and not torch.cuda.is_available():
        return lambda: precision_autocast("bf16", "cpu")
    return accelerator.autocast


# -- the run: everything a training needs, built once -----------------------------------------------


@dataclass
class Run:
    """What `setup` builds from a `TrainConfig`: data, model, optimizer, schedule (reused by search and the bench)."""

    cfg: TrainConfig
    out: Path
    accelerator: Any
    autocast: Callable[[], Any]
    tokenizer: Any
    languages: dict[str, str | None]
    lang_ids: dict[str, int]
    sampler: BatchSampler
    valid_batches: list[Batch]
    model: nn.Module  # as accelerate prepared it (wrapped for several processes)
    unwrapped: nn.Module  # the model itself
    optimizer: Any
    scheduler: Any
    callbacks: list[Any]
    max_steps: int | None

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def epoch(self) -> float:
        """Epochs trained so far (the sampler's position)."""
        s = self.sampler
        return round(s.epoch + s.index / s.batches_per_epoch(s.epoch), 4)


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; per language for LSLo unless `optimizer: adamw`."""
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "language-adamw" or (cfg.optimizer == "auto" and cfg.method == "lslo"):
        return LanguageAdamW(params, model, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def setup(cfg: TrainConfig, callbacks: Sequence[Callback] = (), out: str | os.PathLike | None = None,
          accelerator: Any = None) -> Run:  # fmt: skip
    """Build the run `cfg` describes (nothing is written but the encoded-corpus cache under `out`/cache).

    Seeds as `train` does, so a model built here starts from the same weights and dropout stream.
    """
    cfg.check()
    callbacks = list(callbacks)
    if cfg.prune is not None:
        from lslo.pruning import GradualPruner, PruningConfig

        callbacks.insert(0, GradualPruner(cfg=PruningConfig(**cfg.prune)))
    accelerator = accelerator or _make_accelerator(cfg)
    folder = Path(out if out is not None else cfg.out_dir)
    tokenizer, languages, lang_ids, sampler, valid_batches = setup_data(cfg, folder, accelerator)
    model = setup_model(cfg, tokenizer, languages)
    compiling.apply(model, cfg.compile)  # training and validation run the compiled layers
    torch.manual_seed(cfg.seed + 1 + accelerator.process_index)  # dropout differs between processes
    optimizer = make_optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt(cfg.warmup_steps))
    model, optimizer = accelerator.prepare(model, optimizer)
    steps_per_epoch = sampler.batches_per_epoch(0) / cfg.update_freq
    max_steps = cfg.max_steps
    if cfg.max_epochs is not None:
        epoch_steps = math.ceil(cfg.max_epochs * steps_per_epoch)
        max_steps = epoch_steps if max_steps is None else min(max_steps, epoch_steps)
    run = Run(cfg, folder, accelerator, autocast(cfg, accelerator), tokenizer, languages, lang_ids, sampler, valid_batches,
              model, accelerator.unwrap_model(model), optimizer, scheduler, callbacks, max_steps)  # fmt: skip
    for cb in callbacks:  # e.g. GradualPruner.setup(model, optimizer, steps_per_epoch)
        if hasattr(cb, "setup"):
            cb.setup(run.unwrapped, getattr(optimizer, "optimizer", optimizer), max(1, int(steps_per_epoch)))
    return run
