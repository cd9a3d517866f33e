"""Injection and the LSLo model: walk an M2M-100/NLLB model, swap its linears, route, merge, save, load.

`add_lslo(model, config)` replaces the chosen `nn.Linear`s of a stock transformers
`M2M100ForConditionalGeneration` with `LSLoLinear`s (no transformers code is forked) and freezes every
base weight. `LSLoModel` sets the per-sample routing for each call, folds one direction into a plain
model (`merge_direction`), saves/loads adapters as JSON + safetensors, and counts parameters.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lslo.compiling import uncompile
from lslo.config import LSLoConfig
from lslo.errors import LsloError
from lslo.io import atomic_dir
from lslo.layer import LSLoLinear
from lslo.routing import Routing
from lslo.translation import Langs, TranslationModel, require_m2m100

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
SHAPE_FIELDS = (
    "model_type", "d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim",
    "encoder_attention_heads", "decoder_attention_heads", "vocab_size",
)  # fmt: skip


def base_identity(model: nn.Module) -> dict[str, Any]:
    """Architecture, shapes and a weight fingerprint of a base model (fingerprint None on the meta device)."""
    cfg = model.config
    identity: dict[str, Any] = {"architecture": type(model).__name__}
    identity.update({k: getattr(cfg, k, None) for k in SHAPE_FIELDS})
    identity["fingerprint"] = weight_fingerprint(model)
    identity["name_or_path"] = getattr(cfg, "_name_or_path", "") or ""
    return identity


def weight_fingerprint(model: nn.Module, samples: int | None = 1024) -> str | None:
    """sha256 over the names, shapes and values of every weight and buffer; None for a model on the meta device.

    With `samples` (a base's identity, `check_identity`): a strided sample of each tensor, rounded to bf16, so the
    same base in fp16 or fp32 has the same fingerprint. With `samples=None` (what `lslo eval` keys its partial
    translations by): every value, exactly.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if tensor.is_meta:
            return None
        flat = tensor.detach().reshape(-1)
        if samples is None:
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
        else:
            digest.update(f"{name}:{tuple(tensor.shape)};".encode())
            sample = flat[:: max(1, flat.numel() // samples)][:samples]
            digest.update(sample.to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_identity(saved: dict[str, Any], actual: dict[str, Any], where: str) -> None:
    for key in ("architecture", *SHAPE_FIELDS):
        if saved.get(key) != actual.get(key):
            raise LsloError(
                f"{where}: adapter was made for a base with {key}={saved.get(key)!r}, this base has "
                f"{key}={actual.get(key)!r}; load the base model it was trained on"
            )
    fa, fb = saved.get("fingerprint"), actual.get("fingerprint")
    if fa and fb and fa != fb:
        raise LsloError(
            f"{where}: base weights differ from those the adapter was trained on (fingerprint {fb} != {fa}); "
            "load the base checkpoint it was trained on"
        )


def lslo_layers(model: nn.Module) -> dict[str, LSLoLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LSLoLinear)}


class LSLoModel(TranslationModel):
    """An M2M-100/NLLB model with LSLo layers, routed per sample by source or target language."""

    def __init__(self, base_model: nn.Module, config: LSLoConfig, routing: Routing, identity: dict[str, Any]) -> None:
        super().__init__(base_model, list(config.languages), config.lang_token_ids)
        self.lslo_config = config
        self.routing = routing
        self.base_identity = identity

    @contextlib.contextmanager
    def routed(self, src_lang: Langs, tgt_lang: Langs, batch: int) -> Iterator[None]:
        src, tgt = self.batch_lists(src_lang, tgt_lang, batch)
        with self.routing.use(self.language_index(src, "src_lang"), self.language_index(tgt, "tgt_lang"), self.device):
            yield

    def lslo_layers(self) -> dict[str, LSLoLinear]:
        """Name (relative to `base_model`) -> LSLo layer."""
        return lslo_layers(self.base_model)

    # -- merge ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def merge_direction(self, src_lang: str, tgt_lang: str) -> nn.Module:
        """A new plain transformers model with the LoRAs of direction src->tgt folded into its weights."""
        langs = {"src": self.language_index(src_lang, "src_lang")[0], "tgt": self.language_index(tgt_lang, "tgt_lang")[0]}
        merged = uncompile(copy.deepcopy(self.base_model))  # a copy's compiled calls would run this model's layers
        for name, layer in lslo_layers(merged).items():
            layer.base_layer.weight.copy_(layer.folded_weight(langs[layer.route]))
            merged.set_submodule(name, layer.base_layer)
        if getattr(self, "language_stages", None):  # added languages: plain embeddings again (lslo.extend.stages)
            from lslo.extend.stages import plain_direction

            merged = plain_direction(self, merged, src_lang, tgt_lang)
        merged.requires_grad_(True)
        return merged

    @property
    def mergeable(self) -> bool:
        """Whether every LSLo layer can fold a direction into its weight (search layers cannot)."""
        return all(type(layer).delta_weight is LSLoLinear.delta_weight for layer in self.lslo_layers().values())

    @contextlib.contextmanager
    def merged(self, src_lang: str, tgt_lang: str) -> Iterator[None]:
        """Inference on one direction at the base model's cost: inside, every LSLo layer runs as one linear
        with that direction's LoRA folded into a temporary copy of its weight (the stored weights are not
        touched, so leaving restores the exact model). Not for training: the LoRA gets no gradient inside."""
        index = {"src": self.language_index(src_lang, "src_lang")[0], "tgt": self.language_index(tgt_lang, "tgt_lang")[0]}
        layers = list(self.lslo_layers().values())
        try:
            for layer in layers:
                layer.merged_weight = layer.folded_weight(index[layer.route])
            yield
        finally:
            for layer in layers:
                layer.merged_weight = None

    # -- save / load ---------------------------------------------------------------------------------
    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """Per-language LoRA matrices: `<layer>.lora_A.<lang>` (r x in) and `<layer>.lora_B.<lang>` (out x r).

        A pruned layer adds its keep-masks as bool tensors `<layer>.lora_A_mask.<lang>` / `.lora_B_mask.<lang>`.
        """
        state = {}
        for name, layer in self.lslo_layers().items():
            for i, lang in enumerate(self.languages):
                s = layer.span(i)
                state[f"{name}.lora_A.{lang}"] = layer.lora_A[s].detach().cpu().contiguous()
                state[f"{name}.lora_B.{lang}"] = layer.lora_B[:, s].detach().cpu().contiguous()
                if layer.lora_A_mask is not None:
                    state[f"{name}.lora_A_mask.{lang}"] = layer.lora_A_mask[s].cpu().contiguous()
                if layer.lora_B_mask is not None:
                    state[f"{name}.lora_B_mask.{lang}"] = layer.lora_B_mask[:, s].cpu().contiguous()
        return state

    @torch.no_grad()
    def load_lora_state_dict(self, state: dict[str, torch.Tensor], where: str = "adapter") -> None:
        expected = set()
        for name, layer in self.lslo_layers().items():
            for i, lang in enumerate(self.languages):
                s = layer.span(i)
                for key, target in ((f"{name}.lora_A.{lang}", layer.lora_A[s]), (f"{name}.lora_B.{lang}", layer.lora_B[:, s])):
                    expected.add(key)
                    if key not in state:
                        raise LsloError(f"{where}: tensor {key!r} is missing; the file is incomplete or from another config")
                    if tuple(state[key].shape) != tuple(target.shape):
                        raise LsloError(f"{where}: tensor {key!r} has shape {tuple(state[key].shape)}, expected {tuple(target.shape)}")
                    target.copy_(state[key])
            for kind in ("A", "B"):
                keys = [f"{name}.lora_{kind}_mask.{lang}" for lang in self.languages]
                if not any(k in state for k in keys):
                    setattr(layer, f"lora_{kind}_mask", None)
                    continue
                weight = getattr(layer, f"lora_{kind}")
                mask = torch.ones_like(weight, dtype=torch.bool)
                for i, key in enumerate(keys):
                    part = mask[layer.span(i)] if kind == "A" else mask[:, layer.span(i)]
                    if key not in state or tuple(state[key].shape) != tuple(part.shape):
                        raise LsloError(f"{where}: mask {key!r} is missing or has the wrong shape; the file is damaged")
                    part.copy_(state[key].bool())
                    expected.add(key)
                setattr(layer, f"lora_{kind}_mask", mask)
            layer.apply_masks()
        extra = sorted(set(state) - expected)
        if extra:
            raise LsloError(f"{where}: unexpected tensor {extra[0]!r}; the adapter was saved with another config")

    def save_pretrained(self, directory: str | Path) -> None:
        """Write `adapter_config.json` and `adapter_model.safetensors` (atomically: all or nothing)."""
        meta = {"format": "lslo", "version": 1, "config": self.lslo_config.to_dict(), "base_model": self.base_identity}
        with atomic_dir(directory) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            save_file(self.lora_state_dict(), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            if getattr(self, "language_stages", None):  # languages added to the base (lslo.extend.stages)
                from lslo.extend.stages import save_added

                save_added(self, tmp)

    # -- accounting ----------------------------------------------------------------------------------
    def parameter_report(self) -> dict[str, Any]:
        """Trainable parameters per language, per tier and in total, and as % of the base model (exact counts).

        A language's parameters are the LoRA matrices it owns: rank x (in + out) for every LSLo layer, or,
        once pruned, only the entries its keep-masks keep.
        The base count is every parameter of the base model once (tied embeddings once). Works on `meta`.
        """
        layers = list(self.lslo_layers().values())
        base = sum(p.numel() for n, p in self.base_model.named_parameters() if ".lora_" not in n)
        per_lang = {}
        for i, lang in enumerate(self.languages):
            n = sum(layer.num_lora_parameters(i) for layer in layers)
            tier = self.lslo_config.languages[lang]
            per_lang[lang] = {"tier": tier, "rank": self.lslo_config.rank(lang), "params": n, "percent_of_base": 100 * n / base}
        return summarize_languages(per_lang, base, len(layers))


def summarize_languages(per_lang: dict[str, dict[str, Any]], base: int, num_layers: int) -> dict[str, Any]:
    """`parameter_report`'s shape from per-language rows ({"tier", "params", ...}): tiers, total, % of base."""
    tiers: dict[str, dict[str, Any]] = {}
    for lang, row in per_lang.items():
        t = tiers.setdefault(row["tier"], {"languages": [], "params": 0})
        t["languages"].append(lang)
        t["params"] += row["params"]
    for t in tiers.values():
        t["percent_of_base"] = 100 * t["params"] / base
        t["percent_per_language"] = t["percent_of_base"] / len(t["languages"])
    total = sum(row["params"] for row in per_lang.values())
    return {"languages": per_lang, "tiers": tiers, "total": total, "base_params": base,
            "percent_of_base": 100 * total / base, "lslo_layers": num_layers}  # fmt: skip


def add_lslo(model: nn.Module, config: LSLoConfig, tokenizer: Any = None) -> LSLoModel:
    """Inject LSLo into `model` in place (its chosen linears are swapped) and freeze every base weight.

    With `tokenizer`, the language-token ids that `generate` needs are read from it into the config.
    """
    require_m2m100(model, "add_lslo")
    if tokenizer is not None:
        from lslo.languages import lang_token_ids

        config.lang_token_ids = lang_token_ids(tokenizer, list(config.languages))
    return _inject(model, config, base_identity(model))


def rank_scales(config: LSLoConfig) -> tuple[list[int], list[float]]:
    """Per-language ranks and output scales, in the config's language order (the layers' order)."""
    return [config.rank(lang) for lang in config.languages], [config.scale(lang) for lang in config.languages]


def _inject(model: nn.Module, config: LSLoConfig, identity: dict[str, Any]) -> LSLoModel:
    model.requires_grad_(False)
    ranks, scales = rank_scales(config)
    routing = Routing()
    for name, route in config.targets(len(model.model.encoder.layers), len(model.model.decoder.layers)):
        base = model.get_submodule(name)
        if not isinstance(base, nn.Linear):
            raise LsloError(f"add_lslo: {name} is a {type(base).__name__}, not nn.Linear; is LSLo already added?")
        model.set_submodule(name, LSLoLinear(base, ranks, scales, route, routing, config.dropout))
    return LSLoModel(model, config, routing, identity)


def open_adapter(
    base_model: nn.Module, directory: str | Path, config_name: str, weights_name: str, fmt: str, writer: str
) -> tuple[LSLoModel, dict[str, Any], Path]:
    """Check an adapter folder and that it was made for `base_model`; inject its (not yet loaded) LSLo.

    Returns (model, the folder's JSON metadata, the weights file). `writer` names what writes such folders.
    """
    directory = Path(directory)
    config_path, weights_path = directory / config_name, directory / weights_name
    for path in (config_path, weights_path):
        if not path.is_file():
            raise LsloError(f"{path}: not found; give a directory written by {writer}")
    try:
        meta = json.loads(config_path.read_text(encoding="utf-8"))
        if meta.get("format") != fmt:
            raise KeyError(f"format is {meta.get('format')!r}, not {fmt!r}")
        config = LSLoConfig.from_dict(meta["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LsloError(f"{config_path}: not a valid {fmt} adapter config ({exc})") from None
    require_m2m100(base_model, "load")
    identity = base_identity(base_model)
    check_identity(meta.get("base_model", {}), identity, str(directory))
    return _inject(base_model, config, identity), meta, weights_path


def load_lslo(base_model: nn.Module, directory: str | Path) -> LSLoModel:
    """Load an adapter saved by `LSLoModel.save_pretrained` onto `base_model` (checked to be the same base)."""
    model, _, weights_path = open_adapter(base_model, directory, CONFIG_NAME, WEIGHTS_NAME, "lslo",
                                          "LSLoModel.save_pretrained / lslo train")  # fmt: skip
    model.load_lora_state_dict(load_file(str(weights_path)), where=str(weights_path))
    from lslo.extend.stages import load_added

    return load_added(model, directory)  # languages added to the base, if any (lslo.extend.stages)
