"""Train LSLo, a shared LoRA or the full model on a multi-way corpus: `train(TrainConfig(...))`.

The loop, top to bottom: draw `update_freq` global batches from the `BatchSampler`, give each process
its share of every batch, run the model, back-propagate the label-smoothed cross-entropy divided by the
global number of target tokens (so N processes compute exactly the gradient of one process with the
same global batch), clip, step Adam and the inverse-square-root schedule, call the callbacks, log,
validate, checkpoint. Everything goes through `accelerate.Accelerator`, so
`accelerate launch --multi_gpu --num_processes 2 ...` also works on CPU (gloo).

Output directory:
    run.json                 the configuration (a different run here is refused)
    metrics.jsonl            one JSON record per log / validation
    checkpoints/step-N/      latest checkpoint (trainable weights, optimizer, schedule, sampler, RNG, log)
    model/                   the trained adapter or model (`save_pretrained`), written at the end
    best/                    with `keep_best`: the model of the lowest validation loss (+ lslo_best.json)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from lslo import compiling
from lslo.checkpoint import read_checkpoint, write_checkpoint
from lslo.data.batching import (
    Batch,
    BatchSampler,
    batch_slice,
    directions,
    encode_corpus,
    fixed_batches,
    shard,
)
from lslo.errors import LsloError
from lslo.io import atomic_dir, write_json, write_text
from lslo.loss import batch_loss
from lslo.optim import LanguageAdamW
from lslo.precision import PRECISIONS, effective_precision
from lslo.precision import autocast as precision_autocast

METHODS = ("lslo", "lora", "full")
# Keys a resumed run may change: the budget, the display, how often it logs and checkpoints (neither touches the
# weights or the random streams), and `precision` (the weights and optimizer state stay fp32 whatever the
# autocast; each checkpoint records which steps ran in which precision).
RESUMABLE_KEYS = ("resume", "max_steps", "max_epochs", "max_hours", "progress", "precision", "save_every",
                  "keep_checkpoints", "log_every", "compile")  # fmt: skip

# auto = language-adamw for lslo (only the languages a step used move: `lslo.optim`), adamw otherwise.
OPTIMIZERS = ("auto", "adamw", "language-adamw")
# Keys added after runs were made: a run.json without the key ran with this value, and resumes with it.
LEGACY_SETTINGS = {"optimizer": "adamw"}

Callback = Callable[[int, nn.Module], None]


@dataclass
class TrainConfig:
    """Every choice of a training run (loadable from YAML with `TrainConfig.from_yaml`)."""

    data: str  # multi-way data folder (<data>/<split>/<lang>.txt)
    base_model: str  # Hugging Face model directory (M2M-100 / NLLB architecture)
    out_dir: str
    method: str = "lslo"  # lslo | lora | full
    tokenizer: str | None = None  # default: base_model
    languages: list[str] | dict[str, str] | None = None  # codes, or code -> tier; None = every language
    pairs: list[str] | None = None  # e.g. ["en-sw", "sw-en"]; None = every direction of `languages`
    # languages the base has never seen (lslo.extend.run): code -> tier or {tier, related}
    new_languages: dict[str, Any] | None = None
    new_language_vocab: int = 8000  # SentencePiece pieces trained on each new language's text
    start_from: str | None = None  # an LSLo run/adapter whose languages (frozen) are the old ones
    train_split: str = "train"
    valid_split: str | None = "valid"
    # method options
    lslo: dict[str, Any] = field(default_factory=dict)  # extra LSLoConfig fields (ranks, routing, ...)
    lora_rank: int = 8
    prune: dict[str, Any] | None = None  # PruningConfig fields (ratio, start, duration, unit, every, scope, matrices)
    dropout: float | None = None  # override the base model's dropout
    # batching
    max_tokens: int = 4096
    max_len: int = 256
    temperature: float = 5.0
    update_freq: int = 1
    # optimisation
    lr: float = 1e-3
    warmup_steps: int = 400
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    optimizer: str = "auto"  # auto (language-adamw for lslo, else adamw) | adamw | language-adamw (lslo.optim)
    clip_norm: float = 0.0  # 0 = no clipping
    label_smoothing: float = 0.2
    precision: str = "auto"  # auto (bf16 on a GPU that has it, else fp32) | fast (bf16 also on a bf16 CPU) | fp32 | bf16 | fp16 (GPU)
    compile: bool | str = False  # torch.compile each encoder/decoder layer (lslo.compiling): true, false or a backend
    # budget (at least one)
    max_steps: int | None = None
    max_epochs: float | None = (
        None  # epoch = N = sum_d n_d temperature-sampled pairs, ~ tokens / max_tokens batches
    )
    max_hours: float | None = None
    # bookkeeping
    seed: int = 1
    log_every: int = 10
    save_every: int = 1000
    eval_every: int | str = 1000  # steps between validations, or "epoch": at the end of every epoch
    keep_best: bool = False  # also keep the model of the lowest validation loss in best/
    valid_max_per_direction: int | None = 50
    keep_checkpoints: int = 1
    resume: bool = False
    progress: bool = True

    # -- loading and checking ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "config") -> TrainConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                raise LsloError(f"{where}: unknown key {key!r}; known keys: {', '.join(known)}")
        missing = [k for k in ("data", "base_model", "out_dir") if k not in data]
        if missing:
            raise LsloError(f"{where}: missing key {missing[0]!r}; add it")
        cfg = cls(**data)
        cfg.check(where)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """The YAML file's keys, then `overrides` (a dotted key like `lslo.ranks.low` sets a nested value; None sets null)."""
        import yaml

        from lslo.io import load_yaml
        from lslo.settings import apply_overrides

        try:
            data = load_yaml(Path(path).read_text(encoding="utf-8")) or {}
        except (FileNotFoundError, IsADirectoryError):
            raise LsloError(f"{path}: no such file; check the config path") from None
        except yaml.YAMLError as err:
            raise LsloError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise LsloError(f"{path}: expected a mapping of keys to values at the top level")
        return cls.from_dict(apply_overrides(data, overrides), where=str(path))

    def check(self, where: str = "config") -> None:
        """Raise `LsloError` for a value that cannot work."""

        def bad(key: str, fix: str) -> LsloError:
            return LsloError(f"{where}: {key}={getattr(self, key)!r}; {fix}")

        from lslo.settings import check_types

        check_types(self, where)

        if self.method not in METHODS:
            raise bad("method", f"use one of {', '.join(METHODS)}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"use one of {', '.join(PRECISIONS)}")
        compiling.backend_of(self.compile, f"{where}: compile")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"use one of {', '.join(OPTIMIZERS)}")
        if self.optimizer == "language-adamw" and self.method != "lslo":
            raise bad("optimizer", "language-adamw updates LSLo's per-language LoRAs; use adamw (or auto) with method " + self.method)
        for key in ("max_tokens", "max_len", "update_freq", "log_every", "save_every",
                    *(() if self.eval_every == "epoch" else ("eval_every",)), "keep_checkpoints", "lora_rank"):  # fmt: skip
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(key, "use a whole number >= 1" + (' or "epoch"' if key == "eval_every" else ""))
        if self.keep_best and not self.valid_split:
            raise bad("keep_best", "the best model is chosen by validation loss; set valid_split")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise bad("warmup_steps", "use a whole number >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "use a value in [0, 1)")
        if not self.lr > 0:
            raise bad("lr", "use a learning rate > 0")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise bad("adam_betas", "give two values in [0, 1), e.g. [0.9, 0.98]")
        if self.max_steps is None and self.max_epochs is None and self.max_hours is None:
            raise LsloError(f"{where}: no budget; set max_steps, max_epochs or max_hours")
        for key in ("max_steps", "max_epochs", "max_hours"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise bad(key, "use a value > 0 (or leave it out)")
        if self.method in ("lslo", "lora") and self.lslo:
            self._check_lslo_block(where)
        if self.prune is not None:
            if self.method != "lslo":
                raise bad("prune", "gradual pruning applies to LSLo weights; use method lslo or drop prune")
            from lslo.pruning import PruningConfig

            try:
                PruningConfig(**self.prune)
            except TypeError as err:
                raise LsloError(f"{where}: prune: {err}; known keys: ratio, start, duration, unit, every, scope, matrices") from None
        if self.new_languages is not None or self.start_from:
            from lslo.extend.run import check_config  # languages being added (lslo.extend)
            check_config(self, where)
        if self.pairs is not None:
            for p in self.pairs:
                if not isinstance(p, str) or p.count("-") != 1:
                    raise LsloError(
                        f"{where}: pairs item {p!r}; write a direction as 'src-tgt', e.g. 'en-sw'"
                    )

    def _check_lslo_block(self, where: str) -> None:
        """The `lslo:` block builds an LSLoConfig (keys, ranks, positions, dropout) before anything is written; the
        languages stand in as far as the config knows them (their tiers come from the data otherwise)."""
        from lslo.config import TIERS, LSLoConfig

        if isinstance(self.languages, dict):
            langs = {code: tier if tier in TIERS else "high" for code, tier in self.languages.items()}
        else:
            langs = dict.fromkeys(self.languages or [], "high")
        ranks = self.lslo.get("ranks") or {}
        langs.update({key: "high" for key in ranks if key not in TIERS and key not in langs})
        try:
            LSLoConfig(languages=langs or {"xx": "high"}, **self.lslo)
        except (TypeError, ValueError) as err:
            raise LsloError(f"{where}: lslo: {str(err).removeprefix('LSLoConfig.__init__() ')}; fix the lslo: block") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def lslo_config(cfg: TrainConfig, languages: Mapping[str, str | None], lang_ids: dict[str, int]) -> Any:
    """The run's LSLoConfig: its languages and tiers (untiered languages count as high) + `cfg.lslo`."""
    from lslo.config import LSLoConfig

    tiers = {code: tier or "high" for code, tier in languages.items()}
    try:
        return LSLoConfig(languages=tiers, lang_token_ids=dict(lang_ids), **cfg.lslo)
    except (TypeError, ValueError) as err:
        raise LsloError(f"lslo: {err}") from None


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


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


# -- output directory and checkpoints ------------------------------------------------------------


def _clean_partial(folder: Path) -> None:
    """Undo what an interrupted atomic write left behind.

    `.<name>.*.tmp` is a half-written output: removed. `.<name>.old` is the previous complete version
    of a directory that was being replaced: put back when `<name>` is missing, else removed.
    """
    if not folder.is_dir():
        return
    for p in sorted(folder.iterdir()):
        if not p.name.startswith("."):
            continue
        if p.name.endswith(".old"):
            target = p.with_name(p.name[1:-4])
            if not target.exists():
                os.replace(p, target)
                continue
        if p.name.endswith(".tmp") or p.name.endswith(".old"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def checkpoints(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))


PATH_KEYS = ("data", "base_model", "out_dir", "tokenizer")


def _same_setting(key: str, before: Any, now: Any) -> bool:
    """Equal settings; paths are compared after resolving symlinks (a run reached by another path)."""
    if key in PATH_KEYS and isinstance(before, str) and isinstance(now, str):
        return os.path.realpath(before) == os.path.realpath(now)
    return before == now


def check_out_dir(cfg: TrainConfig) -> bool:
    """Check that `cfg.out_dir` may be used; True when there is a run to resume."""
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise LsloError(f"out_dir {out}: is a file; give a directory")
    run_file = out / "run.json"
    if not run_file.is_file():
        if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
            raise LsloError(f"out_dir {out}: not empty and holds no lslo run; choose a new directory")
        return False
    saved = json.loads(run_file.read_text(encoding="utf-8"))
    for key, value in LEGACY_SETTINGS.items():  # e.g. a run started before `optimizer` existed keeps AdamW
        if key not in saved and getattr(cfg, key) == TrainConfig.__dataclass_fields__[key].default:
            setattr(cfg, key, value)
    now = cfg.to_dict()
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                for f in dataclasses.fields(TrainConfig)}  # fmt: skip
    for key in sorted(set(saved) | set(now)):
        # A key that a newer lslo added is compared with the value such runs had: older runs still resume.
        before = saved.get(key, LEGACY_SETTINGS.get(key, defaults.get(key)))
        if key not in RESUMABLE_KEYS and not _same_setting(key, before, now.get(key)):
            if not checkpoints(out) and not (out / "model").exists():
                return False  # a run that stopped before its first checkpoint: nothing to lose, start afresh
            raise LsloError(
                f"out_dir {out}: holds a different run ({key}={before!r} there, {now.get(key)!r} now); "
                "choose a new directory"
            )
    if not cfg.resume:
        raise LsloError(
            f"out_dir {out}: already holds this run; resume it (resume: true / --resume) or choose a new directory"
        )
    return True


# -- the loop ------------------------------------------------------------------------------------


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


@torch.no_grad()
def validation_loss(
    model: nn.Module, batches: Sequence[Batch], epsilon: float, accelerator: Any,
    autocast_: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """Token-averaged smoothed loss and NLL over `batches` (each process takes every n-th batch)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    rank, world = accelerator.process_index, accelerator.num_processes
    for batch in batches[rank::world]:
        b = batch.to(accelerator.device)
        loss, nll, n = batch_loss(model, b.model_inputs(), b.labels, epsilon, autocast_ or accelerator.autocast)
        sums += torch.tensor([loss.item(), nll.item(), n], dtype=torch.float64)
    sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    model.train(was_training)
    n = max(float(sums[2]), 1.0)
    return {
        "valid_loss": float(sums[0]) / n,
        "valid_nll": float(sums[1]) / n,
        "valid_ppl": math.exp(float(sums[1]) / n),
    }


class _Stop:
    """Set by SIGTERM / SIGINT: the loop ends after the current step and checkpoints."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


BEST_FILE = "lslo_best.json"  # in best/: the step, epoch and validation loss of the kept model


def save_model(model: nn.Module, tokenizer: Any, method: str, folder: Path, best: Mapping[str, Any] | None = None) -> None:
    """Write the trained adapter or model (a full model with its tokenizer) to `folder`, atomically."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        if method == "full" or getattr(tokenizer, "lslo_extension", None) is not None:  # full FT, or languages added
            from lslo.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, tmp)
        if best is not None:
            write_json(tmp / BEST_FILE, dict(best))


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


def _check_finite(value: float, step: int, run: Run, what: str = "loss") -> None:
    """Stop a diverged run: a one-line error naming the step; the checkpoints already saved stay as they are."""
    bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=run.accelerator.device)
    if run.world > 1:
        bad = run.accelerator.reduce(bad, "max")
    if not bad.item():
        return
    kept = checkpoints(run.out)
    last = f"the last good checkpoint, {kept[-1]}, is kept" if kept else "no checkpoint was saved before it"
    raise LsloError(
        f"training diverged at step {step}: the {what} became {value if what == 'loss' else 'nan/inf'} "
        f"(lr={run.cfg.lr}); {last}; lower lr (or set clip_norm) and start a new out_dir"
    )


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


# -- one step, one validation ----------------------------------------------------------------------


def train_step(run: Run, micro: Sequence[Batch], step: int) -> dict[str, float]:
    """One optimizer step over the micro-batches of one global batch: the summed smoothed loss and NLL of this
    process, the global target tokens, the lr used. The loss is divided by the global number of target tokens,
    so N processes compute exactly the gradient of one process with the same global batch."""
    acc, rank, world = run.accelerator, run.accelerator.process_index, run.world
    global_tokens = sum(b.num_tokens for b in micro)
    sums = {"loss": 0.0, "nll": 0.0}
    for k, batch in enumerate(micro):
        local, weight = shard(batch, rank, world), 1.0
        if len(local) == 0:  # fewer samples than processes: run one, count nothing
            local, weight = batch_slice(batch, [0]), 0.0
        local = local.to(acc.device)
        with contextlib.nullcontext() if k == len(micro) - 1 else acc.no_sync(run.model):
            loss, nll, _ = batch_loss(run.model, local.model_inputs(), local.labels, run.cfg.label_smoothing, run.autocast)
            acc.backward(loss * (weight * world / global_tokens))
        sums["loss"] += weight * loss.item()
        sums["nll"] += weight * nll.item()
    _check_finite(sums["loss"], step, run)
    if run.cfg.clip_norm > 0:
        acc.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], run.cfg.clip_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {**sums, "tokens": global_tokens, "lr": lr}


def validate(run: Run) -> dict[str, float]:
    """The validation loss, NLL and perplexity of the run's model now."""
    return validation_loss(run.unwrapped, run.valid_batches, run.cfg.label_smoothing, run.accelerator, run.autocast)


# -- what a checkpoint restores --------------------------------------------------------------------


@dataclass
class TrainState:
    """The loop's own state (position, log, timing); `save` and `restore` carry it with the run's model,
    optimizer, schedule, sampler, callbacks and RNG streams, in the format of `lslo.checkpoint`."""

    step: int = 0
    tokens: int = 0
    elapsed_before: float = 0.0
    precision_history: list[list[Any]] = field(default_factory=list)  # [first step, precision] per change
    log: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "nll": 0.0, "tokens": 0, "steps": 0})
    cpu_before: float | None = 0.0  # None: resumed from a checkpoint saved before lslo kept a CPU clock
    started: float = field(default_factory=time.time)
    cpu_started: float = field(default_factory=time.process_time)

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def cpu(self) -> float | None:
        """CPU seconds (user + system, all threads) this (main) process spent on the run, carried across resumes
        like `elapsed`: a killed session's work after its last checkpoint is redone, so it does not count."""
        return None if self.cpu_before is None else self.cpu_before + time.process_time() - self.cpu_started

    def save(self, run: Run) -> None:
        from accelerate.utils import gather_object

        weights = [p for p in run.unwrapped.parameters() if p.requires_grad]
        finite = all(bool(torch.isfinite(p).all()) for p in weights)
        _check_finite(0.0 if finite else math.nan, self.step, run, what="trainable weights")
        rngs = gather_object([rng_state()]) if run.world > 1 else [rng_state()]
        if run.is_main:
            scaler = run.accelerator.scaler
            state = {"model": trainable_state(run.unwrapped), "optimizer": run.optimizer.state_dict(),
                     "scheduler": run.scheduler.state_dict(), "sampler": run.sampler.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else None, "rng": rngs, "step": self.step,
                     "tokens": self.tokens, "elapsed": self.elapsed(), "cpu_s": self.cpu(),
                     "precision_history": self.precision_history,
                     "log": self.log, "window": self.window}  # fmt: skip
            for i, cb in enumerate(run.callbacks):
                if hasattr(cb, "state_dict"):
                    state[f"callback{i}"] = cb.state_dict()
            write_checkpoint(run.out / "checkpoints" / f"step-{self.step:08d}", state)
            for old in checkpoints(run.out)[: -run.cfg.keep_checkpoints]:
                shutil.rmtree(old)
        run.accelerator.wait_for_everyone()

    @classmethod
    def restore(cls, run: Run, ckpt: Path) -> TrainState:
        """Load `ckpt` into the run (weights, optimizer, schedule, sampler, callbacks, RNG) and return its state."""
        state = read_checkpoint(ckpt)
        unwrapped = run.unwrapped
        missing = set(trainable_state(unwrapped)) ^ set(state["model"])
        if missing:
            raise LsloError(f"{ckpt}: trainable weights do not match this model ({sorted(missing)[0]}); start a new run")
        if len(state["rng"]) != run.world:
            raise LsloError(f"{ckpt}: saved by {len(state['rng'])} processes, resumed with {run.world}; use the same number")
        with torch.no_grad():
            for name, p in unwrapped.named_parameters():
                if p.requires_grad:
                    p.copy_(state["model"][name])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.sampler.load_state_dict(state["sampler"])
        if run.accelerator.scaler is not None and state.get("scaler"):
            run.accelerator.scaler.load_state_dict(state["scaler"])
        for i, cb in enumerate(run.callbacks):
            if hasattr(cb, "load_state_dict") and f"callback{i}" in state:
                cb.load_state_dict(state[f"callback{i}"])
        set_rng_state(state["rng"][run.accelerator.process_index])
        history = state.get("precision_history", [[0, None]])  # None: saved before lslo recorded it
        return cls(state["step"], state["tokens"], state["elapsed"], [list(h) for h in history], state["log"], state["window"],
                   cpu_before=state.get("cpu_s"))  # absent: saved before lslo kept a CPU clock

    def record(self, run: Run, entry: dict[str, Any]) -> None:
        """Append `entry` to the log and to metrics.jsonl."""
        self.log.append(entry)
        if run.is_main:
            with open(run.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def log_window(self, run: Run, lr: float, since: float) -> dict[str, Any]:
        """The mean losses and speed of the steps since the last log entry; the window starts again."""
        sums = torch.tensor([self.window["loss"], self.window["nll"]], dtype=torch.float64, device=run.accelerator.device)
        sums = run.accelerator.reduce(sums, "sum").cpu() if run.world > 1 else sums.cpu()
        n = max(self.window["tokens"], 1)
        entry = {"step": self.step, "epoch": run.epoch(), "loss": float(sums[0]) / n, "nll_loss": float(sums[1]) / n,
                 "lr": lr, "tokens": self.tokens, "tokens_per_s": round(self.window["tokens"] / max(time.time() - since, 1e-9), 1),
                 "elapsed": round(self.elapsed(), 2)}  # fmt: skip
        self.record(run, entry)
        self.window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "steps": 0}
        return entry

    def validate(self, run: Run) -> dict[str, Any]:
        """Validate and log; with `keep_best`, a new lowest loss also replaces best/ (only once every callback with a
        `final` flag, e.g. a pruner short of its ratio, has reached its final state)."""
        best = min((r["valid_loss"] for r in self.log if "valid_loss" in r and r.get("best_eligible", True)), default=math.inf)
        entry = {"step": self.step, "epoch": run.epoch(), **validate(run)}
        if run.cfg.keep_best and not all(getattr(cb, "final", True) for cb in run.callbacks):
            entry["best_eligible"] = False
        if run.cfg.keep_best and run.is_main and entry.get("best_eligible", True) and entry["valid_loss"] < best:
            save_model(run.unwrapped, run.tokenizer, run.cfg.method, run.out / "best",
                       {k: entry[k] for k in ("step", "epoch", "valid_loss")})  # fmt: skip
        self.record(run, entry)
        return entry


