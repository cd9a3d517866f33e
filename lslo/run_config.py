"""A training run's settings: `TrainConfig` (every choice of a run, loadable from YAML), its checks, and the names
they allow (`METHODS`, `OPTIMIZERS`) or treat specially (`RESUMABLE_KEYS`, `LEGACY_SETTINGS`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lslo import compiling
from lslo.errors import LsloError
from lslo.precision import PRECISIONS

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
