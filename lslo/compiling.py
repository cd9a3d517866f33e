"""Compiled training and inference: regional `torch.compile` of a translation model's encoder/decoder layers.

`compile_layers(model)` compiles every encoder and decoder layer in place (`nn.Module.compile`, as torchtune's
regional compilation does), for every method (LSLo, shared LoRA, full fine-tuning), and the label-smoothed loss
over the vocabulary (`lslo.loss.compile_loss`: log-softmax, gather and sums fused); the embeddings, the
LayerDrop loop and the optimizer stay eager. All encoder layers share one compiled graph per variant
(and all decoder layers another), so compiling costs a few graphs, not one per layer, and the state dict keeps
its names (nothing is wrapped). Shapes are dynamic (batch size and length vary with every batch of
`lslo train`'s token-budget sampler): one graph serves every length, with no recompile after warm-up.

LSLo layers take their tensor-only path when traced (`LSLoLinear.traced_delta`): each row's language is a tensor
read from the model's `Routing`, so a batch with a new language mix reuses the graph, and the gathered path is
one custom operator (`lslo::gathered_lora`) that runs eager's batched products in both directions; which languages a step
used is still recorded eagerly by `Routing.use` (for `LanguageAdamW`).

Off by default (`compile: false` in the run config): what it gains on a 2-core CPU is in RESULTS.md
`train_throughput`. Dropout inside a compiled layer draws from eager's generator (`fallback_random`), so a
compiled run's losses follow the eager run's within float rounding.
"""

from __future__ import annotations

from typing import Any

from torch import nn

# Graphs per layer class: {first layer (input without grad), later layers} x {train, eval} x {grad, no grad}, merged.
RECOMPILE_LIMIT = 32


def layer_types() -> tuple[type[nn.Module], ...]:
    """The transformer layer classes compiled one by one (M2M-100 and NLLB share them)."""
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100DecoderLayer, M2M100EncoderLayer

    return (M2M100EncoderLayer, M2M100DecoderLayer)


def is_compiled(layer: nn.Module) -> bool:
    return getattr(layer, "_compiled_call_impl", None) is not None


def compile_layers(model: nn.Module, dynamic: bool | None = True, **options: Any) -> int:
    """Compile each encoder/decoder layer of `model` in place (idempotent); returns how many are compiled.

    `dynamic=True` traces sizes as symbols from the first batch (no recompile for a new length or batch size);
    `options` go to `torch.compile` (e.g. `mode`, `backend`).
    """
    import torch._dynamo
    import torch._inductor.config
    import torch.fx.experimental._config

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
    # A size is not assumed equal to another because the first batch had them equal (batch size and length).
    torch.fx.experimental._config.use_duck_shape = False
    torch._inductor.config.fallback_random = True  # dropout masks as eager draws them: same results as eager
    layers = [m for m in model.modules() if isinstance(m, layer_types())]
    for layer in layers:
        if not is_compiled(layer):
            layer.compile(dynamic=dynamic, **options)
    return len(layers)


def uncompile(model: nn.Module) -> nn.Module:
    """Drop the compiled forwards (e.g. of a deep copy, whose compiled calls would run the original's layers)."""
    for layer in model.modules():
        if is_compiled(layer):
            layer._compiled_call_impl = None
    return model


def backend_of(setting: bool | str, where: str = "compile") -> str | None:
    """The run config's `compile:` value -> the torch.compile backend, or None for eager.

    `true` is Inductor (C++ kernels on CPU, Triton on GPU); a string names a backend (e.g. `aot_eager`: traced
    and differentiated the same way, not code-generated: what the tests use to check graphs quickly).
    """
    if setting is False or setting is None:
        return None
    if setting is True:
        return "inductor"
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if setting not in known:
        from lslo.errors import LsloError

        raise LsloError(f"{where}={setting!r}: use true, false or a torch.compile backend (e.g. inductor, aot_eager)")
    return str(setting)


def apply(model: nn.Module, setting: bool | str) -> int:
    """Compile `model`'s layers as the run config's `compile:` says (nothing for false): what `lslo train`
    (training and validation), `lslo pretrain` and `lslo search` call. Returns the layers compiled."""
    backend = backend_of(setting)
    if backend is None:
        return 0
    from lslo.loss import compile_loss

    compile_loss(backend)  # the loss over the vocabulary too: it runs outside the layers
    return compile_layers(model, backend=backend)


def graphs_compiled() -> int:
    """Graphs Dynamo has compiled in this process so far (what a no-recompile check counts)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
