"""LSLoConfig: every choice of an LSLo run, as plain JSON-serialisable data.

Which languages, how large each language's subspace is (rank by resource tier), which linear layers carry
LSLo (positions and layer indices) and how each layer routes a sentence (by its source or its target
language). Nothing here touches a model; `lslo.model.add_lslo` reads this and does the injection.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lslo.routing import parse_routing

if TYPE_CHECKING:
    from lslo.run_config import TrainConfig

TIERS = ("high", "medium", "low")

# Position name -> attribute path inside one M2M-100 encoder/decoder layer.
POSITIONS: dict[str, str] = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.out_proj",
    "fc1": "fc1",
    "fc2": "fc2",
    "cross_q": "encoder_attn.q_proj",
    "cross_k": "encoder_attn.k_proj",
    "cross_v": "encoder_attn.v_proj",
    "cross_o": "encoder_attn.out_proj",
}
ENCODER_POSITIONS = ("q", "k", "v", "o", "fc1", "fc2")
DECODER_POSITIONS = ENCODER_POSITIONS + ("cross_q", "cross_k", "cross_v", "cross_o")


@dataclass
class LSLoConfig:
    """Choices for Language-Specific LoRA (defaults follow Cao et al., EMNLP 2024).

    languages: language code -> resource tier ("high" | "medium" | "low").
    ranks: tier -> rank; a language code as key overrides its tier's rank.
    encoder_modules / decoder_modules: positions that get LSLo (see `POSITIONS`).
    encoder_layers / decoder_layers: layer indices that get LSLo; None = all.
    encoder_routing / decoder_routing: one route per layer, e.g. "src*9,tgt*3"; None = the paper's best
        (encoder: top quarter of the layers by target, the rest by source; decoder: all by target).
    alpha: None = no scaling (the paper); else the LoRA output is scaled by alpha / rank.
    dropout: dropout on the LoRA input.
    lang_token_ids: language code -> id of its language token (filled from a tokenizer by `add_lslo`).
    """

    languages: dict[str, str]
    ranks: dict[str, int] = field(default_factory=lambda: {"high": 2, "medium": 2, "low": 8})
    encoder_modules: list[str] = field(default_factory=lambda: ["q", "k", "v", "fc1", "fc2"])
    decoder_modules: list[str] = field(
        default_factory=lambda: ["q", "k", "v", "cross_q", "cross_k", "cross_v", "fc1", "fc2"]
    )
    encoder_layers: list[int] | None = None
    decoder_layers: list[int] | None = None
    encoder_routing: str | list[str] | None = None
    decoder_routing: str | list[str] | None = None
    alpha: float | None = None
    dropout: float = 0.0
    lang_token_ids: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.languages, dict) or not self.languages:
            raise ValueError("languages: give a non-empty mapping code -> tier, e.g. {'en': 'high', 'wo': 'low'}")
        for lang, tier in self.languages.items():
            if tier not in TIERS:
                raise ValueError(f"languages: unknown tier {tier!r} for {lang!r}; use one of {', '.join(TIERS)}")
        for key, rank in self.ranks.items():
            if key not in TIERS and key not in self.languages:
                raise ValueError(f"ranks: key {key!r} is neither a tier ({', '.join(TIERS)}) nor a configured language")
            if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
                raise ValueError(f"ranks: rank of {key!r} is {rank!r}; ranks are integers >= 1")
        for lang, tier in self.languages.items():
            if lang not in self.ranks and tier not in self.ranks:
                raise ValueError(f"ranks: no rank for tier {tier!r} (language {lang!r}); add e.g. ranks['{tier}'] = 2")
        for name, allowed in (("encoder_modules", ENCODER_POSITIONS), ("decoder_modules", DECODER_POSITIONS)):
            for pos in getattr(self, name):
                if pos not in allowed:
                    raise ValueError(f"{name}: unknown module {pos!r}; choose from {', '.join(allowed)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: {self.dropout} is not in [0, 1)")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"alpha: {self.alpha} must be > 0, or None for no scaling")

    # -- derived values -------------------------------------------------------------------------
    def rank(self, lang: str) -> int:
        return self.ranks.get(lang, self.ranks.get(self.languages[lang]))

    def scale(self, lang: str) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank(lang)

    def routes(self, side: str, num_layers: int) -> list[str]:
        """One route per layer for side "encoder" or "decoder", validated against the layer count."""
        spec = self.encoder_routing if side == "encoder" else self.decoder_routing
        if spec is None:
            if side == "decoder":
                spec = "tgt"
            else:
                top = num_layers // 4
                spec = f"src*{num_layers - top},tgt*{top}" if top else "src"
        return parse_routing(spec, num_layers, f"{side}_routing")

    def layers(self, side: str, num_layers: int) -> list[int]:
        chosen = self.encoder_layers if side == "encoder" else self.decoder_layers
        if chosen is None:
            return list(range(num_layers))
        bad = [i for i in chosen if not 0 <= i < num_layers]
        if bad:
            raise ValueError(f"{side}_layers: index {bad[0]} out of range for {num_layers} layers (0..{num_layers - 1})")
        return sorted(set(chosen))

    def targets(self, num_encoder_layers: int, num_decoder_layers: int) -> list[tuple[str, str]]:
        """(module name inside `M2M100ForConditionalGeneration`, route) of every linear that gets LSLo."""
        out = []
        for side, count in (("encoder", num_encoder_layers), ("decoder", num_decoder_layers)):
            routes = self.routes(side, count)
            positions = self.encoder_modules if side == "encoder" else self.decoder_modules
            for i in self.layers(side, count):
                out += [(f"model.{side}.layers.{i}.{POSITIONS[pos]}", routes[i]) for pos in positions]
        return out

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LSLoConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"LSLoConfig: unknown field {unknown[0]!r}; known fields: {', '.join(sorted(known))}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        from lslo.io import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LSLoConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# The fields of an LSLoConfig that describe the architecture (not the run's languages): what a search finds.
ARCHITECTURE_FIELDS = ("ranks", "encoder_modules", "decoder_modules", "encoder_layers", "decoder_layers",
                       "encoder_routing", "decoder_routing", "alpha", "dropout")  # fmt: skip


def load_architecture(path: str | Path) -> dict[str, Any]:
    """The architecture fields of an `lslo_config.json` (e.g. from `lslo search routing`), for a run's `lslo:` block."""
    from lslo.errors import LsloError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise LsloError(f"--lslo-config {path}: cannot read ({err.strerror}); give the lslo_config.json a search wrote") from None
    except json.JSONDecodeError as err:
        raise LsloError(f"--lslo-config {path}: not JSON ({err})") from None
    if not isinstance(data, dict) or not any(key in data for key in ARCHITECTURE_FIELDS):
        raise LsloError(f"--lslo-config {path}: not an LSLo config (no {', '.join(ARCHITECTURE_FIELDS[:3])}, ...)")
    return {key: data[key] for key in ARCHITECTURE_FIELDS if key in data}


def lslo_config(cfg: TrainConfig, languages: Mapping[str, str | None], lang_ids: dict[str, int]) -> LSLoConfig:
    """A training run's LSLoConfig: its languages and tiers (untiered languages count as high) + `cfg.lslo`. Here, not
    in lslo.run_setup, so that lslo.extend.run (which run_setup calls) can build one without importing it back."""
    from lslo.errors import LsloError

    tiers = {code: tier or "high" for code, tier in languages.items()}
    try:
        return LSLoConfig(languages=tiers, lang_token_ids=dict(lang_ids), **cfg.lslo)
    except (TypeError, ValueError) as err:
        raise LsloError(f"lslo: {err}") from None