# -- the loop ----------------------------------------------------------------------------------------


def start(cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> tuple[Run, TrainState]:
    """Check the output folder, build the run (a failed start leaves nothing behind), write run.json, and
    restore the last checkpoint when resuming."""
    cfg.check()
    accelerator = _make_accelerator(cfg)
    out = Path(cfg.out_dir)
    resuming = check_out_dir(cfg)
    existed = out.exists()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _clean_partial(out)
        _clean_partial(out / "checkpoints")
    try:  # everything that can fail on bad input, before run.json is written
        run = setup(cfg, callbacks, accelerator=accelerator)
    except BaseException:
        if accelerator.is_main_process and not resuming:  # leave nothing behind: the fixed config then starts here
            shutil.rmtree(out / "cache", ignore_errors=True)
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
        raise
    if run.is_main:
        write_json(out / "run.json", cfg.to_dict())
    run.accelerator.wait_for_everyone()
    state = TrainState.restore(run, checkpoints(out)[-1]) if resuming and checkpoints(out) else TrainState()
    if run.is_main:
        write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state.log))
    precision = effective_precision(cfg.precision)
    if not state.precision_history or state.precision_history[-1][1] != precision:
        state.precision_history.append([state.step, precision])
    return run, state


def train(cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Run (or resume) the training that `cfg` describes; returns a summary.

    `callbacks` are called after every optimizer step as `callback(step, model)` with the unwrapped
    model (e.g. gradual pruning). One with `setup` gets `setup(model, optimizer, steps_per_epoch)`
    before training starts. A callback with `state_dict()` / `load_state_dict(state)` has its
    state saved in every checkpoint and handed back on resume, before the first step; state the model
    holds outside its trainable weights (e.g. pruning masks) must travel that way.
    """
    from tqdm.auto import tqdm

    run, state = start(cfg, callbacks)
    bar = tqdm(total=run.max_steps, initial=state.step, disable=not (cfg.progress and run.is_main), unit="step", dynamic_ncols=True)
    run.model.train()
    interrupted, last_saved, since = False, state.step, time.time()
    with _Stop() as stop:
        while run.max_steps is None or state.step < run.max_steps:
            interrupted, out_of_time = _should_stop(run, state, stop)
            if interrupted or out_of_time:
                break
            epoch_before = run.sampler.epoch
            result = train_step(run, [run.sampler.next_batch() for _ in range(cfg.update_freq)], state.step + 1)
            state.step += 1
            state.tokens += result["tokens"]
            for key in ("loss", "nll", "tokens"):
                state.window[key] += result[key]
            state.window["steps"] += 1
            for cb in run.callbacks:
                cb(state.step, run.unwrapped)
            bar.update(1)
            if state.step % cfg.log_every == 0:
                entry = state.log_window(run, result["lr"], since)
                bar.set_postfix(loss=f"{entry['loss']:.3f}", tok_s=f"{entry['tokens_per_s']:.0f}")
                since = time.time()
            epoch_ended = run.sampler.epoch != epoch_before
            if run.valid_batches and (epoch_ended if cfg.eval_every == "epoch" else state.step % cfg.eval_every == 0):
                state.validate(run)
            if state.step % cfg.save_every == 0 or epoch_ended:
                state.save(run)
                last_saved = state.step
    bar.close()
    return finish(run, state, interrupted, last_saved)


def _should_stop(run: Run, state: TrainState, stop: _Stop) -> tuple[bool, bool]:
    """(asked to stop, out of time): every process must agree, or one would wait forever."""
    out_of_time = run.cfg.max_hours is not None and state.elapsed() >= run.cfg.max_hours * 3600
    flags = torch.tensor([float(stop.requested), float(out_of_time)], device=run.accelerator.device)
    if run.world > 1:
        flags = run.accelerator.reduce(flags, "max")
    return bool(flags[0].item()), bool(flags[1].item())


def finish(run: Run, state: TrainState, interrupted: bool, last_saved: int) -> dict[str, Any]:
    """The final validation and checkpoint, model/ (unless interrupted) and the summary."""
    last_valid = next((r for r in reversed(state.log) if "valid_loss" in r), None)
    if run.valid_batches and not interrupted and (last_valid is None or last_valid["step"] != state.step):
        last_valid = state.validate(run)
        last_saved = -1  # the log changed: the final checkpoint must hold it
    if last_saved != state.step:
        state.save(run)
    summary: dict[str, Any] = {
        "out_dir": str(run.out), "steps": state.step, "epochs": run.epoch(), "tokens": state.tokens,
        "elapsed": round(state.elapsed(), 2), "cpu_s": None if (cpu := state.cpu()) is None else round(cpu, 2),
        "interrupted": interrupted,
        "train_loss": next((r["loss"] for r in reversed(state.log) if "loss" in r), None),
    }  # fmt: skip
    if last_valid is not None:
        summary.update({k: v for k, v in last_valid.items() if k not in ("step", "epoch")})
    if not interrupted:
        if run.is_main:
            save_model(run.unwrapped, run.tokenizer, run.cfg.method, run.out / "model")
        summary["model_dir"] = str(run.out / "model")
        if run.cfg.keep_best and (run.out / "best").is_dir():
            summary["best"] = json.loads((run.out / "best" / BEST_FILE).read_text(encoding="utf-8"))
    run.accelerator.wait_for_everyone()
    if run.world > 1:
        run.accelerator.end_training()  # a process group left open aborts the process at exit
    return summary
