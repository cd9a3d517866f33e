"""Shared parts of the speed benchmarks (`lslo_speed.py`, `languages_sweep.py`): model shapes, random bases and
batches, the LSLo / baseline variants under test, interleaved timing and the memory a step holds."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import M2M100Config, M2M100ForConditionalGeneration

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from lslo.model import LSLoModel  # noqa: E402
from lslo.optim import LanguageAdamW  # noqa: E402
from lslo.translation import TranslationModel  # noqa: E402

SHAPES = {
    "cpu": dict(d_model=512, layers=6, ffn=2048, heads=8, vocab=16000, batch=16, seq=32),
    "418m": dict(d_model=1024, layers=12, ffn=4096, heads=16, vocab=128112, batch=128, seq=32),
    "1.2b": dict(d_model=1024, layers=24, ffn=8192, heads=16, vocab=128112, batch=128, seq=32),
}
BIBLE12 = {"en": "high", "fr": "high", "it": "high", "de": "high", "zh": "medium", "ja": "medium", "ko": "medium",
           "ru": "medium", "sw": "low", "tl": "low", "fa": "low", "vi": "low"}  # fmt: skip


def lang30() -> dict[str, str]:
    """30 languages, 10 per tier; the first 4 of each tier are bible12's."""
    tiers = ["high"] * 10 + ["medium"] * 10 + ["low"] * 10
    order = ["en", "fr", "it", "de", "es", "pt", "pl", "nl", "ro", "uk",
             "zh", "ja", "ko", "ru", "tr", "ar", "hi", "id", "vi", "fa",
             "sw", "tl", "bn", "ne", "si", "my", "km", "ha", "yo", "zu"]  # fmt: skip
    return dict(zip(order, tiers, strict=True))


def build_base(shape: dict, dtype: torch.dtype, device: str) -> M2M100ForConditionalGeneration:
    cfg = M2M100Config(
        vocab_size=shape["vocab"], d_model=shape["d_model"], encoder_layers=shape["layers"], decoder_layers=shape["layers"],
        encoder_ffn_dim=shape["ffn"], decoder_ffn_dim=shape["ffn"], encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"], max_position_embeddings=1024, encoder_layerdrop=0.0, decoder_layerdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a 1.2B model builds in seconds on a GPU
        return M2M100ForConditionalGeneration(cfg).to(dtype=dtype)


def lang_ids(shape: dict, langs: list[str]) -> dict[str, int]:
    return {lang: shape["vocab"] - 1 - i for i, lang in enumerate(langs)}


def make_batch(shape: dict, langs: list[str], mixed: bool, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b, t = shape["batch"], shape["seq"]
    ids = torch.randint(3, shape["vocab"] - 200, (b, t), generator=g)
    labels = torch.randint(3, shape["vocab"] - 200, (b, t), generator=g)
    if mixed:
        src = [langs[int(i)] for i in torch.randint(len(langs), (b,), generator=g)]
        tgt = [langs[int(i)] for i in torch.randint(len(langs), (b,), generator=g)]
    else:
        src, tgt = [langs[0]] * b, [langs[1]] * b
    dec = torch.cat([torch.full((b, 1), 2), labels[:, :-1]], dim=1)
    return {
        "input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "decoder_input_ids": dec.to(device),
        "labels": labels.to(device), "src_lang": src, "tgt_lang": tgt,
    }  # fmt: skip


class Variant:
    """One model under test with its training-step closure."""

    def __init__(self, name: str, model: torch.nn.Module, batch: dict, device: str, autocast: bool, optimize: bool = True,
                 optimizer: str = "auto"):  # fmt: skip
        """`optimizer`: "auto" is what `lslo train` uses (LanguageAdamW for LSLo, AdamW otherwise), "adamw" AdamW."""
        self.name, self.model, self.batch, self.device, self.autocast = name, model, batch, device, autocast
        params = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        adam = dict(lr=1e-5, betas=(0.9, 0.98), weight_decay=0.0)
        per_language = optimizer == "auto" and isinstance(model, LSLoModel)
        self.optimizer = None
        if optimize and params:
            self.optimizer = LanguageAdamW(params, model, **adam) if per_language else torch.optim.AdamW(params, **adam)
        self.times: list[float] = []
        self.memory = 0

    def loss(self) -> torch.Tensor:
        b = self.batch
        kwargs = {k: b[k] for k in ("input_ids", "attention_mask", "decoder_input_ids")}
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
            if isinstance(self.model, TranslationModel):
                logits = self.model(**kwargs, src_lang=b["src_lang"], tgt_lang=b["tgt_lang"]).logits
            else:
                logits = self.model(**kwargs).logits
        return F.cross_entropy(logits.float().flatten(0, 1), b["labels"].flatten(), label_smoothing=0.2)

    def step_split(self) -> tuple[float, float]:
        """One step, timed in two parts: (forward + backward, optimizer step) seconds (CPU)."""
        start = time.perf_counter()
        self.loss().backward()
        middle = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return middle - start, time.perf_counter() - middle

    def step(self) -> None:
        self.loss().backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.model.zero_grad(set_to_none=True)


def timed(fn: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_generations(gens: dict[str, Callable[[], object]], reps: int, device: str) -> dict[str, list[float]]:
    """Each generation once untimed (warm-up), then `reps` interleaved timed rounds: name -> seconds per round."""
    times: dict[str, list[float]] = {k: [] for k in gens}
    with torch.no_grad():
        for fn in gens.values():
            fn()
        for _ in range(reps):
            for k, fn in gens.items():
                times[k].append(timed(fn, device))
    return times


def held_bytes(v: Variant) -> int:
    """Bytes a variant holds between steps: its parameters (each storage once) and optimizer state."""
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in v.model.parameters()}
    state = v.optimizer.state.values() if v.optimizer is not None else []
    return sum(storages.values()) + sum(t.numel() * t.element_size() for s in state for t in s.values() if torch.is_tensor(t))


def step_memory(v: Variant) -> int:
    """Bytes a training step holds (see module docstring)."""
    if v.device == "cuda":
        torch.cuda.synchronize()
        others = torch.cuda.memory_allocated() - held_bytes(v)
        torch.cuda.reset_peak_memory_stats()
        v.step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - others
    return sum(step_memory_parts(v).values())


def step_memory_parts(v: Variant) -> dict[str, int]:
    """CPU: bytes of a step's parameters, gradients, optimizer state and tensors saved for backward (activations)."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if not isinstance(t, torch.nn.Parameter) and t.requires_grad is not None:
            storage = t.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    params = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in v.model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = v.loss()
    activations = sum(n for ptr, n in saved.items() if ptr not in params)
    loss.backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in v.model.parameters() if p.grad is not None)
    if v.optimizer is not None:
        v.optimizer.step()
        v.optimizer.zero_grad(set_to_none=True)
        state = sum(t.numel() * t.element_size() for s in v.optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    else:
        v.model.zero_grad(set_to_none=True)
        state = 0
    return {"params": sum(params.values()), "grads": grads, "optimizer": state, "activations": activations}


def randomize_lora(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
